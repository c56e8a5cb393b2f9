"""The synthetic task: local copies inside filler, plus key-value retrieval across the sequence.

A sequence of `seq` tokens is
- filler made of random 4-grams each written twice (`a b c d a b c d`): the second copy is predictable
  from 4 tokens back, which a local head (a window) can do;
- `pairs` value-key pairs `V K` written at random places in the first 3/4 of the sequence;
- at the end, `SEP` and then every key again, each followed by its value: predicting the value needs a
  retrieval head that finds the key hundreds of tokens back (and reads the value that a previous-token
  head copied onto it).

Accuracy is measured on the predictable targets: `retrieval` on the values after the final keys,
`local` on the second copies of the 4-grams.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NGRAM = 4


@dataclass(frozen=True)
class Task:
    """Vocabulary layout and sizes: filler tokens [0, filler), keys, values, then SEP."""

    seq: int = 512
    pairs: int = 8
    filler: int = 32
    keys: int = 32
    values: int = 32

    @property
    def key0(self) -> int:
        return self.filler

    @property
    def value0(self) -> int:
        return self.filler + self.keys

    @property
    def sep(self) -> int:
        return self.filler + self.keys + self.values

    @property
    def vocab(self) -> int:
        return self.sep + 1


def _filler(task: Task, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n filler tokens of repeated 4-grams, and which of them are predictable (second copies)."""
    reps = -(-n // (2 * NGRAM))
    grams = torch.randint(0, task.filler, (reps, NGRAM), generator=g)
    toks = torch.cat([grams, grams], 1).reshape(-1)[:n]
    pred = torch.tensor([False] * NGRAM + [True] * NGRAM).repeat(reps)[:n]
    return toks, pred


def sample(task: Task, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [B, T], local-target mask [B, T], retrieval-target mask [B, T]).

    Masks mark positions whose *next-token prediction* is scored: position t predicts tokens[t + 1].
    """
    t, p = task.seq, task.pairs
    tail = 1 + 2 * p
    toks = torch.empty(batch, t, dtype=torch.long)
    local = torch.zeros(batch, t, dtype=torch.bool)
    retr = torch.zeros(batch, t, dtype=torch.bool)
    body = t - tail
    for b in range(batch):
        fill, pred = _filler(task, body, g)
        keys = torch.randperm(task.keys, generator=g)[:p]
        vals = torch.randint(0, task.values, (p,), generator=g)
        # pair slots: even offsets in the first 3/4 of the body, at least 2 apart
        slots = torch.randperm(body * 3 // 8, generator=g)[:p].sort().values * 2
        for key, val, s in zip(keys.tolist(), vals.tolist(), slots.tolist()):
            fill[s], fill[s + 1] = task.value0 + val, task.key0 + key
            pred[s:s + 2] = False
            pred[s + 2:s + 2 + NGRAM] = False  # a copy whose source was overwritten
        order = torch.randperm(p, generator=g)
        q = torch.stack([keys[order] + task.key0, vals[order] + task.value0], 1).reshape(-1)
        toks[b] = torch.cat([fill, torch.tensor([task.sep]), q])
        local[b, :body - 1] = pred[1:]
        retr[b, body + 1::2] = True  # at each final key, predict its value
    return toks, local, retr


def accuracy(logits: torch.Tensor, toks: torch.Tensor, local: torch.Tensor, retr: torch.Tensor) -> dict[str, float]:
    """Next-token accuracy on the local and the retrieval targets (fractions in [0, 1])."""
    pred = logits[:, :-1].argmax(-1)
    ok = pred == toks[:, 1:]
    lm, rm = local[:, :-1], retr[:, :-1]
    return {"local": ok[lm].float().mean().item(), "retrieval": ok[rm].float().mean().item()}
