"""A fixed subset of the public corpus (GraphNet graphs, KernelBench problems) through solder on the CPU,
compared with eager: correctness only, no timing.

The samples are listed in benchmarks/corpus_subset.json (how they were chosen is written there); every
manifest category is in it. Samples that were wrong or crashed when the list was made are strict xfails
with the measured reason, so a fix flips its test to XPASS and fails the run until the mark is removed.
The corpus lies beside the clone (`<repo>/../shared/corpus`); without it these tests skip.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from benchmarks import corpus_check, corpus_load

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
SUBSET = json.loads((ROOT / "benchmarks" / "corpus_subset.json").read_text())

pytestmark = pytest.mark.skipif(not (CORPUS / "manifest.json").is_file(),
                                reason=f"the public corpus is not at {CORPUS} (CI puts it beside the clone)")


@functools.lru_cache(maxsize=1)
def _entries() -> dict[str, dict]:
    return {e["name"]: e for e in corpus_load.manifest(CORPUS)}


def _param(s: dict):
    if s.get("known_failure"):
        return pytest.param(s["name"], id=s["name"],
                            marks=pytest.mark.xfail(strict=True, reason=f"{s['status']}: {s['known_failure']}"))
    return pytest.param(s["name"], id=s["name"])


def test_subset_spans_every_category():
    cats = {(e["source"], e["category"]) for e in _entries().values()}
    picked = {(s["source"], s["category"]) for s in SUBSET["samples"]}
    assert len(SUBSET["samples"]) >= 40
    assert cats - picked == set(), f"categories without a sample in corpus_subset.json: {sorted(cats - picked)}"
    unknown = {s["name"] for s in SUBSET["samples"]} - set(_entries())
    assert not unknown, f"corpus_subset.json names samples not in the manifest: {sorted(unknown)}"


@pytest.mark.parametrize("name", [_param(s) for s in SUBSET["samples"]])
def test_matches_eager(name):
    sample = corpus_load.load(_entries()[name], CORPUS, "cpu")
    res, _ = corpus_check.check(sample, "cpu")
    bad = [o for o in res.get("outputs", []) if not o["ok"]]
    assert res["status"] in ("correct", "fallback"), (
        f"{name}: {res['status']}: {res.get('error', '')} {res.get('where', '')} "
        f"bad outputs {bad[:3]} (atol={res['atol']}, rtol={res['rtol']})")
