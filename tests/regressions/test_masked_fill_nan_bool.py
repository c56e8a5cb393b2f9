"""Regression (found by tests/test_fuzz.py): filling a bool tensor with NaN/inf is refused.

Eager: `torch.zeros(2, dtype=torch.bool).masked_fill(mask, float('nan'))` gives True where mask is set
(bool(nan) is True). solder raises ImportError_ "nan does not fit torch.bool" from
compiler/importer.py:121 `ImportContext.constant`, whose non-finite check is meant for integer dtypes
only; bool should take `bool(value)` first.
"""

import pytest
import torch

from solder import compile


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_masked_fill_bool_with_nonfinite(value):
    x = torch.tensor([[True, False], [False, False]])
    mask = torch.tensor([[False, True], [True, False]])

    def f(a, m):
        return a.masked_fill(m, value)

    assert torch.equal(compile(f)(x, mask), f(x, mask))
