"""Inputs as real callers pass them: channels-last, transposed, expanded (stride 0), sliced, offset views.
The compiled program reads each as eager does, on every target, and never writes through one."""

from __future__ import annotations

import pytest
import torch

from solder import compile

TARGETS = ["cpu", "reference"]


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return y.mean((2, 3)), y * 2


class RowNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, x, y):
        return self.norm(torch.nn.functional.gelu(self.fc(x)) + y).softmax(-1)


def _layouts_4d():
    base = torch.randn(2, 4, 6, 6)
    yield "channels_last", base.contiguous(memory_format=torch.channels_last)
    yield "permuted", torch.randn(2, 6, 6, 4).permute(0, 3, 1, 2)
    yield "sliced", torch.randn(2, 4, 9, 6)[:, :, 1:7]
    yield "expanded", torch.randn(1, 4, 6, 6).expand(2, 4, 6, 6)


def _layouts_2d():
    yield "transposed", torch.randn(16, 5).t(), torch.randn(5, 16)
    yield "expanded", torch.randn(1, 16).expand(5, 16), torch.randn(16).expand(5, 16)
    yield "offset", torch.randn(6, 16)[1:], torch.randn(5, 32)[:, ::2]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name,x", list(_layouts_4d()), ids=[n for n, _ in _layouts_4d()])
def test_a_conv_net_reads_every_input_layout_like_eager(target, name, x):
    torch.manual_seed(0)
    model = ConvNet().eval()
    c = compile(model, target=target)
    before = x.clone()
    with torch.no_grad():
        for _ in range(2):
            for a, b in zip(c(x), model(x)):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.equal(x, before)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name,x,y", list(_layouts_2d()), ids=[n for n, _, _ in _layouts_2d()])
def test_row_kernels_read_every_input_layout_like_eager(target, name, x, y):
    torch.manual_seed(0)
    model = RowNet().eval()
    c = compile(model, target=target)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(c(x, y), model(x, y), atol=1e-5, rtol=1e-5)
        contiguous = c(x.contiguous(), y.contiguous())  # the same values in another layout: same answer
    torch.testing.assert_close(contiguous, model(x, y), atol=1e-5, rtol=1e-5)
