"""Train TinyLM on the synthetic task on the CPU and write the checkpoint (fp16 weights, < 5 MB).

    .venv/bin/python -m examples.sparse_lm.train --steps 1500

Loss is the mean loss on the local copies plus the mean loss on the retrieved values (equal weight); the script prints
the held-out accuracy every 100 steps and stops early once both reach `--target`. `--device cuda` runs the
same loop on a GPU.
"""

from __future__ import annotations

import argparse
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


def train(args) -> TinyLM:
    torch.manual_seed(args.seed)
    task = Task(seq=args.seq, pairs=args.pairs)
    model = TinyLM(task.vocab, task.seq, d=args.d, heads=args.heads, layers=args.layers).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        toks, local, retr = (x.to(args.device) for x in sample(task, args.batch, g))
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
            print(f"step {step} loss {loss.item():.3f} local {acc['local']:.3f} "
                  f"retrieval {acc['retrieval']:.3f} ({time.time() - t0:.0f} s)", flush=True)
            if min(acc.values()) >= args.target or time.time() - t0 > args.max_seconds:
                break
    model.eval()
    state = {k: v.half().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": model.config, "task": task.__dict__, "state": state}, args.out)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--target", type=float, default=0.995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(CHECKPOINT))
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    train(p.parse_args())


if __name__ == "__main__":
    main()
