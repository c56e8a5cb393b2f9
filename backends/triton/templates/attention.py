"""Flash attention forward, dense and block-sparse.

`flash_attention(q, k, v)`: q [B, Hq, T, D], k/v [B, Hkv, S, D] with Hq a multiple of Hkv (grouped-query
heads share a kv head: query head h reads kv head h // (Hq // Hkv)). One program computes a block of
`block_m` query rows of one head, streaming key/value tiles of `block_n` rows through an online softmax
(fp32 statistics and accumulator, exp2 with the scale folded into log2 units). Options: `causal`
(top-left aligned, as `scaled_dot_product_attention(is_causal=True)`: key j is visible to query i when
j <= i), and `mask`, an additive float mask or a boolean keep-mask broadcastable to [B, Hq, T, S]
(padding masks [B, 1, 1, S] broadcast with stride 0, no copy). Causal programs skip the key tiles above
the diagonal and mask only the diagonal tiles. Query rows with every key masked come out as zeros.

`block_sparse_attention(q, k, v, layout, block)` visits, for each (head, query block), only the key
blocks listed in a CSR-like layout `(counts[H, nQB], indices[H, nQB, maxK])` (int32; H may be 1 for a
layout shared by all heads), with causal masking inside the listed blocks. `sliding_window_layout`
builds the layout of a causal sliding window with sink blocks; `layout_to_mask` expands any layout to the
equivalent dense boolean mask (for tests and for the eager fallback).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from solder.backends.triton.templates.configs import attention_config, interpreting

try:  # host-side TMA descriptors (Triton >= 3.3); plain pointer loads serve where they are missing
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = None

_LOG2E = 1.4426950408889634


@triton.jit
def _attn_step(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, kv_row0, mask_base, start_n,
               offs_m, offs_n, offs_d, S, stride_kn, stride_vn, stride_mt, stride_ms, qk_scale,
               CAUSAL_TILE: tl.constexpr, EVEN_S: tl.constexpr, HAS_MASK: tl.constexpr,
               MASK_BOOL: tl.constexpr, row_ok, PRECISION: tl.constexpr, USE_TMA: tl.constexpr):
    """One key/value tile of the online softmax: returns the updated (acc, l_i, m_i).

    Scores stay unscaled until the exponent, where `qk * qk_scale - m` is one FMA (no mask); with a
    mask they are scaled first so that the additive mask is in the same (log2) units.
    """
    cols = start_n + offs_n
    if USE_TMA:
        k = k_desc.load([kv_row0 + start_n, 0])
        v = v_desc.load([kv_row0 + start_n, 0])
    elif EVEN_S:
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :])
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :])
    else:
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :],
                    mask=cols[:, None] < S, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :],
                    mask=cols[:, None] < S, other=0.0)
    qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    if HAS_MASK:
        qk = qk * qk_scale
        m_ptrs = mask_base + offs_m[:, None] * stride_mt + cols[None, :] * stride_ms
        m_ok = (cols[None, :] < S) & row_ok[:, None]
        if MASK_BOOL:
            keep = tl.load(m_ptrs, mask=m_ok, other=0)
            qk = tl.where(keep != 0, qk, float("-inf"))
        else:
            qk += tl.load(m_ptrs, mask=m_ok, other=0.0).to(tl.float32) * 1.4426950408889634
    if CAUSAL_TILE:
        qk = tl.where(offs_m[:, None] >= cols[None, :], qk, float("-inf"))
    if not EVEN_S:
        qk = tl.where(cols[None, :] < S, qk, float("-inf"))
    if HAS_MASK:
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(qk - m_safe[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(qk * qk_scale - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
    return acc, l_i, m_new


@triton.jit
def _attn_store(acc, l_i, o_ptr, offs_m, offs_d, T, stride_ot, EVEN_T: tl.constexpr):
    inv = 1.0 / l_i
    inv = tl.where(l_i == 0.0, 0.0, inv)
    out = (acc * inv[:, None]).to(o_ptr.dtype.element_ty)
    ptrs = o_ptr + offs_m[:, None] * stride_ot + offs_d[None, :]
    if EVEN_T:
        tl.store(ptrs, out)
    else:
        tl.store(ptrs, out, mask=offs_m[:, None] < T)


@triton.jit
def _flash_kernel(q_ptr, k_ptr, v_ptr, k_desc, v_desc, o_ptr, m_ptr, T, S, Hq, GROUP, qk_scale,
                  s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot,
                  s_mb, s_mh, s_mt, s_ms,
                  CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr,
                  EVEN_T: tl.constexpr, EVEN_S: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                  USE_TMA: tl.constexpr):
    # heaviest causal query blocks first: the tail of the grid is then made of short programs
    start_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    hk = h // GROUP
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q_base = q_ptr + b * s_qb + h * s_qh
    if EVEN_T:
        q = tl.load(q_base + offs_m[:, None] * s_qt + offs_d[None, :])
    else:
        q = tl.load(q_base + offs_m[:, None] * s_qt + offs_d[None, :], mask=row_ok[:, None],
                    other=0.0)
    k_base = k_ptr + b * s_kb + hk * s_kh
    v_base = v_ptr + b * s_vb + hk * s_vh
    mask_base = m_ptr + b * s_mb + h * s_mh
    kv_row0 = ((bh // Hq) * (Hq // GROUP) + hk) * S  # int32: TMA offsets are 32-bit
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    if CAUSAL:
        hi_free = min(start_m * BLOCK_M, S)  # tiles wholly below the diagonal (BLOCK_M % BLOCK_N == 0)
        for start_n in tl.range(0, hi_free, BLOCK_N):
            acc, l_i, m_i = _attn_step(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, kv_row0,
                                       mask_base, start_n,
                                       offs_m, offs_n, offs_d, S, s_kt, s_vt, s_mt, s_ms, qk_scale,
                                       False, EVEN_S, HAS_MASK, MASK_BOOL, row_ok, PRECISION,
                                       USE_TMA)
        hi = min((start_m + 1) * BLOCK_M, S)
        for start_n in tl.range(hi_free, hi, BLOCK_N):
            acc, l_i, m_i = _attn_step(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, kv_row0,
                                       mask_base, start_n,
                                       offs_m, offs_n, offs_d, S, s_kt, s_vt, s_mt, s_ms, qk_scale,
                                       True, EVEN_S, HAS_MASK, MASK_BOOL, row_ok, PRECISION,
                                       USE_TMA)
    else:
        for start_n in tl.range(0, S, BLOCK_N):
            acc, l_i, m_i = _attn_step(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, kv_row0,
                                       mask_base, start_n,
                                       offs_m, offs_n, offs_d, S, s_kt, s_vt, s_mt, s_ms, qk_scale,
                                       False, EVEN_S, HAS_MASK, MASK_BOOL, row_ok, PRECISION,
                                       USE_TMA)
    _attn_store(acc, l_i, o_ptr + b * s_ob + h * s_oh, offs_m, offs_d, T, s_ot, EVEN_T)


def _check_qkv(q, k, v, fn):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"{fn}: q, k, v must be 4-D [B, H, T, D], got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    (bq, hq, _, d), (bk, hk, s, dk) = q.shape, k.shape
    if k.shape != v.shape or bq != bk or d != dk:
        raise ValueError(f"{fn}: k and v must be [B, Hkv, S, D] matching q [B, Hq, T, D], got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if hq % hk != 0:
        raise ValueError(f"{fn}: query heads ({hq}) must be a multiple of kv heads ({hk})")
    if d not in (16, 32, 64, 128, 256):
        raise ValueError(f"{fn}: head dim must be one of 16, 32, 64, 128, 256, got {d}")
    return [t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v)]


def _tma_legal(k, v, block_n) -> bool:
    return (TensorDescriptor is not None and not interpreting() and k.is_cuda
            and k.dtype in (torch.float16, torch.bfloat16) and k.is_contiguous()
            and v.is_contiguous() and k.shape[2] % block_n == 0)


def _kv_descriptors(k, v, block_n, tma):
    """(k_desc, v_desc, use_tma): TMA descriptors over k/v as [B*Hkv*S, D] where legal and wanted.

    Legal on a GPU for contiguous 16-bit k/v whose S is a multiple of block_n (a tile never straddles
    two heads). `tma=None` uses them wherever legal, True requires them, False never uses them.
    """
    legal = _tma_legal(k, v, block_n)
    if tma and not legal:
        raise ValueError("attention: tma=True needs contiguous 16-bit CUDA k/v with S % block_n == 0")
    if tma is False or not legal:
        return k, v, False
    d = k.shape[-1]
    return (TensorDescriptor.from_tensor(k.view(-1, d), [block_n, d]),
            TensorDescriptor.from_tensor(v.view(-1, d), [block_n, d]), True)


def _precision(q):
    """fp32 inputs get exact fp32 dots (the interpreter and tests); 16-bit ones the tensor cores."""
    return "ieee" if q.dtype == torch.float32 else "tf32"


def _mask_args(mask, shape):
    """(tensor, is_bool, strides [b, h, t, s]) of `mask` broadcast to `shape`; zero strides broadcast."""
    if mask is None:
        return None, False, (0, 0, 0, 0)
    if mask.dtype == torch.bool:
        mask = mask.to(torch.int8)
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    full = mask.expand(shape)
    return mask, mask.dtype == torch.int8, tuple(
        full.stride(i) if shape[i] > 1 else 0 for i in range(4))


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                    mask: torch.Tensor | None = None, causal: bool = False,
                    scale: float | None = None, block_m: int | None = None,
                    block_n: int | None = None, num_warps: int | None = None,
                    num_stages: int | None = None, tma: bool | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask, causal) v over [B, Hq, T, D] x [B, Hkv, S, D]; out [B, Hq, T, D]."""
    q, k, v = _check_qkv(q, k, v, "flash_attention")
    (b, hq, t, d), (_, hk, s, _) = q.shape, k.shape
    cfg = attention_config(d, q.dtype, causal, mask is not None)
    bm, bn = block_m or cfg.block_m, block_n or cfg.block_n
    if causal and bm % bn != 0:
        raise ValueError(f"flash_attention: causal needs block_m % block_n == 0, got {bm}, {bn}")
    m, is_bool, (smb, smh, smt, sms) = _mask_args(mask, (b, hq, t, s))
    o = torch.empty_like(q)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    grid = (triton.cdiv(t, bm), b * hq)
    k_desc, v_desc, use_tma = _kv_descriptors(k, v, bn, tma)
    _flash_kernel[grid](
        q, k, v, k_desc, v_desc, o, m if m is not None else q, t, s, hq, hq // hk, scale * _LOG2E,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], smb, smh, smt, sms,
        CAUSAL=causal, HAS_MASK=m is not None, MASK_BOOL=is_bool, EVEN_T=t % bm == 0,
        EVEN_S=s % bn == 0, HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, PRECISION=_precision(q),
        USE_TMA=use_tma, num_warps=num_warps or cfg.num_warps,
        num_stages=num_stages or cfg.num_stages)
    return o


@triton.jit
def _block_sparse_kernel(q_ptr, k_ptr, v_ptr, k_desc, v_desc, o_ptr, cnt_ptr, idx_ptr, T, S, Hq, GROUP, qk_scale,
                         s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot,
                         s_ch, s_cq, s_ih, s_iq,
                         CAUSAL: tl.constexpr, EVEN_T: tl.constexpr, EVEN_S: tl.constexpr,
                         HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
                         PRECISION: tl.constexpr, USE_TMA: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    hk = h // GROUP
    offs_m = start_m * BLOCK + tl.arange(0, BLOCK)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q_base = q_ptr + b * s_qb + h * s_qh
    q = tl.load(q_base + offs_m[:, None] * s_qt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    k_base = k_ptr + b * s_kb + hk * s_kh
    v_base = v_ptr + b * s_vb + hk * s_vh
    acc = tl.zeros([BLOCK, HEAD_DIM], tl.float32)
    l_i = tl.zeros([BLOCK], tl.float32)
    m_i = tl.full([BLOCK], float("-inf"), tl.float32)
    kv_row0 = ((bh // Hq) * (Hq // GROUP) + hk) * S  # int32: TMA offsets are 32-bit
    count = tl.load(cnt_ptr + h * s_ch + start_m * s_cq)
    for j in range(0, count):
        kb = tl.load(idx_ptr + h * s_ih + start_m * s_iq + j)
        for sub in tl.static_range(BLOCK // BLOCK_N):
            acc, l_i, m_i = _attn_step(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc,
                                       kv_row0, q_base,
                                       kb * BLOCK + sub * BLOCK_N, offs_m, offs_n, offs_d, S,
                                       s_kt, s_vt, 0, 0, qk_scale, CAUSAL, EVEN_S, False, False,
                                       row_ok, PRECISION, USE_TMA)
    _attn_store(acc, l_i, o_ptr + b * s_ob + h * s_oh, offs_m, offs_d, T, s_ot, EVEN_T)


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           layout: tuple[torch.Tensor, torch.Tensor], block: int, *,
                           causal: bool = True, scale: float | None = None,
                           block_n: int | None = None, num_warps: int | None = None,
                           num_stages: int | None = None, tma: bool | None = None) -> torch.Tensor:
    """Attention restricted to the key blocks of `layout = (counts, indices)`; out [B, Hq, T, D].

    counts [H, ceil(T/block)] int32 and indices [H, ceil(T/block), maxK] int32 list, per (head, query
    block), the key blocks (of `block` keys) to visit; H is Hq or 1. With `causal`, key j > query i is
    masked inside the visited blocks (so listing blocks above the diagonal is harmless).
    """
    q, k, v = _check_qkv(q, k, v, "block_sparse_attention")
    counts, indices = layout
    (b, hq, t, d), (_, hk, s, _) = q.shape, k.shape
    n_qb = triton.cdiv(t, block)
    if counts.shape[-1] != n_qb or indices.shape[:2] != counts.shape or counts.shape[0] not in (1, hq):
        raise ValueError(f"block_sparse_attention: layout must be counts [H, {n_qb}] and indices "
                         f"[H, {n_qb}, maxK] with H in (1, {hq}), got {tuple(counts.shape)} and "
                         f"{tuple(indices.shape)}")
    counts = counts.to(device=q.device, dtype=torch.int32).contiguous()
    indices = indices.to(device=q.device, dtype=torch.int32).contiguous()
    cfg = attention_config(d, q.dtype, causal, False)
    bn = min(block_n or cfg.block_n, block)
    if block % bn != 0 or block < 16:
        raise ValueError(f"block_sparse_attention: block ({block}) must be >= 16 and a multiple "
                         f"of block_n ({bn})")
    o = torch.empty_like(q)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    per_head = counts.shape[0] > 1
    k_desc, v_desc, use_tma = _kv_descriptors(k, v, bn, tma)
    _block_sparse_kernel[(n_qb, b * hq)](
        q, k, v, k_desc, v_desc, o, counts, indices, t, s, hq, hq // hk, scale * _LOG2E,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        counts.stride(0) if per_head else 0, counts.stride(1),
        indices.stride(0) if per_head else 0, indices.stride(1),
        CAUSAL=causal, EVEN_T=t % block == 0, EVEN_S=s % bn == 0, HEAD_DIM=d, BLOCK=block,
        BLOCK_N=bn, PRECISION=_precision(q), USE_TMA=use_tma,
        num_warps=num_warps or cfg.num_warps,
        num_stages=num_stages or cfg.num_stages)
    return o


def sliding_window_layout(t: int, block: int, window: int, *, sink: int = 0, heads: int = 1,
                          device: torch.device | str | None = None):
    """Causal sliding-window layout: query block i sees key blocks [i - window/block, i] + sink blocks.

    `window` and `sink` are in tokens and rounded up to whole blocks. Returns (counts, indices), int32,
    counts [heads, nQB] and indices [heads, nQB, maxK], padded with 0 past each row's count.
    """
    n = triton.cdiv(t, block)
    w, sk = triton.cdiv(window, block), triton.cdiv(sink, block)
    rows = [sorted(set(range(min(sk, i + 1))) | set(range(max(0, i - w), i + 1))) for i in range(n)]
    max_k = max(len(r) for r in rows)
    indices = torch.zeros(n, max_k, dtype=torch.int32)
    for i, r in enumerate(rows):
        indices[i, : len(r)] = torch.tensor(r, dtype=torch.int32)
    counts = torch.tensor([len(r) for r in rows], dtype=torch.int32)
    return (counts.expand(heads, n).contiguous().to(device),
            indices.expand(heads, n, max_k).contiguous().to(device))


def layout_to_mask(layout: tuple[torch.Tensor, torch.Tensor], block: int, t: int, s: int, *,
                   causal: bool = True) -> torch.Tensor:
    """The dense boolean keep-mask [H, T, S] equivalent to a block-sparse layout (True = attend)."""
    counts, indices = (x.cpu() for x in layout)
    h, n_qb = counts.shape
    blocks = torch.zeros(h, n_qb, triton.cdiv(s, block), dtype=torch.bool)
    for hh in range(h):
        for i in range(n_qb):
            blocks[hh, i, indices[hh, i, : counts[hh, i]].long()] = True
    dense = blocks.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :t, :s]
    if causal:
        dense &= torch.ones(t, s, dtype=torch.bool).tril()
    return dense.to(layout[0].device)


__all__ = ["block_sparse_attention", "flash_attention", "layout_to_mask", "sliding_window_layout"]
