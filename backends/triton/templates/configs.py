"""Heuristic launch-parameter tables for the templates.

Each function maps a problem (shape, dtype) to a default launch configuration. They are deliberately
small and readable: the cost model replaces them by passing explicit block sizes to the wrappers. The
H100 numbers were picked from sweeps in `benchmarks/gpu_kernels.py` (results in
`benchmarks/results/h100_kernels_*.json`): row kernels are flat from 4 to 16 warps and lose 15% at 32;
the TMA matmul's 128x256x64/8 warps/3 stages beat 128x128 tiles by 10-20%; for d=128 attention
128x128/8 warps/3 stages was best or within 3% of best at T=4096 and 16384. Under
`TRITON_INTERPRET=1` the tables pick small tiles, since the interpreter's cost grows with the tile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class RowConfig:
    """Rows per program, columns per tile (a power of two) and warps of a row kernel."""

    block_m: int
    block_n: int
    num_warps: int


def row_config(n_cols: int, dtype: torch.dtype, *, max_block_n: int | None = None) -> RowConfig:
    """Whole row in registers up to 16384 columns (8192 for fp32), else 4096-wide tiles in a loop."""
    limit = max_block_n or (8192 if dtype == torch.float32 else 16384)
    block_n = min(triton.next_power_of_2(n_cols), limit)
    num_warps = 4 if block_n <= 1024 else 8 if block_n <= 4096 else 16
    block_m = max(1, min(64, 2048 // block_n)) if block_n < 2048 else 1
    return RowConfig(block_m, block_n, num_warps)


@dataclass(frozen=True)
class MatmulConfig:
    """Tile sizes, L2 grouping and pipelining of the matmul template."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int
    num_warps: int
    num_stages: int


def matmul_config(m: int, n: int, k: int, dtype: torch.dtype) -> MatmulConfig:
    """Large 16-bit GEMMs take 128x256x64 tiles (8 warps, 3 stages), the H100's usual best."""
    if interpreting():
        return MatmulConfig(32, 32, 32, 4, 4, 1)
    if dtype == torch.float32:
        return MatmulConfig(64, 64, 32, 8, 4, 3)
    if m >= 2048 and n >= 2048:
        return MatmulConfig(128, 256, 64, 8, 8, 3)
    if m >= 256 and n >= 256:
        return MatmulConfig(128, 128, 64, 8, 8, 4)
    return MatmulConfig(64, 64, 64, 8, 4, 4)


@dataclass(frozen=True)
class AttentionConfig:
    """Query rows per program, key columns per step, warps and pipelining of flash attention."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def attention_config(head_dim: int, dtype: torch.dtype, causal: bool,
                     has_mask: bool = False) -> AttentionConfig:
    """128x128 tiles with 8 warps for d=128; 64-wide key steps when a mask tile also needs shared
    memory (3 stages of 128x128 k, v and mask tiles exceed the H100's 227 KB) or d is larger."""
    if interpreting():
        return AttentionConfig(16, 16, 4, 1)
    if dtype == torch.float32:
        return AttentionConfig(64, 32, 4, 2)
    if head_dim <= 64:
        return AttentionConfig(128, 64, 4, 3)
    return AttentionConfig(128, 64 if has_mask or head_dim > 128 else 128, 8, 3)
