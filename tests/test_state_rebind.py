"""The compiled model runs on the model's current parameters and buffers: replacing one after compiling
(a new Parameter, load_state_dict(assign=True), `p.data = t`) is seen on the next call, never a stale answer."""

import torch
from torch import nn

from solder import compile as solder_compile


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)
        self.register_buffer("shift", torch.zeros(8))

    def forward(self, x):
        return torch.relu(self.fc(x)) + self.shift


def _check(cm, model, x):
    torch.testing.assert_close(cm(x), model(x), atol=1e-5, rtol=1e-5)


def test_replaced_parameters_and_buffers_are_seen():
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(4, 16)
    cm = solder_compile(model, target="cpu")
    _check(cm, model, x)
    model.fc.weight = nn.Parameter(torch.randn(8, 16))  # a new Parameter object
    _check(cm, model, x)
    model.fc.bias.data = torch.randn(8)  # same Parameter, new storage
    _check(cm, model, x)
    model.shift = torch.full((8,), 3.0)  # a buffer reassigned
    _check(cm, model, x)
    model.load_state_dict({k: torch.randn_like(v) for k, v in model.state_dict().items()}, assign=True)
    _check(cm, model, x)
    assert cm.compile_count == 1  # same shapes: the compiled program runs on the new tensors


def test_a_replacement_of_another_shape_recompiles():
    torch.manual_seed(1)
    model, x = Net().eval(), torch.randn(4, 16)
    cm = solder_compile(model, target="cpu")
    _check(cm, model, x)
    model.shift = torch.randn(1)  # broadcasts: another program
    _check(cm, model, x)
    assert cm.compile_count == 2


def test_conv_weight_storage_swap_is_seen():
    """A channels-last weight copy is cached per weight version: `w.data = t` keeps the version, so the
    cache also compares storage."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    cm = solder_compile(model, target="cpu")
    _check(cm, model, x)
    model[0].weight.data = torch.randn(8, 3, 3, 3)
    _check(cm, model, x)
    with torch.no_grad():
        model[0].weight.mul_(0.5)
    _check(cm, model, x)
