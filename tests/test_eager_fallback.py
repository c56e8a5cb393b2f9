"""Never a crash: a signature whose compile or first run fails runs eagerly, with one warning saying why;
compile(strict=True) raises instead."""

from __future__ import annotations

import warnings

import pytest
import torch

import solder
from solder.compiler.errors import OptionError
from solder.runtime import EagerFallbackWarning

pytestmark = pytest.mark.eager_fallback


class DataDependent(torch.nn.Module):
    """Branches on a tensor's value: torch.export cannot capture it."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


def test_a_capture_failure_goes_through_dynamo_with_one_warning():
    """export cannot capture a branch on data; torch.compile(backend=solder) compiles the graphs around it."""
    cm = solder.compile(DataDependent().eval(), target="cpu")
    x = torch.ones(4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        outs = [cm(x), cm(-x), cm(x), cm(-x)]
    assert torch.equal(outs[0], x * 2) and torch.equal(outs[1], -x - 1) and torch.equal(outs[2], x * 2)
    assert torch.equal(outs[3], -x - 1)
    fallbacks = [m for m in w if issubclass(m.category, EagerFallbackWarning)]
    assert len(fallbacks) == 1, [str(m.message) for m in w]
    msg = str(fallbacks[0].message)
    assert "cannot take its whole graph" in msg and "torch.compile (Dynamo)" in msg and "strict=True" in msg
    assert cm.compile_count == 1, "a failed signature is not exported again"
    assert len(cm.dynamo_backend.graphs) >= 2  # the condition, and the branch taken
    assert all(g.compile_count >= 1 for g in cm.dynamo_backend.graphs)


def test_without_the_dynamo_route_a_capture_failure_runs_eagerly():
    cm = solder.compile(DataDependent().eval(), target="cpu")
    cm.dynamo_route = False
    x = torch.ones(4)
    with pytest.warns(EagerFallbackWarning, match=r"compiling for inputs \[\(4,\):float32\] failed"):
        assert torch.equal(cm(x), x * 2)
    assert torch.equal(cm(-x), -x - 1)
    assert cm.compile_count == 1 and cm.dynamo_backend is None


class ManyInputs(torch.nn.Module):
    """Fails capture and takes a tensor per weight, as GraphNet graphs do."""

    def forward(self, **ws):
        total = sum(w.sum() for w in ws.values())
        return ws["w0"] * 2 if total > 0 else ws["w0"]


def test_the_cause_of_a_failure_with_many_inputs_is_not_buried_under_their_shapes():
    cm = solder.compile(ManyInputs().eval(), target="cpu")
    cm.dynamo_route = False
    ws = {f"w{i}": torch.ones(i + 1) for i in range(40)}
    with pytest.warns(EagerFallbackWarning) as w:
        cm(**ws)
    (msg,) = [str(m.message) for m in w if issubclass(m.category, EagerFallbackWarning)]
    assert "... 37 more]" in msg and msg.index("failed (") < 200, msg


def test_strict_raises_the_failure():
    cm = solder.compile(DataDependent().eval(), target="cpu", strict=True)
    with pytest.raises(Exception, match="torch.export could not capture|data-dependent|Could not guard"):
        cm(torch.ones(4))


def test_a_failing_first_run_falls_back_and_drops_the_program():
    model = torch.nn.Linear(4, 4).eval()
    cm = solder.compile(model, target="reference", speed_guard=False)  # any backend: its program is replaced
    x = torch.randn(2, 4)
    cm(x)  # compiles and runs
    (sp,) = cm.specializations.values()
    sp.proven = False

    def broken(tensors):
        raise RuntimeError("kernel launch failed")

    sp.program.run = broken
    with pytest.warns(EagerFallbackWarning, match="running the compiled program .* failed .*kernel launch failed"):
        out = cm(x)
    torch.testing.assert_close(out, model(x))
    assert not cm.specializations
    torch.testing.assert_close(cm(x), model(x))  # eager from now on, no second warning needed


def test_bad_strict_option_is_refused():
    with pytest.raises(OptionError, match=r"strict='no'"):
        solder.compile(torch.nn.Linear(2, 2), target="cpu", strict="no")


class MaskedRows(torch.nn.Module):
    """Rows picked by a mask: a size that depends on the data (graph networks filter edges like this)."""

    def forward(self, x):
        keep = x[:, 0] > 0
        return torch.cat([x[keep] * 2, x.sum(0, keepdim=True)])


def test_sizes_that_depend_on_data_go_through_dynamo():
    model = MaskedRows().eval()
    cm = solder.compile(model, target="cpu")
    torch.manual_seed(0)
    with pytest.warns(EagerFallbackWarning, match="torch.compile"):
        for _ in range(3):
            x = torch.randn(7, 3)
            torch.testing.assert_close(cm(x), model(x))
    assert cm.dynamo_backend is not None and cm.dynamo_backend.graphs


@pytest.mark.speed_guard
def test_the_dynamo_route_is_timed_against_eager():
    """The pieces Dynamo captures plus its own guards can cost more than eager on a tiny graph: the speed guard
    times the route against eager and keeps the faster, as for a compiled program."""
    from solder import speed_guard

    model = DataDependent().eval()
    cm = solder.compile(model, target="cpu")
    x = torch.ones(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EagerFallbackWarning)
        for _ in range(2 * (speed_guard.WARMUP + speed_guard.SAMPLES) + 1):
            assert torch.equal(cm(x), x * 2)
    (guard,) = cm._dynamo_guards.values()
    assert guard.settled and "speed guard" in guard.describe()
