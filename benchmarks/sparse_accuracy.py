"""Task accuracy of the shipped TinyLM, dense vs each sparse-attention policy at several densities.

    .venv/bin/python -m benchmarks.sparse_accuracy [--n 64] [--out benchmarks/results/sparse_accuracy.md]

Every row compiles the model with solder for the CPU (reference backend: the tiled block-sparse kernel
for `graph.block_sparse_attention`), runs `--n` held-out sequences (seed 777; calibration uses 8 other
sequences, seed 4242) and reports next-token accuracy on the local-copy targets and on the retrieval
targets (examples/sparse_lm/task.py), the mean density over the model's attentions (a dense attention
counts 1.0) and the retrieval accuracy change against dense. Writes a markdown table and a JSON file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

import torch

from compiler import compile as solder_compile
from compiler.sparse_attention import SparseAttention, pattern_label, pipeline_passes
from examples.sparse_lm.model import load
from examples.sparse_lm.task import accuracy, sample
from passes.registry import parse

BLOCK = 16


def run_policy(model, toks, sa: SparseAttention | None) -> tuple[torch.Tensor, list]:
    """Logits of the compiled model, and the attention ops after the passes (for densities)."""
    passes = parse("canonicalize,cse,recognize-attention")
    if sa is not None:
        passes = parse("canonicalize,cse") + pipeline_passes(sa, model)
    cm = solder_compile(model, target="cpu", passes=passes)
    with torch.no_grad():
        out = cm(toks)
    sp = next(iter(cm.specializations.values()))
    ops = [o for o in sp.imported.module.walk() if o.name in ("graph.attention", "graph.block_sparse_attention")]
    return out, ops


def describe(ops) -> tuple[float, str]:
    """(mean density, per-layer pattern summary) of the attention ops."""
    dens, parts = [], []
    for i, op in enumerate(ops):
        if op.name == "graph.attention":
            dens.append(1.0)
            parts.append(f"L{i}: dense")
            continue
        dens.append(op.density.value.data)
        heads = json.loads(op.heads.data)
        parts.append(f"L{i}: " + " ".join(pattern_label(h) for h in heads))
    return sum(dens) / max(len(dens), 1), "; ".join(parts)


def policies(calib: torch.Tensor) -> list[tuple[str, SparseAttention | None]]:
    rows: list[tuple[str, SparseAttention | None]] = [("dense", None)]
    for w in (256, 128, 64, 32):
        rows.append((f"window {w}", SparseAttention(policy="window", window=w, sinks=0, block=BLOCK)))
        rows.append((f"window {w} + sinks {BLOCK}", SparseAttention(policy="window", window=w, sinks=BLOCK,
                                                                    block=BLOCK)))

    def strided(b, h, q, kv):  # local 64 plus every 4th key block (a fixed "blocks" layout)
        return (kv <= q) & ((q - kv < 64) | ((kv // BLOCK) % 4 == 0))

    rows.append(("blocks: mask_mod local 64 + every 4th block", SparseAttention(policy="blocks", mask_mod=strided,
                                                                                  block=BLOCK)))
    for budget in (0.2, 0.4, 0.6, 0.8, 1.0, 1.5):
        rows.append((f"calibrate budget {budget}", SparseAttention(policy="calibrate", budget=budget, block=BLOCK,
                                                                   calibration_inputs=[calib])))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/sparse_accuracy.md")
    a = p.parse_args()
    torch.manual_seed(0)
    model, task = load()
    toks, local, retr = sample(task, a.n, torch.Generator().manual_seed(777))
    calib = sample(task, 8, torch.Generator().manual_seed(4242))[0]
    with torch.no_grad():
        eager = accuracy(model(toks), toks, local, retr)
    results = []
    for name, sa in policies(calib):
        t0 = time.time()
        out, ops = run_policy(model, toks, sa)
        acc = accuracy(out, toks, local, retr)
        dens, pats = describe(ops)
        row = {"policy": name, "density": dens, **acc, "patterns": pats, "seconds": time.time() - t0}
        results.append(row)
        print(json.dumps(row), flush=True)
    write(a.out, results, eager, task, a.n)


NOTES = """
Reading the table honestly:
- The checkpoint learned the local skill fully but retrieval only partly: 0.20 on the retrieval targets,
  against 1/32 = 0.03 for a random value token and 1/8 = 0.125 for a random value *of the sequence* (the
  4 queried keys' values are among 8 written hundreds of tokens earlier). Whatever it does, it needs
  long-range attention: every fixed window drops it to about chance, while local accuracy stays >= 0.97.
- `calibrate` measures each head's output error on 8 calibration sequences (seed 4242, disjoint from the
  evaluation set) and picks, per layer and head, the sparsest candidate under the budget (error = max over
  rows of |o - o_dense| / rms norm of the value rows). Here it picks vertical-slash heads almost
  everywhere: the queries sit at the end of the sequence, so the last query block's attention (which
  vertical-slash uses to choose key columns, per call) points at the retrieved tokens. A task whose
  queries were spread over the sequence would favour it less.
- The checkpoint was trained with examples/sparse_lm/train.py on an H100 (200 s, log in
  examples/sparse_lm/train_log.txt) because this repository's shared 2-core CPU ran ~1 s/step under load;
  the same script runs on the CPU (`--device cpu`, the default).
"""


def write(path: str, rows: list[dict], eager: dict, task, n: int) -> None:
    dense = rows[0]
    lines = [
        f"# Sparse attention accuracy (TinyLM, {datetime.date.today().isoformat()})", "",
        f"Model: examples/sparse_lm (T={task.seq}, {task.pairs} value-key pairs, {task.queries} queried at the end); "
        f"{n} held-out sequences; block {BLOCK}; CPU, reference backend (tiled block-sparse kernel). "
        f"Eager PyTorch: local {eager['local']:.3f}, retrieval {eager['retrieval']:.3f}. "
        "Density: visited key blocks / causal key blocks, averaged over the attentions (dense = 1.0).", "",
        "| policy | density | local acc | Δ local (points) | retrieval acc | Δ retrieval (points) | patterns (per layer, per head) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dl, dr = 100 * (r["local"] - dense["local"]), 100 * (r["retrieval"] - dense["retrieval"])
        lines.append(f"| {r['policy']} | {r['density']:.3f} | {r['local']:.3f} | {dl:+.1f} | {r['retrieval']:.3f} | "
                     f"{dr:+.1f} | {r['patterns']} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + NOTES)
    with open(path.removesuffix(".md") + ".json", "w") as f:
        json.dump({"eager": eager, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
