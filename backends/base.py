"""The backend contract.

A backend has a `name`, the `targets` it serves, a per-op `supports(op)` check and `lower(module,
target)` that returns a `Program`: a callable from the function's argument tensors (parameters first,
then user inputs, in `func.func @forward` order) to its result tensors, with the source text it
generated and a report of which backend ran each op. Ops a backend cannot lower run through the
reference backend (eager PyTorch) and are listed in `Program.fallbacks`, never a crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation


@dataclass
class Program:
    """A lowered graph: `run(tensors) -> tensors`, its generated source, and what fell back to eager."""

    run: Callable[[list], list]
    source: str = ""
    fallbacks: list[str] = field(default_factory=list)
    kernels: list[dict] = field(default_factory=list)

    def __call__(self, tensors: list) -> list:
        return self.run(tensors)


class Backend(ABC):
    """Base class of every backend; register subclasses in `backends.registry.BACKENDS`."""

    name: str = ""
    targets: tuple[str, ...] = ()

    def supports(self, op: Operation) -> bool:
        """Whether `lower` generates code for `op` itself (else it runs through the reference backend)."""
        return True

    @abstractmethod
    def lower(self, module: ModuleOp, target) -> Program:
        """Lower `module`'s `@forward` to a `Program`."""
