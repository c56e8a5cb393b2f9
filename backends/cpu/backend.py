"""The CPU backend: plan @forward into steps, compile the MLIR kernels in one go, run a flat launch list.

Planning (`plan_module`): every `graph.kernel` region is split into runs of ops that lower to MLIR
(one function each, lower.py/lower_ops.py), attention and block-sparse attention (one generated
flash-attention function each, attention.py; torch SDPA only where that kernel does not apply),
library calls (GEMM, convolution through torch: MKL/OpenBLAS/oneDNN beat generated code there) and
ops without a lowering (the reference backend's eager implementation, listed in `Program.fallbacks`). A top-level op outside any kernel is
a kernel of its own; the layout ops and constants feeding it are pulled into its function, so a
permute or a broadcast becomes an indexing map instead of a copy. Layout ops whose results a
library call or the caller needs run as torch views.

Compiling: all MLIR functions of the model go into one module per LLVM opt level (normally one
module, one compile), through `jit.compile_mlir` and its disk cache, so a second process compiling
the same model loads a shared object instead of running MLIR.

Running: one closure per step over a flat list of values; kernel outputs that never escape to the
caller are preallocated once (shapes are static); each MLIR kernel is called through
`JitKernel.call_unchecked`. Non-contiguous inputs of a kernel are made contiguous at its boundary.
Intermediates and the kernels' memref descriptors are shared between calls, so a Program runs
one call at a time: concurrent calls from several threads take turns on a lock (uncontended, it
adds well under a microsecond to a call; tests/test_threads.py).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field

import torch
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, OpResult, SSAValue

from backends.base import Backend, Program, per_size
from backends.cpu import attention as ATT
from backends.cpu import lower as L
from backends.cpu import lower_schedule as S
from backends.cpu.lower_ops import LAYOUT, LOWERINGS, lowers
from backends.reference import OPS, attention_reference, forward_func
from compiler import log
from compiler.dialects.symbolic import is_dynamic_module
from compiler.dialects.types import shape_of

_log = log.get("backend")

ABSORB = LAYOUT + ("graph.constant", "graph.arange")
LIBRARY = ("graph.linear", "graph.matmul", "graph.conv", "graph.attention")
NORMS = ("graph.layer_norm", "graph.rms_norm")
HEAVY = ("math.floor", "arith.divf", "math.sin", "math.cos", "math.sqrt")


@dataclass
class Step:
    """One launch: an MLIR kernel, a library call, a torch view or a reference (eager) op."""

    route: str
    ops: list[Operation]
    inputs: list[SSAValue]
    outputs: list[SSAValue]
    func: str = ""
    text: str = ""
    schedule: list[str] = field(default_factory=list)
    schedule_kind: str = ""
    arg_types: list[tuple[tuple[int, ...], str]] = field(default_factory=list)
    opt_level: int = 3
    launch: object = None  # generated attention: kernel -> callable over the op's operands
    kernel_id: int | None = None
    note: str = ""
    operand_keys: list[list[SSAValue]] = field(default_factory=list)  # per op, resolved operands
    nhwc_in: list[bool] = field(default_factory=list)  # MLIR step: input i arrives channels-last
    nhwc_out: list[bool] = field(default_factory=list)  # MLIR step: output i is written channels-last


@dataclass
class Plan:
    args: list[SSAValue]
    steps: list[Step]
    returns: list[SSAValue]

    def modules(self) -> dict[int, str]:
        """opt level -> MLIR module text with every kernel compiled at that level."""
        by_level: dict[int, list[Step]] = {}
        for s in self.steps:
            if _compiled(s):
                by_level.setdefault(s.opt_level, []).append(s)
        return {lvl: S.module_text([s.text for s in ss], [s.schedule for s in ss])
                for lvl, ss in sorted(by_level.items())}


# -- planning -----------------------------------------------------------------------------------
class _Planner:
    def __init__(self, module: ModuleOp) -> None:
        self.fn = forward_func(module)
        self.alias: dict[SSAValue, SSAValue] = {}
        self.steps: list[Step] = []
        self.order = {op: i for i, op in enumerate(self.fn.walk())}  # program order, kernels inlined
        self.n_funcs = 0
        # Channels-last: 2-d convolutions run on NHWC data (oneDNN's fast layout, 25-40% faster here at
        # the zoo's sizes); their outputs stay NHWC in memory, the kernels that read them index NHWC,
        # and a kernel output that a convolution reads is written NHWC (its value is a permuted view).
        self.nhwc: set[SSAValue] = set()
        self.conv_inputs = _conv_inputs(self.fn)

    def resolve(self, v: SSAValue) -> SSAValue:
        while v in self.alias:
            v = self.alias[v]
        return v

    def plan(self) -> Plan:
        block = self.fn.body.block
        returns: list[SSAValue] = []
        for op in block.ops:
            if op is block.last_op:
                returns = [self.resolve(v) for v in op.operands]
            elif op.name == "graph.kernel":
                self.kernel(op)
            else:
                self.top(op)
        return Plan(list(block.args), _live(self.steps, returns), returns)

    def step(self, route: str, ops: list[Operation], **kw) -> Step:
        inside = set(ops)
        ins: list[SSAValue] = []
        for op in ops:
            for v in op.operands:
                r = self.resolve(v)
                if not (isinstance(v, OpResult) and v.owner in inside) and r not in ins:
                    ins.append(r)
        outs = [r for op in ops for r in op.results]
        keys = [[self.resolve(v) for v in op.operands] for op in ops]
        return Step(route, ops, ins, outs, operand_keys=keys, **kw)

    def library(self, op: Operation, kid=None) -> Step:
        if _is_conv2d(op):
            self.nhwc.add(op.results[0])
        return self.step(_library_route(op), [op], kernel_id=kid)

    def absorb(self, values: list[SSAValue]) -> list[Operation]:
        """Layout ops and constants that (transitively) produce `values` and that the kernel can
        recompute: they join its function (a broadcast or permute becomes an indexing map, a constant
        an immediate). Only ops whose own operands are at hand (arguments, earlier steps' outputs, or
        themselves recomputed): a layout op inside another kernel may read a value that kernel never
        exported."""
        avail = set(self.fn.body.block.args) | {o for st in self.steps for o in st.outputs}
        memo: dict[SSAValue, bool] = {}

        def can(v: SSAValue) -> bool:
            v = self.resolve(v)
            if v not in memo:
                p = v.owner if isinstance(v, OpResult) else None
                memo[v] = v in avail or (p is not None and p.name in ABSORB and all(can(o) for o in p.operands))
            return memo[v]

        taken: list[Operation] = []
        stack = list(values)
        while stack:
            v = self.resolve(stack.pop())
            p = v.owner if isinstance(v, OpResult) else None
            if p is None or p.name not in ABSORB or p in taken or not all(can(o) for o in p.operands):
                continue
            taken.append(p)
            stack.extend(p.operands)
        return taken

    def top(self, op: Operation) -> None:
        if op.name in ATT.OPS:
            self.steps.append(self.attention(op))
        elif op.name in ABSORB:
            self.steps.append(self.step("view", [op]))
        elif op.name in LIBRARY:
            self.steps.append(self.library(op))
        elif lowers(op):
            absorbed = self.absorb(list(op.operands))
            ops = sorted(absorbed + [op], key=self.order.__getitem__)
            self.steps.append(self.mlir(ops, [op]))
        else:
            self.steps.append(self.step("reference", [op], note="no CPU lowering"))

    def kernel(self, kop: Operation) -> None:
        body = kop.regions[0].block
        for a, v in zip(body.args, kop.operands):
            self.alias[a] = self.resolve(v)
        kid = kop.attributes["kernel_id"].value.data if "kernel_id" in kop.attributes else None
        run: list[Operation] = []
        for op in body.ops:
            if op is body.last_op or not lowers(op):
                self.flush(run, kid)
                run = []
            if op is body.last_op:
                break
            if lowers(op):
                run.append(op)
            elif op.name in ATT.OPS:
                self.steps.append(self.attention(op, kid))
            elif op.name in LIBRARY:
                self.steps.append(self.library(op, kid))
            else:
                self.steps.append(self.step("reference", [op], kernel_id=kid, note="no CPU lowering"))
        for r, y in zip(kop.results, body.last_op.operands):
            self.alias[r] = self.resolve(y)

    def attention(self, op: Operation, kid=None) -> Step:
        """Attention: the generated flash kernel (attention.py), or the route it names instead."""
        p = ATT.plan(op)
        if p.spec is None:
            return self.step(p.route, [op], kernel_id=kid, note=p.note)
        name = f"k{self.n_funcs}"
        self.n_funcs += 1
        return self.step(p.route, [op], kernel_id=kid, func=name, text=ATT.emit(p.spec, name),
                         arg_types=p.arg_types(), launch=p.launcher)

    def flush(self, run: list[Operation], kid) -> None:
        if not run:
            return
        if all(op.name in ABSORB for op in run):
            self.steps += [self.step("view", [op], kernel_id=kid) for op in run]
            return
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
        name = f"k{self.n_funcs}"
        try:
            st = self._build(ops, outs, name, kid)
            self.n_funcs += 1
            return st
        except L.Unsupported as e:
            _log.info("kernel %s falls back to the reference backend: %s", [o.name for o in core], e)
            st = self.step("reference", ops, kernel_id=kid, note=str(e))
            st.outputs = outs
            return st

    def _build(self, ops, outs, name, kid) -> Step:
        st = self.step("mlir", ops, kernel_id=kid, func=name)
        st.outputs = outs
        if any(0 in _type(v)[0] for v in st.inputs + [r for op in ops for r in op.results]):
            # an empty input, output or intermediate: MLIR's tiling would index into nothing
            raise L.Unsupported("an empty tensor: the reference backend runs it (nothing to compute)")
        fb = L.FuncBuilder(name)
        env = {}
        st.nhwc_in = [v in self.nhwc for v in st.inputs]
        for v, cl in zip(st.inputs, st.nhwc_in):
            shape, dt = _type(v)
            # an NHWC tensor read as the NCHW value it holds: a permuted indexing map, no copy
            env[v] = L.reindex(fb.arg(_to_nhwc(shape), dt), shape, _NCHW_OF_NHWC) if cl else fb.arg(shape, dt)
        tail = _output_reshapes(ops, outs)
        for op in ops:
            args = [env[self.resolve(v)] for v in op.operands]
            # a reshape that only feeds the output: write the data in the pre-reshape shape
            vals = args[:1] if op in tail else LOWERINGS[op.name](fb, op, args)
            env.update(zip(op.results, vals))
        st.nhwc_out = [r in self.conv_inputs and env[r].shape == shape_of(r.type) and len(env[r].shape) == 4
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
        st.text, st.arg_types = fb.text(), fb.arg_types
        st.opt_level = _opt_level(st)
        return st


_NCHW_OF_NHWC = [L.Aff.dim(0), L.Aff.dim(2), L.Aff.dim(3), L.Aff.dim(1)]  # NHWC dims in NCHW loop dims
_NHWC_OF_NCHW = [L.Aff.dim(0), L.Aff.dim(3), L.Aff.dim(1), L.Aff.dim(2)]  # NCHW dims in NHWC loop dims


def _to_nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1])


def _is_conv2d(op: Operation) -> bool:
    return op.name == "graph.conv" and len(shape_of(op.results[0].type)) == 4 and \
        str(op.results[0].type.element_type) == "f32"


def _conv_inputs(fn) -> set[SSAValue]:
    """The values (kernel aliases resolved) that a 2-d convolution takes as its input."""
    alias: dict[SSAValue, SSAValue] = {}

    def resolve(v):
        while v in alias:
            v = alias[v]
        return v
    out = set()
    for op in fn.body.block.ops:
        if op.name == "graph.kernel":
            body = op.regions[0].block
            alias.update(zip(body.args, op.operands))
            for inner in body.ops:
                if _is_conv2d(inner):
                    out.add(resolve(inner.operands[0]))
            alias.update(zip(op.results, body.last_op.operands))
        elif _is_conv2d(op):
            out.add(resolve(op.operands[0]))
    return out


def _compiled(s: Step) -> bool:
    """An MLIR function of the plan's module: a lowered kernel or a generated attention."""
    return s.route == "mlir" or s.launch is not None


def _opt_level(st: Step) -> int:
    """LLVM -O0 for vectorized elementwise kernels without heavy arithmetic (memory-bound: 3x
    cheaper to compile) and for a lone layer/rms norm (faster at -O0: notes/cpu-backend-mlir.md);
    -O3 for the rest (polynomial exp/tanh and fused row kernels gain from LLVM's scheduling,
    unscheduled loops need its vectorizer). Measured: add+layer_norm 79-87% of copy at -O0,
    108-117% at -O3."""
    if st.schedule_kind == "row":
        # a lone norm: at O2/O3 LLVM unrolls the row loops and spills (kernels.OPT_LEVEL)
        core = [op.name for op in st.ops if op.name not in ABSORB]
        return 0 if len(core) == 1 and core[0] in NORMS else 3
    heavy = any(w in st.text for w in HEAVY)
    return 3 if st.schedule_kind == "none" or heavy else 0


def _output_reshapes(ops: list[Operation], outs: list[SSAValue]) -> set[Operation]:
    """Reshapes whose result is only a kernel output (same bytes in either shape: no copy)."""
    return {op for op in ops if op.name == "graph.reshape" and op.results[0] in outs
            and all(u.operation not in ops for u in op.results[0].uses)}


def _type(v: SSAValue) -> tuple[tuple[int, ...], str]:
    return shape_of(v.type), str(v.type.element_type)


def _live(steps: list[Step], returns: list[SSAValue]) -> list[Step]:
    """Drop view steps whose results nothing needs (their consumers absorbed them)."""
    needed = set(returns)
    kept = []
    for s in reversed(steps):
        if s.route == "view" and not any(o in needed for o in s.outputs):
            continue
        needed.update(s.inputs)
        kept.append(s)
    return kept[::-1]


def _library_route(op: Operation) -> str:
    if op.name == "graph.linear":
        return "library: torch.addmm" if op.bias is not None else "library: torch.mm"
    return {"graph.matmul": "library: torch.matmul", "graph.conv": "library: torch.conv",
            "graph.attention": "library: F.scaled_dot_product_attention"}[op.name]


def plan_module(module: ModuleOp) -> Plan:
    """Split `module`'s @forward into launch steps (no compilation)."""
    return _Planner(module).plan()


# -- runtime ------------------------------------------------------------------------------------
_TORCH = {"f32": torch.float32, "i1": torch.bool, "i8": torch.int8, "i32": torch.int32, "i64": torch.int64}
_ABI = {"i1": torch.int8}  # bool tensors cross the boundary as bytes


def _library_fn(op: Operation):
    if _is_conv2d(op):
        return _conv_nhwc(OPS[op.name](op))
    if op.name != "graph.linear":
        return OPS[op.name](op) if op.name != "graph.attention" else _attention(op)
    shape = shape_of(op.result.type)
    k = shape_of(op.input.type)[-1]
    if op.bias is not None:
        return lambda x, w, b: torch.addmm(b, x.reshape(-1, k), w.t()).view(shape)
    return lambda x, w: torch.mm(x.reshape(-1, k), w.t()).view(shape)


def _conv_nhwc(conv):
    """A 2-d convolution on channels-last input and weight (output channels-last too).

    The weight's channels-last copy is kept while the same weight tensor, unmodified (same version
    counter), comes back: parameters are converted once, not per call."""
    import weakref

    cache: list = [None, -1, None]  # weakref to the weight, its _version, the converted copy
    cl = torch.channels_last

    def run(x, w, b=None):
        if not x.is_contiguous(memory_format=cl):
            x = x.contiguous(memory_format=cl)
        ref, ver, wc = cache
        if ref is None or ref() is not w or w._version != ver:
            wc = w.contiguous(memory_format=cl)
            cache[:] = [weakref.ref(w), w._version, wc]
        return conv(x, wc, b)
    return run


def _attention(op: Operation):
    scale, causal = op.scale.value.data, op.causal is not None
    return lambda q, k, v, mask=None: attention_reference(q, k, v, mask, scale, causal)


def compile_plan(plan: Plan) -> dict[str, object]:
    """func name -> JitKernel for every MLIR step (one compile_mlir per opt level)."""
    from backends.cpu import jit

    specs = {s.func: [jit.ArgSpec(shape, _ABI.get(dt, _TORCH[dt])) for shape, dt in s.arg_types]
             for s in plan.steps if _compiled(s)}
    kernels: dict[str, object] = {}
    for lvl, text in plan.modules().items():
        names = [s.func for s in plan.steps if _compiled(s) and s.opt_level == lvl]
        first = jit.compile_mlir(text, names[0], opt_level=lvl)
        kernels[names[0]] = first
        keep = first._keepalive  # TODO(jit): a public multi-entry lookup; see the report
        for n in names[1:]:
            if isinstance(keep, ctypes.CDLL):
                ptr = ctypes.cast(getattr(keep, f"_mlir__mlir_ciface_{n}"), ctypes.c_void_p).value
            else:
                ptr = keep[2].raw_lookup(f"_mlir_ciface_{n}")
            kernels[n] = jit.JitKernel(n, ptr, specs[n], keep, cache_hit=first.cache_hit,
                                       compile_seconds=0.0, cache_kind=first.cache_kind)
    return kernels


def _escaping(plan: Plan) -> set[SSAValue]:
    """Values the caller may see: returned ones and those that views/eager ops pass through."""
    esc = set(plan.returns)
    for s in reversed(plan.steps):
        if s.route in ("view", "reference") and any(o in esc for o in s.outputs):
            esc.update(s.inputs)
    return esc


def build_runner(plan: Plan, kernels: dict):
    slots: dict[SSAValue, int] = {a: i for i, a in enumerate(plan.args)}
    n_args = len(plan.args)
    made_contiguous = set()  # values produced by MLIR kernels: contiguous by construction
    esc = _escaping(plan)
    launch = []
    views: list[tuple] = []  # a run of consecutive layout-op steps, launched as one
    for s in plan.steps:
        ins = [slots[v] for v in s.inputs]
        for o in s.outputs:
            slots[o] = len(slots)
        outs = [slots[o] for o in s.outputs]
        if s.route == "view" and s.ops[0].name in LAYOUT:
            views.append((OPS[s.ops[0].name](s.ops[0]), [slots[v] for v in s.operand_keys[0]], outs[0]))
            continue
        if views:
            launch.append(_views_launch(views))
            views = []
        if s.route == "mlir":
            launch.append(_mlir_launch(s, kernels[s.func], ins, outs, esc, made_contiguous))
            made_contiguous.update(s.outputs)
        elif s.launch is not None:
            launch.append(_call_launch(s.launch(kernels[s.func]), [slots[v] for v in s.operand_keys[0]], outs))
        elif len(s.ops) == 1:
            fn = _library_fn(s.ops[0]) if s.route.startswith("library") else OPS[s.ops[0].name](s.ops[0])
            launch.append(_call_launch(fn, [slots[v] for v in s.operand_keys[0]], outs))
        else:
            launch.append(_block_launch(s, slots, outs))
    if views:
        launch.append(_views_launch(views))
    ret = [slots[v] for v in plan.returns]
    n = len(slots)
    lock = threading.Lock()  # preallocated buffers and memref descriptors: one call at a time

    def run(tensors):
        vals = [None] * n
        vals[:n_args] = tensors
        with lock:
            for f in launch:
                f(vals)
        return [vals[i] for i in ret]
    return run


def _mlir_launch(s: Step, k, ins, outs, esc, contiguous):
    n_in = len(s.inputs)
    in_bool = [dt == "i1" for _, dt in s.arg_types[:n_in]]
    nhwc_in = s.nhwc_in or [False] * n_in
    need_contig = [2 if cl else v not in contiguous for v, cl in zip(s.inputs, nhwc_in)]
    # the IR's shapes: a kernel may write an output in its pre-reshape shape (same bytes)
    nhwc_out = s.nhwc_out or [False] * len(s.outputs)
    out_specs = [(_to_nhwc(shape_of(v.type)) if cl else shape_of(v.type), _TORCH[dt], dt == "i1", cl)
                 for v, (_, dt), cl in zip(s.outputs, s.arg_types[n_in:], nhwc_out)]
    # None: allocated per call (the caller may keep it); else reused across calls
    bufs = [None if o in esc else torch.empty(spec[0], dtype=spec[1]) for o, spec in zip(s.outputs, out_specs)]
    call = k.call_unchecked

    def run(vals):
        args = []
        for i, c, b in zip(ins, need_contig, in_bool):
            t = vals[i]
            if c == 2:  # channels-last data, passed as the contiguous NHWC tensor it is
                t = t.permute(0, 2, 3, 1).contiguous()
            elif c:
                t = t.contiguous()
            args.append(t.view(torch.int8) if b else t)
        for o, buf, (shape, dt, b, cl) in zip(outs, bufs, out_specs):
            t = torch.empty(shape, dtype=dt) if buf is None else buf
            vals[o] = t.permute(0, 3, 1, 2) if cl else t
            args.append(t.view(torch.int8) if b else t)
        call(*args)
    return run


def _views_launch(views: list[tuple]):
    """Consecutive reshape/permute/expand/slice steps as one launch.

    Run op by op, they cost a Python call and a torch view each (~3 us; attention's head split is 9 of
    them). Shapes are static, so when the tensors coming in have the strides and offsets seen before,
    every result is the same `as_strided` view of the same input as last time: the first call (and any
    call with new strides) runs the ops and records, for each result, which input's storage it views and
    how; a result that is not a view of an input (a reshape that had to copy) keeps the op-by-op path.
    """
    root: dict[int, int] = {}  # result slot -> the input slot whose data it shows (layout ops have one operand)
    for _, ins, o in views:
        root[o] = root.get(ins[0], ins[0])
    ext = sorted({r for r in root.values()})
    state: dict = {"key": None, "recipe": None}

    def slow(vals):
        for fn, ins, o in views:
            vals[o] = fn(*[vals[i] for i in ins])

    def record(vals, key):
        recipe = []
        for _, _, o in views:
            t, i = vals[o], root[o]
            if t.untyped_storage().data_ptr() != vals[i].untyped_storage().data_ptr() or t.dtype != vals[i].dtype:
                recipe = None
                break
            recipe.append((o, i, tuple(t.shape), t.stride(), t.storage_offset()))
        state["key"], state["recipe"] = key, recipe

    def run(vals):
        key = tuple((vals[i].stride(), vals[i].storage_offset()) for i in ext)
        recipe = state["recipe"]
        if recipe is not None and key == state["key"]:
            for o, i, size, stride, off in recipe:
                vals[o] = vals[i].as_strided(size, stride, off)
            return
        slow(vals)
        if key != state["key"]:
            record(vals, key)
    return run


def _call_launch(fn, ins, outs):
    if len(outs) == 1:
        (o,) = outs

        def run1(vals):
            vals[o] = fn(*[vals[i] for i in ins])
        return run1

    def run(vals):
        for j, t in zip(outs, fn(*[vals[i] for i in ins])):
            vals[j] = t
    return run


def _block_launch(s: Step, slots: dict, outs):
    """An eager run of several ops (a kernel that could not be lowered to MLIR)."""
    fns = [(OPS[op.name](op), op.results, keys) for op, keys in zip(s.ops, s.operand_keys)]
    ins = [(v, slots[v]) for v in s.inputs]
    wanted = list(zip(s.outputs, outs))

    def run(vals):
        env = {v: vals[i] for v, i in ins}
        for fn, results, keys in fns:
            res = fn(*[env[v] for v in keys])
            env.update(zip(results, res if isinstance(res, list) else [res]))
        for v, o in wanted:
            vals[o] = env[v]
    return run


class CpuBackend(Backend):
    """Generated native code for the CPU: linalg -> LLVM through torch-mlir's MLIR; GEMMs via torch."""

    name = "cpu"
    targets = ("cpu",)

    def supports(self, op: Operation) -> bool:
        return op.name in LOWERINGS or op.name in LIBRARY or op.name in ATT.OPS

    def lower(self, module: ModuleOp, target=None) -> Program:
        if is_dynamic_module(module):  # kernels are generated for static sizes: one lowering per size
            return per_size(module, lambda m: self.lower(m, target))
        plan = plan_module(module)
        kernels = compile_plan(plan) if any(_compiled(s) for s in plan.steps) else {}
        fallbacks = sorted({op.name for s in plan.steps if s.route == "reference" for op in s.ops})
        infos = [{"kernel_id": i, "id": s.func or i, "ops": [o.name.removeprefix("graph.") for o in s.ops],
                  "route": s.route, "reason": s.route + (f" ({s.note})" if s.note else ""),
                  "source": s.text, "cache_hit": getattr(kernels.get(s.func), "cache_hit", None)}
                 for i, s in enumerate(plan.steps) if s.route != "view"]
        source = "\n".join(plan.modules().values())
        return Program(run=build_runner(plan, kernels), source=source, fallbacks=fallbacks, kernels=infos)
