"""Pick the CI correctness subset (benchmarks/corpus_subset.json) and record how each sample fared.

    python -m benchmarks.corpus_subset                      # the picks, from the manifest alone
    python -m benchmarks.corpus --target cpu --backends solder --only "$(python -m benchmarks.corpus_subset --names)"
    python -m benchmarks.corpus_subset --results benchmarks/results/corpus-cpu-<date>-<tag>.json

The picks: from every GraphNet category its PER_CATEGORY samples with the fewest tensor elements
(manifest `numel`; fewer where a category's samples are slow to compile, SLOW_CATEGORIES); from every
KernelBench level the first of its seeded category order (benchmarks.corpus.stratified) that are not
recurrent nets (RNN/LSTM/GRU: solder unrolls their time steps, minutes to compile). `--results` adds each
pick's measured status and seconds from a corpus run; a `wrong` or `crash` one carries its error as
`known_failure`, which tests/test_corpus_subset.py turns into a strict xfail.
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
PER_CATEGORY = {"GraphNet": 4, "KernelBench": 4}
SLOW_CATEGORIES = {"nemo": 2, "level3": 2}
RECURRENT = re.compile(r"RNN|LSTM|GRU", re.IGNORECASE)


def pick(entries: list[dict]) -> list[dict]:
    cats: dict[tuple, list] = defaultdict(list)
    for e in entries:
        cats[(e["source"], e["category"])].append(e)
    picked = []
    for (source, cat), es in sorted(cats.items()):
        k = SLOW_CATEGORIES.get(cat, PER_CATEGORY[source])
        if source == "GraphNet":
            es = sorted(es, key=lambda e: (e["numel"], e["name"]))
        else:
            es = [e for e in stratified(es) if not RECURRENT.search(e["name"])]
        picked += [{"name": e["name"], "source": source, "category": cat} for e in es[:k]]
    return picked


def annotate(samples: list[dict], rows: list[dict]) -> list[dict]:
    """Each sample with its measured status, seconds and (wrong/crash) reason from a corpus run's rows."""
    by_name = {r["name"]: r for r in rows}
    out = []
    for s in samples:
        r = by_name.get(s["name"])
        s = dict(s)
        if r is not None:
            s["status"] = r["status"]
            s["cpu_s"] = round(r.get("cpu_s") or 0.0, 1)
            s["wall_s"] = round(r.get("wall_s") or 0.0, 1)
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
    p.add_argument("--names", action="store_true", help="print the picks' names, comma-separated, and stop")
    p.add_argument("--results", help="a corpus run's JSON whose rows give each pick's status")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    samples = pick(corpus_load.manifest(args.corpus))
    if args.names:
        print(",".join(s["name"] for s in samples))
        return 0
    note = ("Picked by `python -m benchmarks.corpus_subset` (the rule is in that module's docstring): per GraphNet "
            "category the samples with the fewest tensor elements, per KernelBench level the first non-recurrent "
            "problems of the seeded order; every manifest category is present.")
    if args.results:
        data = json.loads(Path(args.results).read_text())
        samples = annotate(samples, data["rows"])
        m = data["meta"]
        note += (f" status / cpu_s / wall_s: measured by `{m['command']}` at commit {m['commit']} on {m['device']}, "
                 f"{m['date']}, one process per sample (cpu_s: the whole worker process's CPU seconds, start-up "
                 "and loading included; wall_s on a machine shared with other jobs).")
    Path(args.out).write_text(json.dumps({"note": note, "samples": samples}, indent=1) + "\n")
    print(f"wrote {len(samples)} samples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
