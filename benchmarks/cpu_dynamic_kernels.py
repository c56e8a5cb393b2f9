"""Size-generic CPU kernels against the static ones at the same size, and MLIR compiles over many sizes.

    python -m benchmarks.cpu_dynamic_kernels [--rounds 30]

Kernel level (one thread): each case is compiled for `target="cpu"` at one shape (static code), then called at
a second shape so that the differing dims compile dynamic (size-generic code); both specializations then run
the first shape through the runtime's `_execute`, interleaved round by round, and the table gives the medians
and generic / static. "rows" cases vary the leading dim only (the row stays static); "rows x cols" cases vary
the row length too (masked tiles, peeled row loops).

Compiles: gpt2 at six sequence lengths with an empty kernel cache, counting `compile_mlir` calls (the first
length compiles static, the second the dynamic module; the other four compile nothing), against one lowering
per size (the behaviour before size-generic kernels, forced through `solder.backends.base.per_size`).

The machine may be shared: timings are noisy, compile counts are not.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch
import torch.utils._pytree as pytree
from torch import nn

from solder.backends.base import per_size
from solder.backends.cpu import jit
from solder.backends.cpu.backend import CpuBackend
from solder import compile as solder_compile
from solder.compiler.dialects.symbolic import is_dynamic_module
from examples.models import get


class _LayerNorm(nn.Module):
    def __init__(self, d: int = 1024):
        super().__init__()
        self.n = nn.LayerNorm(d)

    def forward(self, x):
        return self.n(x)


class _GeluBias(nn.Module):
    def forward(self, x, b):
        return nn.functional.gelu(x + b)


class _Softmax(nn.Module):
    def forward(self, x):
        return torch.softmax(x, -1)


class _AddNorm(nn.Module):
    def __init__(self, d: int = 1024):
        super().__init__()
        self.n = nn.LayerNorm(d)

    def forward(self, x, y):
        return self.n(x + y)


def _interleaved(fns, args, rounds: int, inner: int = 10) -> list[float]:
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(inner):
                f(*args)
            times[i].append((time.perf_counter() - t0) / inner)
    return [statistics.median(t) for t in times]


def kernel_case(name: str, model: nn.Module, first, second, rounds: int) -> str:
    c = solder_compile(model.eval(), target="cpu")
    args = first()
    with torch.no_grad():
        c(*args)
        c(*second())
        static, dyn = list(c.specializations.values())
        assert static.binding is None and dyn.binding is not None and dyn.program.sizes is None, name
        run_s = lambda *a: c._execute(static, list(a))  # noqa: E731
        run_d = lambda *a: c._execute(dyn, list(a))  # noqa: E731
        torch.testing.assert_close(run_s(*args), run_d(*args), atol=1e-4, rtol=1e-4)
        s, d = _interleaved([run_s, run_d], args, rounds)
    return f"| {name} | {s * 1e6:.1f} | {d * 1e6:.1f} | {d / s:.2f} |"


def compile_counts(per_size_lowering: bool) -> str:
    """gpt2 at six sequence lengths, empty cache: compile_mlir calls and seconds."""
    stats = {"calls": 0, "seconds": 0.0}
    real_compile, real_lower = jit.compile_mlir, CpuBackend.lower

    def counting(text, entry, **kw):
        t0 = time.perf_counter()
        k = real_compile(text, entry, **kw)
        stats["calls"] += 1
        stats["seconds"] += time.perf_counter() - t0
        return k
    jit.compile_mlir = counting
    if per_size_lowering:
        CpuBackend.lower = lambda self, m, target=None: per_size(m, self._lower) if is_dynamic_module(m) \
            else self._lower(m)
    try:
        entry = get("gpt2")
        model, args, _ = entry.build()
        lengths = (9, 12, 16, 24, 31, 40)
        with tempfile.TemporaryDirectory() as d, torch.no_grad():
            c = solder_compile(model, target="cpu", cache_dir=d)
            for t in lengths:
                a = pytree.tree_map(lambda x, t=t: x[:, :t], args)
                torch.testing.assert_close(c(*a), model(*a), atol=1e-4, rtol=1e-4)
    finally:
        jit.compile_mlir, CpuBackend.lower = real_compile, real_lower
    how = "one lowering per size" if per_size_lowering else "size-generic"
    return f"| {how} | {lengths} | {c.compile_count} | {stats['calls']} | {stats['seconds']:.2f} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    a = p.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    rows = lambda n, cols=1024, k=1: (lambda: tuple(torch.randn(n, cols) for _ in range(k)))  # noqa: E731
    bias = lambda n, cols: (lambda: (torch.randn(n, cols), torch.randn(cols)))  # noqa: E731
    print("| case (4096x1024) | static us | size-generic us | generic / static |\n|---|---|---|---|")
    for name, model, first, second in [
        ("layer norm, rows", _LayerNorm(), rows(4096), rows(2048)),
        ("GELU(x + b), rows", _GeluBias(), bias(4096, 1024), bias(2048, 1024)),
        ("softmax, rows", _Softmax(), rows(4096), rows(2048)),
        ("add + layer norm, rows", _AddNorm(), rows(4096, k=2), rows(2048, k=2)),
        ("softmax, rows x cols", _Softmax(), rows(4096), rows(2048, 768)),
        ("GELU(x + b), rows x cols", _GeluBias(), bias(4096, 1024), bias(2048, 768)),
    ]:
        print(kernel_case(name, model, first, second, a.rounds), flush=True)
    print("\n| gpt2 | lengths | captures | compile_mlir calls | seconds in compile_mlir |\n|---|---|---|---|---|")
    print(compile_counts(False), flush=True)
    print(compile_counts(True), flush=True)


if __name__ == "__main__":
    main()
