"""The CPU backend's generated per-shape flash-attention kernel (backends/cpu/attention.py): numerics against eager
dense attention written out (causal, masks, GQA, T not a multiple of the block, d = 64/128, bf16),
block-sparse against dense attention with the same token mask, the routes explain() shows, and the
kernel's scratch (nothing of size T×S)."""

import json
import math
import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from solder.backends.cpu import attention_plan as A
from solder.backends.cpu.backend import CpuBackend
from solder import compile as solder_compile
from solder.compiler import ir
from solder.compiler.sparse_attention import head_masks, token_mask
from solder.passes.rewrite_sparse_attention import RewriteSparseAttentionPass

TYPES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16", torch.bool: "i1",
         torch.float64: "f64"}


def _t(shape, dtype=torch.float32) -> str:
    return "tensor<" + "x".join(map(str, shape)) + f"x{TYPES[dtype]}>"


def _module(q, k, v, mask=None, scale=0.125, causal=False):
    tq, tk, tv = _t(q.shape, q.dtype), _t(k.shape, k.dtype), _t(v.shape, v.dtype)
    to = _t((*q.shape[:3], v.shape[3]), q.dtype)
    attrs = f"scale = {scale} : f64" + (", causal" if causal else "")
    margs, mtype, marg = "", "", ""
    if mask is not None:
        mt = _t(mask.shape, mask.dtype)
        margs, mtype, marg = f", %m: {mt}", f" mask %m : {mt}", ""
    return ir.parse(f"func.func @forward(%q: {tq}, %k: {tk}, %v: {tv}{margs}) -> {to} {{\n"
                    f"  %o = graph.attention %q, %k, %v{mtype}{marg} {{{attrs}}} : {tq}, {tk}, {tv} -> {to}\n"
                    f"  func.return %o : {to}\n}}")


def eager_attention(q, k, v, mask=None, scale=0.125, causal=False):
    """softmax(q kᵀ·scale + mask) v written out (the T×S scores materialized), GQA by repeat."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1).double(), v.repeat_interleave(g, 1).double()
    s = q.double() @ k.transpose(-1, -2) * scale
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else s + mask.double()
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
    return (s.softmax(-1) @ v).float()


@pytest.fixture(autouse=True)
def _per_shape_kernel(monkeypatch):
    """These tests are about the per-shape kernel: the prebuilt size-generic one (tests/test_attention_lib.py)
    is switched off so that every route here is the kernel generated for the op's shape."""
    monkeypatch.setenv("SOLDER_CPU_LIB", "off")


def _run(module, *args):
    prog = CpuBackend().lower(module)
    return prog.run(list(args))[0], prog


CASES = [  # b, hq, hkv, t, s, d, causal
    (1, 2, 2, 100, 100, 64, False),
    (2, 4, 2, 130, 130, 64, True),    # GQA 2:1, T = 2 blocks + 2
    (1, 4, 1, 70, 70, 128, True),     # MQA, d = 128
    (1, 2, 2, 50, 90, 64, False),     # T != S
    (1, 2, 1, 1, 65, 64, False),      # one query row, one key past a block
    (1, 2, 2, 40, 40, 96, True),      # d = 96: P@V in column chunks of 64 and 32
]


@pytest.mark.parametrize("b,hq,hkv,t,s,d,causal", CASES)
def test_matches_eager_dense(b, hq, hkv, t, s, d, causal):
    torch.manual_seed(t + s)
    q, k, v = torch.randn(b, hq, t, d), torch.randn(b, hkv, s, d), torch.randn(b, hkv, s, d)
    out, prog = _run(_module(q, k, v, scale=d ** -0.5, causal=causal), q, k, v)
    torch.testing.assert_close(out, eager_attention(q, k, v, scale=d ** -0.5, causal=causal), atol=2e-5, rtol=2e-5)
    assert prog.kernels[0]["route"].startswith(A.ROUTE)


def test_additive_mask_with_minus_inf_and_causal():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 75, 64) for _ in range(3))
    mask = torch.randn(1, 1, 75, 75)
    mask[..., 5:9] = -math.inf  # some keys masked for every row
    out, _ = _run(_module(q, k, v, mask, causal=True), q, k, v, mask)
    torch.testing.assert_close(out, eager_attention(q, k, v, mask, causal=True), atol=2e-5, rtol=2e-5)


def test_bool_padding_mask_broadcast_over_heads_and_rows():
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 4, 80, 64), torch.randn(2, 2, 80, 64), torch.randn(2, 2, 80, 64)
    mask = torch.rand(2, 1, 1, 80) > 0.4
    mask[..., 0] = True
    out, prog = _run(_module(q, k, v, mask), q, k, v, mask)
    torch.testing.assert_close(out, eager_attention(q, k, v, mask), atol=2e-5, rtol=2e-5)
    assert "bool mask" in prog.kernels[0]["route"] and "GQA 4:2" in prog.kernels[0]["route"]


def test_fully_masked_rows_give_zeros():
    q, k, v = (torch.randn(1, 1, 10, 64) for _ in range(3))
    mask = torch.ones(1, 1, 10, 10, dtype=torch.bool)
    mask[0, 0, 3] = False
    out, _ = _run(_module(q, k, v, mask), q, k, v, mask)
    assert torch.equal(out[0, 0, 3], torch.zeros(64))
    keep = torch.arange(10) != 3
    torch.testing.assert_close(out[:, :, keep], eager_attention(q, k, v, mask)[:, :, keep], atol=2e-5, rtol=2e-5)


def test_bf16_inputs_upcast():
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 2, 40, 64).bfloat16() for _ in range(3))
    out, prog = _run(_module(q, k, v, causal=True), q, k, v)
    assert out.dtype == torch.bfloat16 and prog.kernels[0]["route"].startswith(A.ROUTE)
    ref = eager_attention(q.float(), k.float(), v.float(), causal=True)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_f64_goes_to_sdpa_and_says_why():
    q, k, v = (torch.randn(1, 2, 16, 16, dtype=torch.float64) for _ in range(3))
    out, prog = _run(_module(q, k, v), q, k, v)
    route = prog.kernels[0]["route"]
    assert route.startswith(A.SDPA_ROUTE) and "element type f64" in route
    torch.testing.assert_close(out, eager_attention(q, k, v).double(), atol=1e-5, rtol=1e-5)


def test_no_scratch_of_size_t_by_s():
    """Every buffer the kernel allocates is at most the size of k (the transposed keys)."""
    spec = A.AttentionSpec(1, 4, 4096, 64, 4, 4096, 64, 0.125, True, parallel=True)
    text = A.emit(spec, "k0")
    shapes = re.findall(r"memref\.alloca?\(\)[^:]*: memref<([0-9x]+)xf32>", text)
    assert shapes, text[:2000]
    sizes = [math.prod(int(n) for n in sh.split("x")) for sh in shapes]
    assert max(sizes) <= 4 * 4096 * 64 < 4096 * 4096
    assert "scf.forall" in text and "vector.fma" in text


def test_mask_that_does_not_broadcast_is_not_generated():
    """A mask dim that is neither 1 nor the full size: the plan names SDPA and the reason."""
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    op = next(o for o in _module(q, k, v, torch.zeros(1, 3, 8, 8)).walk() if o.name == "graph.attention")
    p = A.plan(op)
    assert p.spec is None and p.route.startswith(A.SDPA_ROUTE) and "a mask of shape [1, 3, 8, 8]" in p.route


# ---- block-sparse against dense attention with the same token mask -------------------------------

PATTERNS = [{"pattern": "window", "window": 32, "sinks": 16}, {"pattern": "dense"},
            {"pattern": "topk", "k": 2}, {"pattern": "vertical_slash", "vertical": 2, "slash": 2}]


def _sparse_module(b, hq, hkv, t, d, heads, block):
    m = _module(torch.empty(b, hq, t, d), torch.empty(b, hkv, t, d), torch.empty(b, hkv, t, d),
                scale=0.25, causal=True)
    RewriteSparseAttentionPass(policy="calibrate", plan=json.dumps([{"heads": heads, "density": 0.5}]),
                               block=block).apply(ir.context(), m)
    assert any(o.name == "graph.block_sparse_attention" for o in m.walk())
    return m


@pytest.mark.parametrize("t", [128, 100])
def test_block_sparse_matches_masked_dense(t):
    """Per-head static and per-call patterns, two batch elements (per-batch layouts), GQA 4:2."""
    torch.manual_seed(t)
    q, k, v = torch.randn(2, 4, t, 16), torch.randn(2, 2, t, 16), torch.randn(2, 2, t, 16)
    out, prog = _run(_sparse_module(2, 4, 2, t, 16, PATTERNS, 16), q, k, v)
    assert prog.kernels[0]["route"].startswith(A.ROUTE) and "block-sparse" in prog.kernels[0]["route"]
    for b in range(2):
        m = head_masks(PATTERNS, 4, t, t, 16, 0.25, True, q[b], k[b])
        ref = eager_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], token_mask(m, 16, t, t, True)[None], 0.25)
        torch.testing.assert_close(out[b:b + 1], ref, atol=2e-5, rtol=2e-5)


def test_block_sparse_static_window_shared_layout():
    torch.manual_seed(5)
    t, heads = 200, [{"pattern": "window", "window": 64, "sinks": 32}]
    q, k, v = (torch.randn(1, 2, t, 64) for _ in range(3))
    out, prog = _run(_sparse_module(1, 2, 2, t, 64, heads, 32), q, k, v)
    m = head_masks(heads, 2, t, t, 32, 0.25, True)
    ref = eager_attention(q, k, v, token_mask(m, 32, t, t, True)[None], 0.25)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    assert "32x32 blocks" in prog.kernels[0]["route"] and "block-sparse" in prog.kernels[0]["route"]


# ---- from compile(): the written-out model gets the generated kernel, explain() says so ---------

class WrittenOut(nn.Module):
    def forward(self, q, k, v):
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        t = q.shape[-2]
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        return s.softmax(-1) @ v


def test_compile_routes_attention_to_the_generated_kernel():
    torch.manual_seed(6)
    q, k, v = (torch.randn(1, 2, 96, 64) for _ in range(3))
    model = WrittenOut().eval()
    cm = solder_compile(model, target="cpu")
    torch.testing.assert_close(cm(q, k, v), model(q, k, v), atol=2e-5, rtol=2e-5)
    text = cm.explain()
    assert re.search(r"mlir: flash attention \(64x64 blocks, online softmax, causal, .*no TxS buffer\)", text)


def test_noncausal_d128_column_chunks():
    """d=128: the P@V accumulators are updated in two 64-column chunks."""
    torch.manual_seed(7)
    q, k, v = (torch.randn(1, 2, 72, 128) for _ in range(3))
    out, prog = _run(_module(q, k, v), q, k, v)
    assert prog.kernels[0]["route"].startswith(A.ROUTE)
    torch.testing.assert_close(out, eager_attention(q, k, v), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_parallel_kernel_matches(causal):
    """The OpenMP variant (scf.forall; causal query blocks interleaved short/long across threads)."""
    from solder.backends.cpu import jit

    if jit.find_openmp() is None:
        pytest.skip("no OpenMP runtime")
    torch.manual_seed(8)
    q, k, v = torch.randn(1, 3, 330, 64), torch.randn(1, 1, 330, 64), torch.randn(1, 1, 330, 64)
    spec = A.AttentionSpec(1, 3, 330, 64, 1, 330, 64, 0.125, causal, parallel=True)
    text = A.module(spec, "attn")
    assert "scf.forall" in text
    out = A._dense_call(spec, jit.compile_mlir(text, "attn"))(q, k, v)
    torch.testing.assert_close(out, eager_attention(q, k, v, causal=causal), atol=2e-5, rtol=2e-5)


# ---- q, k, v read in place: views of a fused projection's output, output written [B, T, H, Dv] -------
class FusedQKV(torch.nn.Module):
    """The zoo's head split: one projection, slices, reshape to heads, permute; merge after attention."""

    def __init__(self, d=64, heads=4, kv_heads=4):
        super().__init__()
        self.h, self.hkv, self.hd = heads, kv_heads, d // heads
        self.qkv = torch.nn.Linear(d, (heads + 2 * kv_heads) * self.hd)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split([self.h * self.hd, self.hkv * self.hd, self.hkv * self.hd], -1)
        q, k, v = (y.reshape(b, t, -1, self.hd).transpose(1, 2) for y in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.hkv != self.h)
        return o.transpose(1, 2).reshape(b, t, -1)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_kernel_reads_head_views_in_place(kv_heads):
    """No view step and no copy per call: the attention step takes the projection's output itself, with
    the heads' offsets and strides in its memref types, and returns the merged [B, T, H*Dv] value."""
    from solder.backends.cpu.backend import plan_module

    torch.manual_seed(9)
    model = FusedQKV(kv_heads=kv_heads).eval()
    x = torch.randn(2, 40, 64)
    cm = solder_compile(model, target="cpu")
    torch.testing.assert_close(cm(x), model(x), atol=2e-5, rtol=2e-5)
    plan = plan_module(next(iter(cm.specializations.values())).imported.module)
    assert [s.route.split(":")[0] for s in plan.steps] == ["library", "mlir"], [s.route for s in plan.steps]
    att = plan.steps[1]
    (lin,) = plan.steps[0].outs
    assert att.ins == [lin]
    width = (4 + 2 * kv_heads) * 16  # the projection's output features
    assert f"strided<[{40 * width}, 16, {width}, 1], offset: 64>" in att.text  # k: heads after q's 64 columns
    assert ", strided<[2560, 16, 64, 1]>" in att.text  # out: [B, T, H, Dv] memory
    assert att.outs == plan.returns


def test_in_place_views_of_a_noncontiguous_input():
    """The views' base is the caller's tensor: strides assume it contiguous, so a non-contiguous one is
    copied first (same numbers), and a later contiguous call still reads in place."""
    class Heads(torch.nn.Module):
        def forward(self, x):
            q, k, v = x.reshape(2, 24, 3, 4, 16).permute(2, 0, 3, 1, 4).unbind(0)
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 24, 64)

    torch.manual_seed(10)
    model = Heads().eval()
    x = torch.randn(2, 24, 192)
    cm = solder_compile(model, target="cpu")
    torch.testing.assert_close(cm(x), model(x), atol=2e-5, rtol=2e-5)
    from solder.backends.cpu.backend import plan_module

    plan = plan_module(next(iter(cm.specializations.values())).imported.module)
    assert len(plan.steps) == 1 and plan.steps[0].ins == plan.args[-1:]  # the kernel reads x itself
    xt = torch.randn(192, 24, 2).permute(2, 1, 0)  # same shape, transposed memory
    torch.testing.assert_close(cm(xt), model(xt), atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(cm(x), model(x), atol=2e-5, rtol=2e-5)
