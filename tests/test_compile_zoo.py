"""Every zoo model compiles with target="cpu" through the real pipeline and matches eager."""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree

from compiler import compile
from examples.models import ZOO


def _close(got, want, atol, rtol):
    g, w = pytree.tree_leaves(got), pytree.tree_leaves(want)
    assert len(g) == len(w)
    for a, b in zip(g, w):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_matches_eager(name):
    entry = ZOO[name]
    model, args, kwargs = entry.build()
    compiled = compile(model, target="cpu")
    with torch.no_grad():
        want = model(*args, **kwargs)
        got = compiled(*args, **kwargs)
    _close(got, want, entry.atol, entry.rtol)
    sp = next(iter(compiled.specializations.values()))
    assert sp.pipeline.pipeline, "the target's pipeline ran"
    assert not sp.imported.externs, f"{name}: ops fell back to eager: {sp.imported.externs}"


@pytest.mark.parametrize("dtype,atol", [(torch.bfloat16, 3e-2), (torch.float16, 1e-2)])
def test_low_precision_model_matches_eager(dtype, atol):
    model, args, kwargs = ZOO["gpt_block"].build()
    model = model.to(dtype)
    args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
    compiled = compile(model, target="cpu")
    with torch.no_grad():
        _close(compiled(*args), model(*args), atol, atol)
