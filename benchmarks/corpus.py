"""solder on the public corpus (GraphNet graphs, KernelBench problems): correctness, speed, coverage.

    python -m benchmarks.corpus --target cpu [--corpus ../shared/corpus] [--only timm,level1] [--limit 40]
        [--backends solder,eager,inductor] [--timeout 300] [--out benchmarks/results] [--fresh]
    python -m benchmarks.corpus --target h100 --backends solder,eager,inductor,inductor-reduce-overhead

Each sample runs in its own process (benchmarks/corpus_worker.py) under a timeout: load, eager, solder
(compared with eager: fp32 atol = rtol = 1e-4 on the CPU), torch.compile peers, then every backend
timed interleaved (benchmarks.run.interleaved: all threads on the CPU, CUDA events on the GPU). Samples
run in a category-stratified order (each category's first sample first, then in proportion to the
categories' sizes; a seeded shuffle within each), so `--limit N` gives a spread sample. Finished
samples are appended to a JSONL file (build/corpus/, git-ignored); a re-run skips them (`--fresh` starts over,
`--report-only` writes the report from those finished so far). The report
(JSON with every sample's row, markdown, PNG of the speed-up distribution) is written to
--out/corpus-<target>-<date>[-<tag>].*; benchmarks/corpus_report.py defines every figure in it.
The corpus is read where it lies and never copied into the repository (`benchmarks.corpus_pack` copies a
slice into a git-ignored folder for the GPU machine). `--jobs N` (GPU only) runs N samples side by side:
they load and compile concurrently, and a lock lets only one of them time at a time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from benchmarks import corpus_load, corpus_report
from benchmarks.run import RESULTS, commit, device_line

PROGRESS = corpus_load.REPO / "build" / "corpus"  # git-ignored: a run's raw rows, until its report is written
BACKENDS_CPU = ("solder", "eager", "inductor")
BACKENDS_GPU = ("solder", "eager", "inductor", "inductor-reduce-overhead")


def stratified(entries: list[dict], seed: int = 0) -> list[dict]:
    """Every category's first sample first, then the rest in proportion to the categories' sizes."""
    cats: dict[str, list] = defaultdict(list)
    for e in entries:
        cats[e["category"]].append(e)
    keyed = []
    for cat, es in sorted(cats.items()):
        es = sorted(es, key=lambda e: e["name"])
        random.Random(f"{seed}:{cat}").shuffle(es)
        keyed += [((0.0 if i == 0 else (i + 0.5) / len(es)), cat, e) for i, e in enumerate(es)]
    return [e for _, _, e in sorted(keyed, key=lambda k: (k[0], k[1]))]


def select(entries: list[dict], only: str, limit: int | None) -> list[dict]:
    words = [w for w in only.split(",") if w]
    picked = [e for e in entries if not words or any(w in e["name"] or w == e["category"] for w in words)]
    return stratified(picked)[:limit] if limit else stratified(picked)


def run_one(entry: dict, args) -> dict:
    """Run the worker for `entry` under the timeout; its result, or what is known when it timed out/died."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.corpus_worker", "--entry", json.dumps(entry), "--corpus",
               str(args.corpus), "--target", args.target, "--backends", args.backends, "--result", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=corpus_load.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=args.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
            timed_out = True
        row = json.loads(out.read_text()) if out.is_file() else {"name": entry["name"], "status": "started"}
    row.update(source=entry["source"], category=entry["category"], wall_s=time.perf_counter() - t0)
    return _finish(row, proc.returncode, timed_out, log or "", args.timeout)


def _finish(row: dict, rc: int, timed_out: bool, log: str, timeout: float) -> dict:
    phase = row.get("phase", "start")
    if timed_out:
        row["timed_out_in"] = phase
        if phase in ("start", "load", "check") or row.get("status") in (None, "started"):
            row.update(status="timeout", error=f"timeout after {timeout:.0f} s in phase {phase}")
    elif rc != 0 and phase != "done":
        tail = " / ".join(log.strip().splitlines()[-3:])[-300:]
        msg = f"worker died (exit {rc}) in phase {phase}: {tail}"
        if phase == "peers":  # torch.compile's failure, not solder's
            row["peer_error"] = msg
        else:
            row.update(status="crash", error=msg)
    return row


def read_done(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[r["name"]] = r
    return rows


def meta_of(args, argv) -> dict:
    import torch

    return {"target": args.target, "device": device_line(args.target), "date": datetime.date.today().isoformat(),
            "commit": commit(), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads() if args.target == "cpu" else None, "backends": args.backends,
            "timeout_s": args.timeout, "jobs": args.jobs, "corpus_commits": corpus_load.manifest_commits(args.corpus),
            "command": "python -m benchmarks.corpus " + shlex.join(_without_note(argv)), "note": args.note}


def _without_note(argv: list[str]) -> list[str]:
    """argv less `--note TEXT` (the note is shown on its own) and `--report-only`."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--note=") or a == "--report-only":  # the command that made the rows
            skip = False
            continue
        if a == "--note":
            skip = True
            continue
        out.append(a)
    return out


def commits_seen(rows: list[dict]) -> list[str]:
    """The commits the samples ran on, in the order first seen (one, unless the tree moved during the run)."""
    return list(dict.fromkeys(r["commit"] for r in rows if r.get("commit")))


def write_report(args, argv, rows: list[dict]) -> Path:
    meta = meta_of(args, argv)
    meta["sample_commits"] = commits_seen(rows)
    summary = corpus_report.summarize(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"corpus-{args.target}-{meta['date']}{'-' + args.tag if args.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1,
                                                    default=str))
    stem.with_suffix(".md").write_text(corpus_report.markdown(meta, summary, rows))
    corpus_report.write_png(meta, rows, stem.with_suffix(".png"))
    return stem


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="cpu", choices=["cpu", "h100"])
    p.add_argument("--corpus", default=str(corpus_load.DEFAULT_CORPUS), help="folder of the public corpus")
    p.add_argument("--only", default="", help="comma-separated substrings of sample names, or category names")
    p.add_argument("--limit", type=int, default=None, help="run the first N of the stratified order")
    p.add_argument("--backends", default=None, help="comma-separated: solder,eager,inductor[,inductor-reduce-overhead]")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per sample")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default="", help="suffix of the report's file names")
    p.add_argument("--note", default="", help="a line for the report (e.g. what else ran on the machine)")
    p.add_argument("--fresh", action="store_true", help="ignore the JSONL of finished samples and start over")
    p.add_argument("--progress", help=f"the JSONL of finished samples (default: under {PROGRESS})")
    p.add_argument("--jobs", type=int, default=1, help="samples side by side (GPU only; one times at a time)")
    p.add_argument("--report-only", action="store_true", help="write the report from the finished samples only")
    args = p.parse_args(argv)
    allowed = BACKENDS_CPU if args.target == "cpu" else BACKENDS_GPU
    args.backends = args.backends or ",".join(allowed)
    if args.jobs > 1 and args.target == "cpu":
        p.error("--jobs > 1 is for the GPU: on the CPU, compiling beside a timed sample skews its times")
    bad = [b for b in args.backends.split(",") if b not in allowed]
    if bad:
        p.error(f"--backends {','.join(bad)} not available on {args.target}; choose from {','.join(allowed)}")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    from tqdm import tqdm

    entries = select(corpus_load.manifest(args.corpus), args.only, args.limit)
    progress = Path(args.progress or PROGRESS / f"corpus-{args.target}{'-' + args.tag if args.tag else ''}.jsonl")
    progress.parent.mkdir(parents=True, exist_ok=True)
    done = {} if args.fresh else read_done(progress)
    if args.fresh and progress.exists():
        progress.unlink()
    todo = [] if args.report_only else [e for e in entries if e["name"] not in done]
    bar = tqdm(desc=f"corpus {args.target}", unit="sample", initial=len(entries) - len(todo), total=len(entries))
    def finished(e, row):
        done[e["name"]] = row
        with progress.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        tqdm.write(_line(row))
        bar.update(1)

    if args.jobs > 1:
        lock = progress.with_suffix(".timing.lock")
        os.environ["SOLDER_CORPUS_TIMING_LOCK"] = str(lock)
        with ThreadPoolExecutor(args.jobs) as pool:
            futs = {pool.submit(run_one, e, args): e for e in todo}
            for fut in as_completed(futs):
                finished(futs[fut], fut.result())
    else:
        for e in todo:
            bar.set_postfix_str(e["name"][-40:])
            finished(e, run_one(e, args))
    bar.close()
    # with the manifest's word on whether plain torch.export captures the sample (GraphNet only)
    rows = [{**done[e["name"]], **{k: e[k] for k in ("torch_export",) if k in e}} for e in entries if e["name"] in done]
    stem = write_report(args, argv, rows)
    print(f"wrote {stem}.json / .md / .png")
    return 0


def _line(r: dict) -> str:
    s = f"{r['name'][:60]:<60} {r.get('status', '?'):<11}"
    if r.get("speedup_vs_eager"):
        s += f" x{r['speedup_vs_eager']:.2f} vs eager"
    if r.get("speedup_vs_inductor"):
        s += f" x{r['speedup_vs_inductor']:.2f} vs inductor"
    if r.get("error"):
        s += f"  {r['error'][:120]}"
    return s


if __name__ == "__main__":
    raise SystemExit(main())
