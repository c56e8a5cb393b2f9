"""Regressions (found by tests/test_fuzz.py) with bool tensors.

1. CPU: `torch.all(x, dim=2, keepdim=True)` / `torch.any` on a bool tensor produced MLIR that does not
   parse ("use of value '%g4_o0' expects different type than prior uses: 'i1' vs 'i8'"):
   backends/cpu/lower.py `FuncBuilder.generic` combined the i1 element with the accumulator block
   argument, which holds the bool as an i8 byte. The combine now runs on bytes.
2. Triton (interpreter): `x.to(torch.bfloat16)` of a bool tensor gave zeros: backends/triton/emit.py
   `_cast` converted int1 straight to bf16, which the interpreter turns into 0; integers and bools now
   go through fp32 first, as eager does; fp64 too (the interpreter turned fp64 -> bf16 into NaN and
   denormals).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402


@pytest.mark.parametrize("fn", [lambda x: torch.all(x, dim=2, keepdim=True), lambda x: torch.any(x, 1),
                                lambda x: torch.all(x, -1, keepdim=True), lambda x: torch.any(x)])
def test_cpu_bool_any_all(fn):
    x = torch.rand(2, 3, 4, 5) > 0.3
    assert torch.equal(compile(fn, target="cpu")(x), fn(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_bool_and_int_to_half(dtype):
    pytest.importorskip("triton")

    def f(b, i, j):
        return b.to(dtype), i.to(dtype), j.to(dtype)

    b, i, j = torch.tensor([True, False, True]), torch.tensor([3, -2, 1000]), torch.tensor([-4, 4], dtype=torch.int32)
    for got, want in zip(compile(f, target="h100")(b, i, j), f(b, i, j)):
        assert torch.equal(got, want)


def test_triton_double_to_bfloat16():
    pytest.importorskip("triton")
    x = torch.randn(64, dtype=torch.float64) * 2
    got = compile(lambda t: t.to(torch.bfloat16), target="h100")(x)
    assert not got.isnan().any()
    # the interpreter rounds fp32 -> bf16 toward zero (a GPU rounds to nearest): one bf16 ulp apart at most
    torch.testing.assert_close(got, x.to(torch.bfloat16), atol=0, rtol=2 ** -7)
