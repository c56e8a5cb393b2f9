"""Running a CPU plan: compile its MLIR functions in one go, then one closure per step over a flat list of values.

Kernel outputs that never escape to the caller are preallocated once (shapes are static); each MLIR kernel is
called through `JitKernel.call_unchecked`. Non-contiguous inputs of a kernel are made contiguous at its boundary
(channels-last ones are passed as the NHWC tensors they are). Intermediates and the kernels' memref descriptors
are shared between calls, so a Program runs one call at a time: concurrent calls from several threads take turns
on a lock (uncontended, it adds well under a microsecond to a call; tests/test_threads.py). The plan itself
(which op runs where) is backend.py's.

A dynamic module's plan (size-generic kernels, `plan.binding` set) binds the shape symbols once per call (the
binding also checks the bounds) and keeps the binding in the value list's last slot: output shapes are evaluated
from it, kernels take the symbols' values after their tensors, reference ops that need sizes read it, and an
intermediate buffer is kept while its size stays the same. Steps that read no argument (position ids, causal
masks: what a static compile folds into constants) run once per binding and are replayed while it holds.
"""

from __future__ import annotations

import ctypes
import threading

import torch
from xdsl.ir import Operation, SSAValue

from solder.backends.cpu import symdims, threads
from solder.backends.cpu.plan import Plan, Step, _compiled, _is_conv2d, _lowered, _to_nhwc
from solder.backends.lowering.library import library_call
from solder.backends.reference import OPS, attention_reference
from solder.backends.weights import Stack
from solder.backends.routes import Route
from solder.compiler.dialects import graph as g
from solder.compiler.dialects import symbolic
from solder.compiler.dialects.traits import ViewLike
from solder.compiler.dialects.types import dims_of, shape_of

_TORCH = {"f32": torch.float32, "i1": torch.bool, "i8": torch.int8, "i32": torch.int32, "i64": torch.int64}
_ABI = {"i1": torch.int8}  # bool tensors cross the boundary as bytes


def _library_fn(op: Operation):
    call = library_call(op, "cpu")
    if call is not None:
        return call.make(op)
    if isinstance(op, g.ConcatOp):  # the planner's HOISTED steps: stacked weights
        return Stack(_concat_dim(op))
    if _is_conv2d(op):
        return _conv_nhwc(OPS[type(op)](op))
    if not isinstance(op, g.LinearOp):
        return OPS[type(op)](op) if not isinstance(op, g.AttentionOp) else _attention(op)
    # torch's linear: one call into ATen (addmm/mm on the flattened rows, as eager runs it) instead of
    # reshape + t + addmm + view from Python (~2 us less per GEMM at the zoo's sizes)
    return torch._C._nn.linear


def _is_library(s: Step) -> bool:
    """A step that calls a library op (GEMM, convolution, SDPA, a hoisted concatenation), not an eager one."""
    return s.kind in (Route.LIBRARY, Route.HOISTED)


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
        if s.kind in (Route.VIEW, Route.EAGER) and any(o in esc for o in s.outputs):
            esc.update(s.inputs)
    return esc


def build_runner(plan: Plan, kernels: dict):
    if plan.binding is not None:
        return _dynamic_runner(plan, kernels)
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
        if s.kind is Route.VIEW and s.ops[0].has_trait(ViewLike):
            views.append((OPS[type(s.ops[0])](s.ops[0]), [slots[v] for v in s.operand_keys[0]], outs[0]))
            continue
        if views:
            launch.append(_views_launch(views))
            views = []
        if _lowered(s):
            launch.append(_mlir_launch(s, kernels[s.func], ins, outs, esc, made_contiguous))
            made_contiguous.update(s.outputs)
        elif s.launch is not None:
            launch.append(_call_launch(s.launch(kernels.get(s.func)), [slots[v] for v in s.operand_keys[0]], outs))
        elif len(s.ops) == 1:
            fn = _library_fn(s.ops[0]) if _is_library(s) else OPS[type(s.ops[0])](s.ops[0])
            launch.append(_call_launch(fn, [slots[v] for v in s.operand_keys[0]], outs))
        else:
            launch.append(_block_launch(s, slots, outs))
    if views:
        launch.append(_views_launch(views))
    ret = [slots[v] for v in plan.returns]
    n = len(slots)
    lock = threading.Lock()  # preallocated buffers and memref descriptors: one call at a time
    sync = threads.sync if threads.active() else None  # parallel kernels: torch's thread count, per call

    def run(tensors):
        vals = [None] * n
        vals[:n_args] = tensors
        if sync is not None:
            sync()
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


def _block_launch(s: Step, slots: dict, outs, envi: int | None = None):
    """An eager run of several ops (a kernel that could not be lowered to MLIR); `envi`: the slot of a
    dynamic module's size binding, for the ops that need it."""
    fns = [(OPS[type(op)](op), op.results, keys) for op, keys in zip(s.ops, s.operand_keys)]
    cell: list = [None]  # a dynamic module's binding, set per call
    if envi is not None:
        fns = [((lambda *xs, _f=fn: _f(*xs, env=cell[0])) if getattr(fn, "wants_env", False) else fn, r, k)
               for fn, r, k in fns]
    ins = [(v, slots[v]) for v in s.inputs]
    wanted = list(zip(s.outputs, outs))

    def run(vals):
        env = {v: vals[i] for v, i in ins}
        for fn, results, keys in fns:
            res = fn(*[env[v] for v in keys])
            env.update(zip(results, res if isinstance(res, list) else [res]))
        for v, o in wanted:
            vals[o] = env[v]
    if envi is None:
        return run

    def run_bound(vals):
        cell[0] = vals[envi]
        run(vals)
    return run_bound


# -- dynamic modules: size-generic kernels ----------------------------------------------------------
def _dynamic_runner(plan: Plan, kernels: dict):
    """`build_runner` for a plan with symbolic sizes: the binding of the call's sizes sits in the last slot."""
    slots: dict[SSAValue, int] = {a: i for i, a in enumerate(plan.args)}
    n_args = len(plan.args)
    made_contiguous = set()
    esc = _escaping(plan)
    launch = []
    for s in plan.steps:
        for o in s.outputs:
            slots[o] = len(slots)
    envi = len(slots)  # the binding (a dict), then the tuple of its values
    sized = _size_only(plan, esc)
    for k, s in enumerate(plan.steps):
        ins, outs = [slots[v] for v in s.inputs], [slots[o] for o in s.outputs]
        f = _dynamic_launch(s, kernels, slots, ins, outs, esc, made_contiguous, envi)
        launch.append(_once_per_binding(f, outs, envi) if k in sized else f)
        if _lowered(s):
            made_contiguous.update(s.outputs)
    ret = [slots[v] for v in plan.returns]
    n = envi + 2
    bind = _CallBinding(plan.binding)
    lock = threading.Lock()  # intermediates kept between calls: one call at a time
    sync = threads.sync if threads.active() else None  # parallel kernels: torch's thread count, per call

    def run(tensors):
        vals = [None] * n
        vals[:n_args] = tensors
        if sync is not None:
            sync()
        env = vals[envi] = bind(tensors)  # ShapeBindError for sizes outside the compiled bounds
        vals[envi + 1] = tuple(env.values())
        with lock:
            for f in launch:
                f(vals)
        return [vals[i] for i in ret]
    return run


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


def _dynamic_launch(s: Step, kernels: dict, slots: dict, ins, outs, esc, contiguous, envi):
    """One step of a dynamic plan as a launch."""
    if _lowered(s):
        return _mlir_launch_dynamic(s, kernels[s.func], ins, outs, esc, contiguous, envi)
    if s.kind is Route.VIEW and isinstance(s.ops[0], (g.ReshapeOp, g.ExpandOp)) and \
            _symbolic_sizes(dims_of(s.ops[0].results[0].type)):
        return _view_launch_dynamic(s.ops[0], slots[s.operand_keys[0][0]], outs[0], envi)
    if len(s.ops) == 1:
        op = s.ops[0]
        if s.launch is not None:  # the install's size-generic attention, sizes read per call
            fn = s.launch(None)
        else:
            fn = _library_fn(op) if _is_library(s) else OPS[type(op)](op)
        return _env_launch(fn, [slots[v] for v in s.operand_keys[0]], outs, envi)
    return _block_launch(s, slots, outs, envi)


def _size_only(plan: Plan, esc: set) -> set[int]:
    """Indices of the steps whose results follow from the sizes alone: no argument reaches them (arange,
    constants, what is computed from those), no eager op whose result could differ between calls
    (`graph.extern`: a random op), and no result the caller receives (it may write to it)."""
    known: set = set()
    steps = set()
    for k, s in enumerate(plan.steps):
        if all(v in known for v in s.inputs) and not any(isinstance(op, g.ExternOp) for op in s.ops):
            known.update(s.outputs)
            if not any(o in esc for o in s.outputs):
                steps.add(k)
    return steps


def _once_per_binding(launch, outs: list[int], envi: int):
    """`launch`, run when the binding changes; its results replayed while it holds."""
    memo: list = [None, None]

    def run(vals):
        key = vals[envi + 1]
        if key == memo[0]:
            for o, t in zip(outs, memo[1]):
                vals[o] = t
            return
        launch(vals)
        memo[:] = [key, [vals[o] for o in outs]]
    return run


def _symbolic_sizes(dims: tuple) -> bool:
    """Dims with size expressions (and no `?` without one): sizes computable from the binding."""
    return not symdims.is_static(dims) and "?" not in dims


def _env_launch(fn, ins, outs, envi):
    """A torch call (view, library, reference op); ops whose sizes depend on the symbols get the binding."""
    if getattr(fn, "wants_env", False):
        call = fn
        fn = None

        def with_env(vals):
            return call(*[vals[i] for i in ins], env=vals[envi])
    else:
        def with_env(vals):
            return fn(*[vals[i] for i in ins])
    if len(outs) == 1:
        (o,) = outs

        def run1(vals):
            vals[o] = with_env(vals)
        return run1

    def run(vals):
        for j, t in zip(outs, with_env(vals)):
            vals[j] = t
    return run


def _mlir_launch_dynamic(s: Step, k, ins, outs, esc, contiguous, envi):
    """`_mlir_launch` for a size-generic kernel: output shapes from the binding, the symbols after the tensors."""
    n_in = len(s.inputs)
    in_bool = [dt == "i1" for _, dt in s.arg_types[:n_in]]
    nhwc_in = s.nhwc_in or [False] * n_in
    need_contig = [2 if cl else v not in contiguous for v, cl in zip(s.inputs, nhwc_in)]
    nhwc_out = s.nhwc_out or [False] * len(s.outputs)
    # allocated in the kernel's argument shape (channels-last, or the shape before a reshape that only
    # feeds the output), then seen as the IR's value
    out_specs = [(symdims.shape_fn(shape), _TORCH[dt], dt == "i1", cl, v not in esc,
                  None if cl or tuple(shape) == dims_of(v.type) else symdims.shape_fn(dims_of(v.type)))
                 for v, (shape, dt), cl in zip(s.outputs, s.arg_types[n_in:], nhwc_out)]
    kept: list = [None] * len(outs)  # per output that never escapes: the buffer of the last size seen
    syms = list(s.symbols)
    call = getattr(k, "call_keyed", None)
    if call is None:  # every argument static (sizes the binding does not change)
        unkeyed = k.call_unchecked

        def call(key, *args):
            unkeyed(*args)
    last: list = [None, None, None]  # binding key, output shapes (allocated, seen) and symbol values for it

    def sized(key, env):
        last[:] = [key, [(f(env), None if g is None else g(env)) for f, _, _, _, _, g in out_specs],
                   [env[n] for n in syms]]
        return last

    def run(vals):
        key = vals[envi + 1]
        _, shapes, symvals = last if key == last[0] else sized(key, vals[envi])
        args = []
        for i, c, b in zip(ins, need_contig, in_bool):
            t = vals[i]
            if c == 2:
                t = t.permute(0, 2, 3, 1).contiguous()
            elif c:
                t = t.contiguous()
            args.append(t.view(torch.int8) if b else t)
        for j, (o, (_, dt, b, cl, keep, _), (shape, seen)) in enumerate(zip(outs, out_specs, shapes)):
            t = kept[j]
            if t is None or t.shape != shape:
                t = torch.empty(shape, dtype=dt)
                if keep:
                    kept[j] = t
            vals[o] = t.permute(0, 3, 1, 2) if cl else t if seen is None else t.view(seen)
            args.append(t.view(torch.int8) if b else t)
        call(key, *args, *symvals)
    return run


def _view_launch_dynamic(op: Operation, i: int, o: int, envi: int):
    """A reshape or expand to a symbolic shape, its sizes evaluated once per binding."""
    shape_of_env = symdims.shape_fn(dims_of(op.results[0].type))
    last: list = [None, None]
    reshape = isinstance(op, g.ReshapeOp)

    def run(vals):
        key = vals[envi + 1]
        if key != last[0]:
            last[:] = [key, shape_of_env(vals[envi])]
        vals[o] = vals[i].reshape(last[1]) if reshape else vals[i].expand(last[1])
    return run
