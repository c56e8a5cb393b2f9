"""Pick the CI correctness subset (benchmarks/corpus_subset.json) and record how each sample fared.

    python -m benchmarks.corpus --target cpu --backends solder --tag cands \
        --only "$(python -m benchmarks.corpus_subset --names)"          # run the candidates
    python -m benchmarks.corpus --target cpu --backends solder --tag cands --report-only --only "..."
    python -m benchmarks.corpus_subset --results benchmarks/results/corpus-cpu-<date>-cands.json

Candidates: from every GraphNet category the CANDIDATES samples with the fewest tensor elements
(manifest `numel`); from every KernelBench level the first CANDIDATES of its seeded category order
(benchmarks.corpus.stratified) that are not recurrent nets (RNN/LSTM/GRU: solder unrolls their time
steps, minutes to compile). The picks: per category the PICK fastest candidates of the run (its worker's
CPU seconds), leaving out those over MAX_CPU_S and those that timed out, unless that would leave the
category empty (then its fastest one). Each pick keeps its measured status; a `wrong`, `crash` or
`timeout` one carries its error as `known_failure`, which tests/test_corpus_subset.py turns into a
strict xfail.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from benchmarks import corpus_load
from benchmarks.corpus import stratified

OUT = Path(__file__).resolve().parent / "corpus_subset.json"
CANDIDATES = 5
PICK = 4
MAX_CPU_S = 20.0
RECURRENT = re.compile(r"RNN|LSTM|GRU", re.IGNORECASE)


def candidates(entries: list[dict]) -> list[dict]:
    cats: dict[tuple, list] = defaultdict(list)
    for e in entries:
        cats[(e["source"], e["category"])].append(e)
    picked = []
    for (source, cat), es in sorted(cats.items()):
        if source == "GraphNet":
            es = sorted(es, key=lambda e: (e["numel"], e["name"]))
        else:
            es = [e for e in stratified(es) if not RECURRENT.search(e["name"])]
        picked += [{"name": e["name"], "source": source, "category": cat} for e in es[:CANDIDATES]]
    return picked


def pick(cands: list[dict], rows: list[dict]) -> list[dict]:
    """Per category the PICK fastest measured candidates (see the module docstring)."""
    by_name = {r["name"]: r for r in rows}
    cats: dict[tuple, list] = defaultdict(list)
    for c in cands:
        if c["name"] in by_name:
            cats[(c["source"], c["category"])].append(c)
    picked = []
    for key, cs in sorted(cats.items()):
        cs = sorted(cs, key=lambda c: _cpu(by_name[c["name"]]))
        fast = [c for c in cs if _cpu(by_name[c["name"]]) <= MAX_CPU_S]
        picked += fast[:PICK] or cs[:1]
    return picked


def _cpu(r: dict) -> float:
    if r.get("status") in ("timeout", "eager_error"):
        return float("inf")
    return r.get("cpu_s") or r.get("wall_s") or float("inf")


def annotate(samples: list[dict], rows: list[dict]) -> list[dict]:
    """Each sample with its measured status, seconds and (wrong/crash) reason from a corpus run's rows."""
    by_name = {r["name"]: r for r in rows}
    out = []
    for s in samples:
        r = by_name.get(s["name"])
        s = dict(s)
        if r is not None:
            s["status"] = r["status"]
            s["cpu_s"] = round(r["cpu_s"], 1) if r.get("cpu_s") else None  # None: not recorded by that run
            s["wall_s"] = round(r["wall_s"], 1) if r.get("wall_s") else None
            if r["status"] in ("wrong", "crash", "timeout"):
                s["known_failure"] = _reason(r)
        out.append(s)
    return out


def _reason(r: dict) -> str:
    if r["status"] != "wrong":
        return f"{r.get('error', '')[:200]} ({r.get('where', '')})"
    bad = [o for o in r.get("outputs", []) if not o.get("ok")]
    o = bad[0] if bad else {}
    return (f"{len(bad)} of {len(r.get('outputs', []))} outputs differ from eager; first: {o.get('dtype')} "
            f"max abs {o.get('max_abs', o.get('why'))}, max rel {o.get('max_rel', '-')}; ops run eagerly: "
            f"{', '.join(r.get('eager_ops', [])) or 'none'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(corpus_load.DEFAULT_CORPUS))
    p.add_argument("--names", action="store_true", help="print the candidates' names, comma-separated, and stop")
    p.add_argument("--results", help="the candidates' corpus run (JSON); required unless --names")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    cands = candidates(corpus_load.manifest(args.corpus))
    if args.names:
        print(",".join(c["name"] for c in cands))
        return 0
    if not args.results:
        p.error("--results <the candidates' corpus run JSON> is needed to pick the fastest")
    data = json.loads(Path(args.results).read_text())
    samples = annotate(pick(cands, data["rows"]), data["rows"])
    m = data["meta"]
    note = (f"Picked by `python -m benchmarks.corpus_subset --results {Path(args.results).name}` (the rule is in "
            f"that module's docstring): per category the fastest of the smallest candidates; every manifest category "
            f"is present. status / cpu_s / wall_s come from that run ({m['device']}, {m['date']}; its report's note "
            "says when and on which tree), one process per sample: cpu_s is the worker process's CPU seconds, its "
            "start-up and loading included (null where the run did not record it), wall_s was taken on a machine "
            "shared with other jobs.")
    Path(args.out).write_text(json.dumps({"note": note, "samples": samples}, indent=1) + "\n")
    print(f"wrote {len(samples)} samples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
