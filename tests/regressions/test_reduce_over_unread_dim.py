"""Regression (found by tests/test_fuzz.py): a reduction over a dim its input does not read.

`torch.mean(torch.prod(x, 0, keepdim=True), dim=[0])` on x of shape (1, 4): the CPU backend fused both
reductions and indexed the keepdim result without the size-1 dim, so the second `linalg.generic`
reduced over d0 while no operand map named d0 ("invalid indexing maps are non-invertible: ((d0, d1) ->
(d1, d1))"). The same happens for a broadcast input (`x.expand(3, -1, -1).sum(0)`) or a constant one.
backends/cpu/lower.py `FuncBuilder.reduce` now writes such an input out first.
"""

import pytest
import torch

from solder import compile


@pytest.mark.parametrize("fn", [lambda x: torch.mean(torch.prod(x, 0, keepdim=True), dim=[0]),
                                lambda x: x.unsqueeze(0).expand(3, -1, -1).sum(0),
                                lambda x: torch.zeros_like(x).sum(1),
                                lambda x: torch.amax(x[:1] * 2, 0, keepdim=True)])
@pytest.mark.parametrize("rows", [1, 2])
def test_reduce_over_a_dim_the_input_does_not_read(fn, rows):
    x = torch.randn(rows, 4)
    torch.testing.assert_close(compile(fn, target="cpu")(x), fn(x))
