"""Peak memory and time of one attention on the CPU: eager written out, eager SDPA, solder compile(target="cpu").

    python -m benchmarks.cpu_attention [--t 4096] [--heads 4] [--d 64] [--rounds 5] [--out PREFIX]

Memory: each variant runs in a fresh subprocess (torch's CPU allocations are invisible to tracemalloc).
The child builds q, k, v and calls the variant once (solder: compile(target="cpu") happens there; an
earlier child warmed the JIT disk cache), then measures a second call: freed heap returned to the OS
(malloc_trim), the kernel's RSS high-water mark reset (/proc/self/clear_refs), VmHWM after the call
minus VmRSS before it = the call's peak memory. Also kept: the first call's ru_maxrss growth over the
inputs, which for solder includes the whole compiler (imports, capture, passes).

Time: one more child runs the three variants interleaved, round by round (min and median of `rounds`
calls each). The machine may be shared: timings are noisy, memory figures are not.

Op level: the generated kernel (backends/cpu/attention.py) against F.scaled_dot_product_attention at
a few shapes, one thread each, interleaved, to back the CPU backend's routing choice.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("eager", "sdpa", "solder")


class WrittenOut(nn.Module):
    """softmax(q kᵀ / sqrt(d)) v, causal through masked_fill: the T×T scores are materialized."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v):
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if self.causal:
            t = q.shape[-2]
            s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool, device=q.device).tril(), float("-inf"))
        return s.softmax(-1) @ v


class Sdpa(nn.Module):
    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


def _inputs(b: int, h: int, t: int, d: int):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, t, d, generator=g) for _ in range(3)]


def _fn(variant: str, causal: bool, inputs):
    if variant == "eager":
        return WrittenOut(causal).eval()
    if variant == "sdpa":
        return Sdpa(causal).eval()
    from solder import compile as solder_compile
    return solder_compile(WrittenOut(causal).eval(), target="cpu")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _call_peak_mb(fn) -> float:
    """Peak RSS growth during one call: freed heap memory returned first (malloc_trim), the kernel's
    high-water mark reset (clear_refs 5), then VmHWM after the call minus VmRSS before it."""
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mb("VmRSS")
    fn()
    return _status_mb("VmHWM") - before


def child_memory(variant: str, causal: bool, b: int, h: int, t: int, d: int) -> dict:
    torch.set_grad_enabled(False)
    q, k, v = _inputs(b, h, t, d)
    base = _maxrss_mb()
    fn = _fn(variant, causal, (q, k, v))
    out = fn(q, k, v)  # solder: compiles here
    first = _maxrss_mb() - base
    row = {"variant": variant, "causal": causal, "inputs_rss_mb": base, "first_call_peak_over_inputs_mb": first,
           "call_peak_mb": _call_peak_mb(lambda: fn(q, k, v))}
    if variant == "solder":
        row["route"] = next(iter(fn.specializations.values())).program.kernels[0]["route"]
    row["checksum"] = float(out.double().sum())
    return row


def child_time(causal: bool, b: int, h: int, t: int, d: int, rounds: int) -> dict:
    torch.set_grad_enabled(False)
    q, k, v = _inputs(b, h, t, d)
    fns = {n: _fn(n, causal, (q, k, v)) for n in VARIANTS}
    ref = fns["eager"](q, k, v)
    err = {n: float((f(q, k, v) - ref).abs().max()) for n, f in fns.items()}
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(rounds):
        for n, f in fns.items():
            t0 = time.perf_counter()
            f(q, k, v)
            times[n].append(time.perf_counter() - t0)
    return {"causal": causal, "max_abs_err_vs_eager": err,
            "ms_min": {n: min(x) * 1e3 for n, x in times.items()},
            "ms_median": {n: statistics.median(x) * 1e3 for n, x in times.items()}}


def op_level(shapes, rounds: int) -> list[dict]:
    """Generated kernel vs torch SDPA on the op alone (f32, no mask), interleaved."""
    from solder.backends.cpu import attention_plan as A
    from solder.backends.cpu import jit

    torch.set_grad_enabled(False)
    rows = []
    for b, h, t, d, causal in shapes:
        parallel = A._threads() > 1 and 4 * b * h * t * t * d >= A.PARALLEL_MIN_FLOPS
        spec = A.AttentionSpec(b, h, t, d, h, t, d, d ** -0.5, causal, parallel=parallel)
        kern = A._dense_call(spec, jit.compile_mlir(A.module(spec, "attn"), "attn"))
        q, k, v = _inputs(b, h, t, d)
        fns = {"solder": lambda kern=kern, q=q, k=k, v=v: kern(q, k, v),
               "sdpa": lambda q=q, k=k, v=v, c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c)}
        reps = max(1, int(2e8 // (4 * b * h * t * t * d)))
        times: dict[str, list[float]] = {n: [] for n in fns}
        for f in fns.values():
            f()
        for _ in range(rounds):
            for n, f in fns.items():
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                times[n].append((time.perf_counter() - t0) / reps)
        med = {n: statistics.median(x) * 1e3 for n, x in times.items()}
        rows.append({"b": b, "h": h, "t": t, "d": d, "causal": causal, "threads": "OpenMP" if parallel else 1,
                     "solder_ms": med["solder"], "sdpa_ms": med["sdpa"], "sdpa_over_solder": med["sdpa"] / med["solder"]})
        print(f"  op B={b} H={h} T={t} d={d} causal={causal}: solder {med['solder']:.3f} ms, "
              f"sdpa {med['sdpa']:.3f} ms", flush=True)
    return rows


def sparse_level(t: int, rounds: int) -> dict:
    """Block-sparse (sliding window 512 + 64 sinks, block 64) on the generated kernel against the
    reference backend's block-sparse loop (the CPU path before) and dense causal attention, one thread."""
    from solder.backends.cpu import attention_plan as A
    from solder.backends.cpu import jit
    from solder.backends.reference import block_sparse_reference
    from solder.compiler.sparse_attention import OpSpec, static_layout

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    b, h, d, block = 1, 4, 64, 64
    ospec = OpSpec((json.dumps({"pattern": "window", "window": 512, "sinks": 64}, sort_keys=True),), block,
                   d ** -0.5, True)
    counts, idx = static_layout(ospec, h, t, t)
    sp = A.AttentionSpec(b, h, t, d, h, t, d, d ** -0.5, True, sparse=(1, counts.shape[0]), bq=block, bk=block)
    kern = jit.compile_mlir(A.module(sp, "attn"), "attn")
    dense = A.AttentionSpec(b, h, t, d, h, t, d, d ** -0.5, True)
    dkern = A._dense_call(dense, jit.compile_mlir(A.module(dense, "attn"), "attn"))
    lay = A.sparse_layout_args(sp, [(counts, idx)])
    q, k, v = _inputs(b, h, t, d)
    out = torch.empty(b, h, t, d)
    fns = {"solder_sparse": lambda: kern(q, k, v, *lay, out),
           "reference_sparse": lambda: block_sparse_reference(q, k, v, counts, idx, block, d ** -0.5, True),
           "solder_dense_causal": lambda: dkern(q, k, v)}
    times: dict[str, list[float]] = {n: [] for n in fns}
    for f in fns.values():
        f()
    err = float((out - fns["reference_sparse"]()).abs().max())
    for _ in range(rounds):
        for n, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[n].append(time.perf_counter() - t0)
    density = float(counts.sum()) / (counts.shape[1] * (counts.shape[1] + 1) / 2) / counts.shape[0]
    return {"t": t, "density_vs_causal": density, "max_abs_err_vs_reference": err,
            "ms_median": {n: statistics.median(x) * 1e3 for n, x in times.items()}}


def _child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(RESULTS.parent.parent))
    p = subprocess.run([sys.executable, "-m", "benchmarks.cpu_attention", *args], capture_output=True,
                       text=True, env=env, cwd=RESULTS.parent.parent, check=False)
    if p.returncode:
        raise RuntimeError(f"child {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / f"cpu_attention-{datetime.date.today().isoformat()}"))
    ap.add_argument("--child", choices=("memory", "time", "ops", "sparse"))
    ap.add_argument("--variant", choices=VARIANTS)
    ap.add_argument("--causal", type=int, default=0)
    a = ap.parse_args(argv)
    shape = (a.batch, a.heads, a.t, a.d)
    if a.child == "memory":
        print(json.dumps(child_memory(a.variant, bool(a.causal), *shape)))
        return 0
    if a.child == "time":
        print(json.dumps(child_time(bool(a.causal), *shape, a.rounds)))
        return 0
    if a.child == "sparse":
        print(json.dumps(sparse_level(a.t, a.rounds)))
        return 0
    if a.child == "ops":
        torch.set_num_threads(1)  # per-core comparison: a shared machine makes 2-thread timings erratic
        shapes = [(1, 8, 128, 16, True), (1, 4, 256, 64, True), (1, 4, 1024, 64, True), (1, 4, 1024, 64, False),
                  (1, 4, 2048, 64, False), (1, 4, 1024, 128, True), (1, 4, 1024, 128, False)]
        print(json.dumps(op_level(shapes, a.rounds)))
        return 0
    from benchmarks.run import commit, device_line

    common = ["--t", str(a.t), "--heads", str(a.heads), "--batch", str(a.batch), "--d", str(a.d)]
    result = {"date": datetime.date.today().isoformat(), "commit": commit(), "device": device_line("cpu"),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "shape": {"B": a.batch, "H": a.heads, "T": a.t, "d": a.d}, "memory": [], "time": []}
    for causal in (0, 1):
        _child(["--child", "memory", "--variant", "solder", "--causal", str(causal), *common])  # warm the cache
        for v in VARIANTS:
            row = _child(["--child", "memory", "--variant", v, "--causal", str(causal), *common])
            print(f"memory causal={causal} {v}: call +{row['call_peak_mb']:.1f} MB, first call "
                  f"+{row['first_call_peak_over_inputs_mb']:.1f} MB", flush=True)
            result["memory"].append(row)
        row = _child(["--child", "time", "--causal", str(causal), "--rounds", str(a.rounds), *common])
        print(f"time causal={causal}: {row['ms_median']}", flush=True)
        result["time"].append(row)
    result["ops"] = _child(["--child", "ops", "--rounds", str(a.rounds)])
    result["sparse"] = _child(["--child", "sparse", "--rounds", str(a.rounds), "--t", str(a.t)])
    print(f"sparse: {result['sparse']['ms_median']}", flush=True)
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def markdown(r: dict) -> str:
    s = r["shape"]
    lines = [f"# CPU attention, B={s['B']} H={s['H']} T={s['T']} d={s['d']} fp32",
             "",
             (f"{r['device']}, {r['date']}, commit {r['commit']}, torch {r['torch']}, {r['threads']} torch threads "
             "(solder's kernel: OpenMP on the same cores). Reproduce: `python -m benchmarks.cpu_attention`."),
             "",
             "## Peak memory of one call (MB of RSS growth during the call, fresh process per variant)",
             "",
             "| causal | eager written out | eager SDPA | solder | solder / eager | first call incl. compile: eager / SDPA / solder |",
             "|---|---|---|---|---|---|"]
    for causal in (False, True):
        rows = {row["variant"]: row for row in r["memory"] if row["causal"] == causal}
        m = {n: x["call_peak_mb"] for n, x in rows.items()}
        f = {n: x["first_call_peak_over_inputs_mb"] for n, x in rows.items()}
        lines.append(f"| {causal} | {m['eager']:.1f} | {m['sdpa']:.1f} | {m['solder']:.1f} | "
                     f"{100 * m['solder'] / m['eager']:.1f}% | {f['eager']:.0f} / {f['sdpa']:.0f} / {f['solder']:.0f} |")
    lines += ["", ("Inputs (q, k, v) are allocated before the measurement. The call's figure is VmHWM after the "
              "call minus VmRSS before it (high-water mark reset, freed heap trimmed first). The last column is "
              "the first call's growth of ru_maxrss over the inputs; for solder it is dominated by the compiler "
              "itself (imports, capture, passes), not by the attention."), "",
              "## Time (ms, interleaved rounds in one process; the machine was shared, so noisy)", "",
              "| causal | eager written out | eager SDPA | solder | solder vs SDPA | max abs err vs eager |",
              "|---|---|---|---|---|---|"]
    for row in r["time"]:
        t = row["ms_median"]
        lines.append(f"| {row['causal']} | {t['eager']:.1f} | {t['sdpa']:.1f} | {t['solder']:.1f} | "
                     f"{t['sdpa'] / t['solder']:.2f}x | {row['max_abs_err_vs_eager']['solder']:.1e} |")
    lines += ["", ("## Op level: generated kernel vs torch SDPA, one thread each (median ms; > 1x: the kernel is "
              "faster)"), "",
              "| B | H | T | d | causal | kernel threads | solder ms | SDPA ms | SDPA / solder |", "|---|---|---|---|---|---|---|---|---|"]
    for o in r["ops"]:
        lines.append(f"| {o['b']} | {o['h']} | {o['t']} | {o['d']} | {o['causal']} | {o['threads']} | "
                     f"{o['solder_ms']:.3f} | {o['sdpa_ms']:.3f} | {o['sdpa_over_solder']:.2f}x |")
    sp = r.get("sparse")
    if sp:
        t = sp["ms_median"]
        lines += ["", (f"## Block-sparse, T={sp['t']}, H=4, d=64, window 512 + 64 sinks, block 64 "
                  f"({100 * sp['density_vs_causal']:.0f}% of the causal blocks), one thread, median ms"), "",
                  ("| generated block-sparse kernel | reference backend's block-sparse loop (the CPU path before) | "
                  "generated dense causal | max abs err vs reference |"), "|---|---|---|---|",
                  (f"| {t['solder_sparse']:.1f} | {t['reference_sparse']:.1f} | {t['solder_dense_causal']:.1f} | "
                  f"{sp['max_abs_err_vs_reference']:.1e} |")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
