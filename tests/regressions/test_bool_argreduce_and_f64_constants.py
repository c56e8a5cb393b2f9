"""Regressions found by `make fuzz` (tests/test_fuzz.py).

1. `torch.max(b, dim=0)[1]` with `b` a bool tensor: the importer turns the indices into
   `graph.arg_reduce "argmax"`, which the reference backend ran as `torch.argmax`, and that refuses
   bools (eager `max(dim)` accepts them): backends/reference `_arg_reduce` now takes bools as bytes.
2. `torch.eq(torch.zeros_like(x, dtype=torch.float64), 0.0)`: a kernel whose only f64 values are
   constants reached MLIR with an integer literal typed f64 ("unexpected decimal integer literal for a
   floating point value"): the CPU lowering refused f64 at kernel arguments only; backends/cpu/lower_ops.py
   `_constant`/`_arange` now refuse it too, so the kernel runs on the reference backend.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import importlib.util  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.utils._pytree as pytree  # noqa: E402

from solder import compile  # noqa: E402

TARGETS = ["cpu"] + (["h100"] if importlib.util.find_spec("triton") else [])


def _same(got, want):
    for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
        assert a.dtype == b.dtype and torch.equal(a, b), (a, b)


@pytest.mark.parametrize("target", TARGETS)
def test_max_min_dim_of_bools(target):
    def f(x):
        return torch.max(x, dim=0)[1], torch.min(x, dim=-1, keepdim=True)

    x = torch.tensor([[False, True, True], [True, False, True]])
    _same(compile(f, target=target)(x), f(x))


@pytest.mark.parametrize("target", TARGETS)
def test_f64_constants(target):
    def f(x):
        z = torch.zeros_like(x, dtype=torch.float64)
        return torch.eq(z, 0.0), z + 1.5, torch.eq(x.double(), 0), torch.arange(3, dtype=torch.float64) * 2

    x = torch.randn(3)
    _same(compile(f, target=target)(x), f(x))
