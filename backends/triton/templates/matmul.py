"""Matmul / batched matmul with a fused epilogue.

`c = act(a @ b + bias) + residual`, cast to `out_dtype`. `a` is [M, K] or [B, M, K]; `b` is [K, N] or
[B, K, N], or with `trans_b=True` [N, K] / [B, N, K] (an `nn.Linear` weight used as is, no copy). A 2-D
operand is shared by every batch. Accumulation is fp32. Program ids walk the output tiles in groups of
`group_m` tile-rows so that consecutive programs reuse the same B columns from L2.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from solder.backends.triton.templates.configs import interpreting, matmul_config

try:  # host-side TMA descriptors (Triton >= 3.3); the pointer kernel serves where they are missing
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = None

ACTIVATIONS = {"none": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4}
# private: GELU through libdevice's erff, kept to measure the cheaper erf of `_erf` against it
_ACT_CODES = {**ACTIVATIONS, "gelu_libdevice": 5}


@triton.jit
def _erf(z):
    """erf to 1.5e-7 absolute (Abramowitz & Stegun 7.1.26): one approximate reciprocal, one exp2 and
    six FMAs, about half of libdevice's erff. In a matmul epilogue, which runs while the tensor cores
    wait, that difference is measurable (see benchmarks/gpu_kernels.py)."""
    az = tl.abs(z)
    t = tl.math.fdiv(1.0, 1.0 + 0.3275911 * az)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
            + 0.254829592) * t
    y = 1.0 - poly * tl.exp2(-1.4426950408889634 * az * az)
    return tl.where(z < 0, -y, y)


@triton.jit
def _activation(x, ACT: tl.constexpr):
    """The epilogue activation on an fp32 tile (ACTIVATIONS gives the codes)."""
    if ACT == 1:
        x = tl.maximum(x, 0.0)
    elif ACT == 2:
        x = 0.5 * x * (1.0 + _erf(x * 0.7071067811865476))
    elif ACT == 5:
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACT == 3:
        # 0.5 x (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        x = x * tl.sigmoid(2.0 * u)
    elif ACT == 4:
        x = x * tl.sigmoid(x)
    return x


@triton.jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, bias_ptr, res_ptr, M, N, K,
                   s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, s_cm, s_cn, s_rb, s_rm, s_rn,
                   HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
                   EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP_M: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if EVEN_M:
        ram = tl.max_contiguous(tl.multiple_of(rm, BLOCK_M), BLOCK_M)
    else:
        ram = rm % M
    if EVEN_N:
        rbn = tl.max_contiguous(tl.multiple_of(rn, BLOCK_N), BLOCK_N)
    else:
        rbn = rn % N
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + batch * s_ab + ram[:, None] * s_am + rk[None, :] * s_ak
    b_ptrs = b_ptr + batch * s_bb + rk[:, None] * s_bk + rbn[None, :] * s_bn

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=rk[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=rk[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * s_ak
        b_ptrs += BLOCK_K * s_bk

    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    acc = _activation(acc, ACT)
    ok = (rm[:, None] < M) & (rn[None, :] < N)
    if HAS_RES:
        r = tl.load(res_ptr + batch * s_rb + rm[:, None] * s_rm + rn[None, :] * s_rn, mask=ok,
                    other=0.0)
        acc += r.to(tl.float32)
    c_ptrs = c_ptr + batch * s_cb + rm[:, None] * s_cm + rn[None, :] * s_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _tile_of(tile, num_m, num_n, GROUP_M: tl.constexpr):
    """Grouped ordering: (pid_m, pid_n) of linear tile id `tile`, GROUP_M tile-rows at a time."""
    group = GROUP_M * num_n
    first_m = (tile // group) * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    return first_m + (tile % group) % size_m, (tile % group) // size_m


@triton.jit
def _matmul_tma_kernel(a_desc, b_desc, c_desc, bias_ptr, res_ptr, M, N, K, s_rm, s_rn,
                       HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
                       TRANS_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, SUBTILE: tl.constexpr,
                       FLATTEN: tl.constexpr, WARP_SPECIALIZE: tl.constexpr):
    """2-D matmul whose tiles come in and go out through TMA descriptors (Hopper).

    Program p computes tiles p, p + P, p + 2P... (P programs): persistent when P is the SM count, one
    tile each when P is the tile count. FLATTEN lets the software pipeliner overlap one tile's
    epilogue with the next tile's first loads.
    """
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), num_m * num_n, tl.num_programs(0), flatten=FLATTEN,
                         warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = _tile_of(tile, num_m, num_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for ki in range(k_tiles):
            a = a_desc.load([off_m, ki * BLOCK_K])
            if TRANS_B:
                acc = tl.dot(a, b_desc.load([off_n, ki * BLOCK_K]).T, acc)
            else:
                acc = tl.dot(a, b_desc.load([ki * BLOCK_K, off_n]), acc)
        rm = off_m + tl.arange(0, BLOCK_M)
        rn = off_n + tl.arange(0, BLOCK_N)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        acc = _activation(acc, ACT)
        if HAS_RES:
            ok = (rm[:, None] < M) & (rn[None, :] < N)
            acc += tl.load(res_ptr + rm[:, None] * s_rm + rn[None, :] * s_rn, mask=ok,
                           other=0.0).to(tl.float32)
        if SUBTILE:
            halves = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
            c0, c1 = tl.split(halves)
            c_desc.store([off_m, off_n], c0.to(c_desc.dtype))
            c_desc.store([off_m, off_n + BLOCK_N // 2], c1.to(c_desc.dtype))
        else:
            c_desc.store([off_m, off_n], acc.to(c_desc.dtype))


def _tma_ok(*tensors) -> bool:
    """TMA needs a GPU, 16-bit data, 16-byte aligned bases and row strides, unit column stride."""
    if TensorDescriptor is None or interpreting():
        return False
    return all(t.is_cuda and t.dtype in (torch.float16, torch.bfloat16) and t.dim() == 2
               and t.stride(1) == 1 and (t.stride(0) * 2) % 16 == 0 and t.data_ptr() % 16 == 0
               for t in tensors)


def _num_sms(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _matmul_tma(a2, b2, c2, bias, r2, trans_b, act, bm, bn, bk, group_m, num_warps, num_stages,
                subtile, warp_specialize, persistent=True, flatten=False):
    m, k = a2.shape
    n = c2.shape[1]
    a_desc = TensorDescriptor.from_tensor(a2, [bm, bk])
    b_desc = TensorDescriptor.from_tensor(b2, [bn, bk] if trans_b else [bk, bn])
    c_desc = TensorDescriptor.from_tensor(c2, [bm, bn // 2 if subtile else bn])
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    grid = (min(_num_sms(a2.device), tiles) if persistent else tiles,)
    _matmul_tma_kernel[grid](
        a_desc, b_desc, c_desc, bias if bias is not None else c2, r2 if r2 is not None else c2,
        m, n, k, r2.stride(0) if r2 is not None else 0, r2.stride(1) if r2 is not None else 0,
        HAS_BIAS=bias is not None, HAS_RES=r2 is not None, ACT=act, TRANS_B=trans_b,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group_m, SUBTILE=subtile, FLATTEN=flatten,
        WARP_SPECIALIZE=warp_specialize, num_warps=num_warps, num_stages=num_stages)


def _batched(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dim() == 2:
        return t.unsqueeze(0)
    if t.dim() == 3:
        return t
    raise ValueError(f"matmul: {name} must be 2-D or 3-D, got shape {tuple(t.shape)}")


def _batch_stride(t: torch.Tensor) -> int:
    return 0 if t.shape[0] == 1 else t.stride(0)


def matmul(a: torch.Tensor, b: torch.Tensor, *, trans_b: bool = False,
           bias: torch.Tensor | None = None, activation: str = "none",
           residual: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
           block_m: int | None = None, block_n: int | None = None, block_k: int | None = None,
           group_m: int | None = None, num_warps: int | None = None,
           num_stages: int | None = None, tma: bool | None = None, subtile: bool | None = None,
           persistent: bool = True, flatten: bool = False,
           warp_specialize: bool = False) -> torch.Tensor:
    """act(a @ b (+ bias)) (+ residual), fp32 accumulation, cast to out_dtype (default a's dtype).

    Shapes: a [M, K] | [B, M, K]; b [K, N] | [B, K, N] ([N, K] | [B, N, K] with trans_b); bias [N];
    residual broadcastable to the output [M, N] | [B, M, N]. Activation: one of ACTIVATIONS.
    A 2-D `b` (a weight) folds the batch into M and, on a GPU with 16-bit aligned operands, runs the
    TMA kernel (`tma=None`: wherever legal; `persistent`: one program per SM looping over tiles;
    `flatten`: overlap epilogues with the next tile's loads; `subtile`: store the epilogue in two
    halves; `warp_specialize`: producer/consumer warps); otherwise the pointer kernel runs.
    """
    if activation not in _ACT_CODES:
        raise ValueError(f"matmul: unknown activation {activation!r}, expected one of "
                         f"{sorted(ACTIVATIONS)}")
    a3, b3 = _batched(a, "a"), _batched(b, "b")
    if trans_b:
        b3 = b3.transpose(1, 2)
    (ba, m, k), (bb, k2, n) = a3.shape, b3.shape
    if k != k2 or (ba != bb and 1 not in (ba, bb)):
        raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} "
                         f"(trans_b={trans_b}) do not multiply")
    batch = max(ba, bb)
    out_shape = (batch, m, n) if max(a.dim(), b.dim()) == 3 else (m, n)
    c = torch.empty((batch, m, n), dtype=out_dtype or a.dtype, device=a.device)
    cfg = matmul_config(m * (batch if b.dim() == 2 else 1), n, k, a.dtype)
    bm, bn, bk = block_m or cfg.block_m, block_n or cfg.block_n, block_k or cfg.block_k
    group_m, num_warps = group_m or cfg.group_m, num_warps or cfg.num_warps
    num_stages = num_stages or cfg.num_stages
    if b.dim() == 2 and tma is not False:
        a2, c2 = a3.reshape(-1, k), c.view(-1, n)
        r2 = residual.expand(out_shape).reshape(-1, n) if residual is not None else None
        legal = _tma_ok(a2, b, c2) and (bias is None or bias.is_contiguous())
        if tma and not legal:
            raise ValueError("matmul: tma=True needs CUDA 16-bit operands with 16-byte aligned rows")
        if legal:
            _matmul_tma(a2, b, c2, bias, r2, trans_b, _ACT_CODES[activation], bm, bn, bk, group_m,
                        num_warps, num_stages, bn >= 128 if subtile is None else subtile,
                        warp_specialize, persistent, flatten)
            return c.view(out_shape)
    r3 = residual.expand(out_shape).reshape(-1, m, n) if residual is not None else c
    precision = "ieee" if a.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 \
        else "tf32"
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn), batch)
    _matmul_kernel[grid](
        a3, b3, c, bias if bias is not None else c, r3, m, n, k,
        _batch_stride(a3), a3.stride(1), a3.stride(2), _batch_stride(b3), b3.stride(1), b3.stride(2),
        c.stride(0), c.stride(1), c.stride(2), _batch_stride(r3), r3.stride(1), r3.stride(2),
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, ACT=_ACT_CODES[activation],
        EVEN_M=m % bm == 0, EVEN_N=n % bn == 0, EVEN_K=k % bk == 0,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group_m, PRECISION=precision,
        num_warps=num_warps, num_stages=num_stages)
    return c.view(out_shape)
