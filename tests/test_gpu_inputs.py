"""Inputs a GPU program must accept as eager PyTorch does: CPU scalars beside CUDA tensors (a lifted
`torch.tensor(1.0)` constant, a 0-d CPU tensor the caller passes), and a CPU scalar whose value changes."""

from __future__ import annotations

import pytest
import torch

from solder import compile

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


class LiftedScalar(torch.nn.Module):
    """`torch.tensor(1.0)` inside forward: export lifts it as a CPU constant (transformers' inverted masks)."""

    def forward(self, x, mask):
        inverted = torch.tensor(1.0, dtype=torch.float32) - mask.to(torch.float32)
        return (x * 2 + 1).softmax(-1) + inverted.masked_fill(inverted.bool(), -1e4)


def test_a_lifted_cpu_constant_in_a_gpu_graph_matches_eager():
    model = LiftedScalar().cuda()
    x = torch.randn(4, 64, device="cuda")
    mask = (torch.rand(4, 64, device="cuda") > 0.5).long()
    got = compile(model, target="h100")(x, mask)
    torch.testing.assert_close(got, model(x, mask))


def test_a_cpu_scalar_argument_beside_cuda_tensors_is_read_at_each_call():
    def f(x, s):
        return (x * s).relu() + s

    cf = compile(f, target="h100")
    x = torch.randn(1024, device="cuda")
    for v in (0.5, -2.0, 3.0):
        s = torch.tensor(v)  # a 0-d CPU tensor, as eager allows
        torch.testing.assert_close(cf(x, s), f(x, s))
    s = torch.tensor(1.5)
    cf(x, s)
    s.fill_(-1.0)  # the same tensor, written in place: the next call sees the new value
    torch.testing.assert_close(cf(x, s), f(x, s))
