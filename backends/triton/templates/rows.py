"""Row kernels over the last dim: softmax, layer_norm and rms_norm.

The input is viewed as `[R, N]` (R = product of the leading dims). When a row fits in registers
(`block_n >= N`, the default up to 16384 columns) each row is read once and written once: one pass over
memory, the bandwidth floor. Longer rows loop over `block_n`-wide tiles (online softmax; two-pass mean /
variance). Accumulation is fp32 whatever the I/O dtype (fp32, fp16, bf16).

Fusions: softmax takes a scale, an additive float mask or a boolean keep-mask (True = attend, as in
`scaled_dot_product_attention`) broadcastable to the input, and top-left causal masking over the last
two dims; the norms take a residual `r` and compute `norm(x + r)`, optionally also returning `x + r`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from solder.backends.triton.templates.configs import row_config

_LOG2E = 1.4426950408889634


@triton.jit
def _scores(x_ptr, m_ptr, rows, cols, R, N, stride_xr, d1, d2, sm0, sm1, sm2, smn, T, scale,
            HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, CAUSAL: tl.constexpr):
    """fp32 scores of a [BLOCK_M, BLOCK_N] tile in the log2 domain, -inf where masked or outside."""
    ok = (rows[:, None] < R) & (cols[None, :] < N)
    x = tl.load(x_ptr + rows[:, None] * stride_xr + cols[None, :], mask=ok, other=0.0)
    s = x.to(tl.float32) * scale
    if HAS_MASK:
        i2 = rows % d2
        i1 = (rows // d2) % d1
        i0 = rows // (d1 * d2)
        moff = (i0 * sm0 + i1 * sm1 + i2 * sm2)[:, None] + cols[None, :] * smn
        if MASK_BOOL:
            keep = tl.load(m_ptr + moff, mask=ok, other=0)
            ok = ok & (keep != 0)
        else:
            s += tl.load(m_ptr + moff, mask=ok, other=0.0).to(tl.float32) * 1.4426950408889634
    if CAUSAL:
        ok = ok & (cols[None, :] <= (rows % T)[:, None])
    return tl.where(ok, s, float("-inf"))


@triton.jit
def _softmax_kernel(x_ptr, y_ptr, m_ptr, R, N, stride_xr, stride_yr, d1, d2, sm0, sm1, sm2, smn, T,
                    scale, HAS_MASK: tl.constexpr, MASK_BOOL: tl.constexpr, CAUSAL: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ONE_PASS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    if ONE_PASS:
        s = _scores(x_ptr, m_ptr, rows, cols, R, N, stride_xr, d1, d2, sm0, sm1, sm2, smn, T, scale,
                    HAS_MASK, MASK_BOOL, CAUSAL)
        m = tl.max(s, 1)
        m = tl.where(m == float("-inf"), 0.0, m)
        p = tl.exp2(s - m[:, None])
        inv = 1.0 / tl.sum(p, 1)
        inv = tl.where(inv == float("inf"), 0.0, inv)
        ok = (rows[:, None] < R) & (cols[None, :] < N)
        tl.store(y_ptr + rows[:, None] * stride_yr + cols[None, :],
                 (p * inv[:, None]).to(y_ptr.dtype.element_ty), mask=ok)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        for start in range(0, N, BLOCK_N):
            s = _scores(x_ptr, m_ptr, rows, start + cols, R, N, stride_xr, d1, d2, sm0, sm1, sm2,
                        smn, T, scale, HAS_MASK, MASK_BOOL, CAUSAL)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), 1)
            m_i = m_new
        m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
        inv = 1.0 / l_i
        inv = tl.where(inv == float("inf"), 0.0, inv)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            s = _scores(x_ptr, m_ptr, rows, c, R, N, stride_xr, d1, d2, sm0, sm1, sm2, smn, T, scale,
                        HAS_MASK, MASK_BOOL, CAUSAL)
            y = tl.exp2(s - m_safe[:, None]) * inv[:, None]
            ok = (rows[:, None] < R) & (c[None, :] < N)
            tl.store(y_ptr + rows[:, None] * stride_yr + c[None, :], y.to(y_ptr.dtype.element_ty),
                     mask=ok)


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """`x` as a [R, N] view with unit column stride (copies only when the last dim is strided)."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _mask_strides(mask: torch.Tensor, shape: torch.Size) -> tuple[int, int, int, int, int, int]:
    """(d1, d2, s0, s1, s2, s_n) addressing `mask` broadcast to `shape` from a flat row index."""
    if len(shape) > 4:
        raise ValueError(f"softmax: a mask needs an input of at most 4 dims, got shape {tuple(shape)}")
    full = (1,) * (4 - len(shape)) + tuple(shape)
    m = mask.expand(shape).reshape(full) if len(shape) < 4 else mask.expand(shape)
    strides = [m.stride(i) if full[i] > 1 else 0 for i in range(4)]
    return full[1], full[2], strides[0], strides[1], strides[2], strides[3]


def softmax(x: torch.Tensor, dim: int = -1, *, scale: float | None = None,
            mask: torch.Tensor | None = None, causal: bool = False,
            out_dtype: torch.dtype | None = None, block_m: int | None = None,
            block_n: int | None = None, num_warps: int | None = None) -> torch.Tensor:
    """softmax(x * scale + mask) over the last dim, fp32 inside, `out_dtype` (default x's) outside.

    `mask` is an additive float mask or a boolean keep-mask, broadcastable to `x` (at most 4-D).
    `causal` masks column j of row i of each trailing [T, N] matrix when j > i (top-left aligned, as
    `scaled_dot_product_attention(is_causal=True)`). Rows with every column masked come out as zeros.
    """
    if dim not in (-1, x.dim() - 1):
        raise ValueError(f"softmax: only the last dim is supported, got dim={dim} for {x.dim()}-D input")
    n = x.shape[-1]
    y = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    if x.numel() == 0:  # no rows, or rows of nothing: nothing to launch
        return y
    x2 = _as_rows(x)
    y2 = y.view(-1, n)
    cfg = row_config(n, x.dtype, max_block_n=block_n)
    bm, bn, nw = block_m or cfg.block_m, block_n or cfg.block_n, num_warps or cfg.num_warps
    t = x.shape[-2] if x.dim() >= 2 else 1
    if mask is not None:
        mask = mask.to(torch.int8) if mask.dtype == torch.bool else mask
        d1, d2, s0, s1, s2, sn = _mask_strides(mask, x.shape)
    else:
        d1 = d2 = 1
        s0 = s1 = s2 = sn = 0
    grid = (triton.cdiv(x2.shape[0], bm),)
    _softmax_kernel[grid](
        x2, y2, mask if mask is not None else x2, x2.shape[0], n, x2.stride(0), y2.stride(0),
        d1, d2, s0, s1, s2, sn, t, (1.0 if scale is None else float(scale)) * _LOG2E,
        HAS_MASK=mask is not None, MASK_BOOL=mask is not None and mask.dtype == torch.int8,
        CAUSAL=causal, BLOCK_M=bm, BLOCK_N=bn, ONE_PASS=bn >= n, num_warps=nw)
    return y


@triton.jit
def _load_sum(x_ptr, r_ptr, rows, cols, R, N, stride_xr, stride_rr, HAS_RES: tl.constexpr):
    ok = (rows[:, None] < R) & (cols[None, :] < N)
    x = tl.load(x_ptr + rows[:, None] * stride_xr + cols[None, :], mask=ok, other=0.0)
    x = x.to(tl.float32)
    if HAS_RES:
        r = tl.load(r_ptr + rows[:, None] * stride_rr + cols[None, :], mask=ok, other=0.0)
        x += r.to(tl.float32)
    return x, ok


@triton.jit
def _norm_out(x, mean, rstd, w_ptr, b_ptr, y_ptr, rows, cols, stride_yr, ok, N,
              HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    y = (x - mean[:, None]) * rstd[:, None]
    if HAS_W:
        y *= tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y += tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_yr + cols[None, :], y.to(y_ptr.dtype.element_ty),
             mask=ok)


@triton.jit
def _norm_kernel(x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, s_ptr, R, N, stride_xr, stride_rr, stride_yr,
                 stride_sr, eps, HAS_RES: tl.constexpr, STORE_SUM: tl.constexpr,
                 HAS_W: tl.constexpr, HAS_B: tl.constexpr, RMS: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ONE_PASS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    if ONE_PASS:
        x, ok = _load_sum(x_ptr, r_ptr, rows, cols, R, N, stride_xr, stride_rr, HAS_RES)
        if STORE_SUM:
            tl.store(s_ptr + rows[:, None] * stride_sr + cols[None, :],
                     x.to(s_ptr.dtype.element_ty), mask=ok)
        if RMS:
            mean = tl.zeros([BLOCK_M], tl.float32)
        else:
            mean = tl.sum(x, 1) / N
        xc = tl.where(ok, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / N + eps)
        _norm_out(x, mean, rstd, w_ptr, b_ptr, y_ptr, rows, cols, stride_yr, ok, N, HAS_W, HAS_B)
    else:
        mean = tl.zeros([BLOCK_M], tl.float32)
        if not RMS:
            for start in range(0, N, BLOCK_N):
                x, ok = _load_sum(x_ptr, r_ptr, rows, start + cols, R, N, stride_xr, stride_rr,
                                  HAS_RES)
                mean += tl.sum(x, 1)
            mean = mean / N
        var = tl.zeros([BLOCK_M], tl.float32)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            x, ok = _load_sum(x_ptr, r_ptr, rows, c, R, N, stride_xr, stride_rr, HAS_RES)
            if STORE_SUM:
                tl.store(s_ptr + rows[:, None] * stride_sr + c[None, :],
                         x.to(s_ptr.dtype.element_ty), mask=ok)
            xc = tl.where(ok, x - mean[:, None], 0.0)
            var += tl.sum(xc * xc, 1)
        rstd = 1.0 / tl.sqrt(var / N + eps)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            x, ok = _load_sum(x_ptr, r_ptr, rows, c, R, N, stride_xr, stride_rr, HAS_RES)
            _norm_out(x, mean, rstd, w_ptr, b_ptr, y_ptr, rows, c, stride_yr, ok, N, HAS_W, HAS_B)


def _norm(x, weight, bias, eps, residual, return_sum, rms, out_dtype, block_m, block_n, num_warps):
    n = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (n,):
            raise ValueError(f"{'rms' if rms else 'layer'}_norm: {name} must have shape ({n},), "
                             f"got {tuple(p.shape)}")
    # the kernel reads weight[c] and bias[c] at unit stride: a view (an expanded or strided vector) is copied
    weight, bias = (p if p is None or p.stride(0) == 1 else p.contiguous() for p in (weight, bias))
    if x.numel() == 0:  # nothing to normalize (the sum of x and nothing is empty too)
        y = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
        return (y, torch.empty(x.shape, dtype=x.dtype, device=x.device)) if return_sum else y
    x2 = _as_rows(x)
    r2 = _as_rows(residual.expand(x.shape)) if residual is not None else x2
    y = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    s = torch.empty(x.shape, dtype=x.dtype, device=x.device) if return_sum else y
    y2, s2 = y.view(-1, n), s.view(-1, n)
    cfg = row_config(n, x.dtype, max_block_n=block_n)
    bm, bn, nw = block_m or cfg.block_m, block_n or cfg.block_n, num_warps or cfg.num_warps
    grid = (triton.cdiv(x2.shape[0], bm),)
    _norm_kernel[grid](
        x2, r2, weight if weight is not None else x2, bias if bias is not None else x2, y2, s2,
        x2.shape[0], n, x2.stride(0), r2.stride(0), y2.stride(0), s2.stride(0), float(eps),
        HAS_RES=residual is not None, STORE_SUM=return_sum, HAS_W=weight is not None,
        HAS_B=bias is not None, RMS=rms, BLOCK_M=bm, BLOCK_N=bn, ONE_PASS=bn >= n, num_warps=nw)
    return (y, s) if return_sum else y


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5, *,
               residual: torch.Tensor | None = None, return_sum: bool = False,
               out_dtype: torch.dtype | None = None, block_m: int | None = None,
               block_n: int | None = None, num_warps: int | None = None):
    """layer_norm(x [+ residual]) over the last dim; returns y, or (y, x + residual) if return_sum."""
    return _norm(x, weight, bias, eps, residual, return_sum, False, out_dtype, block_m, block_n,
                 num_warps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6, *,
             residual: torch.Tensor | None = None, return_sum: bool = False,
             out_dtype: torch.dtype | None = None, block_m: int | None = None,
             block_n: int | None = None, num_warps: int | None = None):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim (x = x + residual when given)."""
    return _norm(x, weight, None, eps, residual, return_sum, True, out_dtype, block_m, block_n,
                 num_warps)
