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

from compiler import log
from compiler.errors import CaptureError

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
    """An exported program plus how long capture took and which ops were decomposed."""

    program: torch.export.ExportedProgram
    seconds: float
    decomposed: tuple[str, ...]


def _export(model: torch.nn.Module, args: tuple, kwargs: dict) -> torch.export.ExportedProgram:
    torch.fx.config.do_not_emit_stack_traces = True  # ~0.3 s saved on GPT-2 sized graphs
    try:
        return torch.export.export(model, args, kwargs, strict=False)
    except Exception as e:  # torch.export raises many types; the user needs the message whole
        first = str(e).strip().splitlines()
        quote = "\n    ".join(first[:12])
        raise CaptureError(
            f"torch.export could not capture {type(model).__name__}: {type(e).__name__}:\n    {quote}\n"
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
        if name in known or name in KEEP_WHOLE:
            continue
        if node.target in table:
            todo[node.target] = table[node.target]
    return todo


def capture(model: torch.nn.Module, args: tuple, kwargs: dict, known_ops: set[str]) -> Captured:
    """Export `model(*args, **kwargs)`; decompose the ops outside `known_ops` that have a decomposition."""
    t0 = time.perf_counter()
    with _EXPORT_LOCK:
        ep = _export(model, args, kwargs)
        todo = _decomposable_unknowns(ep, known_ops)
        if todo:
            _log.info("decomposing %s", ", ".join(sorted(str(k) for k in todo)))
            ep = ep.run_decompositions(todo)
    return Captured(ep, time.perf_counter() - t0, tuple(sorted(str(k) for k in todo)))
