"""Regression (found by tests/test_fuzz.py): `torch.bitwise_or(b, 2)` with `b` a bool tensor.

Eager gives int64 (`True | 2 == 3`). compiler/aten_table.py `_binary` took bitwise_and/or as
logical_and/or whenever the tensor operands were bool, ignoring the integer scalar: the CPU backend
emitted MLIR mixing i1 and i64 and the Triton kernel returned 1 for 3. Such calls now run eagerly
(graph.extern); bool-with-bool stays a logical op.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import importlib.util  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402


@pytest.mark.parametrize("target", ["cpu"] + (["h100"] if importlib.util.find_spec("triton") else []))
def test_bitwise_of_bool_and_int_scalar(target):
    def f(b, c):
        return torch.bitwise_or(b, 2), torch.bitwise_and(b, 3), b | c, b & True

    b, c = torch.tensor([True, False, True]), torch.tensor([False, False, True])
    for got, want in zip(compile(f, target=target)(b, c), f(b, c)):
        assert got.dtype == want.dtype and torch.equal(got, want)
