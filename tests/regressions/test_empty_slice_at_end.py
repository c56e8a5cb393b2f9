"""Regression (found by tests/test_fuzz.py): an empty slice that starts at the end of its dim broke
the CPU backend.

`x[4:-1:2]` on 4 rows is empty (shape (0, 4)); the importer keeps `graph.slice` with start 4, and
backends/cpu/lower_ops.py `_slice` turned that start into a `tensor.extract_slice` offset, which MLIR
rejects ("offset 0 is out-of-bounds: 4 >= 4") even though no element is read. An empty slice now reads
from offset 0.
"""

import torch

from solder import compile


def test_empty_slices_at_the_end_of_a_dim():
    def f(x):
        y = torch.ceil(x)
        return y[4:-1:2], y[:, 4:] + 1, y[3:0], y[1:3]

    x = torch.randn(4, 4)
    got, want = compile(f, target="cpu")(x), f(x)
    assert [g.shape for g in got] == [w.shape for w in want] == [(0, 4), (4, 0), (0, 4), (2, 4)]
    torch.testing.assert_close(got[3], want[3])
