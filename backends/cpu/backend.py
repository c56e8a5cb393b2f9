"""The CPU backend: plan @forward into steps, compile the MLIR kernels in one go, run a flat launch list.

Planning (`plan_module`): every `graph.kernel` region is split into runs of ops that lower to MLIR
(one function each, lower.py/lower_ops.py), attention and block-sparse attention (one generated
flash-attention function each, attention.py; attention_plan.py routes to torch SDPA where it does not apply),
library calls (GEMM, convolution through torch: MKL/OpenBLAS/oneDNN beat generated code there) and
ops without a lowering (the reference backend's eager implementation, listed in `Program.fallbacks`). A top-level op outside any kernel is
a kernel of its own; the layout ops and constants feeding it are pulled into its function, so a
permute or a broadcast becomes an indexing map instead of a copy. Layout ops whose results a
library call or the caller needs run as torch views.

Compiling: all MLIR functions of the model go into one module per LLVM opt level (normally one
module, one compile), through `jit.compile_mlir` and its disk cache, so a second process compiling
the same model loads a shared object instead of running MLIR.

Running: runner.py (a flat launch list over preallocated intermediates, one call at a time).

Dynamic modules (`?` dims): the same plan, lowered once with symbolic sizes (symdims.py): the MLIR has
`?` dims and takes the shape symbols as `index` arguments, so one compile serves every size the
function's binding accepts. Generated attention is emitted per static size, so in a dynamic module
attention calls torch SDPA (block-sparse attention: the reference backend) and the step's route says so;
a kernel the symbolic lowering cannot express runs on the reference backend like any unsupported kernel.
If the generic module fails to compile, the module falls back to one lowering per size (`per_size`).
"""

from __future__ import annotations


import torch
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, OpResult, SSAValue

from solder.backends.base import Backend, Program, per_size
from solder.backends.cpu import attention_lib, layout, symdims
from solder.backends.cpu import attention_plan as ATT
from solder.backends.cpu import lower as L
from solder.backends.cpu import lower_schedule as S
from solder.backends.cpu.lower_ops import LONG_ROW, LOWERINGS, long_row, lowers
from solder.backends.cpu.plan import (  # noqa: F401  (Plan, Step: re-exported for tests)
    _NCHW_OF_NHWC,
    _NHWC_OF_NCHW,
    KIND_OF_ROUTE,
    Plan,
    Step,
    _compiled,
    _is_conv2d,
    _lowered,
    _to_nhwc,
)
from solder.backends.cpu.runner import build_runner, compile_plan
from solder.backends.lowering.flat import Flat
from solder.backends.lowering.library import LIBRARY_CALLS, library_call
from solder.backends.lowering.steps import StepKind, with_views
from solder.backends.reference import OPS
from solder.backends.routes import Route
from solder.compiler import log
from solder.compiler.dialects import graph as g
from solder.compiler.dialects import symbolic
from solder.compiler.dialects.symbolic import is_dynamic_module
from solder.compiler.dialects.traits import Attention, Source, ViewLike
from solder.compiler.dialects.types import dims_of, shape_of

_log = log.get("backend")

LIBRARY = (g.LinearOp, g.MatmulOp, g.ConvOp, g.AttentionOp)
"""Ops that run as a torch library call (MKL/OpenBLAS/oneDNN GEMMs and convolutions, SDPA)."""
HOISTED = "library: torch.cat, once per version of its inputs"
NORMS = (g.LayerNormOp, g.RmsNormOp)
HEAVY = ("math.floor", "arith.divf", "math.sin", "math.cos", "math.sqrt")


def absorbable(op: Operation) -> bool:
    """A view or a source op: a kernel recomputes it as an indexing map or an immediate (no step of its own)."""
    return op.has_trait(ViewLike) or op.has_trait(Source)


# -- planning -----------------------------------------------------------------------------------
class _Planner:
    def __init__(self, module: ModuleOp) -> None:
        self.flat = Flat(module)
        self.fn = self.flat.fn
        self.resolve = self.flat.canon
        self.steps: list[Step] = []
        self.order = self.flat.order  # program order, kernels inlined
        self.n_funcs = 0
        # Channels-last: 2-d convolutions run on NHWC data (oneDNN's fast layout, 25-40% faster here at
        # the zoo's sizes); their outputs stay NHWC in memory, the kernels that read them index NHWC,
        # and kernel outputs between convolutions are written NHWC (their values are permuted views;
        # layout.py decides which).
        self.nhwc: set[SSAValue] = set()
        self.conv_inputs = {self.resolve(op.operands[0]) for op in self.flat.ops() if _is_conv2d(op)}
        self.results = set(self.flat.results)
        syms = symbolic.symbols(self.fn)
        self.binding = symbolic.Binding.of(self.fn) if syms else None
        self.samples = symdims.sample_bindings(syms, symbolic.assumes(self.fn))
        self.taken: set[Operation] = set()  # layout ops an earlier step computes as part of itself

    def plan(self) -> Plan:
        for ops, kop in self.flat.groups():
            if kop is not None:
                self.kernel(kop, ops)
            elif ops[0] not in self.taken:
                self.top(ops[0])
        steps = with_views(self.steps, self.flat, lambda op: self.step(Route.VIEW, "view", [op]))
        return Plan(self.flat.args, steps, self.flat.results, self.binding)

    def step(self, kind: Route | StepKind, route: str, ops: list[Operation], **kw) -> Step:
        kind = KIND_OF_ROUTE[kind] if isinstance(kind, Route) else kind
        keys = [[self.resolve(v) for v in op.operands] for op in ops]
        outs = [r for op in ops for r in op.results]
        return Step(kind, kw.get("func") or route, self.flat.inputs(ops), outs, ops=ops, route=route,
                    operand_keys=keys, **kw)

    def library(self, op: Operation, kid=None) -> Step:
        if layout.keeps_channels_last(op, [self.resolve(v) for v in op.operands], self.nhwc):
            self.nhwc.add(op.results[0])
        return self.step(Route.LIBRARY, _library_route(op), [op], kernel_id=kid)

    def absorb(self, values: list[SSAValue]) -> list[Operation]:
        """Layout ops and constants that (transitively) produce `values` and that the kernel can
        recompute: they join its function (a broadcast or permute becomes an indexing map, a constant
        an immediate). Only ops whose own operands are at hand (arguments, earlier steps' outputs, or
        themselves recomputed): a layout op inside another kernel may read a value that kernel never
        exported."""
        avail = set(self.flat.args) | {o for st in self.steps for o in st.outs}
        memo: dict[SSAValue, bool] = {}

        def can(v: SSAValue) -> bool:
            v = self.resolve(v)
            if v not in memo:
                p = v.owner if isinstance(v, OpResult) else None
                memo[v] = v in avail or (p is not None and absorbable(p) and all(can(o) for o in p.operands))
            return memo[v]

        taken: list[Operation] = []
        stack = list(values)
        while stack:
            v = self.resolve(stack.pop())
            p = v.owner if isinstance(v, OpResult) else None
            if p is None or not absorbable(p) or p in taken or not all(can(o) for o in p.operands):
                continue
            taken.append(p)
            stack.extend(p.operands)
        return taken

    def hoisted(self, op: Operation) -> bool:
        """A concatenation of function arguments only (merge-linears' stacked weights): computed once
        per version of its inputs, not per call (runner.py)."""
        args = self.flat.args
        return isinstance(op, g.ConcatOp) and all(self.resolve(v) in args for v in op.operands)

    def top(self, op: Operation) -> None:
        if self.hoisted(op):
            self.steps.append(self.step(Route.HOISTED, HOISTED, [op]))
        elif op.has_trait(Attention):
            self.steps.append(self.attention(op))
        elif absorbable(op):
            return  # read in place by the kernels that fold it, else a view step (with_views)
        elif isinstance(op, LIBRARY):
            self.steps.append(self.library(op))
        elif lowers(op):
            absorbed = self.absorb(list(op.operands))
            ops = sorted(absorbed + [op], key=self.order.__getitem__)
            self.steps.append(self.mlir(ops, [op]))
        elif library_call(op, "cpu") is not None:
            self.steps.append(self.library(op))
        else:
            self.steps.append(self.step(Route.EAGER, "reference", [op], note="no CPU lowering"))

    def kernel(self, kop: Operation, ops: list[Operation]) -> None:
        kid = kop.attributes["kernel_id"].value.data if "kernel_id" in kop.attributes else None
        run: list[Operation] = []
        for op in ops + [None]:
            if op is None or not lowers(op):
                self.flush(run, kid)
                run = []
            if op is None:
                break
            if op in self.taken:
                continue
            if self.hoisted(op):
                self.flush(run, kid)
                run = []
                self.steps.append(self.step(Route.HOISTED, HOISTED, [op], kernel_id=kid))
                continue
            if lowers(op):
                run.append(op)
            elif op.has_trait(Attention):
                self.steps.append(self.attention(op, kid))
            elif isinstance(op, LIBRARY) or library_call(op, "cpu") is not None:
                self.steps.append(self.library(op, kid))
            else:
                self.steps.append(self.step(Route.EAGER, "reference", [op], kernel_id=kid, note="no CPU lowering"))

    def attention(self, op: Operation, kid=None) -> Step:
        """Attention: the generated flash kernel (attention.py), or the route it names instead.

        The kernel reads q, k and v where they are: an operand that is a chain of torch views (the
        head split of a QKV projection: slice, reshape, permute) of an earlier step's output is passed
        as that output, with the view's offset and strides in the kernel's memref type, so neither the
        views nor a contiguous copy run per call. When the result's only use is the heads' merge
        (permute to [B, T, H, Dv], perhaps a reshape to [B, T, H*Dv]), the kernel writes [B, T, H, Dv]
        memory and the step yields the merged value directly."""
        if self.binding is not None:  # a dynamic module: the install's size-generic kernel, else SDPA
            why = "dynamic shapes: the generated kernel is emitted per static size"
            if isinstance(op, g.AttentionOp):
                call = ATT.dynamic_prebuilt(op)
                if call is not None:
                    st = self.step(Route.LIBRARY, f"{ATT.LIB_ROUTE} ({call.describe}; prebuilt, sizes per call)",
                                   [op], kernel_id=kid, launch=lambda _: call)
                    st.prebuilt = call.text
                    return st
                why += " and the install's size-generic kernels lack this variant"
                return self.step(Route.LIBRARY, f"{ATT.SDPA_ROUTE} ({why})", [op], kernel_id=kid)
            return self.step(Route.EAGER, "reference", [op], kernel_id=kid, note=why)
        views, bases = zip(*(self._view_of(x) for x in (op.query, op.key, op.value)))
        tail = self._heads_merge(op)
        p = ATT.plan(op, views=views, out_bthd=bool(tail))
        if p.spec is None:
            return self.step(p.kind, p.route, [op], kernel_id=kid, note=p.note)
        lib = attention_lib.prebuilt(p.spec)
        if lib is not None:  # the install's size-generic kernel: nothing to compile
            st = self.step(Route.LIBRARY, f"{ATT.LIB_ROUTE} ({p.spec.describe()}; prebuilt, size-generic)", [op], kernel_id=kid,
                           launch=lambda _: p.launcher(lib))
            st.prebuilt = lib.text
        else:
            name = f"k{self.n_funcs}"
            self.n_funcs += 1
            st = self.step(StepKind.TEMPLATE, p.route, [op], kernel_id=kid, func=name, text=ATT.emit(p.spec, name),
                           arg_types=p.arg_types(), launch=p.launcher)
        keys = [b if view else k for k, view, b in zip(st.operand_keys[0], p.spec.views + (None,), bases + (None,))]
        keys += st.operand_keys[0][len(keys):]
        st.operand_keys, st.ins = [keys], list(dict.fromkeys(keys))
        if p.spec.out_bthd:
            final = tail[-1].results[0]
            shape = shape_of(final.type)
            st.outs = [final]
            st.launch = lambda kern: p.launcher(lib or kern, lambda o: o.view(shape))
            self.taken.update(tail)
        return st

    def _view_of(self, x: SSAValue) -> tuple[tuple | None, SSAValue | None]:
        """((base shape, offset, strides), base) when `x` is a chain of view steps over `base` that a kernel
        can read in place (innermost stride 1, not contiguous already), else (None, None). The strides
        are those torch gives the same views of a contiguous base (worked out on a meta tensor); a base
        that arrives non-contiguous at run time is made contiguous first, so any base is correct."""
        produced = {o for s in self.steps for o in s.outs}  # a view no step computes runs as a torch view
        v, chain = self.resolve(x), []
        while isinstance(v, OpResult) and v.owner.has_trait(ViewLike) and v not in produced:
            chain.append(v.owner)
            v = self.resolve(v.owner.operands[0])
        if not chain or str(v.type.element_type) != "f32":
            return None, None
        t = torch.empty(shape_of(v.type), device="meta")
        try:
            for op in reversed(chain):
                t = t.view(shape_of(op.results[0].type)) if isinstance(op, g.ReshapeOp) else OPS[type(op)](op)(t)
        except RuntimeError:  # a reshape that copies: the view steps run
            return None, None
        if t.stride()[-1] != 1 or (t.is_contiguous() and t.storage_offset() == 0):
            return None, None
        return (shape_of(v.type), t.storage_offset(), tuple(t.stride())), v

    @staticmethod
    def _heads_merge(op: Operation) -> list[Operation]:
        """[permute(0, 2, 1, 3)] or [that permute, reshape to [B, T, H*Dv]] when they are the only use of
        the attention's result (in the same block, so the planner meets them after it), else []."""
        uses = list(op.results[0].uses)
        if len(uses) != 1 or not isinstance(uses[0].operation, g.PermuteOp):
            return []
        perm = uses[0].operation
        if list(perm.properties["perm"].get_values()) != [0, 2, 1, 3]:
            return []
        tail = [perm]
        more = list(perm.results[0].uses)
        b, t, h, dv = shape_of(perm.results[0].type)
        if len(more) == 1 and isinstance(more[0].operation, g.ReshapeOp) \
                and shape_of(more[0].operation.results[0].type) == (b, t, h * dv):
            tail.append(more[0].operation)
        return tail

    def flush(self, run: list[Operation], kid) -> None:
        if not run:
            return
        if all(absorbable(op) for op in run):
            return  # views and constants only: read in place, else view steps (with_views)
        inside = set(run)
        outer = [self.resolve(v) for op in run for v in op.operands
                 if not (isinstance(v, OpResult) and v.owner in inside)]
        absorbed = sorted(self.absorb(outer), key=self.order.__getitem__)
        self.steps.append(self.mlir(absorbed + run, run, kid))

    def mlir(self, ops: list[Operation], core: list[Operation], kid=None) -> Step:
        """One MLIR function for `ops`; outputs are the results of `core` used outside `ops`."""
        inside = set(ops)
        outs = [r for op in core for r in op.results
                if any(u.operation not in inside for u in r.uses)]
        lone = [op for op in core if not absorbable(op)]
        if len(lone) == 1 and isinstance(lone[0], g.ConcatOp) and library_call(lone[0], "cpu") is not None:
            return self.library(lone[0], kid)  # a copy and nothing else: torch.cat copies part by part
        name = f"k{self.n_funcs}"
        try:
            st = self._build(ops, outs, name, kid)
            self.n_funcs += 1
            return st
        except L.Unsupported as e:
            if len(lone) == 1 and library_call(lone[0], "cpu") is not None:  # one op: its library call
                _log.info("kernel %s runs as a library call: %s", lone[0].name, e)
                return self.library(lone[0], kid)
            _log.info("kernel %s falls back to the reference backend: %s", [o.name for o in core], e)
            st = self.step(Route.EAGER, "reference", ops, kernel_id=kid, note=str(e))
            st.outs = outs
            return st

    def _build(self, ops, outs, name, kid) -> Step:
        st = self.step(Route.GENERATED, "mlir", ops, kernel_id=kid, func=name)
        st.outs = outs
        if any(0 in _type(v)[0] for v in st.ins + [r for op in ops for r in op.results]):
            # an empty input, output or intermediate: MLIR's tiling would index into nothing
            raise L.Unsupported("an empty tensor: the reference backend runs it (nothing to compute)")
        if any("?" in _type(v)[0] for v in st.ins + [r for op in ops for r in op.results]):
            raise L.Unsupported("a `?` dim without a size expression: the reference backend reads it off the data")
        fb = L.FuncBuilder(name)
        fb.samples = self.samples
        fb.graph_ops = ops
        env = {}
        st.nhwc_in = [v in self.nhwc for v in st.ins]
        for v, cl in zip(st.ins, st.nhwc_in):
            shape, dt = _type(v)
            # an NHWC tensor read as the NCHW value it holds: a permuted indexing map, no copy
            env[v] = L.reindex(fb.arg(_to_nhwc(shape), dt), shape, _NCHW_OF_NHWC) if cl else fb.arg(shape, dt)
        tail = _output_reshapes(ops, outs)
        for op in ops:
            args = [env[self.resolve(v)] for v in op.operands]
            # a reshape that only feeds the output: write the data in the pre-reshape shape
            vals = args[:1] if op in tail else LOWERINGS[type(op)](fb, op, args)
            env.update(zip(op.results, vals))
        st.nhwc_out = [layout.writes_channels_last(r, env[r].shape, st.ins, st.nhwc_in, self.conv_inputs, self.results)
                       for r in outs]
        pairs = []
        for r, cl in zip(outs, st.nhwc_out):
            v = env[r]
            if cl:
                v = L.reindex(v, _to_nhwc(v.shape), _NHWC_OF_NCHW)
                self.nhwc.add(r)
            pairs.append((v, fb.arg(v.shape, _type(r)[1], writable=True)))
        fb.store(pairs)
        st.schedule, st.schedule_kind = S.schedule_lines(fb)
        if st.schedule_kind == "row":
            st.kind = StepKind.REDUCTION
        st.text, st.arg_types, st.symbols = fb.text(), fb.arg_types, fb.symbols
        st.opt_level = _opt_level(st)
        return st


def _opt_level(st: Step) -> int:
    """LLVM -O0 for vectorized elementwise kernels without heavy arithmetic (memory-bound: 3x
    cheaper to compile) and for a lone layer/rms norm (faster at -O0: notes/cpu-backend-mlir.md);
    -O3 for the rest (polynomial exp/tanh and fused row kernels gain from LLVM's scheduling,
    unscheduled loops need its vectorizer). Measured: add+layer_norm 79-87% of copy at -O0,
    108-117% at -O3."""
    if st.schedule_kind == "row":
        # a lone norm: at O2/O3 LLVM unrolls the row loops and spills (kernels.OPT_LEVEL)
        core = [op for op in st.ops if not absorbable(op)]
        return 0 if len(core) == 1 and isinstance(core[0], NORMS) else 3
    heavy = any(w in st.text for w in HEAVY)
    return 3 if st.schedule_kind == "none" or heavy else 0


def _output_reshapes(ops: list[Operation], outs: list[SSAValue]) -> set[Operation]:
    """Reshapes whose result is only a kernel output (same bytes in either shape: no copy)."""
    return {op for op in ops if isinstance(op, g.ReshapeOp) and op.results[0] in outs
            and all(u.operation not in ops for u in op.results[0].uses)}


def _type(v: SSAValue) -> tuple[tuple, str]:
    """Shape (ints; expression strings for `?` dims) and element type."""
    return dims_of(v.type), str(v.type.element_type)


def _hoisted_concats(ops: list[Operation]) -> set[Operation]:
    """Concatenations of function arguments only (merge-linears' stacks): held once, no launch."""
    from xdsl.ir import BlockArgument

    return {op for op in ops if isinstance(op, g.ConcatOp)
            and all(isinstance(v, BlockArgument) and v.owner.parent_op() is op.parent_op() for v in op.operands)}


def _library_route(op: Operation) -> str:
    call = library_call(op, "cpu")
    if call is not None and not isinstance(op, LIBRARY):
        return call.route
    if isinstance(op, g.LinearOp):
        return "library: torch.addmm" if op.bias is not None else "library: torch.mm"
    return {g.MatmulOp: "library: torch.matmul", g.ConvOp: "library: torch.conv",
            g.AttentionOp: "library: F.scaled_dot_product_attention"}[type(op)]


def _dynamic_line(plan: Plan) -> str:
    """How a dynamic plan serves its sizes, for explain()."""
    n = sum(1 for s in plan.steps if _lowered(s))
    per = [s for s in plan.steps if s.ops[0].has_trait(Attention) and s.kind is not StepKind.TEMPLATE and not s.prebuilt]
    line = f"backend code: {n} size-generic MLIR kernel(s), compiled once for every size"
    return line + (f"; {len(per)} attention op(s) call a library or reference op instead of the generated "
                   "kernel (emitted per static size)" if per else "")


def plan_module(module: ModuleOp) -> Plan:
    """Split `module`'s @forward into launch steps (no compilation)."""
    return _Planner(module).plan()


class CpuBackend(Backend):
    """Generated native code for the CPU: linalg -> LLVM through torch-mlir's MLIR; GEMMs via torch."""

    name = "cpu"
    targets = ("cpu",)

    def supports(self, op: Operation) -> bool:
        return self.op_route(type(op)) in (Route.GENERATED, Route.LIBRARY)

    def can_fuse(self, ops: list[Operation]) -> tuple[bool, str]:
        """One MLIR function holds a group of ops that lower.py lowers (views and constants fold into its
        indexing); a library call (GEMM, convolution, attention) or an op without a lowering is a launch of
        its own, though views around it cost nothing (attention writes its heads' merge directly); a group
        in an element type the kernels do not compute in is not one function either."""
        hoisted = _hoisted_concats(ops)
        core = [op for op in ops if not absorbable(op) and op not in hoisted]
        if len(core) <= 1:
            return True, ""
        for op in core:
            if long_row(op):
                return False, f"{op.name} sums rows longer than {LONG_ROW} elements: torch's reduction runs it alone"
            if not lowers(op):
                route = self.op_route(type(op))
                what = "a library call" if route is Route.LIBRARY else "its own launch"
                return False, f"{op.name} runs as {what}, not inside a generated kernel"
            for r in op.results:
                dt = str(getattr(r.type, "element_type", ""))
                if dt not in L.DTYPES:
                    return False, f"{op.name} in {dt}: the generated CPU kernels compute in {', '.join(L.DTYPES)}"
        return True, ""

    @staticmethod
    def op_route(cls: type[Operation]) -> Route | None:
        """How ops of class `cls` run in a static module, from the planner's own tables: generated (a
        lowering in LOWERINGS, or the flash-attention kernel), a library call, or the reference backend's
        eager op; None when nothing runs it. A lowering may still refuse a case (an element type, a
        shape) and send that kernel to the reference backend; explain() says so per kernel."""
        if cls.has_trait(Attention) or cls in LOWERINGS:
            return Route.GENERATED
        if issubclass(cls, LIBRARY) or "cpu" in getattr(LIBRARY_CALLS.get(cls), "targets", ()):
            return Route.LIBRARY
        return Route.EAGER if cls in OPS else None

    def lower(self, module: ModuleOp, target=None) -> Program:
        if is_dynamic_module(module):
            try:  # size-generic kernels: one compile serves every size
                return self._lower(module)
            except Exception as e:  # noqa: BLE001 - never a wrong answer: per-size code instead
                _log.warning("size-generic lowering failed (%s: %s); lowering once per size instead",
                             type(e).__name__, str(e)[:300])
                return per_size(module, self._lower)
        return self._lower(module)

    def _lower(self, module: ModuleOp) -> Program:
        plan = plan_module(module)
        kernels = compile_plan(plan) if any(_compiled(s) for s in plan.steps) else {}
        fallbacks = sorted({op.name for s in plan.steps if s.kind is StepKind.FALLBACK for op in s.ops
                            if not g.is_check(op)})
        generic = " (size-generic)" if plan.binding is not None else ""
        infos = [{"kernel_id": i, "id": s.func or i, "ops": [o.name.split(".", 1)[-1] for o in s.ops],
                  "route": s.route + (generic if _lowered(s) else ""),
                  "reason": s.route + (f" ({s.note})" if s.note else ""),
                  "source": s.text, "cache_hit": getattr(kernels.get(s.func), "cache_hit", None)}
                 for i, s in enumerate(plan.steps) if s.kind is not StepKind.VIEW]
        source = "\n".join(plan.modules().values())
        return Program(run=build_runner(plan, kernels), source=source, fallbacks=fallbacks, kernels=infos,
                       dynamic=_dynamic_line(plan) if plan.binding is not None else None)


def emit_module(module, target=None) -> str:
    """The MLIR text the CPU backend compiles for `module`'s @forward (all kernels, all opt levels)."""
    plan = plan_module(module)
    out = [f"// opt_level {lvl}\n{text}" for lvl, text in plan.modules().items()]
    out += [f"// {s.route}: compiled once per install (backends/cpu/attention_lib.py), not with this module\n"
            f"{s.prebuilt}" for s in plan.steps if s.prebuilt]
    return "\n".join(out)
