"""The typed step list every backend plans into and the executor runs.

A step is one launch: a generated kernel, a template, a library call, a view, or the reference backend's
eager op. Code branches on its `kind`; its `route` text is for `explain()` only.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from xdsl.ir import Operation, SSAValue

from solder.backends.routes import Route


class StepKind(enum.StrEnum):
    """What a step launches; a `str` so that launch lists and kernel tables print the word."""

    POINTWISE = "pointwise"
    """A generated elementwise kernel (Triton source, or an MLIR function on the CPU)."""
    REDUCTION = "reduction"
    """A generated row kernel."""
    TEMPLATE = "template"
    """A hand-written kernel template instantiated for the op (GEMM with epilogue, flash attention, norms)."""
    EXTERN = "extern"
    """A library call: cuBLAS/cuDNN or oneDNN/MKL through torch, the install's prebuilt kernels."""
    HOISTED = "hoisted"
    """A library call run once per version of its inputs (merge-linears' stacked weights)."""
    FALLBACK = "fallback"
    """The reference backend's eager op (nothing else runs it)."""
    VIEW = "view"
    """A layout op or constant run as a torch view or tensor."""

    @property
    def route(self) -> Route:
        """The coarse route of this kind (generated, library, eager, view)."""
        return _ROUTE_OF[self]

    @property
    def generated(self) -> bool:
        """A kernel solder generated from the IR (it needs the backend's compiler to run)."""
        return self in (StepKind.POINTWISE, StepKind.REDUCTION)

    @property
    def writes_into(self) -> bool:
        """Its outputs are buffers the executor hands it (pooled by liveness), not tensors it returns."""
        return self.generated

    @property
    def aliasing(self) -> bool:
        """Its outputs may share storage with its inputs (views, eager and library calls, held stacks)."""
        return self in (StepKind.VIEW, StepKind.EXTERN, StepKind.FALLBACK, StepKind.HOISTED)


_ROUTE_OF = {
    StepKind.POINTWISE: Route.GENERATED, StepKind.REDUCTION: Route.GENERATED, StepKind.TEMPLATE: Route.LIBRARY,
    StepKind.EXTERN: Route.LIBRARY, StepKind.HOISTED: Route.HOISTED, StepKind.FALLBACK: Route.EAGER,
    StepKind.VIEW: Route.VIEW,
}


@dataclass
class Step:
    """One launch. `ins`/`outs` are canonical values (kernel-region aliases resolved, flat.py); `ops` the graph
    ops it runs; `fn` what runs it (set by the backend, possibly after compiling); `est` the cost model's
    estimate where fusion priced it."""

    kind: StepKind
    name: str
    ins: list[SSAValue]
    outs: list[SSAValue]
    fn: Callable | None = None
    ops: list[Operation] = field(default_factory=list)
    pos: tuple = ()
    est: float | None = None
    kernel_id: int | None = None
    note: str = ""


def with_views(steps: list[Step], flat, view_step: Callable[[Operation], Step]) -> list[Step]:
    """`steps` with a view step placed before the first step (or the return) that needs, as a tensor, a value
    that only a view or source op computes and no step produced: every other view is read in place by the
    kernels that fold it into their indexing, and costs nothing."""
    from solder.backends.lowering.flat import free

    made = {o for s in steps for o in s.outs} | set(flat.args)
    out: list[Step] = []

    def need(v: SSAValue) -> None:
        v = flat.canon(v)
        op = flat.producer(v)
        if v in made or op is None or not free(op):
            return
        for x in op.operands:
            need(x)
        st = view_step(op)
        out.append(st)
        made.update(st.outs)

    for s in steps:
        for v in s.ins:
            need(v)
        out.append(s)
    for v in flat.results:
        need(v)
    return out
