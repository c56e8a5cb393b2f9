"""The benchmark harness: solder vs eager PyTorch vs torch.compile (Inductor), side by side in one process.

    python -m benchmarks.run --target cpu [--threads all,1] [--only layer_norm,gpt2] [--repeats 20]
    python -m benchmarks.run --target h100

Peers: on the CPU torch.compile's default mode, at torch's default thread count first, then at one thread;
on the GPU, where solder runs under CUDA graphs, torch.compile mode="reduce-overhead" (its CUDA-graph mode,
the fair peer) beside the default mode; realistic sizes (GPT-2 124M at batch 8 x 1024 tokens) come first.
For every zoo model and kernel-level case: medians of interleaved timed calls after warm-up, the ratios
solder/eager and solder/each peer (as speed-ups: >1 means solder is faster; solder as users get it, with its speed
guard, and where the guard kept eager also the compiled program's own time, `solder_unguarded`), cold compile time (empty
caches; on the CPU also without the install's prebuilt attention kernels, backends/cpu/attention_lib.py,
which are not a cache: built once by the set-up, model-independent) and warm compile time (a second `compile()` of the same model, disk caches full), peak memory of
one call, and for memory-bound kernels the achieved bandwidth as % of a plain copy of the same tensor,
timed in the same interleaved rounds (so it sees the same cache state): the median over rounds of each
round's ratio, and the fastest round's against the fastest copy. Writes JSON (with the device line, date, commit and versions) and a markdown table to
benchmarks/results/, and PNG bar charts next to them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks import cases as C
from benchmarks.report import write_markdown, write_plots

RESULTS = Path(__file__).resolve().parent / "results"
GPU_CALLS_PER_SAMPLE = 10
WARMUP_SECONDS = 1.0
KERNEL_REPEATS = 60  # rounds for the kernel-level cases (ms per call), paired with the copy baseline


def device_line(target: str) -> str:
    if target != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    if os.environ.get("SOLDER_COMMIT"):  # the GPU machine gets the tree without .git
        return os.environ["SOLDER_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=RESULTS.parent.parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _sync(target):
    if target != "cpu":
        torch.cuda.synchronize()


def interleaved(fns: dict, target: str, repeats: int, warmup: int = 3, samples: dict | None = None) -> dict[str, float]:
    """Median seconds per call of each function; rounds alternate between the functions, so drift hits all
    alike. On the GPU a sample is 10 back-to-back calls between CUDA events (per-call host overhead
    shows only where it exceeds the GPU time, as in a serving loop)."""
    # warm up in rounds for at least WARMUP_SECONDS: after an idle spell (a compile, torch.compile's
    # included) this VM's first calls that allocate fresh outputs run up to 2.5x slower for a while
    # (measured on layer norm: 2.9 ms, then 1.3 ms once warm), which a few calls do not cover
    t_end = time.perf_counter() + WARMUP_SECONDS
    rounds = 0
    while rounds < warmup or time.perf_counter() < t_end:
        for fn in fns.values():
            fn()
        rounds += 1
    _sync(target)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            if target == "cpu":
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
            else:  # back to back, as do_bench does: the host may run ahead of the GPU, as in a serving loop
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(GPU_CALLS_PER_SAMPLE):
                    fn()
                end.record()
                end.synchronize()
                times[k].append(start.elapsed_time(end) / 1e3 / GPU_CALLS_PER_SAMPLE)
    if samples is not None:
        samples.update(times)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_memory(fn, target: str) -> int | None:
    """Peak bytes one call needs above what the process held before it.

    CUDA: the caching allocator's peak. CPU: there is no allocator statistic, and peak RSS does not move
    when glibc serves a tensor from memory it already holds, so the freed heap is first given back
    (malloc_trim), the kernel's high-water mark reset (/proc/self/clear_refs 5), and the figure is VmHWM
    after the call minus VmRSS before it (None where /proc does not allow that). Page granularity:
    figures under ~100 KB are noise.
    """
    if target == "cpu":
        return _cpu_call_peak(fn)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _cpu_call_peak(fn) -> int | None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_bytes("VmRSS")
        fn()
        return max(0, _status_bytes("VmHWM") - before)
    except OSError:
        return None


def malloc_mode_reuse() -> None:
    """Keep blocks up to 32 MiB on glibc's heap, mapped, so fresh outputs do not page-fault on every call.

    By default glibc switches from mmap to heap reuse on its own after the first large free, which
    would make timings depend on the order cases run in; the copy baseline reuses its buffer, and so
    may every timed function.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def _timed_compile(make, call) -> tuple[object, float]:
    t0 = time.perf_counter()
    fn = make()
    call(fn)
    return fn, time.perf_counter() - t0


def run_case(case: C.Case, target: str, repeats: int, inductor: bool) -> dict:
    from solder import compile as solder_compile

    built = case.build()
    model, args = built[0], built[1]
    kwargs = built[2] if len(built) > 2 else {}
    if target != "cpu":
        model = model.cuda()
        args = tuple(a.cuda() for a in args)
        kwargs = {k: v.cuda() for k, v in kwargs.items()}
    row: dict = {"case": case.name, "kind": case.kind}
    with torch.no_grad():
        def call(f):
            out = f(*args, **kwargs)
            _sync(target)
            return out

        ref = call(model)
        with tempfile.TemporaryDirectory() as cache, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.environ["SOLDER_CACHE_DIR"] = cache
            solder, row["solder_compile_cold_s"] = _timed_compile(lambda: solder_compile(model, target=target), call)
            if target == "cpu":  # the same, without the install's prebuilt attention kernels (attention_lib.py)
                with tempfile.TemporaryDirectory() as other:
                    os.environ.update(SOLDER_CACHE_DIR=other, SOLDER_CPU_LIB="off")
                    try:
                        _, row["solder_compile_cold_nolib_s"] = _timed_compile(
                            lambda: solder_compile(model, target=target), call)
                    finally:
                        del os.environ["SOLDER_CPU_LIB"]
                        os.environ["SOLDER_CACHE_DIR"] = cache
            _, row["solder_compile_warm_s"] = _timed_compile(lambda: solder_compile(model, target=target), call)
            out = call(solder)
            row["max_abs_err"] = _max_err(out, ref)
            fns = {"eager": lambda: model(*args, **kwargs), "solder": lambda: solder(*args, **kwargs)}
            guard = _settle_guard(solder, call)
            if guard is not None:
                row["speed_guard"] = guard.describe()
                if guard.runs_eager:  # the guarded figure is eager's: time the compiled program too
                    unguarded = solder_compile(model, target=target, speed_guard=False)
                    call(unguarded)
                    fns["solder_unguarded"] = lambda: unguarded(*args, **kwargs)
            if case.bytes_moved is not None:  # the copy baseline, in the same rounds and cache state as the case
                src = args[0]
                dst = torch.empty_like(src)
                fns["copy"] = lambda: dst.copy_(src)
            if inductor:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
                for peer, mode in PEERS[target == "cpu"]:
                    _add_peer(fns, row, peer, mode, model, call, lambda f: (lambda: f(*args, **kwargs)))
            raw: dict = {}
            # kernel cases take ms per call: more rounds, and their copy baseline is paired per round below
            med = interleaved(fns, target, max(repeats, KERNEL_REPEATS) if "copy" in fns else repeats, samples=raw)
            for k, v in med.items():
                row[f"{k}_s"] = v
                row[f"{k}_peak_bytes"] = peak_memory(fns[k], target)
    row["speedup_vs_eager"] = row["eager_s"] / row["solder_s"]
    if "solder_unguarded_s" in row:
        row["unguarded_speedup_vs_eager"] = row["eager_s"] / row["solder_unguarded_s"]
    for peer in ("inductor", "inductor_ro"):
        if f"{peer}_s" in row:
            row[f"speedup_vs_{peer}"] = row[f"{peer}_s"] / row["solder_s"]
            row[f"compile_vs_{peer}"] = row["solder_compile_cold_s"] / row[f"{peer}_compile_cold_s"]
    if case.bytes_moved is not None:
        row["bytes"] = case.bytes_moved(args)
        copy_bytes = 2 * args[0].numel() * args[0].element_size()
        row["copy_GBps"] = copy_bytes / row.pop("copy_s") / 1e9
        row.pop("copy_peak_bytes", None)
        # % of copy bandwidth per round (the copy timed right beside the kernel), median over rounds: a
        # neighbour's memory traffic that comes and goes moves both sides of a pair alike. `_best`: the
        # fastest round of each against the fastest copy (the least disturbed measurement of both)
        for k in ("solder", "eager", "inductor", "inductor_ro"):
            if k in raw:
                pct = [100 * row["bytes"] * c / (copy_bytes * t) for t, c in zip(raw[k], raw["copy"])]
                pre = "" if k == "solder" else f"{k}_"
                row[pre + "pct_of_copy"] = statistics.median(pct)
                row[pre + "pct_of_copy_best"] = 100 * row["bytes"] * min(raw["copy"]) / (copy_bytes * min(raw[k]))
    return row


# The torch.compile modes each target is compared with: on the GPU solder runs its launch list under a CUDA
# graph, so the fair peer is mode="reduce-overhead" (CUDA graphs too); the default mode is kept beside it.
PEERS = {True: (("inductor", "default"),),
         False: (("inductor", "default"), ("inductor_ro", "reduce-overhead"))}


def _add_peer(fns: dict, row: dict, peer: str, mode: str, model, call, bind) -> None:
    """Compile `model` with torch.compile(mode=...) cold then warm, and add its call to `fns` as `peer`."""
    try:
        torch._dynamo.reset()
        comp, row[f"{peer}_compile_cold_s"] = _timed_compile(lambda: torch.compile(model, mode=mode), call)
        torch._dynamo.reset()
        _, row[f"{peer}_compile_warm_s"] = _timed_compile(lambda: torch.compile(model, mode=mode), call)
        for _ in range(3):  # reduce-overhead records its CUDA graph over the first calls
            call(comp)
        fns[peer] = bind(comp)
    except Exception as e:  # report, don't hide: the row says why the peer is missing
        row[f"{peer}_error"] = f"{type(e).__name__}: {str(e)[:200]}"


def _settle_guard(compiled, call):
    """Call `compiled` until its speed guard has decided (solder/speed_guard.py); the guard, or None."""
    from solder import speed_guard

    specs = list(getattr(compiled, "specializations", {}).values())
    guard = specs[0].speed if len(specs) == 1 else None
    for _ in range(2 * (speed_guard.WARMUP + speed_guard.SAMPLES)):
        if guard is None or guard.settled:
            break
        call(compiled)
    return guard


def _max_err(a, b) -> float:
    import torch.utils._pytree as pytree

    errs = [(x.float() - y.float()).abs().max().item() for x, y in zip(pytree.tree_leaves(a), pytree.tree_leaves(b))
            if isinstance(x, torch.Tensor) and x.numel()]
    return max(errs, default=0.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="cpu", choices=["cpu", "h100", "h200"])
    p.add_argument("--threads", default="all,1", help="CPU thread counts to run at, in order: all of the machine's "
                   "threads (torch's default) first, then one")
    p.add_argument("--only", default="", help="comma-separated case names")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no-inductor", action="store_true")
    p.add_argument("--out", default=str(RESULTS), help="folder for JSON, markdown and PNGs")
    args = p.parse_args(argv)
    from tqdm import tqdm

    all_cases = C.kernel_cases(args.target) + C.model_cases(args.target)
    only = {s for s in args.only.split(",") if s}
    selected = [c for c in all_cases if not only or c.name in only]
    default = torch.get_num_threads()  # torch's own default: what a user who sets nothing gets
    threads = [default if t == "all" else int(t) for t in args.threads.split(",")] if args.target == "cpu" else [0]
    meta = {"target": args.target, "device": device_line(args.target), "date": datetime.date.today().isoformat(),
            "commit": commit(), "torch": torch.__version__, "python": platform.python_version(),
            "repeats": args.repeats}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.target}-{meta['date']}"
    rows = []
    for n in threads:
        if n:
            torch.set_num_threads(n)
        if args.target == "cpu":
            malloc_mode_reuse()
        for case in tqdm(selected, desc=f"{args.target} threads={n or 'gpu'}", unit="case"):
            try:
                row = run_case(case, args.target, args.repeats, not args.no_inductor)
            except Exception as e:
                row = {"case": case.name, "kind": case.kind, "error": f"{type(e).__name__}: {str(e)[:300]}"}
            row["threads"] = n
            rows.append(row)
            tqdm.write(_line(row))
            # after every case, so a run stopped at a time limit keeps what it measured
            (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = write_markdown(meta, rows, out / f"{stem}.md")
    write_plots(meta, rows, out / stem)
    print(md)
    return 0


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['case']:<20} ERROR {row['error']}"
    s = f"{row['case']:<20} solder {row['solder_s'] * 1e3:9.3f} ms  eager {row['eager_s'] * 1e3:9.3f} ms  " \
        f"x{row['speedup_vs_eager']:.2f} vs eager"
    if "speedup_vs_inductor" in row:
        s += f"  x{row['speedup_vs_inductor']:.2f} vs inductor"
    if "speedup_vs_inductor_ro" in row:
        s += f"  x{row['speedup_vs_inductor_ro']:.2f} vs inductor reduce-overhead"
    if "pct_of_copy" in row:
        s += f"  {row['pct_of_copy']:.0f}% of copy (best round {row['pct_of_copy_best']:.0f}%)"
    return s


if __name__ == "__main__":
    raise SystemExit(main())
