"""The Triton templates against eager PyTorch.

On CPU every template runs under the Triton interpreter (`TRITON_INTERPRET=1`, set here before triton is
imported) at tiny shapes; the `gpu` tests run the same checks at real shapes in bf16 when CUDA is there.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="the Triton templates need the triton package")

import torch.nn.functional as F  # noqa: E402

from solder.backends.triton.templates import (  # noqa: E402
    block_sparse_attention,
    copy,
    flash_attention,
    layer_norm,
    layout_to_mask,
    matmul,
    rms_norm,
    sliding_window_layout,
    softmax,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def rel_err(out, ref):
    """‖out − ref‖ / ‖ref‖ in float64; NaN anywhere fails."""
    out, ref = out.double(), ref.double()
    assert not out.isnan().any(), "output has NaN"
    return ((out - ref).norm() / ref.norm().clamp_min(1e-12)).item()


def tol(dtype):
    return {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]


def randn(*shape, dtype=torch.float32, device=DEVICE):
    return torch.randn(*shape, dtype=dtype, device=device)


# ------------------------------------------------------------------------------------------- rows
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n, block_n", [(96, None), (200, 64)])  # one pass; looped (online) rows
def test_softmax_plain_and_scaled(dtype, n, block_n):
    x = randn(5, n, dtype=dtype)
    y = softmax(x, scale=0.5, block_n=block_n)
    ref = torch.softmax(x.float() * 0.5, -1)
    assert y.dtype == dtype and rel_err(y, ref) < tol(dtype)


@pytest.mark.parametrize("block_n", [None, 16])
def test_softmax_masks_and_causal(block_n):
    x = randn(2, 3, 8, 40)
    add = randn(2, 1, 8, 40)
    keep = torch.rand(2, 1, 1, 40, device=DEVICE) > 0.3
    keep[..., 0] = True
    causal_ref = torch.ones(8, 40, dtype=torch.bool, device=DEVICE).tril()
    assert rel_err(softmax(x, mask=add, block_n=block_n), torch.softmax(x + add, -1)) < 1e-5
    ref = torch.softmax(x.masked_fill(~keep, float("-inf")), -1)
    assert rel_err(softmax(x, mask=keep, block_n=block_n), ref) < 1e-5
    ref = torch.softmax(x.masked_fill(~causal_ref, float("-inf")), -1)
    assert rel_err(softmax(x, causal=True, block_n=block_n), ref) < 1e-5


def test_softmax_fully_masked_row_is_zero():
    x = randn(3, 16)
    keep = torch.ones(3, 16, dtype=torch.bool, device=DEVICE)
    keep[1] = False
    y = softmax(x, mask=keep)
    assert (y[1] == 0).all() and rel_err(y[0], torch.softmax(x[0], -1)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n, block_n", [(80, None), (160, 64)])
def test_layer_norm(dtype, n, block_n):
    x, w, b = randn(2, 3, n, dtype=dtype), randn(n, dtype=dtype), randn(n, dtype=dtype)
    ref = F.layer_norm(x.float(), (n,), w.float(), b.float(), 1e-5)
    assert rel_err(layer_norm(x, w, b, 1e-5, block_n=block_n), ref) < tol(dtype)
    assert rel_err(layer_norm(x, block_n=block_n), F.layer_norm(x.float(), (n,))) < tol(dtype)


@pytest.mark.parametrize("block_n", [None, 32])
def test_norms_fused_residual(block_n):
    x, r, w, b = randn(6, 72), randn(6, 72), randn(72), randn(72)
    y, s = layer_norm(x, w, b, residual=r, return_sum=True, block_n=block_n)
    assert rel_err(s, x + r) < 1e-6
    assert rel_err(y, F.layer_norm(x + r, (72,), w, b)) < 1e-5
    y = rms_norm(x, w, 1e-6, residual=r, block_n=block_n)
    ref = (x + r) * torch.rsqrt((x + r).pow(2).mean(-1, keepdim=True) + 1e-6) * w
    assert rel_err(y, ref) < 1e-5


def test_norm_bad_weight_shape():
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        layer_norm(randn(2, 8), randn(4))


# ----------------------------------------------------------------------------------------- matmul
def _linear_ref(a, b, trans_b, bias, act, res):
    y = a.float() @ (b.float().transpose(-1, -2) if trans_b else b.float())
    if bias is not None:
        y = y + bias.float()
    y = {"none": lambda t: t, "relu": F.relu, "gelu": F.gelu, "silu": F.silu,
         "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[act](y)
    return y + res.float() if res is not None else y


@pytest.mark.parametrize("act", ["none", "relu", "gelu", "gelu_tanh", "silu"])
def test_linear_epilogue(act):
    a, w, bias, res = randn(40, 48), randn(72, 48), randn(72), randn(40, 72)
    y = matmul(a, w, trans_b=True, bias=bias, activation=act, residual=res)
    assert rel_err(y, _linear_ref(a, w, True, bias, act, res)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_batched_matmul_and_cast(dtype):
    a, b = randn(3, 33, 40, dtype=dtype), randn(3, 40, 50, dtype=dtype)
    y = matmul(a, b, out_dtype=torch.float32)
    assert y.shape == (3, 33, 50) and y.dtype == torch.float32
    assert rel_err(y, a.float() @ b.float()) < tol(dtype)
    w = randn(40, 64, dtype=dtype)  # 2-D b shared by the batch
    assert rel_err(matmul(a, w), a.float() @ w.float()) < tol(dtype)


def test_matmul_errors():
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        matmul(randn(4, 4), randn(4, 4), activation="tanh")
    with pytest.raises(ValueError, match="do not multiply"):
        matmul(randn(4, 5), randn(4, 4))


# -------------------------------------------------------------------------------------- attention
def _sdpa(q, k, v, mask=None, causal=False, scale=None):
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                          is_causal=causal, scale=scale)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hq, hkv", [(3, 3), (4, 2)])
def test_flash_attention(causal, hq, hkv):
    q, k, v = randn(2, hq, 64, 64), randn(2, hkv, 64, 64), randn(2, hkv, 64, 64)
    o = flash_attention(q, k, v, causal=causal)
    assert rel_err(o, _sdpa(q, k, v, causal=causal)) < 1e-5


def test_flash_attention_masks_ragged_and_scale():
    q, k, v = randn(2, 4, 40, 64), randn(2, 2, 72, 64), randn(2, 2, 72, 64)
    pad = torch.ones(2, 1, 1, 72, dtype=torch.bool, device=DEVICE)
    pad[1, ..., 50:] = False
    o = flash_attention(q, k, v, mask=pad, scale=0.3)
    assert rel_err(o, _sdpa(q, k, v, mask=pad, scale=0.3)) < 1e-5
    add = randn(1, 4, 40, 72)
    assert rel_err(flash_attention(q, k, v, mask=add), _sdpa(q, k, v, mask=add)) < 1e-5
    o = flash_attention(q, k, v, causal=True, mask=add)
    causal = torch.ones(40, 72, dtype=torch.bool, device=DEVICE).tril()
    ref = _sdpa(q, k, v, mask=add.masked_fill(~causal, float("-inf")))
    assert rel_err(o, ref) < 1e-5


def test_flash_attention_fp16():
    q, k, v = (randn(1, 2, 32, 64, dtype=torch.float16) for _ in range(3))
    assert rel_err(flash_attention(q, k, v, causal=True), _sdpa(q, k, v, causal=True)) < 2e-3


def test_flash_attention_errors():
    with pytest.raises(ValueError, match=r"query heads \(3\) must be a multiple of kv heads \(2\)"):
        flash_attention(randn(1, 3, 16, 16), randn(1, 2, 16, 16), randn(1, 2, 16, 16))


@pytest.mark.parametrize("hq, hkv, t", [(4, 2, 64), (2, 2, 56)])
def test_block_sparse_matches_dense_with_equivalent_mask(hq, hkv, t):
    q, k, v = randn(1, hq, t, 64), randn(1, hkv, t, 64), randn(1, hkv, t, 64)
    layout = sliding_window_layout(t, 16, window=16, sink=16, heads=hq, device=DEVICE)
    layout[0][1, 2] = 1  # one head lists fewer blocks: per-head layouts
    mask = layout_to_mask(layout, 16, t, t)
    o = block_sparse_attention(q, k, v, layout, 16)
    ref = _sdpa(q, k, v, mask=mask.unsqueeze(0))
    assert rel_err(o, ref) < 1e-5


def test_sliding_window_layout():
    counts, indices = sliding_window_layout(80, 16, window=32, sink=16)
    assert counts.tolist() == [[1, 2, 3, 4, 4]]
    assert indices[0, 4].tolist() == [0, 2, 3, 4]


def test_copy():
    x = randn(1000)
    assert torch.equal(copy(x, block=256), x)


# -------------------------------------------------------------------------------------------- GPU
@gpu
@needs_cuda
def test_gpu_rows_bf16():
    x, r = randn(4096, 8192, dtype=torch.bfloat16), randn(4096, 8192, dtype=torch.bfloat16)
    w, b = randn(8192, dtype=torch.bfloat16), randn(8192, dtype=torch.bfloat16)
    assert rel_err(softmax(x), torch.softmax(x.float(), -1)) < 1e-2
    ref = F.layer_norm((x + r).float(), (8192,), w.float(), b.float())
    assert rel_err(layer_norm(x, w, b, residual=r), ref) < 1e-2
    ref = F.rms_norm(x.float(), (8192,), w.float(), 1e-6)
    assert rel_err(rms_norm(x, w), ref) < 1e-2


@gpu
@needs_cuda
def test_gpu_linear_gelu_bf16():
    a, w, bias = randn(2048, 1024, dtype=torch.bfloat16), randn(4096, 1024, dtype=torch.bfloat16), \
        randn(4096, dtype=torch.bfloat16)
    y = matmul(a, w, trans_b=True, bias=bias, activation="gelu")
    assert rel_err(y, _linear_ref(a, w, True, bias, "gelu", None)) < 1e-2


@gpu
@needs_cuda
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_flash_attention_bf16(causal, d):
    q = randn(2, 8, 1024, d, dtype=torch.bfloat16)
    k, v = randn(2, 2, 1024, d, dtype=torch.bfloat16), randn(2, 2, 1024, d, dtype=torch.bfloat16)
    assert rel_err(flash_attention(q, k, v, causal=causal), _sdpa(q, k, v, causal=causal)) < 1e-2
    pad = torch.rand(2, 1, 1, 1024, device=DEVICE) > 0.2
    assert rel_err(flash_attention(q, k, v, mask=pad), _sdpa(q, k, v, mask=pad)) < 1e-2


@gpu
@needs_cuda
def test_gpu_block_sparse_bf16():
    q, k, v = (randn(1, 4, 2048, 128, dtype=torch.bfloat16) for _ in range(3))
    layout = sliding_window_layout(2048, 128, window=512, sink=128, heads=4, device=DEVICE)
    ref = _sdpa(q, k, v, mask=layout_to_mask(layout, 128, 2048, 2048).unsqueeze(0))
    assert rel_err(block_sparse_attention(q, k, v, layout, 128), ref) < 1e-2


# ------------------------------------------------- TMA kernels, forced on under the interpreter
@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU tests cover the TMA paths natively")
def test_tma_paths_under_interpreter(monkeypatch):
    import sys

    att, mm = (sys.modules[f"solder.backends.triton.templates.{m}"] for m in ("attention", "matmul"))
    monkeypatch.setattr(att, "_tma_legal", lambda k, v, block_n: k.shape[2] % block_n == 0)
    monkeypatch.setattr(mm, "_tma_ok", lambda *ts: True)
    monkeypatch.setattr(mm, "_num_sms", lambda device: 3)
    q, k, v = (randn(1, 2, 32, 64, dtype=torch.float16) for _ in range(3))
    assert rel_err(flash_attention(q, k, v, causal=True, tma=True), _sdpa(q, k, v, causal=True)) < 2e-3
    for trans_b in (True, False):
        a, res, bias = randn(2, 40, 32, dtype=torch.float16), randn(2, 40, 48), randn(48)
        w = randn(48, 32, dtype=torch.float16) if trans_b else randn(32, 48, dtype=torch.float16)
        y = matmul(a, w, trans_b=trans_b, bias=bias.half(), activation="silu", residual=res.half(),
                   subtile=trans_b)
        assert rel_err(y, _linear_ref(a, w, trans_b, bias, "silu", res)) < 2e-3
