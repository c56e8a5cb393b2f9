"""Benchmark cases: every zoo model plus kernel-level cases, sized per target.

A case is a name, a builder returning (model, args) on the right device/dtype, and — for
memory-bound kernels — the bytes one call must move, so the harness can report % of copy bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from examples import models


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "model" | "kernel"
    build: Callable[[], tuple[nn.Module, tuple]]
    bytes_moved: Callable[[tuple], int] | None = None


class LayerNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)

    def forward(self, x):
        return self.ln(x)


class Softmax(nn.Module):
    def forward(self, x):
        return torch.softmax(x, -1)


class GeluBias(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(d))

    def forward(self, x):
        return F.gelu(x + self.bias, approximate="tanh")


class ResidualAddNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)

    def forward(self, x, r):
        return self.ln(x + r)


def _rw(n_in: int):
    """Bytes of a row kernel reading `n_in` full tensors and writing one."""
    return lambda args: (n_in + 1) * args[0].numel() * args[0].element_size()


def kernel_cases(target: str) -> list[Case]:
    rows, cols, dtype = (4096, 1024, torch.float32) if target == "cpu" else (16384, 8192, torch.bfloat16)
    dev = "cpu" if target == "cpu" else "cuda"

    def x():
        return torch.randn(rows, cols, dtype=dtype, device=dev)

    def mk(module):
        return module.to(dev, dtype).eval()

    return [
        Case("layer_norm", "kernel", lambda: (mk(LayerNorm(cols)), (x(),)), _rw(1)),
        Case("softmax", "kernel", lambda: (mk(Softmax()), (x(),)), _rw(1)),
        Case("gelu_bias", "kernel", lambda: (mk(GeluBias(cols)), (x(),)), _rw(1)),
        Case("residual_add_norm", "kernel", lambda: (mk(ResidualAddNorm(cols)), (x(), x())), _rw(2)),
    ]


def model_cases(target: str) -> list[Case]:
    """On the GPU, realistic sizes first (GPT-2 124M at batch 8 x 1024 tokens, a GPT block and an MLP block at
    that scale), then the small zoo models."""
    cases = []
    if target != "cpu":
        cases.append(Case("gpt2_124m_b8_t1024", "model", lambda: models.gpt2_124m(batch=8, seq=1024)))
        cases.append(Case("gpt_block_large", "model", lambda: models.gpt_block(d=1024, heads=16, batch=8, seq=1024,
                                                                                dtype=torch.bfloat16)))
        cases.append(Case("mlp_block_large", "model", lambda: models.mlp_block(d=4096, tokens=8192,
                                                                                dtype=torch.bfloat16)))
    for name, entry in sorted(models.ZOO.items()):
        cases.append(Case(name, "model", entry.build))
    return cases
