"""Regression (found by `make fuzz`): `F.rms_norm(x, shape)` (eps=None) on fp16/bf16 inputs.

Eager computes in fp32 and takes fp32's eps; compiler/aten_table.py `_rms_norm` took the input
dtype's (fp16: 9.8e-4, 8000x larger), so small rows came out wrong (0.69 instead of 1.0 for x = 0.03
over one element). The default eps is now fp32's for 16-bit inputs (fp64 keeps its own).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import importlib.util  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402


@pytest.mark.parametrize("target", ["cpu"] + (["h100"] if importlib.util.find_spec("triton") else []))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_rms_norm_default_eps(target, dtype):
    def f(x, y):
        return torch.nn.functional.rms_norm(x, (1,)), torch.nn.functional.rms_norm(y, (3,))

    x = torch.tensor([0.03, 1e-3, 0.5], dtype=dtype).reshape(3, 1)
    y = torch.tensor([[0.01, -0.02, 0.005], [1.0, 2.0, 3.0]], dtype=dtype)
    for got, want in zip(compile(f, target=target)(x, y), f(x, y)):
        torch.testing.assert_close(got, want, atol=1e-2, rtol=1e-2)
