"""Capture: `torch.export` a model for the observed inputs, decomposing only what the importer cannot take.

`export()` alone keeps high-level ATen ops whole (linear, layer_norm, softmax,
scaled_dot_product_attention, ...), which is what the passes want to see. A full
`run_decompositions()` is a second trace that costs more than the export itself
(shared/notes/compile-time.md), so it runs only when the graph holds an op that the importer has no
entry for and PyTorch has a decomposition for; then only those ops are decomposed.

`export()` is not functionalized: in-place ops (`x.mul_(3)`, `x[0] = 5`, `self.cache[:, pos] = k`) stay in
its graph as they are, and a compiled program that reorders, merges or drops them gives wrong answers.
When the graph holds one, capture runs `run_decompositions` (with no more decompositions than above),
which functionalizes it: every op becomes pure, and the graph signature's BUFFER_MUTATION and
USER_INPUT_MUTATION outputs carry the values export writes back into buffers and inputs, which the
importer turns into `graph.writes` results. Functionalizing keeps `KEEP_WHOLE` ops whole except
`batch_norm`, which becomes `_native_batch_norm_legit_no_training` (the importer takes both).
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.utils._pytree as pytree

from solder.compiler import log
from solder.compiler.errors import CaptureError

_log = log.get("capture")
# torch.export is not thread-safe (module-level tracer state: "CURRENT_PATCHER is None"): one capture
# at a time per process. Re-entrant for a model whose forward compiles another model.
_EXPORT_LOCK = threading.RLock()

_GC_LOCK = threading.Lock()
_gc_depth = 0
_gc_was_enabled = True


@contextmanager
def gc_paused():
    """No cyclic garbage collection while a compile runs.

    A full collection on a heap holding torch (and transformers) costs 0.25-0.4 s on this machine's kind,
    and a compile allocates enough to trigger one; the objects a compile leaves behind are collected by the
    next ordinary collection after it. Nests, and is safe when several threads compile: the caller's
    setting comes back when the last compile ends.
    """
    global _gc_depth, _gc_was_enabled
    with _GC_LOCK:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()


# Ops the importer takes whole even though PyTorch could decompose them: the passes want them intact.
KEEP_WHOLE = (
    "aten.softmax.int", "aten.log_softmax.int", "aten.layer_norm.default", "aten.rms_norm.default",
    "aten.scaled_dot_product_attention.default", "aten.linear.default", "aten.matmul.default",
    "aten.conv2d.default", "aten.batch_norm.default", "aten.gelu.default", "aten.silu.default",
)
RECURRENT = tuple(f"aten.{rnn}.{form}" for rnn in ("lstm", "gru", "rnn_tanh", "rnn_relu") for form in ("input", "data"))
"""Recurrent layers stay one op (run by torch's fused kernels as an extern): their decomposition unrolls every
time step of every layer, tens of thousands of ops for a 512-step LSTM, and compiling that takes minutes."""


@dataclass
class Captured:
    """An exported program plus how long capture took and which ops were decomposed.

    A dynamic capture (`dynamic` given) exports the model wrapped as `_FlatInputs`: its inputs are the
    flat pytree leaves of (args, kwargs), its state names carry the `prefix` "m.", and `refused` lists
    the (leaf, dim) pairs asked to be dynamic that export specialized to a constant.
    """

    program: torch.export.ExportedProgram
    seconds: float
    decomposed: tuple[str, ...]
    flat: bool = False
    prefix: str = ""
    refused: tuple[tuple[int, int], ...] = ()
    same_as_input: dict[int, int] = field(default_factory=dict)
    """For a model that mutates inputs or buffers: user output index -> input spec index, for each output
    that eager returns as that (mutated) input or buffer itself (`x.mul_(3); return x`)."""
    values: dict[int, object] = field(default_factory=dict)
    """Flat leaf index -> value, for the one-element tensor inputs whose value the model read into Python: the
    program holds for these values only."""


class _FlatInputs(torch.nn.Module):
    """`model` called with the flat leaves of its (args, kwargs): `dynamic_shapes` then is one spec per leaf
    (export's own matching of specs to `**kwargs` fails for forward(*args, **kwargs) models).

    `values`: leaf index -> the example's value, for one-element tensor leaves. Where the model reads one into
    Python (`eps.item()`, `float(t)`, `if t:`), the trace gets that value as a constant instead of an unbacked
    symbol that export cannot branch on (GraphNet graphs pass every batch-norm `eps` as a 0-d tensor and call
    `.item()` on it); the leaves read are collected in `log`, and the compiled program holds for those values
    only (the runtime checks them per call)."""

    def __init__(self, model: torch.nn.Module, spec, values: dict[int, object] | None = None):
        super().__init__()
        self.m = model
        self.spec = spec
        self.values = values or {}
        self.log = _ReadLog()  # not a dict attribute: export restores those after tracing

    def forward(self, *leaves):
        args, kwargs = pytree.tree_unflatten(list(leaves), self.spec)
        if not self.values:
            return self.m(*args, **kwargs)
        watched = {id(leaves[i]): i for i in self.values}
        with _ValueReads(watched, self.values, self.log.read):
            return self.m(*args, **kwargs)


class _ReadLog:
    """The leaves `_ValueReads` answered: leaf index -> value."""

    def __init__(self):
        self.read: dict[int, object] = {}


_READS = {torch.Tensor.item: lambda v: v, torch.Tensor.__float__: float, torch.Tensor.__int__: int,
          torch.Tensor.__index__: int, torch.Tensor.__bool__: bool, torch.Tensor.tolist: lambda v: v}
"""Tensor methods that hand a value to Python, with what each returns for a one-element tensor's value."""


class _ValueReads(torch.overrides.TorchFunctionMode):
    """Answers `_READS` calls on the watched tensors with the example's value, and records which were read."""

    def __init__(self, watched: dict[int, int], values: dict[int, object], read: dict[int, object]):
        super().__init__()
        self.watched, self.values, self.read = watched, values, read

    def __torch_function__(self, func, types, args=(), kwargs=None):
        conv = _READS.get(func)
        if conv is not None and args and id(args[0]) in self.watched:
            i = self.watched[id(args[0])]
            self.read[i] = self.values[i]
            v = conv(self.values[i])
            return [v] * args[0].dim() if func is torch.Tensor.tolist and args[0].dim() else v  # one element
        return func(*args, **(kwargs or {}))


def readable_values(leaves: list) -> dict[int, object]:
    """Leaf index -> Python value of each one-element tensor leaf (the ones a model may read with `.item()`)."""
    out = {}
    for i, x in enumerate(leaves):
        if isinstance(x, torch.Tensor) and x.numel() == 1 and not x.is_meta and not x.is_complex() \
                and not x.requires_grad:
            out[i] = x.item()
    return out


def _export(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes=None) -> torch.export.ExportedProgram:
    torch.fx.config.do_not_emit_stack_traces = True  # ~0.3 s saved on GPT-2 sized graphs
    try:
        return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as e:  # torch.export raises many types; the user needs the message whole
        first = str(e).strip().splitlines()
        quote = "\n    ".join(first[:12])
        raise CaptureError(
            f"torch.export could not capture {type(getattr(model, 'm', model)).__name__}: {type(e).__name__}:\n    {quote}\n"
            "What to change: solder compiles what torch.export can trace for the given example inputs. "
            "Remove data-dependent Python control flow (branching on tensor values, .item(), "
            "len() of tensor contents) or express it with torch.cond / torch.where, make outputs tensors or "
            "(nested) tuples/lists/dicts of tensors, and see "
            "https://pytorch.org/docs/stable/export.html for what export supports."
        ) from e


def _decomposable_unknowns(ep: torch.export.ExportedProgram, known: set[str]) -> dict:
    from torch._decomp import core_aten_decompositions

    table = core_aten_decompositions()
    todo = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        name = str(node.target)
        if name in known or name in KEEP_WHOLE or name in RECURRENT or name.startswith("aten.sym_"):  # sym_: sizes
            continue
        if node.target in table:
            todo[node.target] = table[node.target]
    return todo


def _unaliased(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The example inputs with every tensor that shares memory with an earlier one replaced by a copy.

    torch.export traces `f(a, a)` as a graph that reads one input twice (the second placeholder is
    dropped), which is wrong for every later call with two different tensors. The compiled graph is
    functional, so it is traced on distinct tensors and serves aliased and distinct calls alike (except a
    model that writes in place into an aliased input: the runtime runs such calls eagerly).
    """
    leaves, spec = pytree.tree_flatten((args, kwargs))
    seen: set[int] = set()
    out = []
    for x in leaves:
        if isinstance(x, torch.Tensor) and x.numel() > 0:
            ptr = x.untyped_storage().data_ptr()
            if ptr in seen:
                x = x.clone()
            seen.add(ptr)
        out.append(x)
    return pytree.tree_unflatten(out, spec)


def capture(model: torch.nn.Module, args: tuple, kwargs: dict, known_ops: set[str],
            dynamic: set[tuple[int, int]] | None = None, read_values: bool = True) -> Captured:
    """Export `model(*args, **kwargs)`; decompose the ops outside `known_ops` that have a decomposition.

    `dynamic`: (flat leaf index, dim) pairs to export with symbolic sizes (`Dim.AUTO`: export keeps
    them symbolic where the model allows, infers their bounds, and specializes the others).
    """
    t0 = time.perf_counter()
    args, kwargs = _unaliased(args, kwargs)
    leaves, spec = pytree.tree_flatten((args, kwargs))
    values = readable_values(leaves) if read_values else {}
    flat = dynamic is not None or bool(values)
    try:
        with _EXPORT_LOCK, _torch_internals_quiet():
            ep, todo, same, read, refused = _capture(model, args, kwargs, known_ops, dynamic, leaves, spec, values,
                                                     flat)
    except CaptureError:
        raise
    except Exception as e:  # functionalizing/decomposing failed after export: still a capture failure
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise CaptureError(f"capture of {type(model).__name__} failed after torch.export: {type(e).__name__}: "
                           f"{first}") from e
    return Captured(ep, time.perf_counter() - t0, tuple(sorted(str(k) for k in todo)), flat, "m." if flat else "",
                    refused, same or {}, read)


def _capture(model, args, kwargs, known_ops, dynamic, leaves, spec, values, flat):
    """export (flat over the leaves when `flat`), then decompose and functionalize what the importer needs."""
    refused, read = (), {}
    model = private_view(model)
    if flat:
        shapes = tuple({d: torch.export.Dim.AUTO for (i, d) in (dynamic or ()) if i == k} or None
                       if isinstance(x, torch.Tensor) else None for k, x in enumerate(leaves))
        wrapper = _FlatInputs(model, spec, values)
        ep = _export(wrapper, tuple(leaves), {}, (shapes,) if dynamic is not None else None)
        read = dict(wrapper.log.read)
        if dynamic is not None:
            refused = _refused(ep, dynamic)
    else:
        ep = _export(model, args, kwargs)
    todo = _decomposable_unknowns(ep, known_ops)
    same = _returned_inputs(ep) if _mutating_ops(ep) else None
    if todo:
        _log.info("decomposing %s", ", ".join(sorted(str(k) for k in todo)))
    if todo or same is not None:
        ep = _functionalize(ep, todo)
        for _ in range(3):  # functionalizing can surface ops to decompose (hardswish_ -> hardswish)
            more = _decomposable_unknowns(ep, known_ops)
            if not more:
                break
            todo.update(more)
            ep = _functionalize(ep, more)
    return ep, todo, same, read, refused


def _refused(ep: torch.export.ExportedProgram, dynamic: set[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The requested dynamic (leaf, dim) pairs that export specialized to a constant size."""
    from torch.export.graph_signature import InputKind

    user = [n for n, s in zip([n for n in ep.graph.nodes if n.op == "placeholder"], ep.graph_signature.input_specs)
            if s.kind == InputKind.USER_INPUT]
    out = []
    for i, d in sorted(dynamic):
        val = user[i].meta.get("val") if i < len(user) else None
        size = val.shape[d] if isinstance(val, torch.Tensor) and d < val.dim() else None
        if size is not None and (not isinstance(size, torch.SymInt) or size.node.maybe_as_int() is not None):
            out.append((i, d))
    return tuple(out)


def _mutating_ops(ep: torch.export.ExportedProgram) -> list[str]:
    """The ops of `ep`'s graph that write into an argument (`Tensor(a!)` in their schema: add_, copy_, ...)."""
    return sorted({str(n.target) for n in ep.graph.nodes if n.op == "call_function"
                   and isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable})


def _functionalize(ep: torch.export.ExportedProgram, todo: dict) -> torch.export.ExportedProgram:
    """`ep` retraced functional (and with `todo` decomposed); CaptureError if an in-place op survives."""
    mutating = _mutating_ops(ep)
    if mutating:
        _log.info("functionalizing in-place ops %s", ", ".join(mutating))
    ep = ep.run_decompositions(todo)
    left = _mutating_ops(ep)
    if left:
        raise CaptureError(f"capture: in-place ops {', '.join(left)} are still in the graph after "
                           "functionalization; solder cannot keep their writes in order. Write the update "
                           "out of place (y = x.add(1) instead of x.add_(1)) or keep it outside the model.")
    return ep


def _returned_inputs(ep: torch.export.ExportedProgram) -> dict[int, int]:
    """User output index -> input spec index, for each output that is an input or buffer itself, possibly
    through in-place ops that return their first argument (`return x.mul_(3)`). Read on the graph before
    functionalization, which no longer tells `return x` after `x.mul_(3)` from a fresh tensor equal to it."""
    from torch.export.graph_signature import OutputKind

    placeholders = {n: i for i, n in enumerate(n for n in ep.graph.nodes if n.op == "placeholder")}
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    user = [x for x, s in zip(out_node.args[0], ep.graph_signature.output_specs) if s.kind == OutputKind.USER_OUTPUT]
    same = {}
    for k, x in enumerate(user):
        while isinstance(x, torch.fx.Node) and x not in placeholders and _returns_first_argument(x):
            x = x.args[0]
        if isinstance(x, torch.fx.Node) and x in placeholders:
            same[k] = placeholders[x]
    return same


def _returns_first_argument(node: torch.fx.Node) -> bool:
    """An in-place op (`add_`, `copy_`, `index_put_`): its one result is its first argument, written."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload) or not node.args:
        return False
    schema = node.target._schema
    if len(schema.returns) != 1 or not schema.arguments:
        return False
    ret, first = schema.returns[0].alias_info, schema.arguments[0].alias_info
    return ret is not None and first is not None and ret.is_write and first.is_write \
        and set(ret.before_set) == set(first.before_set)


def private_view(model: torch.nn.Module) -> torch.nn.Module:
    """A structural copy of `model` for export to trace: every submodule copied, with its own `_parameters`,
    `_buffers`, `_modules`, hook and other container attributes, holding `model`'s own tensor objects.

    Non-strict export swaps a module's parameters and buffers for fake tensors while it traces; on the copy,
    another thread calling `model` meanwhile still reads its real tensors. A module that cannot be copied is
    traced itself, with a warning that other threads must not call it until the compile ends.
    """
    try:
        return _view(model, {})
    except Exception as e:  # noqa: BLE001 - any copy failure leaves the plain (unshared) capture
        warnings.warn(f"solder: cannot copy {type(model).__name__} for capture ({type(e).__name__}: {e}); export "
                      "traces the module itself, so do not call it from other threads until this compile ends",
                      UserWarning, stacklevel=4)
        return model


def _view(m: torch.nn.Module, done: dict) -> torch.nn.Module:
    if id(m) in done:  # a submodule shared by two parents stays shared
        return done[id(m)]
    c = done[id(m)] = copy.copy(m)
    for k, v in m.__dict__.items():
        if k == "_modules":
            c.__dict__[k] = type(v)((n, None if s is None else _view(s, done)) for n, s in v.items())
        elif isinstance(v, (dict, list, set)):  # parameters, buffers, hooks, lists of tensors: the copy's own
            c.__dict__[k] = copy.copy(v)
    return c


@contextmanager
def _torch_internals_quiet():
    """What torch reports about its own internals during capture, not shown: the FutureWarning that
    `run_decompositions` raises by deep-copying its own tree specs, and fake-tensor and symbolic-shape error logs
    of this thread (a shape error's traceback or graph, which the CaptureError or CallError then says in one line)."""
    me = threading.get_ident()
    drop = lambda record: record.thread != me  # noqa: E731 - a logging filter
    loggers = [logging.getLogger(n) for n in ("torch._subclasses.fake_tensor", "torch.fx.experimental.symbolic_shapes")]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)

