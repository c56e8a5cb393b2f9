"""Running a CPU plan: compile its MLIR functions in one go, then hand the steps to the shared executor.

The executor (backends/lowering/executor.py) owns the value slots, the liveness buffer plan, size bindings
(one instance per binding of a dynamic module), replaying what follows from the sizes alone, and one call at
a time. This module turns each step into a launch: an MLIR kernel called through `JitKernel.call_unchecked`
(`call_keyed` for a size-generic one, the symbols' values after its tensors) writing into pooled or fresh
buffers; a library call; a run of torch views; a reference op. Non-contiguous inputs of a kernel are made
contiguous at its boundary (channels-last ones are passed as the NHWC tensors they are). Before each call,
the kernels' thread team follows `torch.get_num_threads()` (threads.py). The plan itself (which op runs where)
is backend.py's.
"""

from __future__ import annotations

import ctypes

import torch
from xdsl.ir import Operation

from solder.backends.cpu import lower_schedule as S
from solder.backends.cpu import symdims, threads
from solder.backends.cpu.lower_ops import long_row
from solder.backends.cpu.plan import Plan, Step, _compiled, _is_conv2d, _to_nhwc
from solder.backends.lowering.executor import Context, Executor
from solder.backends.lowering.library import library_call
from solder.backends.lowering.steps import StepKind
from solder.backends.reference import OPS, attention_reference
from solder.backends.weights import Stack
from solder.compiler.dialects import graph as g
from solder.compiler.dialects import symbolic
from solder.compiler.dialects.traits import ViewLike
from solder.compiler.dialects.types import dims_of
from solder.compiler import log

_log = log.get("backend")

_TORCH = {"f32": torch.float32, "i1": torch.bool, "i8": torch.int8, "i32": torch.int32, "i64": torch.int64}
_ABI = {"i1": torch.int8}  # bool tensors cross the boundary as bytes


def _library_fn(op: Operation, hoisted: bool = False):
    if hoisted:  # the planner's HOISTED steps: stacked weights, held once (backends/weights.py)
        return Stack(_concat_dim(op))
    call = library_call(op, "cpu")
    if call is not None:
        return call.make(op)
    if _is_conv2d(op):
        return _conv_nhwc(OPS[type(op)](op))
    if not isinstance(op, g.LinearOp):
        return OPS[type(op)](op) if not isinstance(op, g.AttentionOp) else _attention(op)
    # torch's linear: one call into ATen (addmm/mm on the flattened rows, as eager runs it) instead of
    # reshape + t + addmm + view from Python (~2 us less per GEMM at the zoo's sizes)
    return torch._C._nn.linear


def _is_library(s: Step) -> bool:
    """A step that calls a library op (GEMM, convolution, SDPA, a hoisted concatenation), not an eager one."""
    return s.kind in (StepKind.EXTERN, StepKind.HOISTED)


def _conv_nhwc(conv):
    """A 2-d convolution on channels-last input (output channels-last too).

    The weight is passed as the module holds it: a channels-last copy kept between calls would miss writes
    that bump no version counter (`w.data.copy_(t)`); torch reorders it for oneDNN as eager does."""

    def run(x, w, b=None):
        if not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return conv(x, w, b)
    return run


def _concat_dim(op: Operation) -> int:
    d = op.dim.value.data
    return d + len(dims_of(op.results[0].type)) if d < 0 else d



def _attention(op: Operation):
    scale, causal = op.scale.value.data, op.causal is not None
    return lambda q, k, v, mask=None: attention_reference(q, k, v, mask, scale, causal)


def compile_plan(plan: Plan) -> dict[str, object]:
    """func name -> JitKernel for every MLIR step (one compile_mlir per opt level)."""
    from solder.backends.cpu import jit

    specs = {s.func: [jit.ArgSpec(tuple(n if isinstance(n, int) else -1 for n in shape), _ABI.get(dt, _TORCH[dt]))
                      for shape, dt in s.arg_types] + [jit.ArgSpec((), None)] * len(s.symbols)
             for s in plan.steps if _compiled(s)}
    kernels: dict[str, object] = {}
    for lvl, text in plan.modules().items():
        steps = [s for s in plan.steps if _compiled(s) and s.opt_level == lvl]
        names = [s.func for s in steps]
        try:
            first = jit.compile_mlir(text, names[0], opt_level=lvl)
        except jit.JitError as e:
            if len(steps) == 1 and not steps[0].schedule:
                raise
            _log.info("cpu: compiling %d kernels together failed (%s); compiling each on its own", len(steps), e)
            for s in steps:
                kernels[s.func] = _compile_alone(jit, s, lvl)
            continue
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


def _compile_alone(jit, s: Step, lvl: int):
    """One kernel in a module of its own; if its schedule's lowering fails, without the schedule (plain loops:
    slower, correct). LLVM translation fails on a kernel whose vectorized loads read an i64 slice with step 2
    (squeezeformer's mask kernel) while the loop nest alone compiles."""
    try:
        return jit.compile_mlir(S.module_text([s.text], [s.schedule]), s.func, opt_level=lvl)
    except jit.JitError as e:
        if not s.schedule:
            raise
        _log.info("cpu: %s with its schedule failed (%s); compiling its plain loops", s.func, e)
        return jit.compile_mlir(S.module_text([s.text], [[]]), s.func, opt_level=lvl)


def build_runner(plan: Plan, kernels: dict) -> Executor:
    """The callable that runs `plan` (its MLIR functions compiled into `kernels`)."""
    binding = _CallBinding(plan.binding) if plan.binding is not None else None
    sync = threads.sync_before_call if threads.active() else None  # parallel kernels: torch's thread count
    return Executor(plan.steps, plan.args, plan.returns, lambda ctx: _launches(ctx, kernels), binding=binding,
                    before_call=sync, device=torch.device("cpu"))


def _launches(ctx: Context, kernels: dict) -> list:
    """ctx -> [(step indices, fn(vals, bufs))]: one launch per step, consecutive view steps as one."""
    slots, env = ctx.slots, ctx.env
    contiguous = set()  # values produced by MLIR kernels: contiguous by construction
    out = []
    views: list[tuple] = []  # a run of consecutive layout-op steps, launched as one
    view_idx: list[int] = []
    for k, s in enumerate(ctx.steps):
        outs = [slots[o] for o in s.outs]
        if s.kind is StepKind.VIEW and s.ops[0].has_trait(ViewLike):
            views.append((_bound(OPS[type(s.ops[0])](s.ops[0]), env), [slots[v] for v in s.operand_keys[0]], outs[0]))
            view_idx.append(k)
            continue
        if views:
            out.append((view_idx, _views_launch(views)))
            views, view_idx = [], []
        if s.kind.generated and env is not None and any(long_row(op, env) for op in s.ops):
            # a size-generic kernel's row is too long at these sizes for one fp32 pass: torch's ops run it
            f = _block_launch(s, slots, outs, env)
        elif s.kind.generated:
            f = _mlir_launch(s, k, kernels[s.func], ctx, contiguous)
            contiguous.update(s.outs)
        elif s.launch is not None:  # an attention kernel (generated, or the install's size-generic one)
            f = _call_launch(s.launch(kernels.get(s.func)), [slots[v] for v in s.operand_keys[0]], outs)
        elif len(s.ops) == 1:
            fn = _library_fn(s.ops[0], s.kind is StepKind.HOISTED) if _is_library(s) else OPS[type(s.ops[0])](s.ops[0])
            f = _call_launch(_bound(fn, env), [slots[v] for v in s.operand_keys[0]], outs)
        else:
            f = _block_launch(s, slots, outs, env)
        out.append(([k], f))
    if views:
        out.append((view_idx, _views_launch(views)))
    return out


def _bound(fn, env):
    """`fn` with a dynamic module's binding passed where it asks for one (`wants_env`)."""
    if env is None or not getattr(fn, "wants_env", False):
        return fn
    return lambda *xs: fn(*xs, env=env)


def _mlir_launch(s: Step, k: int, kern, ctx: Context, contiguous: set):
    """An MLIR kernel: inputs made contiguous (channels-last ones passed as NHWC), outputs written into the
    executor's pooled buffers or fresh ones (what the caller may keep), in the kernel's argument shape."""
    slots, env = ctx.slots, ctx.env
    ins = [slots[v] for v in s.ins]
    n_in = len(s.ins)
    in_bool = [dt == "i1" for _, dt in s.arg_types[:n_in]]
    nhwc_in = s.nhwc_in or [False] * n_in
    need_contig = [2 if cl else v not in contiguous for v, cl in zip(s.ins, nhwc_in)]
    nhwc_out = s.nhwc_out or [False] * len(s.outs)
    specs = []
    for j, (v, (shape, dt), cl) in enumerate(zip(s.outs, s.arg_types[n_in:], nhwc_out)):
        seen = ctx.shape(v)  # the IR's shape; the kernel may write a pre-reshape or NHWC shape (same bytes)
        alloc = _to_nhwc(seen) if cl else seen if env is None else tuple(symbolic_shape(shape, env))
        specs.append((slots[v], (k, j) if ctx.pooled(v) else None, alloc, seen, _TORCH[dt], dt == "i1", cl))
    if env is None or not hasattr(kern, "call_keyed"):
        call = kern.call_unchecked
    else:
        keyed, key, symvals = kern.call_keyed, ctx.key, [env[n] for n in s.symbols]

        def call(*args):
            keyed(key, *args, *symvals)

    def out_pair(t, alloc, seen, b, cl):
        """(the tensor the kernel writes, the value later steps see) of an output buffer `t`."""
        if tuple(t.shape) != alloc:
            t = t.view(alloc)
        val = t.permute(0, 3, 1, 2) if cl else t if alloc == seen else t.view(seen)
        return (t.view(torch.int8) if b else t), val

    pooled: list = [None, None]  # the buffers object the pooled outputs' pairs were made for, and the pairs

    def run(vals, bufs):
        args = []
        for i, c, b in zip(ins, need_contig, in_bool):
            t = vals[i]
            if c == 2:  # channels-last data, passed as the contiguous NHWC tensor it is
                t = t.permute(0, 2, 3, 1).contiguous()
            elif c:
                t = t.contiguous()
            args.append(t.view(torch.int8) if b else t)
        if pooled[0] is not bufs:
            pooled[:] = [bufs, [out_pair(bufs[key], alloc, seen, b, cl) if key is not None else None
                                for _, key, alloc, seen, _, b, cl in specs]]
        for (o, key, alloc, seen, dt, b, cl), pair in zip(specs, pooled[1]):
            if pair is None:  # an output the caller may keep: fresh each call
                pair = out_pair(torch.empty(alloc, dtype=dt), alloc, seen, b, cl)
            vals[o] = pair[1]
            args.append(pair[0])
        call(*args)
    return run


def symbolic_shape(shape, env) -> tuple[int, ...]:
    """A kernel argument's shape (ints; size expressions in a dynamic module) under the binding `env`."""
    if env is None:
        return tuple(shape)
    return tuple(symdims.shape_fn(tuple(shape))(env))


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

    def run(vals, bufs):
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
    if not outs:  # an effect only (an assertion on data)
        def run0(vals, bufs):
            fn(*[vals[i] for i in ins])
        return run0
    if len(outs) == 1:
        (o,) = outs

        def run1(vals, bufs):
            vals[o] = fn(*[vals[i] for i in ins])
        return run1

    def run(vals, bufs):
        for j, t in zip(outs, fn(*[vals[i] for i in ins])):
            vals[j] = t
    return run


def _block_launch(s: Step, slots: dict, outs, env=None):
    """An eager run of several ops (a kernel that could not be lowered to MLIR)."""
    fns = [(_bound(OPS[type(op)](op), env), op.results, keys) for op, keys in zip(s.ops, s.operand_keys)]
    ins = [(v, slots[v]) for v in s.ins]
    wanted = list(zip(s.outs, outs))

    def run(vals, bufs):
        e = {v: vals[i] for v, i in ins}
        for fn, results, keys in fns:
            res = fn(*[e[v] for v in keys])
            e.update(zip(results, res if isinstance(res, list) else [res]))
        for v, o in wanted:
            vals[o] = e[v]
    return run


# -- dynamic modules ------------------------------------------------------------------------------
class _CallBinding:
    """The plan's binding, checked once per distinct shape of the arguments that carry a symbol.

    Those arguments' sizes give every symbol (bounds, repeated symbols and export's constraints checked by
    `symbolic.Binding`, with the static dims of the same arguments); the other arguments (parameters) are
    trusted to have their static shapes, as a static plan trusts all of its arguments."""

    def __init__(self, b: symbolic.Binding) -> None:
        self.args = sorted({i for i, _ in b.reads.values()} | {i for i, _, _ in b.checks})
        keep = set(self.args)
        self.check = symbolic.Binding(b.symbols, b.reads, b.checks, [r for r in b.static if r[0] in keep], b.assumes)
        self.last: tuple = (None, None)

    def __call__(self, tensors: list) -> dict[str, int]:
        key = tuple(tensors[i].shape for i in self.args)
        last = self.last
        if key == last[0]:
            return last[1]
        env = self.check(tensors)
        self.last = (key, env)
        return env
