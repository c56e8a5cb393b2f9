"""Train TinyLM on the synthetic task on the CPU and write the checkpoint (fp16 weights, well under 1 MB).

    .venv/bin/python -m examples.sparse_lm.train | tee examples/sparse_lm/train_log.txt

One thread by default (`--threads`): a few minutes on a shared 2-core machine. Sequences start short
(`--curriculum`, T=64 then 128, then the full T=256) and the model embeds each position's previous
token too (`--shift`): without the shift, 1300 steps (curriculum included) learned the local copies but
not retrieval; without the curriculum, 200 steps at T=256 learned neither. Loss is the mean loss on the
local copies plus the mean loss on the retrieved values (equal weight); the script prints the held-out
accuracy at the full T every 100 steps and stops once both reach `--target` (or after `--max-seconds`).
`--device cuda` runs the same loop on a GPU. Runs are deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from examples.sparse_lm.model import CHECKPOINT, TinyLM
from examples.sparse_lm.task import Task, accuracy, sample


def evaluate(model: TinyLM, task: Task, seed: int = 1234, batch: int = 64, device: str = "cpu") -> dict[str, float]:
    """Held-out accuracy on `batch` fresh sequences drawn with `seed`."""
    toks, local, retr = sample(task, batch, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return accuracy(model(toks.to(device)).cpu(), toks, local, retr)


def curriculum(task: Task, spec: str) -> list[tuple[int, Task]]:
    """Shorter sequences first: `64:300,128:300` trains 300 steps at T=64, then 300 at T=128, then the
    full task (pairs and queries scaled with T). Early on attention is near uniform, so the signal that
    points a head at one position is ~1/T: short sequences get the heads started faster."""
    out, until = [], 0
    for part in (x for x in spec.split(",") if x.strip()):
        t, _, n = part.partition(":")
        until += int(n)
        pairs = max(2, task.pairs * int(t) // task.seq)
        out.append((until, dataclasses.replace(task, seq=int(t), pairs=pairs,
                                               queries=max(1, task.queries * pairs // task.pairs))))
    return out


def train(args) -> TinyLM:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    task = Task(seq=args.seq, pairs=args.pairs, queries=args.queries)
    print(f"train: {vars(args)}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    model = TinyLM(task.vocab, task.seq, d=args.d, heads=args.heads, layers=args.layers, pos=args.pos,
                   shift=args.shift).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
    g = torch.Generator().manual_seed(args.seed)
    stages = curriculum(task, args.curriculum)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        cur = next((t for until, t in stages if step <= until), task)
        toks, local, retr = (x.to(args.device) for x in sample(cur, args.batch, g))
        logits, target = model(toks)[:, :-1], toks[:, 1:]
        lm, rm = local[:, :-1], retr[:, :-1]
        # equal weight to the two skills: retrieval targets are ~3% of the scored positions
        loss = F.cross_entropy(logits[lm], target[lm]) + F.cross_entropy(logits[rm], target[rm])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps:
            model.eval()
            acc = evaluate(model, task, device=args.device)
            model.train()
            print(f"step {step} T={cur.seq} loss {loss.item():.3f} local {acc['local']:.3f} "
                  f"retrieval {acc['retrieval']:.3f} ({time.time() - t0:.0f} s)", flush=True)
            if min(acc.values()) >= args.target or time.time() - t0 > args.max_seconds:
                break
    print(f"done: {step} steps in {time.time() - t0:.0f} s wall ({torch.get_num_threads()} thread(s)); "
          f"held-out local {acc['local']:.3f}, retrieval {acc['retrieval']:.3f}", flush=True)
    model.eval()
    state = {k: v.half().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": model.config, "task": task.__dict__, "state": state}, args.out)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--queries", type=int, default=12)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--pos", choices=("learned", "sin"), default="sin")
    p.add_argument("--shift", action=argparse.BooleanOptionalAction, default=True,
                   help="token shift: each position also embeds the previous token")
    p.add_argument("--curriculum", default="64:600,128:300", help="T:steps,... trained before the full T")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--target", type=float, default=0.995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(CHECKPOINT))
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-seconds", type=float, default=900.0, help="stop after this much wall time")
    train(p.parse_args())


if __name__ == "__main__":
    main()
