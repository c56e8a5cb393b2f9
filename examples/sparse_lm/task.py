"""The synthetic task: local copies inside filler, plus key-value retrieval across the sequence.

A sequence of `seq` tokens is
- filler made of random 4-grams each written twice (`a b c d a b c d`): the second copy is predictable
  from 4 tokens back, which a local head (a window) can do;
- `pairs` key-value pairs `K V` (distinct keys) written at random places in the first `spread` of the
  filler;
- at the end, `SEP` and then `queries` of those keys again (a random subset, so elimination cannot
  answer the last one), each followed by its value. Predicting the value after a final key needs a
  retrieval (induction) head that finds the same key up to `seq` tokens back and copies the token
  after it, with a previous-token head below it.

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

    seq: int = 256
    pairs: int = 16
    queries: int = 12
    filler: int = 32
    keys: int = 32
    values: int = 32
    spread: float = 0.75

    def __post_init__(self) -> None:
        if self.queries > self.pairs or self.pairs > self.keys:
            raise ValueError(f"Task: need queries <= pairs <= keys, got {self.queries}, {self.pairs}, {self.keys}")
        if self.pairs > self.body * self.spread / 2 - 1:
            raise ValueError(f"Task: {self.pairs} pairs do not fit in {self.spread} of a {self.body}-token body")

    @property
    def body(self) -> int:
        return self.seq - 1 - 2 * self.queries

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
    t, p, nq, body = task.seq, task.pairs, task.queries, task.body
    reps = -(-body // (2 * NGRAM))
    grams = torch.randint(0, task.filler, (batch, reps, NGRAM), generator=g)
    fill = torch.cat([grams, grams], 2).reshape(batch, -1)[:, :body].clone()
    pred = torch.tensor([False] * NGRAM + [True] * NGRAM).repeat(reps)[:body].expand(batch, body).clone()
    keys = torch.rand(batch, task.keys, generator=g).argsort(1)[:, :p]
    vals = torch.randint(0, task.values, (batch, p), generator=g)
    # pair slots: distinct even offsets in the first `spread` of the body
    n_slots = int(body * task.spread) // 2
    slots = torch.rand(batch, n_slots, generator=g).argsort(1)[:, :p] * 2
    fill.scatter_(1, slots, task.key0 + keys)
    fill.scatter_(1, slots + 1, task.value0 + vals)
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
