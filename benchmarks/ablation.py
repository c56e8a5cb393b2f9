"""Fusion ablation: each zoo model compiled with fusion off, always, and cost-decided, timed side by side.

    python -m benchmarks.ablation --target cpu [--threads 1] [--repeats 20] [--cost-model roofline]
    python -m benchmarks.ablation --target h100 [--models gpt2 bert] [--out DIR]

"off" still runs attention recognition and wraps each op in its own kernel (fuse-ops{mode=never});
"always" fuses every legal group (and, where the target's pipeline has merge-linears, merges every group of
sibling linears); "cost" is the target's default pipeline. Writes
benchmarks/results/ablation-<target>-<date>.{json,md} (the JSON after every model, so a run cut short
keeps what it measured).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import warnings
from pathlib import Path

import torch

from benchmarks.run import RESULTS, commit, device_line, interleaved, malloc_mode_reuse
from solder import compile as solder_compile
from solder.compiler.targets import get_target
from examples.models import ZOO


def pipelines(target: str, cost_model: str) -> dict[str, str]:
    opt = f" cost-model={cost_model}" if cost_model else ""
    head = "canonicalize,cse,recognize-attention"
    default = get_target(target).pipeline
    merge = f",merge-linears{{mode=always{opt}}}" if "merge-linears" in default else ""  # horizontal GEMM fusion
    return {
        "off": f"{head},fuse-ops{{mode=never}},dce",
        "always": f"{head}{merge},fuse-ops{{mode=always{opt}}},fuse-blocks{{mode=always{opt}}},dce",
        "cost": default,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--cost-model", default="", help="cost model for the 'always' variant's estimates (recorded only)")
    p.add_argument("--models", nargs="*", help="zoo models to run (default: all)")
    p.add_argument("--out", help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.models or ()) - set(ZOO))
    if unknown:
        p.error(f"unknown zoo models {unknown}; known: {sorted(ZOO)}")
    dev = "cpu" if args.target == "cpu" else "cuda"
    if dev == "cpu":
        torch.set_num_threads(args.threads)
        malloc_mode_reuse()
    rows = []
    meta = {"target": args.target, "device": device_line(args.target), "date": datetime.date.today().isoformat(),
            "commit": commit(), "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__}
    stem = (Path(args.out) if args.out else RESULTS) / f"ablation-{args.target}-{meta['date']}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    for name, entry in sorted(ZOO.items()):
        if args.models and name not in args.models:
            continue
        model, inputs, kwargs = entry.build()
        model = model.to(dev)
        inputs = tuple(x.to(dev) for x in inputs)
        kwargs = {k: v.to(dev) for k, v in kwargs.items()}
        fns, kernels = {}, {}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = model(*inputs, **kwargs)
            for variant, pipe in pipelines(args.target, args.cost_model).items():
                c = solder_compile(model, target=args.target, passes=pipe)
                out = c(*inputs, **kwargs)
                torch.testing.assert_close(out, ref, atol=entry.atol * 10, rtol=entry.rtol * 10)
                sp = next(iter(c.specializations.values()))
                kernels[variant] = sum(1 for op in sp.imported.module.walk() if op.name == "graph.kernel")
                fns[variant] = (lambda c=c: c(*inputs, **kwargs))
            fns["eager"] = lambda: model(*inputs, **kwargs)
            # Two independent interleaved runs: the figure is their mean, the noise their disagreement.
            runs = [interleaved(fns, args.target, args.repeats) for _ in range(2)]
        med = {k: (runs[0][k] + runs[1][k]) / 2 for k in fns}
        noise = max(abs(runs[0][k] - runs[1][k]) / (2 * med[k]) for k in fns)
        row = {"model": name, **{f"{k}_s": v for k, v in med.items()}, **{f"{k}_kernels": n for k, n in kernels.items()},
               "noise": noise}
        best = min(("off", "always", "cost"), key=lambda k: med[k])
        row["cost_vs_best"] = med["cost"] / med[best]
        rows.append(row)
        print(f"{name:<18} off {med['off'] * 1e3:8.3f} ms ({kernels['off']:3d} k)  always {med['always'] * 1e3:8.3f} ms "
              f"({kernels['always']:3d} k)  cost {med['cost'] * 1e3:8.3f} ms ({kernels['cost']:3d} k)  "
              f"eager {med['eager'] * 1e3:8.3f} ms", flush=True)
        stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))  # partial runs keep rows
    sample = "samples of 10 back-to-back calls" if dev == "cuda" else "calls"
    lines = [f"Fusion ablation — target `{args.target}` on {meta['device']}, {meta['date']}, commit {meta['commit']}, "
             f"threads={args.threads}; each figure is the mean of two medians of {args.repeats} interleaved {sample} "
             "(ms; kernels in parentheses); noise = the largest half-difference between the two medians of any "
             "variant of that model.", "",
             "| model | off | always | cost | eager | cost / best | noise |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['off_s'] * 1e3:.3f} ({r['off_kernels']}) | {r['always_s'] * 1e3:.3f} "
                     f"({r['always_kernels']}) | {r['cost_s'] * 1e3:.3f} ({r['cost_kernels']}) | {r['eager_s'] * 1e3:.3f} | "
                     f"{r['cost_vs_best']:.3f} | {r['noise'] * 100:.1f}% |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("SOLDER_LOG", "")
    raise SystemExit(main())
