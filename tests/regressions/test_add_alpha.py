"""Regression (found writing the torch-mlir importer): `torch.add(x, y, alpha=3)` crashed the importer.

compiler/aten_table.py `_binary` (lines 136-138) scales `b` by alpha into an SSA value and then passes
that SSA value to `ctx.operand()`, which takes it for a Python scalar: TypeError "float() argument must
be a string or a real number, not 'OpResult'". Also `aten.add.Scalar(self, other, alpha)` passes alpha
positionally, which `fn(ctx, a, b, *, alpha=1)` does not accept.
"""

import pytest
import torch

from solder import compile

BUG = "compiler/aten_table.py:136-138 _binary: alpha-scaled operand passed to ctx.operand() as if a scalar"


def test_add_tensor_alpha():
    x, y = torch.randn(3, 4), torch.randn(4)
    torch.testing.assert_close(compile(lambda a, b: torch.add(a, b, alpha=3))(x, y), torch.add(x, y, alpha=3))


def test_sub_scalar_alpha():
    x = torch.randn(3, 4)
    torch.testing.assert_close(compile(lambda a: torch.sub(a, 2.0, alpha=0.5))(x), torch.sub(x, 2.0, alpha=0.5))
