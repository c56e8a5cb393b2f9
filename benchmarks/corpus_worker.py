"""One corpus sample, in its own process: load, check against eager, time solder against eager and peers.

    python -m benchmarks.corpus_worker --entry '<manifest entry JSON>' --corpus DIR --target cpu \
        --backends solder,eager,inductor --result FILE

`benchmarks.corpus` starts one of these per sample with a timeout. The result dict is written to FILE
after every phase (load, check, peers, timing), so a sample killed at its timeout still reports how far
it got. Caches are per process and cold (a fresh SOLDER_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR), so the
compile times are cold-compile times.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks import corpus_check, corpus_load
from benchmarks.run import commit, device_line, interleaved, malloc_mode_reuse

TIMED_SECONDS = 3.0  # timed rounds per sample (all backends together), after interleaved's warm-up
MIN_REPEATS, MAX_REPEATS = 5, 50


class Result:
    """The sample's result dict, written to its file on every update (the parent reads it at the end)."""

    def __init__(self, path: Path, **fields):
        self.path = Path(path)
        self.data = dict(fields)
        self.save()

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, default=str))
        tmp.replace(self.path)


def _peer(name: str, model):
    if name == "inductor":
        return torch.compile(model)
    if name == "inductor-reduce-overhead":
        return torch.compile(model, mode="reduce-overhead")
    raise ValueError(f"unknown peer backend {name!r}: expected inductor or inductor-reduce-overhead")


def compile_peers(sample, target: str, peers: list[str], res: Result, want) -> dict:
    """torch.compile each peer; first-call seconds and whether it matches eager go into the result."""
    fns = {}
    for name in peers:
        torch._dynamo.reset()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn = _peer(name, sample.model)
                t0 = time.perf_counter()
                got = corpus_check._call(fn, sample, target)
                first = time.perf_counter() - t0
            atol, rtol = corpus_check.tolerance(target)
            ok = all(o["ok"] for o in corpus_check.compare(got, want, atol, rtol))
            res.update(**{f"{name}_first_call_s": first, f"{name}_matches_eager": ok})
            fns[name] = fn
        except Exception as e:  # noqa: BLE001 - a peer's failure is reported, not fatal
            res.update(**{f"{name}_error": corpus_check._error(e)["error"]})
    return fns


UNGUARDED = "solder-unguarded"


def unguarded(sample, target: str, res: Result, want) -> dict:
    """The same compile with the speed guard off, timed beside the guarded one: the guard keeps eager where
    the compiled program is slower, and this shows what it kept eager from (kernels come from the cache)."""
    from solder import compile as solder_compile

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn = solder_compile(sample.model, target=target, speed_guard=False)
            got = corpus_check._call(fn, sample, target)
        atol, rtol = corpus_check.tolerance(target)
        res.update(unguarded_matches_eager=all(o["ok"] for o in corpus_check.compare(got, want, atol, rtol)))
        return {UNGUARDED: fn}
    except Exception as e:  # noqa: BLE001 - reported; the guarded figures stand
        res.update(unguarded_error=corpus_check._error(e)["error"])
        return {}


def time_all(sample, target: str, fns: dict, res: Result) -> None:
    """Median seconds per call of every function, interleaved; speed-ups and compile times from them."""
    def bound(f):
        return lambda: f(*sample.args, **sample.kwargs)

    calls = {k: bound(f) for k, f in fns.items()}
    est = max(res.data.get("eager_first_s", 0.01), 1e-5)
    repeats = int(min(MAX_REPEATS, max(MIN_REPEATS, TIMED_SECONDS / (est * len(calls)))))
    with torch.no_grad():
        med = interleaved(calls, target, repeats)
    times = {f"{k}_s": v for k, v in med.items()}
    out = {"times": times, "repeats": repeats}
    if "solder" in med and "eager" in med:
        out["speedup_vs_eager"] = med["eager"] / med["solder"]
        if UNGUARDED in med:
            out["speedup_vs_eager_unguarded"] = med["eager"] / med[UNGUARDED]
        for peer in (k for k in med if k.startswith("inductor")):
            out[f"speedup_vs_{peer}"] = med[peer] / med["solder"]
            out[f"{peer}_speedup_vs_eager"] = med["eager"] / med[peer]
    for k in med:
        first = res.data.get(f"{k}_first_call_s")
        if first is not None and k not in ("eager", UNGUARDED):
            out[f"{k}_compile_s"] = max(0.0, first - med[k])
    res.update(**out)


@contextlib.contextmanager
def timing_lock():
    """With `benchmarks.corpus --jobs N`, samples run side by side; only one of them times at a time."""
    path = os.environ.get("SOLDER_CORPUS_TIMING_LOCK")
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_sample(entry: dict, corpus: Path, target: str, backends: list[str], res: Result) -> None:
    device = "cpu" if target == "cpu" else "cuda"
    res.update(phase="load")
    t0 = time.perf_counter()
    try:
        sample = corpus_load.load(entry, corpus, device)
        with torch.no_grad():
            corpus_check._call(sample.model, sample, target)
    except Exception as e:  # noqa: BLE001 - the sample itself does not run eagerly: not solder's finding
        res.update(status="eager_error", **corpus_check._error(e))
        return
    res.update(load_s=time.perf_counter() - t0, sizes=sample.sizes, phase="check")
    check, compiled = corpus_check.check(sample, target)
    res.update(**{k: v for k, v in check.items() if k != "name"})
    if compiled is None:
        res.update(phase="done")
        return
    res.update(phase="peers")
    with torch.no_grad():
        want = corpus_check._call(sample.model, sample, target)
    peers = compile_peers(sample, target, [b for b in backends if b.startswith("inductor")], res, want)
    if "eager" in backends:
        peers.update(unguarded(sample, target, res, want))
    res.update(phase="timing")
    fns = {"eager": sample.model, "solder": compiled, **peers}
    fns = {k: v for k, v in fns.items() if k in backends or k == UNGUARDED}  # `--backends solder`: correctness only
    if len(fns) > 1:
        with timing_lock():
            time_all(sample, target, fns, res)
        res.update(guard=[sp.speed.describe() for sp in compiled.specializations.values() if sp.speed is not None])
    res.update(phase="done")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entry", required=True, help="the manifest entry, as JSON")
    p.add_argument("--corpus", required=True)
    p.add_argument("--target", default="cpu")
    p.add_argument("--backends", default="solder,eager,inductor")
    p.add_argument("--result", required=True, help="file the result JSON is written to")
    args = p.parse_args(argv)
    entry = json.loads(args.entry)
    res = Result(Path(args.result), name=entry["name"], source=entry["source"], category=entry["category"],
                 threads=torch.get_num_threads() if args.target == "cpu" else None, status="started",
                 commit=commit(),  # the tree this sample ran on (others may commit during a long run)
                 device=device_line(args.target))  # resumed runs may span machines
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SOLDER_CACHE_DIR"] = os.path.join(cache, "solder")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache, "inductor")
        if args.target == "cpu":
            malloc_mode_reuse()
        run_sample(entry, Path(args.corpus), args.target, args.backends.split(","), res)
    res.update(cpu_s=time.process_time())  # CPU seconds of the whole process, less sensitive to a busy machine
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
