"""TinyLM: a pre-norm causal transformer (learned positions, SDPA attention), 2 layers of d=128."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from examples.sparse_lm.task import Task

CHECKPOINT = Path(__file__).parent / "checkpoint.pt"


class Block(nn.Module):
    """Pre-norm attention + MLP; attention through `scaled_dot_product_attention(is_causal=True)`."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, -1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """Token + position embeddings, `layers` blocks, a final norm and an untied head."""

    def __init__(self, vocab: int, seq: int, d: int = 128, heads: int = 4, layers: int = 2):
        super().__init__()
        self.config = {"vocab": vocab, "seq": seq, "d": d, "heads": heads, "layers": layers}
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def load(path: Path = CHECKPOINT) -> tuple[TinyLM, Task]:
    """The shipped model (eval mode) and the task it was trained on."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    task = Task(**ck["task"])
    model = TinyLM(**ck["config"])
    model.load_state_dict({k: v.float() for k, v in ck["state"].items()})
    return model.eval(), task
