"""Every zoo model compiles with target="cpu" through the real pipeline and matches eager."""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree

from solder import compile
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


GPU_TOL = {torch.float32: (2e-3, 2e-3), torch.bfloat16: (6e-2, 6e-2)}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_on_h100_matches_eager(name, dtype):
    """On the GPU: every zoo model compiles with target="h100" and matches eager (fp32: TF32 off)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, args, kwargs = ZOO[name].build()
    model = model.cuda().to(dtype)

    def dev(x):
        return x.cuda().to(dtype) if x.is_floating_point() else x.cuda()

    args = tuple(dev(a) for a in args)
    kwargs = {k: dev(v) for k, v in kwargs.items()}
    compiled = compile(model, target="h100")
    atol, rtol = GPU_TOL[dtype]
    with torch.no_grad():
        _close(compiled(*args, **kwargs).float(), model(*args, **kwargs).float(), atol, rtol)
        # Calls 2 and 3 capture and replay a CUDA graph: new input values must flow through it.
        args2 = tuple(_fresh(a) for a in args)
        kwargs2 = {k: _fresh(v) for k, v in kwargs.items()}
        compiled(*args2, **kwargs2)
        _close(compiled(*args2, **kwargs2).float(), model(*args2, **kwargs2).float(), atol, rtol)


def _fresh(x: torch.Tensor) -> torch.Tensor:
    """Different values of the same shape/dtype (integer inputs such as token ids are permuted)."""
    if x.is_floating_point():
        return torch.randn_like(x)
    return x.flatten()[torch.randperm(x.numel(), device=x.device)].view_as(x)
