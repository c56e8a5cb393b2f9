"""Dynamic shapes: what one size-generic compile costs per call against a static compile of each size.

    python -m benchmarks.dynamic_shapes --target cpu|h100 [--models gpt2 llama bert] [--lengths 16,9,23,32]

For each zoo model with a sequence dimension, three callables see the same inputs at several sequence
lengths: `static` (compile(dynamic=False): one capture and compile per length), `dynamic`
(compile(dynamic=True): one compile, symbolic sizes, serving every length) and eager. Per length it reports
the median time per call of each (interleaved rounds, as benchmarks/run.py), dynamic / static, and the
compile counts and seconds of both. Writes benchmarks/results/dynamic-<target>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

import torch

from benchmarks.run import RESULTS, _sync, commit, device_line, interleaved
from solder import compile as solder_compile
from examples.models import ZOO

SEQ_MODELS = ("gpt2", "llama", "bert")


def _inputs(name: str, args: tuple, kwargs: dict, length: int, device: str):
    """The zoo example inputs cut or tiled to `length` tokens along dim 1."""
    def fit(t):
        reps = -(-length // t.shape[1])
        return t.repeat(1, reps, *([1] * (t.dim() - 2)))[:, :length].contiguous().to(device)
    return tuple(fit(a) for a in args), {k: fit(v) for k, v in kwargs.items()}


def run_model(name: str, target: str, lengths: list[int], repeats: int) -> dict:
    device = "cpu" if target == "cpu" else "cuda"
    model, args, kwargs = ZOO[name].build()
    model = model.to(device)
    static = solder_compile(model, target=target, dynamic=False)
    dynamic = solder_compile(model, target=target, dynamic=True)
    row = {"model": name, "lengths": {}}
    compile_s = {"static": 0.0, "dynamic": 0.0}
    with torch.no_grad():
        for n in lengths:
            a, kw = _inputs(name, args, kwargs, n, device)
            for label, c in (("static", static), ("dynamic", dynamic)):
                t0 = time.perf_counter()
                out = c(*a, **kw)
                _sync(target)
                compile_s[label] += time.perf_counter() - t0
                ref = model(*a, **kw)
                torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)
            fns = {"static": lambda a=a, kw=kw: static(*a, **kw), "dynamic": lambda a=a, kw=kw: dynamic(*a, **kw),
                   "eager": lambda a=a, kw=kw: model(*a, **kw)}
            med = interleaved(fns, target, repeats)
            row["lengths"][n] = {k: v for k, v in med.items()} | {"dynamic_vs_static": med["dynamic"] / med["static"]}
            print(f"{name:6s} T={n:3d}  static {med['static'] * 1e6:8.1f} us  dynamic {med['dynamic'] * 1e6:8.1f} us  "
                  f"eager {med['eager'] * 1e6:8.1f} us  dynamic/static {med['dynamic'] / med['static']:.2f}", flush=True)
    row |= {"static_compiles": static.compile_count, "dynamic_compiles": dynamic.compile_count,
            "first_calls_s": compile_s}
    print(f"{name:6s} compiles: static {static.compile_count} ({compile_s['static']:.2f} s over the first calls), "
          f"dynamic {dynamic.compile_count} ({compile_s['dynamic']:.2f} s)", flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="cpu", choices=["cpu", "h100", "h200"])
    p.add_argument("--models", nargs="*", default=list(SEQ_MODELS))
    p.add_argument("--lengths", default="16,9,23,32")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    if a.target == "cpu":
        torch.set_num_threads(1)
    lengths = [int(x) for x in a.lengths.split(",")]
    rows = [run_model(m, a.target, lengths, a.repeats) for m in a.models]
    date = datetime.date.today().isoformat()
    meta = {"target": a.target, "device": device_line(a.target), "date": date, "commit": commit(),
            "torch": torch.__version__, "threads": torch.get_num_threads() if a.target == "cpu" else None}
    out = f"{a.out}/dynamic-{a.target}-{date}"
    with open(f"{out}.json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    lines = [(f"Dynamic shapes — target `{a.target}` on {meta['device']}, {date}, commit {meta['commit']}, "
              f"torch {meta['torch']}; `python -m benchmarks.dynamic_shapes --target {a.target}`."), "",
             "| model | T | static us | dynamic us | eager us | dynamic / static |", "|---|---|---|---|---|---|"]
    for r in rows:
        for n, v in r["lengths"].items():
            lines.append(f"| {r['model']} | {n} | {v['static'] * 1e6:.1f} | {v['dynamic'] * 1e6:.1f} | "
                         f"{v['eager'] * 1e6:.1f} | {v['dynamic_vs_static']:.2f} |")
    lines += ["", "Compiles over the lengths (static: one per length; dynamic: the first call's):", ""]
    lines += [f"- {r['model']}: static {r['static_compiles']} ({r['first_calls_s']['static']:.2f} s of first calls), "
              f"dynamic {r['dynamic_compiles']} ({r['first_calls_s']['dynamic']:.2f} s)" for r in rows]
    with open(f"{out}.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
