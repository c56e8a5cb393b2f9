"""Never slower than eager: the first calls of a compiled signature time it against eager and keep the faster."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

import solder
from solder import speed_guard
from solder.compiler.errors import OptionError

pytestmark = pytest.mark.speed_guard
CALLS = 2 * (speed_guard.WARMUP + speed_guard.SAMPLES) + 1  # enough for the guard to settle


class Scale(torch.nn.Module):
    def __init__(self, pause: float = 0.0):
        super().__init__()
        self.pause = pause

    def forward(self, x):
        if self.pause:
            time.sleep(self.pause)  # eager only: export traces the tensor ops, not the sleep
        return torch.nn.functional.gelu(x * 2.0 + 1.0)


def _slow_program(cm, pause: float) -> None:
    """Make the compiled program of `cm`'s only specialization take `pause` seconds longer per call."""
    (sp,) = cm.specializations.values()
    run = sp.program.run

    def slow(tensors):
        time.sleep(pause)
        return run(tensors)

    sp.program = dataclasses.replace(sp.program, run=slow)


def test_a_slower_compiled_program_gives_way_to_eager():
    model, x = Scale().eval(), torch.randn(64, 64)
    cm = solder.compile(model, target="cpu")
    cm(x)
    _slow_program(cm, 0.2)
    for _ in range(CALLS):
        torch.testing.assert_close(cm(x), model(x))
    (sp,) = cm.specializations.values()
    assert sp.speed.settled and sp.speed.runs_eager
    assert "eager PyTorch runs: it was faster" in cm.explain()
    t0 = time.perf_counter()
    cm(x)
    assert time.perf_counter() - t0 < 0.2, "the slowed compiled program still ran after the guard chose eager"


def test_a_faster_compiled_program_is_kept():
    model, x = Scale(pause=0.2).eval(), torch.randn(64, 64)
    cm = solder.compile(model, target="cpu")
    for _ in range(CALLS):
        torch.testing.assert_close(cm(x), torch.nn.functional.gelu(x * 2.0 + 1.0))
    (sp,) = cm.specializations.values()
    assert sp.speed.settled and not sp.speed.runs_eager
    assert "the compiled program runs" in cm.explain()


class AddInPlace(torch.nn.Module):
    def forward(self, x):
        x.add_(1.0)
        return x * 2.0


def test_in_place_writes_happen_once_per_call_while_deciding():
    x = torch.zeros(8)
    cm = solder.compile(AddInPlace().eval(), target="cpu")
    for i in range(CALLS):
        out = cm(x)
        assert torch.equal(x, torch.full((8,), float(i + 1))), f"call {i}: x = {x}"
        assert torch.equal(out, 2 * x)


def test_guard_off_by_option_and_by_knob(monkeypatch):
    x = torch.randn(4, 4)
    cm = solder.compile(Scale().eval(), target="cpu", speed_guard=False)
    cm(x)
    assert next(iter(cm.specializations.values())).speed is None
    monkeypatch.setenv("SOLDER_SPEED_GUARD", "off")
    cm = solder.compile(Scale().eval(), target="cpu")
    cm(x)
    assert next(iter(cm.specializations.values())).speed is None
    assert "speed guard" not in cm.explain()


def test_bad_option_is_refused_at_compile():
    with pytest.raises(OptionError, match=r"speed_guard='yes'.*expected True"):
        solder.compile(Scale().eval(), target="cpu", speed_guard="yes")
