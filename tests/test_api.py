"""The calling convention of compile(): pytrees in and out, decorators, shape caching, explain()."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

from solder import compile, runtime
from solder.runtime import EagerFallbackWarning


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x, scale: float, extra=None, *, table):
        y = self.lin(x) * scale + table["bias"]
        return {"y": y, "pair": (y.sum(-1), [x, extra["z"] + 1])}


def _inputs(n=4):
    return (torch.randn(n, 8), 2.0), {"extra": {"z": torch.randn(3)}, "table": {"bias": torch.randn(8)}}


def test_pytree_in_and_out_and_kwargs():
    m = Nested().eval()
    c = compile(m, target="cpu")
    args, kwargs = _inputs()
    got, want = c(*args, **kwargs), m(*args, **kwargs)
    assert set(got) == {"y", "pair"} and isinstance(got["pair"], tuple) and isinstance(got["pair"][1], list)
    torch.testing.assert_close(got["y"], want["y"])
    torch.testing.assert_close(got["pair"][1][1], want["pair"][1][1])
    assert not got["y"].requires_grad


def test_new_shapes_compile_again_and_cached_shapes_do_not():
    c = compile(Nested().eval(), target="cpu")
    a1, k1 = _inputs(4)
    c(*a1, **k1)
    c(*_inputs(4)[0], **k1)
    assert len(c.specializations) == 1
    a2, k2 = _inputs(6)
    out = c(*a2, **k2)
    assert out["y"].shape == (6, 8) and len(c.specializations) == 2


def test_decorator_on_function_and_module_class():
    @compile(target="cpu")
    def f(a, b):
        return torch.relu(a) * b + 1

    a, b = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(f(a, b), torch.relu(a) * b + 1)
    assert f.__name__ == "f"

    @compile(target="cpu")
    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.lin = nn.Linear(d, d)

        def forward(self, x):
            return torch.tanh(self.lin(x))

    blk = Block(4).eval()
    x = torch.randn(3, 4)
    torch.testing.assert_close(blk(x), torch.tanh(blk.lin(x)))
    assert isinstance(blk, nn.Module) and "graph.linear" in blk.explain()


def test_explain_shows_pipeline_and_ir():
    c = compile(nn.Sequential(nn.Linear(4, 4), nn.GELU()).eval(), target="cpu")
    assert "not compiled yet" in c.explain()
    c(torch.randn(2, 4))
    text = c.explain()
    assert "pipeline: canonicalize" in text and "graph.gelu" in text and "func.func @forward" in text


def test_parameters_are_held_once_and_updates_are_seen():
    m = nn.Linear(4, 4).eval()
    c = compile(m, target="cpu")
    x = torch.randn(2, 4)
    c(x)
    with torch.no_grad():
        m.weight.mul_(2)
    torch.testing.assert_close(c(x), m(x))


def test_training_mode_runs_eagerly_with_a_warning():
    m = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    c = compile(m, target="cpu")
    with pytest.warns(EagerFallbackWarning, match="training mode"):
        c(torch.randn(2, 4))
    assert not c.specializations


def test_inputs_requiring_grad_run_eagerly_with_a_warning():
    c = compile(nn.Linear(4, 4).eval(), target="cpu")
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.warns(EagerFallbackWarning, match="requires grad"):
        y = c(x)
    assert y.requires_grad
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", EagerFallbackWarning)
        c(x)


def test_verify_checks_against_eager():
    c = compile(nn.Sequential(nn.Linear(4, 4), nn.Softmax(-1)).eval(), target="cpu", verify=True)
    c(torch.randn(3, 4))


def test_specialization_cache_is_bounded_and_warns(monkeypatch):
    monkeypatch.setenv("SOLDER_MAX_SPECIALIZATIONS", "2")
    c = compile(nn.Linear(4, 4).eval(), target="cpu", dynamic=False)  # one specialization per shape
    c(torch.randn(1, 4))
    c(torch.randn(2, 4))
    with pytest.warns(UserWarning, match="more than 2 input signatures"):
        c(torch.randn(3, 4))
    assert len(c.specializations) == 2 and len(c._fast) == 2
    x = torch.randn(1, 4)
    torch.testing.assert_close(c(x), c.model(x))


def test_cache_dir_option_is_where_kernels_are_cached(tmp_path, monkeypatch):
    env_dir, own_dir = tmp_path / "env", tmp_path / "own"
    monkeypatch.setenv("SOLDER_CACHE_DIR", str(env_dir))

    def f(x):
        return torch.tanh(x) * 3 + 1

    x = torch.randn(5, 7)
    torch.testing.assert_close(compile(f, target="cpu", cache_dir=str(own_dir))(x), f(x))
    assert any(p.is_file() for p in own_dir.rglob("*")), "nothing cached under cache_dir"
    assert not env_dir.exists() or not any(p.is_file() for p in env_dir.rglob("*"))


class _KwModel(nn.Module):
    """Every weight a keyword argument, as GraphNet's graphs take them."""

    def forward(self, x, *, w, b, scale):
        return torch.relu(x @ w.t() + b) * scale + x


def test_keyword_tensor_calls_take_the_fast_path_in_any_keyword_order():
    m = _KwModel().eval()
    c = compile(m, target="cpu")
    x, w, b, s = torch.randn(3, 8), torch.randn(8, 8), torch.randn(8), torch.randn(8)
    with torch.no_grad():
        torch.testing.assert_close(c(x, w=w, b=b, scale=s), m(x, w=w, b=b, scale=s))
        assert len(c._fast) == 1
        w2, s2 = torch.randn(8, 8), torch.randn(8)
        want = m(x, w=w2, b=b, scale=s2)
        assert c._fast_path((x,), {"w": w2, "b": b, "scale": s2}) is not runtime._MISS  # new tensors, same signature
        torch.testing.assert_close(c(x, w=w2, b=b, scale=s2), want)
        torch.testing.assert_close(c(x, scale=s2, b=b, w=w2), want)  # another order: its own entry
        assert len(c._fast) == 2


def test_a_tensor_passed_twice_by_keyword_is_read_right():
    m = _KwModel().eval()
    c = compile(m, target="cpu")
    x, w, b = torch.randn(3, 8), torch.randn(8, 8), torch.randn(8)
    with torch.no_grad():
        torch.testing.assert_close(c(x, w=w, b=b, scale=b), m(x, w=w, b=b, scale=b))
        torch.testing.assert_close(c(x, w=w, b=b, scale=b), m(x, w=w, b=b, scale=b))
        s = torch.randn(8)
        torch.testing.assert_close(c(x, w=w, b=b, scale=s), m(x, w=w, b=b, scale=s))
