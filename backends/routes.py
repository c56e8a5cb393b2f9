"""How a backend runs an op or a step: the typed kind that code branches on.

A step's route text (`"library: torch.addmm"`, `"mlir: flash attention (...)"`) is for `explain()`; the
backends decide what to launch from its `Route`, never from the text.
"""

from __future__ import annotations

import enum


class Route(enum.Enum):
    """What runs a step (or, in the coverage table, an op on a target)."""

    GENERATED = "generated"
    """Code solder generates: an MLIR function (CPU) or a Triton kernel (GPU)."""
    LIBRARY = "library"
    """A library call or a prebuilt kernel: torch GEMM/conv/SDPA, cuBLAS, a Triton template, the install's kernels."""
    EAGER = "eager"
    """The reference backend's eager PyTorch implementation (the fallback for what has no lowering)."""
    VIEW = "view"
    """A layout op run as a torch view (no copy, no kernel)."""
    HOISTED = "hoisted"
    """A library call run once per version of its inputs, not per call (merge-linears' stacked weights)."""


class StepKind(enum.StrEnum):
    """The Triton backend's step kinds; a `str` so that the launch-list comment and `kernels` print the word."""

    POINTWISE = "pointwise"
    """A generated elementwise kernel."""
    REDUCTION = "reduction"
    """A generated row kernel."""
    TEMPLATE = "template"
    """A hand-written Triton template (GEMM with epilogue, flash attention, softmax, norms)."""
    EXTERN = "extern"
    """A library call outside Triton: cuBLAS, cuDNN through torch, the held stack of merged weights."""
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
        """A kernel solder generated (its outputs are pooled buffers; it needs Triton to run)."""
        return self in (StepKind.POINTWISE, StepKind.REDUCTION)

    @property
    def aliasing(self) -> bool:
        """A step whose outputs may share storage with its inputs (views, eager and extern ops)."""
        return self in (StepKind.VIEW, StepKind.EXTERN, StepKind.FALLBACK)


_ROUTE_OF = {
    StepKind.POINTWISE: Route.GENERATED, StepKind.REDUCTION: Route.GENERATED, StepKind.TEMPLATE: Route.LIBRARY,
    StepKind.EXTERN: Route.LIBRARY, StepKind.FALLBACK: Route.EAGER, StepKind.VIEW: Route.VIEW,
}
