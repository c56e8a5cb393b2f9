"""Capture: `torch.export` a model for the observed inputs, decomposing only what the importer cannot take.

`export()` alone keeps high-level ATen ops whole (linear, layer_norm, softmax,
scaled_dot_product_attention, ...), which is what the passes want to see. A full
`run_decompositions()` is a second trace that costs more than the export itself
(shared/notes/compile-time.md), so it runs only when the graph holds an op that the importer has no
entry for and PyTorch has a decomposition for; then only those ops are decomposed.
"""

from __future__ import annotations

import gc
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

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


class _FlatInputs(torch.nn.Module):
    """`model` called with the flat leaves of its (args, kwargs): `dynamic_shapes` then is one spec per leaf
    (export's own matching of specs to `**kwargs` fails for forward(*args, **kwargs) models)."""

    def __init__(self, model: torch.nn.Module, spec):
        super().__init__()
        self.m = model
        self.spec = spec

    def forward(self, *leaves):
        args, kwargs = pytree.tree_unflatten(list(leaves), self.spec)
        return self.m(*args, **kwargs)


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
        if name in known or name in KEEP_WHOLE or name.startswith("aten.sym_"):  # sizes: the importer reads them
            continue
        if node.target in table:
            todo[node.target] = table[node.target]
    return todo


def _unaliased(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The example inputs with every tensor that shares memory with an earlier one replaced by a copy.

    torch.export traces `f(a, a)` as a graph that reads one input twice (the second placeholder is
    dropped), which is wrong for every later call with two different tensors. The compiled graph is
    functional, so it is traced on distinct tensors and serves aliased and distinct calls alike.
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
            dynamic: set[tuple[int, int]] | None = None) -> Captured:
    """Export `model(*args, **kwargs)`; decompose the ops outside `known_ops` that have a decomposition.

    `dynamic`: (flat leaf index, dim) pairs to export with symbolic sizes (`Dim.AUTO`: export keeps
    them symbolic where the model allows, infers their bounds, and specializes the others).
    """
    t0 = time.perf_counter()
    flat, refused = dynamic is not None, ()
    args, kwargs = _unaliased(args, kwargs)
    with _EXPORT_LOCK:
        if flat:
            leaves, spec = pytree.tree_flatten((args, kwargs))
            shapes = tuple({d: torch.export.Dim.AUTO for (i, d) in dynamic if i == k} or None
                           if isinstance(x, torch.Tensor) else None for k, x in enumerate(leaves))
            ep = _export(_FlatInputs(model, spec), tuple(leaves), {}, (shapes,))
            refused = _refused(ep, dynamic)
        else:
            ep = _export(model, args, kwargs)
        todo = _decomposable_unknowns(ep, known_ops)
        if todo:
            _log.info("decomposing %s", ", ".join(sorted(str(k) for k in todo)))
            ep = ep.run_decompositions(todo)
    return Captured(ep, time.perf_counter() - t0, tuple(sorted(str(k) for k in todo)), flat, "m." if flat else "",
                    refused)


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
