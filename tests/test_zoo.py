"""The model zoo (examples/models.py): every entry runs, exports, and builds deterministically."""

import pytest
import torch

from examples.models import ZOO, ZooEntry, get

NAMES = sorted(ZOO)

EXPECTED = {
    "mlp", "resnet", "gpt2", "bert", "vit", "llama", "attn_sdpa", "attn_masked_fill",
    "attn_additive", "gpt_block", "mlp_block",
}


def _run(entry: ZooEntry) -> torch.Tensor:
    model, args, kwargs = entry.build()
    with torch.no_grad():
        return model(*args, **kwargs)


def test_zoo_has_every_entry():
    assert set(ZOO) == EXPECTED
    for name, entry in ZOO.items():
        assert entry.name == name
        assert entry.description and "\n" not in entry.description
        assert entry.atol > 0 and entry.rtol > 0


@pytest.mark.parametrize("name", NAMES)
def test_entry_runs_eagerly_with_finite_output(name):
    model, args, kwargs = get(name).build()
    assert not model.training
    with torch.no_grad():
        out = model(*args, **kwargs)
    assert isinstance(out, torch.Tensor)
    assert out.numel() > 0
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_entry_exports_and_matches_eager(name):
    # strict=False is what solder's capture uses; no builder needs anything else.
    model, args, kwargs = get(name).build()
    program = torch.export.export(model, args, kwargs, strict=False)
    with torch.no_grad():
        expected = model(*args, **kwargs)
        got = program.module()(*args, **kwargs)
    torch.testing.assert_close(got, expected, atol=get(name).atol, rtol=get(name).rtol)


@pytest.mark.parametrize("name", NAMES)
def test_builds_are_deterministic(name):
    assert torch.equal(_run(get(name)), _run(get(name)))


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="unknown zoo model 'nope'") as info:
        get("nope")
    for name in NAMES:
        assert name in str(info.value)


def test_entries_are_frozen():
    with pytest.raises(AttributeError):
        get("mlp").atol = 1.0


def test_block_builders_take_sizes():
    from examples.models import gpt_block, mlp_block

    model, (x,), _ = gpt_block(d=32, heads=2, batch=1, seq=8, dtype=torch.float64)
    assert x.shape == (1, 8, 32) and x.dtype == torch.float64
    assert model(x).shape == (1, 8, 32)
    model, (x,), _ = mlp_block(d=16, tokens=4)
    assert model(x).shape == (4, 16)
