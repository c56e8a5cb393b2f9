"""Regression (found by `make fuzz`, Triton-interpreter half, seed 13): any/all of a constant tensor.

    def f(x0):
        return torch.all(torch.ones([1], dtype=torch.int64)), torch.any(x0.new_zeros([1]))

The Triton backend folded the constant operand into the kernel as a Python literal and emitted
`(1 != 0).to(tl.int32)`: a Python bool has no `.to`, the kernel raised at run time. A reduction of a
folded literal now starts from a typed scalar (`tl.full`).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402


def f(x0):
    return (torch.all(torch.ones([1], dtype=torch.int64)), torch.any(x0.new_zeros([1])),
            torch.all(torch.full_like(x0, 2.5, dtype=torch.int64)), torch.any(torch.ones_like(x0)))


def _check(target):
    x = torch.randn(1)
    for got, want in zip(compile(f, target=target)(x), f(x)):
        assert got.dtype == want.dtype and torch.equal(got, want), (target, got, want)


def test_cpu_any_all_of_constants():
    _check("cpu")


def test_triton_any_all_of_constants():
    pytest.importorskip("triton")
    _check("h100")
