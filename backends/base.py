"""The backend contract.

A backend has a `name`, the `targets` it serves, a per-op `supports(op)` check, `can_fuse(ops)` (whether a
group is one launch: fusion asks it) and `lower(module, target)` that returns a `Program`: a callable from the function's argument tensors (parameters first,
then user inputs, in `func.func @forward` order) to its result tensors, with the source text it
generated and a report of which backend ran each op. Ops a backend cannot lower run through the
reference backend (eager PyTorch) and are listed in `Program.fallbacks`, never a crash.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from solder.compiler import knobs
from solder.compiler.dialects import symbolic
from solder.compiler.ir import forward_func


@dataclass
class Program:
    """A lowered graph: `run(tensors) -> tensors`, its generated source, and what fell back to eager."""

    run: Callable[[list], list]
    source: str = ""
    fallbacks: list[str] = field(default_factory=list)
    kernels: list[dict] = field(default_factory=list)
    sizes: list[dict] | None = None
    """For a dynamic module on a backend that compiles static sizes: the symbol bindings compiled so far."""
    dynamic: str | None = None
    """For a dynamic module: how the backend's code serves its sizes (a line for `explain()`)."""

    def __call__(self, tensors: list) -> list:
        return self.run(tensors)


class Backend(ABC):
    """Base class of every backend; register subclasses in `solder.backends.registry.BACKENDS`."""

    name: str = ""
    targets: tuple[str, ...] = ()

    def supports(self, op: Operation) -> bool:
        """Whether `lower` generates code for `op` itself (else it runs through the reference backend)."""
        return True

    def can_fuse(self, ops: list[Operation]) -> tuple[bool, str]:
        """Whether `lower` emits the group `ops` (in block order) as one launch; else (False, why). Fusion
        asks this (passes/fusion_rules.py), so a `graph.kernel` is a launch, never split again here."""
        return True, ""

    @abstractmethod
    def lower(self, module: ModuleOp, target) -> Program:
        """Lower `module`'s `@forward` to a `Program`."""


def per_size(module: ModuleOp, lower_static: Callable[[ModuleOp], Program], limit: int = 16) -> Program:
    """A Program for a dynamic module (`?` dims) on a backend whose code generation needs static sizes.

    Capture, import and the pass pipeline ran once on the dynamic IR; here each new binding of the
    shape symbols (read off the call's argument sizes, bounds checked by `Binding`) instantiates the
    static module and lowers it, once, keeping the `limit` most recent. The example sizes are lowered
    up front so that the Program reports kernels and fallbacks like a static one.
    """
    fn = forward_func(module)
    bind = symbolic.Binding.of(fn)
    hints = {s.name: s.hint for s in bind.symbols.values()}
    cache: OrderedDict[tuple, Program] = OrderedDict()
    lock = threading.Lock()
    cache_dir = knobs.current_cache_dir_override()  # compile(cache_dir=...) also for sizes lowered later
    first = lower_static(symbolic.instantiate(module, hints))
    cache[tuple(hints.values())] = first
    sizes = [dict(hints)]

    def run(tensors: list) -> list:
        env = bind(tensors)
        key = tuple(env.values())
        prog = cache.get(key)
        if prog is None:
            with lock:
                prog = cache.get(key)
                if prog is None:
                    with knobs.cache_dir_override(cache_dir):
                        prog = cache[key] = lower_static(symbolic.instantiate(module, env))
                    sizes.append(dict(env))
                    if len(cache) > limit:
                        cache.popitem(last=False)
        return prog(tensors)

    return Program(run=run, source=first.source, fallbacks=first.fallbacks, kernels=first.kernels, sizes=sizes)
