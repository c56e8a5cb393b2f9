"""Regression (found by `make fuzz`): float floor division and remainder by infinity in Triton kernels.

Eager follows Python: `-3 // inf == -1`, `-3 % inf == inf`. backends/triton/emit.py computed
`floor(a / b)` (0 for -3 // inf) and `a - floor(a / b) * b` (NaN for -3 % inf: -0 * inf). Both now
follow PyTorch's fmod-based definitions; this checks them on a grid with zeros, infinities and NaN.
"""

import itertools
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402

pytest.importorskip("triton")

VALUES = [-3.5, -3.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 7.25, float("inf"), float("-inf"), float("nan")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_floor_divide_and_remainder_match_eager(dtype):
    a = torch.tensor([x for x, _ in itertools.product(VALUES, VALUES)], dtype=dtype)
    b = torch.tensor([y for _, y in itertools.product(VALUES, VALUES)], dtype=dtype)

    def f(a, b):
        return (torch.floor_divide(a, b), torch.remainder(a, b), a // 2.0, a % -2.0,
                torch.remainder(a, float("inf")), torch.floor_divide(a, float("inf")))

    for got, want in zip(compile(f, target="h100")(a, b), f(a, b)):
        same = (got == want) | (got.isnan() & want.isnan())
        assert same.all(), (a[~same].tolist(), b[~same].tolist(), got[~same].tolist(), want[~same].tolist())
