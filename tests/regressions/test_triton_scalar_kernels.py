"""Regressions (found by tests/test_fuzz.py) in the Triton backend, run under TRITON_INTERPRET=1 on CPU.

1. A row reduction over a one-element tensor (`torch.max(x, dim=-2, keepdim=True)` on shape (1, 1))
   stored its [BLOCK_M, 1] result through a scalar pointer `out0 + 0`: "Value argument cannot be block
   type if pointer argument is not a block" (backends/triton/codegen.py `_out_index`, where every index
   of a one-element row is the literal 0).
2. A kernel computing only on constants (`torch.reciprocal(torch.zeros_like(x))`) emitted `1.0 / 0.0`:
   Python arithmetic at trace time, ZeroDivisionError instead of inf (backends/triton/emit.py
   `_constant` emitted float constants as Python literals).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from compiler import compile  # noqa: E402

pytest.importorskip("triton")


def test_one_element_row_reduction():
    def f(x):
        return torch.max(x, dim=-2, keepdim=True)[0], torch.amin(x, dim=-1)

    x = torch.randn(1, 1)
    for got, want in zip(compile(f, target="h100")(x), f(x)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(), (3,)])
def test_division_of_constants_by_zero_is_ieee(shape):
    def f(x):
        zero = torch.zeros_like(x)
        return torch.reciprocal(zero), (zero - 1.0) / zero, zero / zero

    x = torch.randn(shape)
    for got, want in zip(compile(f, target="h100")(x), f(x)):
        torch.testing.assert_close(got, want, equal_nan=True)
