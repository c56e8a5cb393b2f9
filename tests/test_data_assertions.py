"""`x.item()` whose value only feeds run-time assertions (Hugging Face models check `lengths.max().item()`
against the sequence length): the graph is compiled whole, and the assertion runs in the compiled program,
raising on data that breaks it as eager does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from solder import compile


class Lengths(torch.nn.Module):
    def forward(self, ids, x):
        n = (ids != 2).sum(1).max().item()
        torch._check(n <= ids.shape[1] - 1)  # at least one pad token per row
        return x[:, : ids.shape[1]].softmax(-1) * 2


def _inputs(pad: bool):
    ids = torch.randint(3, 9, (2, 7))
    if pad:
        ids[:, -1] = 2
    return ids, torch.randn(2, 9)


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_an_assertion_on_item_compiles_and_holds(target):
    model = Lengths().eval()
    c = compile(model, target=target, speed_guard=False)
    ids, x = _inputs(pad=True)
    for _ in range(2):
        torch.testing.assert_close(c(ids, x), model(ids, x))
    sp = next(iter(c.specializations.values()))
    assert "aten._assert_async.msg" in str(sp.imported.module)
    assert not sp.imported.externs and "graph.extern" not in sp.program.fallbacks  # the check is no fallback


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_data_that_breaks_the_assertion_raises_as_in_eager(target):
    model = Lengths().eval()
    c = compile(model, target=target, speed_guard=False)
    c(*_inputs(pad=True))
    bad = _inputs(pad=False)
    with pytest.raises(RuntimeError):
        model(*bad)
    with pytest.raises(RuntimeError, match="u0 <= 6|assert"):
        c(*bad)


def test_triton_runs_the_assertion():
    code = (
        "import torch\n"
        "from tests.test_data_assertions import Lengths, _inputs\n"
        "from solder import compile\n"
        "m = Lengths().eval(); c = compile(m, target='h100', speed_guard=False)\n"
        "xs = _inputs(True)\n"
        "torch.testing.assert_close(c(*xs), m(*xs))\n"
        "assert not next(iter(c.specializations.values())).program.fallbacks\n"
        "try:\n    c(*_inputs(False))\nexcept RuntimeError:\n    print('raised')\n")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "raised" in out.stdout, out.stderr[-2000:]


def test_a_saved_program_keeps_its_assertion(tmp_path):
    from solder.artifact import load
    from solder.artifact_save import save

    model = Lengths().eval()
    c = compile(model, target="cpu", speed_guard=False)
    good = _inputs(pad=True)
    c(*good)
    loaded = load(save(c, tmp_path / "lengths.solder"))
    torch.testing.assert_close(loaded(*good), model(*good))
    with pytest.raises(RuntimeError, match="u0 <= 6"):
        loaded(*_inputs(pad=False))
