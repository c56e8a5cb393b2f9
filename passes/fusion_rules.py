"""The backend's say in fusion: `fuse-ops` and `fuse-blocks` form a kernel only where the target's backend
answers that it emits the group as one launch, so the kernel the cost model priced is the kernel that runs.

Passes sit below the backends and never import one; the caller of the pipeline (the runtime, `solder-opt`)
hands the backend's `can_fuse` in with `run_pipeline(..., can_fuse=...)`, which sets it here for the run.
Without one (a pipeline run on its own), the passes' own legality rules decide alone.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

from xdsl.ir import Operation

CanFuse = Callable[[list[Operation]], tuple[bool, str]]
"""ops (in block order) -> (one launch?, why not)."""

_CURRENT: contextvars.ContextVar[tuple[str, CanFuse] | None] = contextvars.ContextVar("can_fuse", default=None)


@contextlib.contextmanager
def backend_rule(name: str, can_fuse: CanFuse | None) -> Iterator[None]:
    """Within the block, fusion asks `can_fuse` (the backend called `name`)."""
    token = _CURRENT.set((name, can_fuse) if can_fuse is not None else None)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def ask(ops: list[Operation]) -> str | None:
    """None when the backend (if any is set) emits `ops` as one launch, else its reason."""
    cur = _CURRENT.get()
    if cur is None or len(ops) < 2:
        return None
    name, can_fuse = cur
    ok, why = can_fuse(ops)
    return None if ok else f"{name} backend: {why}"
