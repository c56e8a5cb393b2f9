"""Time the hand-assembled CPU row kernels against eager PyTorch and a plain copy.

    python -m benchmarks.cpu_kernels [--rows 4096] [--cols 1024] [--rounds 30] [--threads 1]
    OMP_NUM_THREADS=2 python -m benchmarks.cpu_kernels --parallel --threads 2

For each kernel of backends.cpu.kernels: the compiled kernel, eager PyTorch (writing into a
preallocated output where the op allows) and `dst.copy_(src)` of one [rows, cols] tensor are
timed interleaved, round by round; medians are reported. "% of copy" compares effective
bandwidth: (bytes the kernel must read + write) / time, over the copy's 2 * rows * cols * 4 / time;
"best %" is the same from the fastest round of each (less sensitive to a busy machine).
Also prints compile time per kernel and the per-call overhead of a tiny kernel.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from solder.backends.cpu import jit, kernels


def _time(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _nbytes(args: list[torch.Tensor]) -> int:
    return sum(a.numel() * a.element_size() for a in args)


def bench_kernel(name: str, rows: int, cols: int, rounds: int, reps: int,
                 parallel: bool = False) -> dict:
    text, entry = kernels.KERNELS[name](rows, cols, parallel=parallel)
    t0 = time.perf_counter()
    opt = kernels.OPT_LEVEL.get(name, 3)
    k = jit.compile_mlir(text, entry, opt_level=opt, use_cache=False)
    compile_s = time.perf_counter() - t0
    args = kernels.example_args(name, rows, cols)
    ins = args[:-1]
    k(*args)
    err = (args[-1] - kernels.reference(name, *ins)).abs().max().item()
    src, dst = torch.randn(rows, cols), torch.empty(rows, cols)
    fns = {"solder": lambda: k(*args), "eager": lambda: kernels.reference(name, *ins),
           "copy": lambda: dst.copy_(src)}
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(rounds):
        for n, fn in fns.items():
            times[n].append(_time(fn, reps))
    med = {n: statistics.median(v) for n, v in times.items()}
    copy_bytes, kern_bytes = 2 * src.numel() * 4, _nbytes(args)
    pct = kern_bytes / med["solder"] / (copy_bytes / med["copy"])
    best = kern_bytes / min(times["solder"]) / (copy_bytes / min(times["copy"]))
    return {"name": name, "opt_level": opt, "solder_ms": med["solder"] * 1e3,
            "eager_ms": med["eager"] * 1e3, "copy_ms": med["copy"] * 1e3,
            "pct_copy": 100 * pct, "pct_copy_best": 100 * best,
            "copy_gbs": copy_bytes / med["copy"] / 1e9, "compile_ms": compile_s * 1e3,
            "max_err": err}


def call_overhead_us(n: int = 20000) -> tuple[float, float]:
    """Per-call time of a 1x16 add+GELU kernel: the Python-side call path dominates."""
    text, entry = kernels.add_gelu_tanh(1, 16)
    k = jit.compile_mlir(text, entry, use_cache=False)
    args = kernels.example_args("add_gelu_tanh", 1, 16)
    for _ in range(1000):
        k(*args)
    checked = min(_time(lambda: k(*args), n) for _ in range(5)) * 1e6
    unchecked = min(_time(lambda: k.call_unchecked(*args), n) for _ in range(5)) * 1e6
    return checked, unchecked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kernels", default=",".join(kernels.KERNELS))
    p.add_argument("--parallel", action="store_true",
                   help="row loops on OpenMP threads (OMP_NUM_THREADS; torch gets --threads)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    mode = "OpenMP row loops" if a.parallel else "serial kernels"
    print(f"{a.rows}x{a.cols} f32, torch {a.threads} thread(s), {mode}, "
          f"median of {a.rounds} interleaved rounds")
    print(f"{'kernel':16} {'solder ms':>10} {'eager ms':>9} {'copy ms':>8} {'% copy':>7} "
          f"{'best %':>7} {'compile ms':>10} {'max err':>8} {'O':>2}")
    for name in a.kernels.split(","):
        r = bench_kernel(name, a.rows, a.cols, a.rounds, a.reps, a.parallel)
        print(f"{name:16} {r['solder_ms']:10.3f} {r['eager_ms']:9.3f} {r['copy_ms']:8.3f} "
              f"{r['pct_copy']:6.1f}% {r['pct_copy_best']:6.1f}% {r['compile_ms']:10.1f} "
              f"{r['max_err']:8.1e} {r['opt_level']:2d}")
    checked, unchecked = call_overhead_us()
    print(f"copy bandwidth (median): {r['copy_gbs']:.1f} GB/s")
    print(f"call overhead (1x16 kernel, 3 args): {checked:.2f} us checked, "
          f"{unchecked:.2f} us call_unchecked")


if __name__ == "__main__":
    main()
