"""solder's hardware cost model: predicted seconds of a kernel on a target.

    from solder.costmodel import estimate, estimate_ops
    estimate(kernel_op, "cpu")          # a graph.kernel region as one kernel, or any single graph op
    estimate_ops([op1, op2, op3], tgt)  # those ops fused as one kernel, without building the region
    estimate_parallel(ops, "cpu", 2)    # (serial, parallel) seconds on 2 threads, or None without a model

Both use the learned model shipped for `target.cost_model` (costmodel/shipped/<name>/) when it exists and
loads, else the roofline of costmodel/analytic.py. `model` overrides the choice: "roofline", a path to a
model file (`model.npz`: arrays and JSON, no code) or a folder holding one, or an already loaded
`solder.costmodel.model.LearnedModel`. A model file that does not load falls back to the roofline with one
warning on the `costmodel` log channel.
"""

from __future__ import annotations

import functools
from pathlib import Path

from xdsl.ir import Operation

from solder.compiler import log
from solder.compiler.targets import Target, get_target
from solder.costmodel import analytic

SHIPPED = Path(__file__).parent / "shipped"

__all__ = ["estimate", "estimate_ops", "estimate_parallel", "load_model", "PARALLEL_MIN_GAIN", "SHIPPED"]


def estimate(op: Operation, target: Target | str, model=None) -> float:
    """Predicted seconds of `op` run as ONE kernel: a `graph.kernel` region, or a single graph op."""
    target = get_target(target)
    learned = _resolve(model, target)
    if learned is None:
        return analytic.estimate(op, target)
    return learned.predict_op(op, target)


def estimate_ops(ops: list[Operation], target: Target | str, model=None, threads: int = 1,
                 parallel: bool = False) -> float:
    """Predicted seconds of `ops` fused as one kernel (bytes = values entering + values leaving the group), run
    on a team of `threads` with its outer loop across them when `parallel` (the roofline ignores both)."""
    if not ops:
        return 0.0  # no kernel, no launch
    target = get_target(target)
    learned = _resolve(model, target)
    if learned is None:
        return analytic.estimate_ops(ops, target)
    if threads == 1 and not parallel:  # a model object from elsewhere may take (ops, target) only
        return learned.predict_ops(ops, target)
    return learned.predict_ops(ops, target, threads, parallel)


PARALLEL_MIN_GAIN = 0.1
"""The share of its serial estimate a kernel's parallel estimate must save before it is compiled parallel: closer
estimates are a tie within the model's error, and a team on a busy machine may wait for its second thread."""


def estimate_parallel(ops: list[Operation], target: Target | str, threads: int,
                      model=None) -> tuple[float, float] | None:
    """(serial seconds, parallel seconds) of `ops` as one kernel run while torch has `threads` threads: compiled
    serial, or with its outer loop across the team. None when no learned model with the thread features is
    there to say (the roofline knows nothing of a fork and join): the caller then keeps its own rule."""
    if not ops:
        return None
    target = get_target(target)
    learned = _resolve(model, target)
    if learned is None or not getattr(learned, "reads_threads", False):
        return None
    return (learned.predict_ops(ops, target, threads, False), learned.predict_ops(ops, target, threads, True))


def load_model(path: str | Path):
    """The learned model stored at `path` (a model file or a shipped/<target>/ folder); None if it does not load."""
    return _load_cached(str(path))


def _resolve(model, target: Target):
    """The learned model to use, or None for the roofline."""
    if model is None:
        return _shipped(target.cost_model) if target.cost_model else None
    if isinstance(model, str) and model == "roofline":
        return None
    if isinstance(model, (str, Path)):
        return _load_cached(str(model))
    return model


@functools.lru_cache(maxsize=32)
def _shipped(name: str):
    return _load_cached(str(SHIPPED / name))


@functools.lru_cache(maxsize=32)
def _load_cached(path: str):
    from solder.costmodel.model import MODEL_FILE, LearnedModel
    from solder.costmodel.trees import ModelFormatError

    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.exists():
        return None  # no model trained for this target: the roofline, silently
    try:
        return LearnedModel.load(p)
    except (ModelFormatError, OSError) as e:  # a corrupt or incompatible file must never break compilation
        log.get("costmodel").warning(
            "costmodel: cannot load learned model %s (%s: %s); falling back to the roofline", p, type(e).__name__, e)
        return None
