"""Recurrent layers (nn.LSTM, nn.GRU, nn.RNN) compile as one op each, run by torch's fused kernels, instead of
their decomposition into every time step (which made a 512-step, 6-layer LSTM take minutes to compile)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from solder import compile


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module], **kw):
        super().__init__()
        self.rnn = cell(16, 24, 2, batch_first=True, **kw)
        self.fc = nn.Linear(24 * (2 if kw.get("bidirectional") else 1), 5)

    def forward(self, x, h0):
        out, _ = self.rnn(x, h0)
        return torch.relu(self.fc(out[:, -1, :]))


def _case(cell, bidirectional):
    torch.manual_seed(0)
    model = Recurrent(cell, bidirectional=bidirectional).eval()
    dirs = 2 if bidirectional else 1
    x = torch.randn(3, 40, 16)
    h = torch.randn(2 * dirs, 3, 24)
    return model, (x, (h, torch.randn_like(h)) if cell is nn.LSTM else h)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's export note on the modules' flattened weights
@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_recurrent_layer_is_one_op_and_matches_eager(cell, bidirectional):
    model, args = _case(cell, bidirectional)
    c = compile(model, target="cpu", speed_guard=False)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(c(*args), model(*args), atol=1e-5, rtol=1e-5)
    sp = next(iter(c.specializations.values()))
    text = str(sp.imported.module)
    name = {nn.LSTM: "aten.lstm", nn.GRU: "aten.gru", nn.RNN: "aten.rnn_tanh"}[cell]
    assert text.count(name) == 1, "the recurrent layer was decomposed"
    assert text.count("graph.sigmoid") + text.count("graph.tanh") == 0  # no unrolled gate maths


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_new_weights_reach_the_compiled_recurrent_layer():
    model, args = _case(nn.GRU, False)
    c = compile(model, target="cpu", speed_guard=False)
    with torch.no_grad():
        c(*args)
        model.rnn.weight_hh_l1.data.mul_(0.5)
        torch.testing.assert_close(c(*args), model(*args), atol=1e-5, rtol=1e-5)
