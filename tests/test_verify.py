"""compile(..., verify=True) names the first kernel whose output differs from eager, with its IR."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from solder.backends import registry
from solder.backends.reference import OPS, ReferenceBackend
from solder import compile
from solder.compiler.errors import VerifyError
from solder.compiler.targets import get_target


class TanhIsWrongBackend(ReferenceBackend):
    """A backend with one bug: its graph.tanh computes a sigmoid."""

    name = "tanh-is-wrong"

    def lower(self, module, target=None):
        saved = OPS["graph.tanh"]
        OPS["graph.tanh"] = lambda op: torch.sigmoid
        try:
            return super().lower(module, target)
        finally:
            OPS["graph.tanh"] = saved


class Model(torch.nn.Module):
    def forward(self, x):
        y = torch.exp(x) * 2
        return torch.tanh(y - 1) + 3


@pytest.fixture
def buggy_target(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "tanh-is-wrong", (__name__, "TanhIsWrongBackend"))
    return dataclasses.replace(get_target("reference"), backend="tanh-is-wrong",
                               pipeline="canonicalize,fuse-ops{mode=never}")


def test_verify_names_the_first_differing_kernel(buggy_target):
    c = compile(Model().eval(), target=buggy_target, verify=True)
    with pytest.raises(VerifyError, match=r"(?s)first kernel that differs is top-level op #\d+ \(graph.kernel.*graph.tanh"):
        c(torch.randn(4, 5))


def test_verify_passes_when_the_backend_is_right():
    c = compile(Model().eval(), target="cpu", verify=True)
    x = torch.randn(4, 5)
    torch.testing.assert_close(c(x), Model()(x))
