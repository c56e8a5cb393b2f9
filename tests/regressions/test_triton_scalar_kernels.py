"""Regressions (found by tests/test_fuzz.py) in the Triton backend, run under TRITON_INTERPRET=1 on CPU.

1. A row reduction over a one-element tensor (`torch.max(x, dim=-2, keepdim=True)` on shape (1, 1))
   stored its [BLOCK_M, 1] result through a scalar pointer `out0 + 0`: "Value argument cannot be block
   type if pointer argument is not a block" (backends/triton/codegen.py `_out_index`, where every index
   of a one-element row is the literal 0).
2. A kernel computing only on constants (`torch.reciprocal(torch.zeros_like(x))`) emitted `1.0 / 0.0`:
   Python arithmetic at trace time, ZeroDivisionError instead of inf (float constants are Python
   literals; backends/triton/emit.py `operands` now makes one operand of an all-literal op a typed scalar).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402

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


def test_one_element_arange():
    """3. `torch.arange(2, 0, -2)` has one element: its index is the literal 0, and the emitted
    `(0 * -2 + 2).to(tl.int64)` called `.to` on a Python int (backends/triton/emit.py `_arange`)."""

    def f(x):
        return x * torch.arange(2, 0, -2), x + torch.arange(-1.0, 0.0, 1.5)

    x = torch.full((1, 1), 3.0, dtype=torch.float16)
    for got, want in zip(compile(f, target="h100")(x), f(x)):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_constant_16bit_output():
    """4. A gather from a constant (`torch.zeros([2, 1], dtype=torch.bfloat16)[i]`) folds the kernel's
    output to the literal 0.0, and the store emitted `0.0.to(tl.bfloat16)` (backends/triton/codegen.py:
    a Python float has no `.to`); a constant output is now a typed scalar before the conversion."""

    def f(i):
        return torch.zeros([2, 1], dtype=torch.bfloat16)[i], torch.full([3], 1.5, dtype=torch.float16)[i[0]]

    i = torch.tensor([[1, 0]])
    for got, want in zip(compile(f, target="h100")(i), f(i)):
        assert got.dtype == want.dtype and torch.equal(got, want)
