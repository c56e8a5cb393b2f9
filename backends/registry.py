"""Backend lookup by name; a backend module is imported only when it is asked for (the GPU path must
not import the CPU backend's MLIR bindings, and the reverse)."""

from __future__ import annotations

import importlib

from solder.backends.base import Backend
from solder.compiler.errors import TargetError

BACKENDS = {
    "reference": ("solder.backends.reference", "ReferenceBackend"),
    "cpu": ("solder.backends.cpu.backend", "CpuBackend"),
    "triton": ("solder.backends.triton.backend", "TritonBackend"),
}


def get_backend(name: str) -> Backend:
    """An instance of the backend called `name`; unknown names list the known ones."""
    try:
        module, cls = BACKENDS[name]
    except KeyError:
        raise TargetError(f"unknown backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}") from None
    return getattr(importlib.import_module(module), cls)()
