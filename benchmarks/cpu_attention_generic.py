"""The size-generic flash-attention kernel (the install's prebuilt library, backends/cpu/attention_lib.py) against
the per-shape one it replaces, on the CPU at one thread: time per call (benchmarks.run.interleaved: medians of
alternating calls after warm-up), compile time of each, and their largest difference in output.

    python -m benchmarks.cpu_attention_generic [--repeats 200]

Writes benchmarks/results/cpu_attention_generic-<date>.md (device line, date, commit).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import time
from pathlib import Path

import torch

from solder.backends.cpu import attention_plan as A
from solder.backends.cpu import jit

RESULTS = Path(__file__).resolve().parent / "results"

# (label, spec): the zoo's attention, GPT-2 small's, a GQA one with T not a multiple of the block, masked ones
SHAPES = [
    ("zoo attn (B2 H4 T32 d16, causal)", A.AttentionSpec(2, 4, 32, 16, 4, 32, 16, 0.25, True)),
    ("gpt2 small (B1 H12 T128 d64, causal)", A.AttentionSpec(1, 12, 128, 64, 12, 128, 64, 0.125, True)),
    ("GQA 4:2 (B2 T100 d32)", A.AttentionSpec(2, 4, 100, 32, 2, 100, 32, 0.2, False)),
    ("additive key mask (B2 H4 T50 S70 d16)",
     A.AttentionSpec(2, 4, 50, 16, 4, 70, 16, 0.25, False, mask="add", mask_shape=(2, 1, 1, 70))),
    ("bool mask (B2 H4 T50 S70 d16)",
     A.AttentionSpec(2, 4, 50, 16, 4, 70, 16, 0.25, False, mask="bool", mask_shape=(1, 1, 50, 70))),
]


def _compile(spec):
    t0 = time.perf_counter()
    kern = jit.compile_mlir(A.module(spec, "attn"), "attn", use_cache=False)
    return kern, time.perf_counter() - t0


def measure(spec, repeats: int) -> dict:
    from solder.backends.cpu.attention_lib import Bound
    from benchmarks.run import interleaved

    per_shape, c_static = _compile(spec)
    generic, c_generic = _compile(dataclasses.replace(spec, b=1, hq=1, t=1, hkv=1, s=1, scale=1.0, generic=True,
                                                      mask_shape=(1, 1, 1, 2 if spec.mask_shape[-1] > 1 else 1)
                                                      if spec.mask else ()))
    fs = A._dense_call(spec, per_shape)
    fg = A._dense_call(spec, Bound(generic, spec))
    torch.manual_seed(0)
    q = torch.randn(spec.b, spec.hq, spec.t, spec.d)
    k, v = torch.randn(spec.b, spec.hkv, spec.s, spec.d), torch.randn(spec.b, spec.hkv, spec.s, spec.dv)
    mask = None
    if spec.mask == "add":
        mask = torch.where(torch.rand(spec.mask_shape) > 0.2, 0.0, float("-inf"))
    elif spec.mask == "bool":
        mask = torch.rand(spec.mask_shape) > 0.3
    args = (q, k, v) if mask is None else (q, k, v, mask)
    err = (fs(*args) - fg(*args)).abs().nan_to_num(0).max().item()
    fns = {"per-shape": lambda: fs(*args), "size-generic": lambda: fg(*args)}
    med = {n: t * 1e6 for n, t in interleaved(fns, "cpu", repeats).items()}
    return {"per_shape_us": med["per-shape"], "generic_us": med["size-generic"], "compile_per_shape_s": c_static,
            "compile_generic_s": c_generic, "max_abs_diff": err}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    from benchmarks.run import commit, device_line

    lines = [f"Size-generic vs per-shape CPU flash attention, one thread, {device_line('cpu')}, "
             f"{datetime.date.today().isoformat()}, commit {commit()}; `python -m benchmarks.cpu_attention_generic`.",
             "", "| attention | per-shape us | size-generic us | generic / per-shape | compile per-shape s | "
             "compile generic s | max abs diff |", "|---|---|---|---|---|---|---|"]
    for label, spec in SHAPES:
        r = measure(spec, a.repeats)
        row = (f"| {label} | {r['per_shape_us']:.1f} | {r['generic_us']:.1f} | "
               f"{r['generic_us'] / r['per_shape_us']:.2f}x | {r['compile_per_shape_s']:.2f} | "
               f"{r['compile_generic_s']:.2f} | {r['max_abs_diff']:.1e} |")
        print(row, flush=True)
        lines.append(row)
    out = RESULTS / f"cpu_attention_generic-{datetime.date.today().isoformat()}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
