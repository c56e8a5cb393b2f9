"""Regression (found by `make fuzz`): unbind + broadcast add + split on the CPU backend.

The fused kernel's MLIR did not parse: "'linalg.generic' op expected operand #1 rank (1) to match
the result rank of indexing_map (0)". `x0[1]` (the unbound row, dim dropped) and `x0[1:2]` (the split,
dim kept) read the same window of x0; lower.py's extract_slice cache keyed slices by offsets, sizes
and strides only, so the rank-0 read reused the rank-1 slice. The key now includes the kept dims.
"""

import torch

from solder import compile


def test_unbind_add_split():
    def f(x0):
        v0 = x0.unbind(0)[1]
        v2 = torch.add(x0, v0)
        return torch.split(v2, 1, 0)[1], torch.add(v0, 0.0)

    x = torch.randn(2)
    for got, want in zip(compile(f, target="cpu")(x), f(x)):
        torch.testing.assert_close(got, want)
