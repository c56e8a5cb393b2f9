"""Sparse attention: layouts, the CPU kernel and the Triton template against dense attention with the same
mask, the rewrite pass from the API, and calibration on a tiny model (CPU; Triton under TRITON_INTERPRET)."""

import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from solder.backends.reference import attention_reference, block_sparse_reference  # noqa: E402
from solder import compile as solder_compile  # noqa: E402
from solder.compiler import ir  # noqa: E402
from solder.compiler.dialects import graph as g  # noqa: E402
from solder.compiler.sparse_attention import (  # noqa: E402
    OpSpec, SparseAttention, SparseAttentionError, call_layouts, density, head_masks, mask_mod_blocks,
    to_csr, token_mask, user_blocks, window_blocks,
)
from solder.sparse_calibrate import pipeline_passes  # noqa: E402
from solder.passes.registry import parse  # noqa: E402
from solder.passes.rewrite_sparse_attention import RewriteSparseAttentionPass  # noqa: E402


def _attn_module(b, hq, hkv, t, d, causal=True):
    tq, tk = f"tensor<{b}x{hq}x{t}x{d}xf32>", f"tensor<{b}x{hkv}x{t}x{d}xf32>"
    c = ", causal" if causal else ""
    return ir.parse(f"func.func @forward(%q: {tq}, %k: {tk}, %v: {tk}) -> {tq} {{\n"
                    f"  %o = graph.attention %q, %k, %v {{scale = 0.25 : f64{c}}} : {tq}, {tk}, {tk} -> {tq}\n"
                    f"  func.return %o : {tq}\n}}")


def _sparse_op(module):
    return next(o for o in module.walk() if isinstance(o, g.BlockSparseAttentionOp))


# ---- layouts ------------------------------------------------------------------------------------


def test_window_layout_matches_the_template_helper():
    from solder.backends.triton.templates.attention import sliding_window_layout

    for t, block, window, sink in [(256, 16, 64, 16), (200, 32, 32, 0), (1024, 64, 256, 64)]:
        n = -(-t // block)
        c, i = to_csr(window_blocks(n, n, block, window, sink)[None])
        c2, i2 = sliding_window_layout(t, block, window, sink=sink)
        assert torch.equal(c, c2) and torch.equal(i, i2)


def test_density_and_csr_round_trip():
    from solder.backends.triton.templates.attention import layout_to_mask

    m = window_blocks(8, 8, 16, 32, 16)[None]
    assert density(m, True) == pytest.approx(26 / 36)
    lay = to_csr(m)
    assert torch.equal(layout_to_mask(lay, 16, 128, 128), token_mask(m, 16, 128, 128, True))


def test_blocks_from_mask_mod_and_layout():
    def local(b, h, q, kv):
        return (kv <= q) & (q - kv < 16 * (h + 1))

    m = mask_mod_blocks(local, 2, 64, 64, 16)
    assert m.shape == (2, 4, 4) and m[0, 3].tolist() == [False, False, True, True]
    assert m[1, 3].tolist() == [False, True, True, True]
    sa = SparseAttention(policy="blocks", layout=m, block=16)
    assert torch.equal(user_blocks(sa, 2, 64, 64), m)
    sa2 = SparseAttention(policy="blocks", layout=to_csr(m), block=16)
    assert torch.equal(user_blocks(sa2, 2, 64, 64), m)
    with pytest.raises(SparseAttentionError, match=r"layout must be \[H or 1, 4, 4\]"):
        user_blocks(SparseAttention(policy="blocks", layout=m[:, :3], block=16), 2, 64, 64)


def test_bad_options_are_clear_errors():
    with pytest.raises(SparseAttentionError, match="unknown policy 'sliding'"):
        SparseAttention(policy="sliding")
    with pytest.raises(SparseAttentionError, match="block must be 64 or 128"):
        SparseAttention(block=48)
    with pytest.raises(SparseAttentionError, match="calibration_inputs= is required"):
        SparseAttention(policy="calibrate")
    with pytest.raises(SparseAttentionError, match="exactly one of layout= or mask_mod="):
        SparseAttention(policy="blocks")
    module = _attn_module(1, 2, 2, 64, 16)
    with pytest.raises(SparseAttentionError, match="needs a plan"):
        RewriteSparseAttentionPass(policy="calibrate").apply(ir.context(), module)


# ---- kernels against dense attention with the same mask -----------------------------------------

PATTERNS = [{"pattern": "window", "window": 32, "sinks": 16}, {"pattern": "dense"},
            {"pattern": "topk", "k": 2}, {"pattern": "vertical_slash", "vertical": 2, "slash": 2}]


@pytest.mark.parametrize("t", [128, 100])
def test_cpu_kernel_matches_masked_dense(t):
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, t, 16), torch.randn(1, 2, t, 16), torch.randn(1, 2, t, 16)
    m = head_masks(PATTERNS, 4, t, t, 16, 0.25, True, q[0], k[0])
    out = block_sparse_reference(q, k, v, *to_csr(m), 16, 0.25, True, chunk=2)
    ref = attention_reference(q, k, v, token_mask(m, 16, t, t, True)[None], 0.25, False)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_reference_op_runs_per_batch_dynamic_layouts():
    torch.manual_seed(1)
    module = _attn_module(2, 4, 4, 64, 16)
    RewriteSparseAttentionPass(policy="calibrate", plan=json.dumps(
        [{"heads": PATTERNS, "density": 0.5}]), block=16).apply(ir.context(), module)
    op = _sparse_op(module)
    q, k, v = (torch.randn(2, 4, 64, 16) for _ in range(3))
    from solder.backends.reference import OPS

    out = OPS[op.name](op)(q, k, v)
    for b in range(2):
        m = head_masks(PATTERNS, 4, 64, 64, 16, 0.25, True, q[b], k[b])
        ref = attention_reference(q[b:b + 1], k[b:b + 1], v[b:b + 1], token_mask(m, 16, 64, 64, True)[None], 0.25)
        torch.testing.assert_close(out[b:b + 1], ref, atol=1e-5, rtol=1e-5)


def test_triton_template_through_the_lowering():
    pytest.importorskip("triton")
    from solder.backends.triton.sparse import lower_block_sparse_attention

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(2)
    module = _attn_module(1, 2, 1, 100, 16)  # GQA, T not a multiple of the block
    RewriteSparseAttentionPass(policy="window", window=16, sinks=16, block=16, max_density=1.0).apply(ir.context(), module)
    op = _sparse_op(module)
    q, k, v = (torch.randn(1, h, 100, 16, device=dev) for h in (2, 1, 1))
    out = lower_block_sparse_attention(op, q, k, v)
    lay = call_layouts(OpSpec.of(op), q, k)[0]
    ref = block_sparse_reference(q.cpu(), k.cpu(), v.cpu(), lay[0].cpu(), lay[1].cpu(), 16, 0.25, True)
    torch.testing.assert_close(out.cpu(), ref, atol=2e-4, rtol=2e-4)


# ---- the pass from compile() and calibration ------------------------------------------------------


class TinyAttn(nn.Module):
    """One causal SDPA layer whose heads differ: head 0 local by construction (position-coded q/k)."""

    def __init__(self, d=32, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).split(d, -1))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)


def test_window_policy_from_compile_matches_masked_eager():
    torch.manual_seed(3)
    model, x = TinyAttn().eval(), torch.randn(1, 64, 32)
    sa = SparseAttention(policy="window", window=16, sinks=0, block=16)
    cm = solder_compile(model, target="cpu", passes=parse("canonicalize,cse") + pipeline_passes(sa, model))
    with torch.no_grad():
        out = cm(x)
        q, k, v = (z.reshape(1, 64, 2, 16).transpose(1, 2) for z in model.qkv(x).split(32, -1))
        mask = token_mask(window_blocks(4, 4, 16, 16, 0), 16, 64, 64, True)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(1, 64, 32)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert "graph.block_sparse_attention" in ir.print_ir(next(iter(cm.specializations.values())).imported.module)


def test_calibrate_picks_within_budget_and_explains():
    torch.manual_seed(4)
    model = TinyAttn().eval()
    calib = [torch.randn(2, 128, 32)]
    sa = SparseAttention(policy="calibrate", budget=0.5, block=16, calibration_inputs=calib, max_density=0.9)
    cm = solder_compile(model, target="cpu", passes=parse("canonicalize,cse") + pipeline_passes(sa, model))
    x = torch.randn(1, 128, 32)
    with torch.no_grad():
        out, ref = cm(x), model(x)
    (entry,) = sa.plan
    assert ("heads" in entry) and (entry.get("dense") or all(e <= 0.5 for e in entry["errors"]))
    text = ir.print_ir(next(iter(cm.specializations.values())).imported.module)
    if entry.get("dense"):
        assert "graph.sparse" in text
    else:
        assert '\\22err\\22' in text and "density" in text
        assert (out - ref).abs().max() < 2.0
    strict = SparseAttention(policy="calibrate", budget=0.0, block=16, calibration_inputs=calib)
    pipeline_passes(strict, model)
    assert strict.plan[0].get("dense") or all(h["pattern"] == "dense" for h in strict.plan[0]["heads"])


def test_with_sparse_attention_inserts_before_fusion():
    from solder.sparse_calibrate import with_sparse_attention

    sa = SparseAttention(policy="window", block=64)
    names = [p.name for p in with_sparse_attention("canonicalize,cse,fuse-ops,dce", sa)]
    assert names == ["canonicalize", "cse", "recognize-attention", "rewrite-sparse-attention", "fuse-ops", "dce"]
    names = [p.name for p in with_sparse_attention("recognize-attention,cse", sa)]
    assert names == ["recognize-attention", "rewrite-sparse-attention", "cse"]


# ---- the blocks and calibrate policies from text (the CLI) ----------------------------------------


def _cli(tmp_path, pipeline, *extra):
    from solder import cli

    src = tmp_path / "attn.mlir"
    if not src.exists():
        src.write_text(ir.print_ir(_attn_module(1, 2, 2, 128, 16)))
    out = tmp_path / "out.mlir"
    assert cli.run([*extra, *(() if extra else (str(src),)), "-p", pipeline, "-o", str(out)]) == 0
    return ir.parse(out.read_text())


def _layout_of(module):
    op = _sparse_op(module)
    n = -(-128 // op.block.value.data)
    return torch.tensor(op.layout.get_values(), dtype=torch.bool).view(-1, n, n)


def test_named_mask_terms():
    from solder.compiler.sparse_attention import named_mask_mod

    m = mask_mod_blocks(named_mask_mod("local:32,every:4", 16), 1, 128, 128, 16)[0]
    assert m[7].tolist() == [True, False, False, False, True, True, True, True]  # block 0, 4, and the last 32 keys
    assert m[2].tolist() == [True, True, True] + [False] * 5
    sinks = mask_mod_blocks(named_mask_mod("local:16,sinks:32", 16), 1, 128, 128, 16)[0]
    assert sinks[6].tolist() == [True, True, False, False, False, True, True, False]
    for bad in ("window:32", "local:-1", "local", "local:32;every:2", ""):
        with pytest.raises(SparseAttentionError, match="mask"):
            named_mask_mod(bad, 16)


def test_cli_blocks_from_mask_mask_mod_and_layout_files(tmp_path):
    import numpy as np

    from examples.sparse_lm.masks import local_strided

    want = mask_mod_blocks(local_strided, 1, 128, 128, 16)
    by_name = _layout_of(_cli(tmp_path, 'rewrite-sparse-attention{policy=blocks mask="local:64,every:4" block=16 max-density=1.0}'))
    by_file = _layout_of(_cli(tmp_path, 'rewrite-sparse-attention{policy=blocks '
                                        'mask-mod="examples/sparse_lm/masks.py:local_strided" block=16 max-density=1.0}'))
    by_module = _layout_of(_cli(tmp_path, 'rewrite-sparse-attention{policy=blocks '
                                          'mask-mod="examples.sparse_lm.masks:local_strided" block=16 max-density=1.0}'))
    assert torch.equal(by_name, want) and torch.equal(by_file, want) and torch.equal(by_module, want)
    per_head = torch.stack([want[0], window_blocks(8, 8, 16, 16, 0)])  # two heads, two layouts
    torch.save(per_head, tmp_path / "lay.pt")
    np.save(tmp_path / "lay.npy", per_head.numpy())
    torch.save(to_csr(per_head), tmp_path / "csr.pt")
    for f in ("lay.pt", "lay.npy", "csr.pt"):
        got = _layout_of(_cli(tmp_path, f'rewrite-sparse-attention{{policy=blocks layout="{tmp_path / f}" block=16 max-density=1.0}}'))
        assert torch.equal(got, per_head), f


def test_cli_blocks_errors_are_clear(tmp_path):
    from solder.compiler.errors import SolderError

    with pytest.raises(SolderError, match="exactly one of layout="):
        _cli(tmp_path, "rewrite-sparse-attention{policy=blocks block=16 max-density=1.0}")
    with pytest.raises(SolderError, match="exactly one of layout=.*got layout, mask"):
        _cli(tmp_path, 'rewrite-sparse-attention{policy=blocks layout="x.pt" mask="local:16" block=16 max-density=1.0}')
    with pytest.raises(SolderError, match="no such layout file"):
        _cli(tmp_path, 'rewrite-sparse-attention{policy=blocks layout="missing.pt" block=16 max-density=1.0}')
    torch.save(torch.ones(2, 4, 4, dtype=torch.bool), tmp_path / "small.pt")
    with pytest.raises(SolderError, match=r"layout must be \[H or 1, 8, 8\]"):
        _cli(tmp_path, f'rewrite-sparse-attention{{policy=blocks layout="{tmp_path / "small.pt"}" block=16 max-density=1.0}}')
    with pytest.raises(SolderError, match="has no function 'nope'"):
        _cli(tmp_path, 'rewrite-sparse-attention{policy=blocks mask-mod="examples/sparse_lm/masks.py:nope" block=16 max-density=1.0}')
    with pytest.raises(SolderError, match="no such plan file"):
        _cli(tmp_path, 'rewrite-sparse-attention{policy=calibrate plan="missing.json"}')
    with pytest.raises(SolderError, match="--from-torch"):
        _cli(tmp_path, "rewrite-sparse-attention{policy=calibrate budget=0.5}")


def test_cli_named_mask_leaves_non_causal_attention_dense(tmp_path):
    src = tmp_path / "attn.mlir"
    src.write_text(ir.print_ir(_attn_module(1, 2, 2, 128, 16, causal=False)))
    text = ir.print_ir(_cli(tmp_path, 'rewrite-sparse-attention{policy=blocks mask="local:32" block=16 max-density=1.0}'))
    assert "graph.block_sparse_attention" not in text and "named masks (mask=) are causal" in text


BUILDER = """
import torch
from torch import nn
import torch.nn.functional as F


class Attn(nn.Module):
    def __init__(self, d=32, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).split(d, -1))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)


def build():
    torch.manual_seed(0)
    return Attn().eval(), (torch.randn(1, 512, 32),), {}
"""


def test_cli_calibrates_a_from_torch_model(tmp_path):
    """policy=calibrate without a plan: solder-opt --from-torch calibrates the model, on the builder's
    example inputs or on a calib= file, and writes the same plan as the API."""
    import importlib.util

    (tmp_path / "builder.py").write_text(BUILDER)
    spec = importlib.util.spec_from_file_location("_calib_builder", tmp_path / "builder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model, (x,), _ = mod.build()
    calib = torch.randn(2, 512, 32, generator=torch.Generator().manual_seed(5))
    torch.save([(calib,)], tmp_path / "calib.pt")
    frm = ("--from-torch", f"{tmp_path / 'builder.py'}:build")
    for extra, inputs in (("", [(x,)]), (f' calib="{tmp_path / "calib.pt"}"', [(calib,)])):
        module = _cli(tmp_path, "canonicalize,cse,recognize-attention,rewrite-sparse-attention"
                                f"{{policy=calibrate budget=3.0 block=16 max-density=0.9{extra}}}", *frm)
        sa = SparseAttention(policy="calibrate", budget=3.0, block=16, max_density=0.9, calibration_inputs=inputs)
        pipeline_passes(sa, model)
        (entry,) = sa.plan
        assert not entry.get("dense"), entry  # a budget of 3 value norms lets every head go sparse
        heads = json.loads(_sparse_op(module).heads.data)
        assert [{k: v for k, v in h.items() if k != "err"} for h in heads] == entry["heads"]
        assert all(h["err"] <= 3.0 for h in heads)
    from solder.compiler.errors import SolderError

    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(SolderError, match="must hold a tensor, a tuple of tensors, or a list"):
        _cli(tmp_path, f'recognize-attention,rewrite-sparse-attention{{policy=calibrate calib="{tmp_path / "bad.pt"}"}}',
             *frm)


# ---- calibrate's end-to-end check and back-off ----------------------------------------------------


class DeepAttn(nn.Module):
    """Four pre-norm causal attention layers with residuals: per-head errors within the budget compound."""

    def __init__(self, d=32, heads=2, layers=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.ModuleList(nn.Linear(d, 3 * d) for _ in range(layers))
        self.ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))

    def forward(self, x):
        b, t, d = x.shape
        for qkv, ln in zip(self.qkv, self.ln):
            q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in qkv(ln(x)).split(d, -1))
            x = x + F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        return x


def test_output_drift_and_its_bound():
    from solder.sparse_calibrate import drift_bound, output_drift

    dense = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    moved = torch.tensor([[3.0, 4.0], [0.0, 5.0]])
    assert output_drift([dense], [moved]) == pytest.approx(5 / (12.5 ** 0.5))  # worst row / rms row norm
    assert output_drift([dense, torch.arange(3)], [dense, torch.arange(3) + 1]) == 0.0  # integer outputs skipped
    assert output_drift([dense], [moved.masked_fill(moved == 5, float("nan"))]) == float("inf")  # NaN: no bound holds
    assert [drift_bound(b) for b in (0.0, 0.5, 1.0, 2.0, 3.0)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_calibrate_backs_off_until_the_end_to_end_drift_is_within_the_bound():
    from solder.sparse_calibrate import calibrate, drift_bound, output_drift

    torch.manual_seed(0)
    model = DeepAttn().eval()
    calib = [torch.randn(2, 128, 32, generator=torch.Generator().manual_seed(1))]
    budget, bound = 0.5, drift_bound(0.5)
    # the per-head choice alone: every head within the budget, yet the model's output drifts past the bound
    first = SparseAttention(policy="calibrate", budget=budget, block=16, calibration_inputs=calib, max_density=0.9)
    calibrate(model, first, "reference", backoff=False)
    assert all(not e.get("dense") and max(e["errors"]) <= budget for e in first.plan)
    assert first.calibration["drift"] > 1.2 * bound and not first.calibration["steps"]

    sa = SparseAttention(policy="calibrate", budget=budget, block=16, calibration_inputs=calib, max_density=0.9)
    cm = solder_compile(model, target="reference", explain=False,
                        passes=parse("canonicalize,cse") + pipeline_passes(sa, model, "reference"))
    info = sa.calibration
    assert info["drift_before_backoff"] == pytest.approx(first.calibration["drift"])
    assert info["steps"] and info["drift"] <= bound
    assert any(b < budget for b in info["budgets"])  # some attention's per-head budget was lowered ...
    dens = [e.get("density", 1.0) if not e.get("dense") else 1.0 for e in sa.plan]
    assert sum(dens) > sum(e["density"] for e in first.plan)  # ... and made denser
    assert min(dens) < 0.9  # still sparse where the drift allows
    # measured independently: the compiled model against eager on the calibration inputs
    with torch.no_grad():
        drift = output_drift([model(*calib)], [cm(*calib)])
    assert drift <= bound + 1e-4, (drift, bound)
    text = cm.explain()  # every attention says the drift, the bound and what the back-off did
    assert text.count(f"end-to-end output drift {info['drift']:.3g} <= bound {bound:.3g} after back-off") == 4
    assert "per-head budget 0.5 -> " in text
