"""Library calls that every backend can make: graph ops run by one torch call (oneDNN/MKL on the CPU,
cuDNN/cuBLAS or torch's own CUDA kernels on the GPU) where no generated kernel exists for them.

An entry turns an op into a callable over its operand tensors. It is a *library* route, not an eager
fallback: the op is one call into an optimized kernel, chosen on purpose, and the coverage table says so.
Backends consult this table after their own generated lowerings and before the reference backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xdsl.ir import Operation


@dataclass(frozen=True)
class LibraryCall:
    """How one op class runs as a library call: the route text `explain()` prints and a factory."""

    route: str
    make: Callable[[Operation], Callable]
    """op -> fn(*operand tensors) -> result tensor (or a list of them)."""
    targets: tuple[str, ...] = ("cpu", "h100", "h200", "a100")


LIBRARY_CALLS: dict[type[Operation], LibraryCall] = {}
"""op class -> its library call; filled by `register` below."""


def register(cls: type[Operation], route: str, targets: tuple[str, ...] | None = None):
    """Decorator: `make(op) -> fn` runs ops of class `cls` as the library call `route`."""

    def deco(make: Callable[[Operation], Callable]):
        LIBRARY_CALLS[cls] = LibraryCall(route, make, targets or LibraryCall.targets)
        return make

    return deco


def library_call(op: Operation, target: str) -> LibraryCall | None:
    """The library call for `op` on `target`, or None."""
    call = LIBRARY_CALLS.get(type(op))
    return call if call is not None and target in call.targets else None
