"""Regression (found by tests/test_fuzz.py): indexing with a tensor of negative indices.

Eager `x[i]` reads `i` in [-size, size). compiler/aten_layout.py `_index` passed the index tensor
straight to `graph.gather` / `graph.index`, which read [0, size): the CPU backend raised "index out of
range in self" and the Triton kernel read the wrong rows. The importer now adds `size` to negatives.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402

TARGETS = ["cpu"] + (["h100"] if __import__("importlib").util.find_spec("triton") else [])


@pytest.mark.parametrize("target", TARGETS)
def test_negative_indices_wrap(target):
    def f(x, i, j):
        return x[i], x[i, j], x[:, j], torch.mm(x, x.t())[j[:2]]

    x = torch.randn(4, 4)
    i, j = torch.tensor([[-4, 2, -1]]), torch.tensor([-4, 3, -1])
    for got, want in zip(compile(f, target=target)(x, i, j), f(x, i, j)):
        torch.testing.assert_close(got, want)
