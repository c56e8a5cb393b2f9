"""Re-time the fuse-or-not pairs of a GPU dataset: fused kernel and parts interleaved in one process.

`collect` times every row on its own, one after the other, so a pair's fused kernel and its parts are
measured seconds to minutes apart: clock and thermal drift in between moves the pair's ratio (fused /
sum of parts) by a median 3.4% between two runs (costmodel/shipped/h100/card.json, "repeatability"),
as large as the real difference of most pairs whose GEMM or attention runs the same library kernel
fused or not. `retime` measures each pair as a unit instead:

- every program of the pair (the fused kernel and each part, lowered from the rows' stored IR) runs
  twice to warm up, once timed to size its batch (N back-to-back calls, ~`batch_s` of GPU time, 3..200),
  and N calls of it are captured in one CUDA graph (the backend's own graph off), replayed once;
- then `rounds` rounds: each round replays every program's graph once between two CUDA events, the
  fused kernel first in even rounds and last in odd ones, so drift during a pair touches both sides alike;
- a row's `seconds` is the median over the rounds of (replay time / N); the fused row also carries the
  pair's `pair_ratio`, the median over rounds of fused / sum of parts within the round;
- `run` numbers a full pass: a second pass (`--run 1`) times every pair again in a fresh process, and
  `load` pools the rounds of all runs of a row (its `seconds` is then the median of all of them).

Pairs whose capture fails on any program are skipped (the original timing stays). Results go to a
JSON-lines file of their own (one line per row: id, pair, seconds, rounds' seconds, calls, method
"interleaved"), appended pair by pair and flushed, so an interrupted run keeps its pairs and a rerun
skips them; `apply` overlays them on the dataset rows at train/evaluate time and keeps the first timing
as `seconds_first`.

Order: held-out pairs first, then training pairs; within each, pairs with the smallest measured
|ln(fused / parts)| first (the ones whose first timing is least trustworthy), so a run cut short by its
time budget has re-timed the pairs that need it most. `jobs > 1` lowers and runs the same pairs in
helper processes ahead of the timing loop to warm Triton's disk cache, as `collect` does.

This module imports torch and the backends only inside the functions that time (not torch-mlir).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

from solder.compiler import log

_LOG = log.get("costmodel")

METHOD = "interleaved"
TIMING = ("interleaved pairs (costmodel/retime.py): the fused kernel and each of its parts lowered in one process, each "
          "captured as N back-to-back calls (N = 3..200, ~{batch_ms:g} ms at the time of one call measured with CUDA events) in one CUDA graph (the backend's "
          "own graph off) and replayed once to warm up; then {rounds} rounds, each replaying every program's graph once "
          "between CUDA events (fused first in even rounds, last in odd ones); a row's seconds = the median over rounds "
          "of replay / N; no L2 flush")


def pairs_of(rows: list[dict]) -> dict[str, list[dict]]:
    """pair id -> [fused row, part rows...] for complete pairs (a fused row and at least two parts)."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("pair") is not None:
            by[r["pair"]].append(r)
    out = {}
    for pair, rs in by.items():
        fused = [r for r in rs if r["role"] == "fused"]
        parts = sorted((r for r in rs if r["role"] == "part"), key=lambda r: r["id"])
        if len(fused) == 1 and len(parts) >= 2:
            out[pair] = fused + parts
    return out


def order(rows: list[dict]) -> list[str]:
    """Pair ids in re-timing order: held-out pairs, then training pairs; each by |ln(fused / parts)| rising."""
    from solder.costmodel import evaluate as ev

    def key(item):
        pair, rs = item
        gap = abs(math.log(rs[0]["seconds"] / sum(r["seconds"] for r in rs[1:])))
        return (not ev.is_heldout(rs[0]), gap, pair)

    return [p for p, _ in sorted(pairs_of(rows).items(), key=key)]


def _records(path: Path) -> list[dict]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _complete(recs: list[dict]) -> set[tuple[int, str]]:
    """(run, pair) whose every row is present (a pair cut in the middle of its lines is not)."""
    seen: dict[tuple[int, str], int] = defaultdict(int)
    need: dict[tuple[int, str], int] = {}
    for rec in recs:
        key = (rec.get("run", 0), rec["pair"])
        seen[key] += 1
        need[key] = rec["pair_rows"]
    return {k for k, n in seen.items() if n == need[k]}


def read_done(path: Path, run: int = 0) -> set[str]:
    """Pairs whose every row run `run` already wrote to the re-timing file (a torn last line is ignored)."""
    return {pair for r, pair in _complete(_records(path)) if r == run}


def load(path: Path) -> dict[str, dict]:
    """id -> re-timing of complete pairs; a row timed in several runs (field `run`) is merged: its rounds
    are pooled and `seconds` is their median."""
    recs = _records(path)
    done = _complete(recs)
    out: dict[str, dict] = {}
    for rec in recs:
        if (rec.get("run", 0), rec["pair"]) not in done:
            continue
        have = out.get(rec["id"])
        if have is None:
            out[rec["id"]] = {**rec, "runs": 1, "rounds_per_run": [len(rec["rounds"])]}
            continue
        rounds = have["rounds"] + rec["rounds"]
        have.update(rounds=rounds, seconds=float(f"{statistics.median(rounds):.5g}"), runs=have["runs"] + 1,
                    rounds_per_run=have["rounds_per_run"] + [len(rec["rounds"])])
    return out


def apply(rows: list[dict], retimed: dict[str, dict]) -> int:
    """Overlay re-timed seconds on `rows` (in place; the first timing kept as `seconds_first`); returns how
    many rows changed. Only whole pairs are overlaid, so a pair never mixes the two methods."""
    n = 0
    for r in rows:
        rec = retimed.get(r["id"])
        if rec is None:
            continue
        r.setdefault("seconds_first", r["seconds"])
        r.setdefault("timing_first", r.get("timing"))
        r["seconds"] = rec["seconds"]
        r["timing"] = METHOD
        r["timing_detail"] = {"runs": rec.get("runs", 1), "rounds": rec.get("rounds_per_run", [len(rec["rounds"])]),
                              "batch_ms": rec.get("batch_ms")}
        n += 1
    return n


def retime(rows: list[dict], out: Path, rounds: int = 10, batch_s: float = 2e-3, jobs: int = 1,
           time_budget: float | None = None, target: str = "h100", progress: bool = True,
           limit: int | None = None, warm_budget: float | None = None, run: int = 0) -> int:
    """Re-time the pairs of `rows` (see the module docstring) into `out` as run number `run` (another run
    number times every pair again, and `load` pools the runs); returns the pairs added."""
    import torch

    from solder.compiler.errors import SolderError
    from solder.compiler.targets import get_target
    from solder.costmodel.collect import _no_backend_graphs, _setup_device, drop_torn_tail, hardware_name, load_backend

    if rounds < 3:
        raise SolderError(f"retime: rounds must be at least 3 (a median of fewer is no better than one run), got {rounds}")
    tgt = get_target(target)
    if tgt.device != "cuda":
        raise SolderError(f"retime: target {tgt.name!r} is not a CUDA target; retime measures GPU pairs")
    _setup_device(tgt)
    deadline = time.monotonic() + time_budget if time_budget else None
    pairs = pairs_of(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(out)
    done = read_done(out, run)
    todo = [p for p in order(rows) if p not in done]
    if limit is not None:
        todo = todo[:limit]
    backend = load_backend(tgt.backend, tgt)
    _no_backend_graphs(backend)
    workers = _start_warmers(tgt.name, [[r["ir"] for r in pairs[p]] for p in todo], jobs, time_budget)
    t_warm = time.monotonic()
    if warm_budget is None:
        warm_budget = time_budget / 2 if time_budget else 24 * 3600.0
    for w in workers:  # nothing is timed while helpers run kernels on the GPU
        w.join(timeout=max(0.0, t_warm + warm_budget - time.monotonic()))
    for w in workers:
        if w.is_alive():
            _LOG.warning("costmodel retime: warm-up budget spent; the timing loop compiles what is left")
            w.terminate()
            w.join()
    if progress and workers:
        print(f"retime: warm-up {time.monotonic() - t_warm:.0f} s ({jobs} processes)", flush=True)
    hw = hardware_name("cuda")
    added = failed = 0
    t0 = time.monotonic()
    try:
        with out.open("a") as f:
            for i, pair in enumerate(todo):
                if deadline is not None and time.monotonic() > deadline:
                    _LOG.warning("costmodel retime: time budget spent after %d pairs", added)
                    break
                try:
                    recs = time_pair(pairs[pair], tgt, backend, rounds, batch_s)
                except Exception as e:  # noqa: BLE001 - any failure skips the pair; its first timing stays
                    _LOG.warning("costmodel retime: skipping pair %s: %s: %s", pair, type(e).__name__, str(e)[:300])
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    failed += 1
                    if failed >= 25:
                        _LOG.warning("costmodel retime: %d pairs failed in a row; stopping", failed)
                        break
                    continue
                failed = 0
                for rec in recs:
                    rec["hardware"] = hw
                    rec["run"] = run
                    rec["batch_ms"] = batch_s * 1e3
                    f.write(json.dumps(rec) + "\n")
                f.flush()
                added += 1
                if progress and (added % 50 == 0 or i == len(todo) - 1):
                    print(f"retime: {added}/{len(todo)} pairs, {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        for w in workers:
            w.terminate()
    return added


def time_pair(rs: list[dict], target, backend, rounds: int, batch_s: float) -> list[dict]:
    """Records for the rows of one pair (fused first), timed interleaved (module docstring)."""
    import torch

    from solder.compiler import ir
    from solder.costmodel.collect import _capture, make_inputs

    progs = []
    for r in rs:
        module = ir.parse(r["ir"])
        program = backend.lower(module, target)
        args = make_inputs(module, "cuda")
        progs.append((program, args))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graphs, calls = [], []
    for program, args in progs:
        for _ in range(2):
            program(args)
        start.record()
        program(args)
        end.record()
        end.synchronize()
        first = start.elapsed_time(end) * 1e-3
        n = max(3, min(200, int(batch_s / max(first, 1e-6))))
        graph = _capture(program, args, n)
        if graph is None:
            raise RuntimeError("CUDA graph capture failed")
        graph.replay()
        graphs.append(graph)
        calls.append(n)
    torch.cuda.synchronize()
    k = len(graphs)
    times = [[0.0] * rounds for _ in range(k)]
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(k)]
    for rd in range(rounds):
        idx = list(range(k)) if rd % 2 == 0 else list(reversed(range(k)))
        for j in idx:
            ev[j][0].record()
            graphs[j].replay()
            ev[j][1].record()
        torch.cuda.synchronize()
        for j in range(k):
            times[j][rd] = ev[j][0].elapsed_time(ev[j][1]) * 1e-3 / calls[j]
    del graphs
    ratios = [times[0][rd] / sum(times[j][rd] for j in range(1, k)) for rd in range(rounds)]
    recs = []
    for j, r in enumerate(rs):
        med = statistics.median(times[j])
        rec = {"id": r["id"], "pair": r["pair"], "role": r["role"], "pair_rows": k, "seconds": float(f"{med:.5g}"),
               "rounds": [float(f"{t:.5g}") for t in times[j]], "calls": calls[j], "timing": METHOD}
        if j == 0:
            rec["pair_ratio"] = float(f"{statistics.median(ratios):.5g}")
        recs.append(rec)
    return recs


def _start_warmers(target: str, todo: list[list[str]], jobs: int, time_budget: float | None) -> list:
    """`jobs` processes lowering and running every `jobs`-th pair's programs once, ahead of the timing loop."""
    if jobs <= 1:
        return []
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold a CUDA context
    budget = time_budget or 24 * 3600.0
    procs = []
    for shard in range(jobs):
        p = ctx.Process(target=_warm, args=(target, todo[shard::jobs], budget), daemon=True)
        p.start()
        procs.append(p)
    return procs


def _warm(target_name: str, todo: list[list[str]], budget: float) -> None:
    import torch

    from solder.compiler import ir
    from solder.compiler.targets import get_target
    from solder.costmodel.collect import _no_backend_graphs, load_backend, make_inputs

    deadline = time.monotonic() + budget
    parent = os.getppid()
    target = get_target(target_name)
    backend = load_backend(target.backend, target)
    _no_backend_graphs(backend)
    for texts in todo:
        for text in texts:
            if time.monotonic() > deadline or os.getppid() != parent:
                return
            try:
                module = ir.parse(text)
                backend.lower(module, target)(make_inputs(module, "cuda"))
                torch.cuda.synchronize()
            except Exception:  # noqa: BLE001 - the timing loop meets and reports the same error
                torch.cuda.empty_cache()


def describe(rows: list[dict]) -> str:
    """The re-timing method of the interleaved rows of `rows`, for the model card."""
    details = [r["timing_detail"] for r in rows if r.get("timing") == METHOD and "timing_detail" in r]
    if not details:
        return ""
    runs = sorted({d["runs"] for d in details})
    rounds = sorted({n for d in details for n in d["rounds"]})
    batch = sorted({d["batch_ms"] for d in details if d.get("batch_ms")})
    text = TIMING.format(batch_ms=batch[0] if len(batch) == 1 else "/".join(map(str, batch)) or "?",
                         rounds="/".join(map(str, rounds)))
    return text + f"; runs pooled per row: {'/'.join(map(str, runs))} (seconds = median of all their rounds)"


def runs_agreement(path: Path, rows: list[dict], tie: float = 0.05) -> dict:
    """Run 0 against run 1 of a re-timing file: the median |ln(t1 / t0)| per row and the share of pairs
    whose winner (fused < sum of parts) agrees, overall and where run 0's gap exceeds `tie`."""
    per_run: dict[int, dict[str, float]] = defaultdict(dict)
    recs = _records(path)
    done = _complete(recs)
    for rec in recs:
        if (rec.get("run", 0), rec["pair"]) in done:
            per_run[rec.get("run", 0)][rec["id"]] = rec["seconds"]
    a, b = per_run.get(0, {}), per_run.get(1, {})
    logs = [abs(math.log(b[i] / a[i])) for i in a if i in b]
    return {"rows": len(logs), "median_abs_ln_change": statistics.median(logs) if logs else float("nan"),
            **_winner_agreement(rows, a, b, tie)}


def _winner_agreement(rows: list[dict], a: dict[str, float], b: dict[str, float], tie: float) -> dict:
    """Over the fuse-or-not pairs timed in both `a` and `b` (id -> seconds): how often the winner (fused < sum
    of parts) agrees, overall and where `a`'s gap exceeds `tie` (in ln)."""
    agree = n = agree_gap = n_gap = 0
    for rs in pairs_of(rows).values():
        if any(r["id"] not in a or r["id"] not in b for r in rs):
            continue
        ga = math.log(a[rs[0]["id"]] / sum(a[r["id"]] for r in rs[1:]))
        gb = math.log(b[rs[0]["id"]] / sum(b[r["id"]] for r in rs[1:]))
        n += 1
        agree += (ga < 0) == (gb < 0)
        if abs(ga) > tie:
            n_gap += 1
            agree_gap += (ga < 0) == (gb < 0)
    return {"pairs": n, "winner_agrees": agree / n if n else float("nan"), "pairs_beyond_tie": n_gap,
            "winner_agrees_beyond_tie": agree_gap / n_gap if n_gap else float("nan")}


def repeatability(retimed: dict[str, dict], rows: list[dict], tie: float = 0.05) -> dict:
    """How the interleaved timing compares with the rows' first timing: the median |ln(new / first)| per row,
    the share of pairs whose winner agrees, overall and beyond `tie`, and the median ln shift of all rows
    (a different machine or clock moves every row alike)."""
    by_id = {r["id"]: r for r in rows}
    logs, shift = [], []
    for i, rec in retimed.items():
        first = by_id.get(i, {}).get("seconds_first", by_id.get(i, {}).get("seconds"))
        if first:
            d = math.log(rec["seconds"] / first)
            logs.append(abs(d))
            shift.append(d)
    first = {r["id"]: r.get("seconds_first", r["seconds"]) for r in rows}
    new = {i: rec["seconds"] for i, rec in retimed.items()}
    return {"rows": len(logs), "median_abs_ln_change": statistics.median(logs) if logs else float("nan"),
            "median_ln_shift": statistics.median(shift) if shift else float("nan"),
            **_winner_agreement(rows, first, new, tie)}
