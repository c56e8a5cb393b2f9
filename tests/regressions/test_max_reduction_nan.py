"""Regression (found by `make fuzz`, Triton-interpreter half): a max/min reduction over values holding a NaN.

    def f(x0):
        return (torch.amax(torch.log(x0), dim=[0], keepdim=False),)   # x0 = [-1.0, 2.0]

Eager propagates the NaN (log(-1)) through amax/amin; the CPU backend's `arith.maximumf`/`minimumf` do too.
The Triton backend's row reduction (backends/triton/emit.py: `tl.max`/`tl.min`) skipped NaN and returned
log(2); it now also reduces an is-NaN flag per row and returns NaN where one is set.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402

INPUTS = [[-1.0, 2.0], [2.0, -1.0], [float("nan"), 1.0], [1.0, float("nan")], [1.0, 2.0]]


def f(x0):
    v0 = torch.log(x0)
    return torch.amax(v0, dim=[0], keepdim=False), torch.amin(v0, dim=[0]), torch.amax(x0.reshape(1, 2), dim=1)


def _check(target):
    c = compile(f, target=target)
    for values in INPUTS:
        x = torch.tensor(values)
        for got, want in zip(c(x), f(x)):
            torch.testing.assert_close(got, want, equal_nan=True, msg=lambda m, v=values: f"{target} at {v}: {m}")


def test_cpu_max_min_reductions_propagate_nan():
    _check("cpu")


def test_triton_max_min_reductions_propagate_nan():
    pytest.importorskip("triton")
    _check("h100")
