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
