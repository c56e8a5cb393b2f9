"""TinyLM: a pre-norm causal transformer (SDPA attention), 2 layers; learned or fixed sinusoidal positions."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from examples.sparse_lm.task import Task

CHECKPOINT = Path(__file__).parent / "checkpoint.pt"


def sinusoids(seq: int, d: int) -> torch.Tensor:
    """[seq, d] sin/cos position codes with periods from 4 to 4 * seq (the short ones resolve offsets)."""
    freq = (2 * torch.pi) / (4.0 * seq ** (torch.arange(d // 2) / max(d // 2 - 1, 1)))
    ang = torch.arange(seq)[:, None] * freq[None]
    return torch.cat([ang.sin(), ang.cos()], 1)


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

    def __init__(self, vocab: int, seq: int, d: int = 128, heads: int = 4, layers: int = 2, pos: str = "learned",
                 shift: bool = False):
        super().__init__()
        if pos not in ("learned", "sin"):
            raise ValueError(f"TinyLM: pos must be 'learned' or 'sin', got {pos!r}")
        self.config = {"vocab": vocab, "seq": seq, "d": d, "heads": heads, "layers": layers, "pos": pos,
                       "shift": shift}
        self.tok = nn.Embedding(vocab, d)
        # token shift: each position also sees an embedding of the token before it (as in RWKV or the
        # "smeared keys" of induction-head studies), so one attention layer can match "the token after K"
        self.prev = nn.Embedding(vocab, d) if shift else None
        if pos == "learned":
            self.pos = nn.Embedding(seq, d)
        else:  # fixed sinusoids: a relative offset is a linear map of them, so offset heads learn fast
            self.register_buffer("sinusoids", sinusoids(seq, d), persistent=False)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        pos = self.sinusoids[:t] if hasattr(self, "sinusoids") else self.pos(torch.arange(t, device=tokens.device))
        x = self.tok(tokens) + pos
        if self.prev is not None:
            p = self.prev(tokens)
            x = x + torch.cat([torch.zeros_like(p[:, :1]), p[:, :-1]], 1)  # shifted one position right
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
