"""The synthetic task: local copies inside filler, plus key-value retrieval across the sequence.

A sequence of `seq` tokens is
- filler made of random 4-grams each written twice (`a b c d a b c d`): the second copy is predictable
  from 4 tokens back, which a local head (a window) can do;
- `pairs` value-key pairs `V K` written at random places in the first 3/4 of the sequence;
- at the end, `SEP` and then `queries` of the keys again (half of them: elimination cannot answer), each
  followed by its value: predicting the value needs a
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
    queries: int = 4
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


def sample(task: Task, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [B, T], local-target mask [B, T], retrieval-target mask [B, T]), drawn without Python loops.

    Masks mark positions whose *next-token prediction* is scored: position t predicts tokens[t + 1].
    """
    t, p, nq = task.seq, task.pairs, task.queries
    body = t - 1 - 2 * nq
    reps = -(-body // (2 * NGRAM))
    grams = torch.randint(0, task.filler, (batch, reps, NGRAM), generator=g)
    fill = torch.cat([grams, grams], 2).reshape(batch, -1)[:, :body].clone()
    pred = torch.tensor([False] * NGRAM + [True] * NGRAM).repeat(reps)[:body].expand(batch, body).clone()
    keys = torch.rand(batch, task.keys, generator=g).argsort(1)[:, :p]
    vals = torch.randint(0, task.values, (batch, p), generator=g)
    # pair slots: distinct even offsets in the first 3/4 of the body
    slots = torch.rand(batch, body * 3 // 8, generator=g).argsort(1)[:, :p] * 2
    fill.scatter_(1, slots, task.value0 + vals)
    fill.scatter_(1, slots + 1, task.key0 + keys)
    for off in range(2 + NGRAM):  # the pair, and copies whose source it overwrote
        pred.scatter_(1, (slots + off).clamp(max=body - 1), False)
    order = torch.rand(batch, p, generator=g).argsort(1)[:, :nq]
    q = torch.stack([keys.gather(1, order) + task.key0, vals.gather(1, order) + task.value0], 2).reshape(batch, -1)
    toks = torch.cat([fill, torch.full((batch, 1), task.sep), q], 1)
    local = torch.zeros(batch, t, dtype=torch.bool)
    retr = torch.zeros(batch, t, dtype=torch.bool)
    local[:, :body - 1] = pred[:, 1:]
    retr[:, body + 1::2] = True  # at each final key, predict its value
    return toks, local, retr


def accuracy(logits: torch.Tensor, toks: torch.Tensor, local: torch.Tensor, retr: torch.Tensor) -> dict[str, float]:
    """Next-token accuracy on the local and the retrieval targets (fractions in [0, 1])."""
    pred = logits[:, :-1].argmax(-1)
    ok = pred == toks[:, 1:]
    lm, rm = local[:, :-1], retr[:, :-1]
    return {"local": ok[lm].float().mean().item(), "retrieval": ok[rm].float().mean().item()}
