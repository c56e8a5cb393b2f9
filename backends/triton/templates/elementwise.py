"""Elementwise templates. Pointwise chains are emitted by the code generator, not written here; the one
hand-written kernel is `copy`, the bandwidth probe that the benchmarks compare row kernels against."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _copy_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr, EVEN: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if EVEN:
        tl.store(y_ptr + offs, tl.load(x_ptr + offs))
    else:
        tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


def copy(x: torch.Tensor, out: torch.Tensor | None = None, *, block: int = 8192,
         num_warps: int = 8) -> torch.Tensor:
    """A contiguous copy of `x` (into `out` when given): reads and writes each byte once."""
    x = x.contiguous()
    y = torch.empty_like(x) if out is None else out
    n = x.numel()
    _copy_kernel[(triton.cdiv(n, block),)](x, y, n, BLOCK=block, EVEN=n % block == 0,
                                           num_warps=num_warps)
    return y
