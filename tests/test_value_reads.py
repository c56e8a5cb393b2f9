"""One-element tensor inputs whose value the model reads into Python (`eps.item()`, `float(t)`, `int(n)`):
compiled in as constants, checked per call, recompiled when a call passes another value.

GraphNet graphs pass every batch-norm `eps` and `momentum` as a 0-d tensor and call `.item()` on it; export
cannot branch on the unbacked symbol (`eps < 0` inside F.batch_norm), so such models used to run eagerly."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import solder
from solder.compiler.errors import CallError
from solder.runtime import MAX_VALUE_RECOMPILES, EagerFallbackWarning


class Norm(torch.nn.Module):
    def forward(self, x, eps, rm, rv, w):
        return F.relu(F.batch_norm(x, rm, rv, w, None, False, 0.1, eps.item()))


def _norm_inputs(eps=1e-5):
    torch.manual_seed(0)
    return (torch.randn(2, 3, 4, 4), torch.tensor(eps, dtype=torch.float64), torch.randn(3), torch.rand(3) + 0.5,
            torch.randn(3))


def _no_fallback(c, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", EagerFallbackWarning)
        return c(*args, **kwargs)


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_a_value_read_with_item_is_compiled_in(target):
    model = Norm().eval()
    c = solder.compile(model, target=target, speed_guard=False)
    args = _norm_inputs()
    torch.testing.assert_close(_no_fallback(c, *args), model(*args))
    (sp,) = c.specializations.values()
    assert sp.values == {1: pytest.approx(1e-5)}


@pytest.mark.eager_fallback
def test_a_new_value_recompiles_and_values_that_keep_changing_stay_correct():
    model = Norm().eval()
    c = solder.compile(model, target="cpu", speed_guard=False)
    for k, eps in enumerate([1e-5, 1e-5, 0.5, 0.5, 2.0, 1e-5, 3.0]):
        args = _norm_inputs(eps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EagerFallbackWarning)  # once the values keep changing
            torch.testing.assert_close(c(*args), model(*args), msg=f"call {k}, eps={eps}")
    assert c.compile_count <= MAX_VALUE_RECOMPILES + 2


class Scaled(torch.nn.Module):
    """A float read used in arithmetic and an int read used as a size (detection heads do both)."""

    def forward(self, x, scale, n):
        return x[:, : n.item()] * float(scale) + 1


def test_float_and_int_reads_in_arithmetic_and_sizes():
    model = Scaled().eval()
    c = solder.compile(model, target="cpu", speed_guard=False)
    x = torch.randn(3, 8)
    for s, n in [(0.5, 5), (0.5, 5), (2.0, 5), (2.0, 3)]:
        args = (x, torch.tensor(s), torch.tensor(n))
        torch.testing.assert_close(_no_fallback(c, *args), model(*args))


class UsesTensor(torch.nn.Module):
    def forward(self, x, s):
        return x * s + 1


def test_a_one_element_input_used_as_a_tensor_stays_an_input():
    model = UsesTensor().eval()
    c = solder.compile(model, target="cpu", speed_guard=False)
    x = torch.randn(4, 4)
    for s in (0.5, 2.0, -1.0):
        torch.testing.assert_close(c(x, torch.tensor(s)), model(x, torch.tensor(s)))
    assert c.compile_count == 1
    assert next(iter(c.specializations.values())).values == {}


class Keywords(torch.nn.Module):
    """GraphNet's calling convention: every tensor by keyword."""

    def forward(self, *, x, eps, rm, rv, w):
        return F.batch_norm(x, rm, rv, w, None, False, 0.1, eps.item()) * 2


def test_keyword_calls_check_the_value_on_the_fast_path():
    model = Keywords().eval()
    c = solder.compile(model, target="cpu", speed_guard=False)
    names = ("x", "eps", "rm", "rv", "w")
    for eps in (1e-5, 1e-5, 1e-5, 0.25, 0.25):
        kw = dict(zip(names, _norm_inputs(eps)))
        torch.testing.assert_close(_no_fallback(c, **kw), model(**kw))
    assert c.compile_count == 2


def test_a_saved_program_refuses_other_values(tmp_path):
    model = Norm().eval()
    c = solder.compile(model, target="cpu", speed_guard=False)
    args = _norm_inputs()
    c(*args)
    c.save(tmp_path / "norm.solder")
    loaded = solder.load(tmp_path / "norm.solder")
    torch.testing.assert_close(loaded(*args), model(*args))
    with pytest.raises(CallError, match=r"reads with .item\(\)"):
        loaded(*_norm_inputs(0.5))


class Strides(torch.nn.Module):
    """A detection head's anchors: `torch.full` of a value read from an element of an input (not compiled in:
    the read tensor is computed, so the value stays data and follows the input)."""

    def forward(self, x, stride):
        s0 = stride[0].item()
        return torch.cat([x, torch.full((x.shape[0], 1), s0)], 1) * stride[1].item()


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_a_value_read_from_a_computed_tensor_fills_and_scales(target):
    model = Strides().eval()
    c = solder.compile(model, target=target, speed_guard=False)
    x = torch.randn(5, 3)
    for stride in ([8.0, 2.0], [16.0, 0.5]):
        s = torch.tensor(stride)
        torch.testing.assert_close(_no_fallback(c, x, s), model(x, s))
    assert c.compile_count == 1
