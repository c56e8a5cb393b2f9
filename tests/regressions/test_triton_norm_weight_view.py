"""Regression (found by tests/test_fuzz.py): RMS/layer norm with a weight that is a view.

backends/triton/templates/rows.py `_norm` passed weight and bias to the kernel as they came, and the
kernel reads them at unit stride: an expanded weight (`w.expand(3)`, stride 0) read past its one
element, so columns 1.. came out wrong (zeros under the interpreter). Strided vectors are now copied.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402

pytest.importorskip("triton")


@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_norm_with_expanded_and_strided_weight(norm):
    def f(x, w, b):
        if norm == "rms":
            return torch.nn.functional.rms_norm(x, (3,), w),
        return torch.nn.functional.layer_norm(x, (3,), w, b),

    x = torch.randn(2, 4, 3)
    w, b = torch.randn(1).expand(3), torch.randn(6)[::2]
    torch.testing.assert_close(compile(f, target="h100")(x, w, b)[0], f(x, w, b)[0])
