"""The corpus benchmark's summary: counts, speed-ups, GraphNet scores, compile times, op coverage.

Definitions (every ratio is a speed-up: > 1 means solder is faster):
- attempted: samples that ran eagerly (a sample whose own eager call fails, `eager_error`, is left out).
- pass rate: `correct` / attempted. `outputs match`: (`correct` + `fallback`) / attempted.
- geomean speed-up vs eager (and vs each peer): over the samples whose outputs match and were timed.
- fast_p (KernelBench): the fraction of attempted samples whose outputs match AND whose speed-up vs eager
  is at least p.
- S(t), ES(t) (GraphNet, arXiv 2510.24035, as its analysis_util.py computes them, with its defaults
  fpdb = 0.1 and no extra slowdown penalty): at tolerance level t a sample is correct when every output
  passes allclose(atol = 10**t, rtol = 10**(1.1772 t)) (GraphNet's float32 row; integer outputs must be
  equal). S(t) = geomean over attempted samples of the speed-up where correct at t, else fpdb.
  ES(t) = S(t) for t < 1; for t >= 1 a failed sample counts 1 instead of fpdb when it failed on accuracy,
  and when it failed otherwise (crash, timeout) once t >= 3: the error-aware score forgives errors
  step by step as the tolerance grows. Samples that were not timed (crashes) take fpdb / the step value.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from pathlib import Path

STATUSES = ("correct", "fallback", "wrong", "crash", "timeout", "eager_error")
FAST_P = (0.95, 1.0, 1.5, 2.0)
T_LEVELS = range(-10, 5)
FPDB = 0.1


def geomean(xs) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def median(xs) -> float | None:
    xs = sorted(x for x in xs if x)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2 if xs else None


def matched(r: dict) -> bool:
    return r.get("status") in ("correct", "fallback")


def attempted(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") != "eager_error"]


def peers_of(rows: list[dict]) -> list[str]:
    return sorted({k.removeprefix("speedup_vs_") for r in rows for k in r if k.startswith("speedup_vs_")}
                  - {"eager", "eager_unguarded"})  # the latter is solder's own figure with the guard off


# ---- GraphNet scores ----------------------------------------------------------------------------
def _correct_at(r: dict, t: int) -> bool:
    return r.get("tmin") is not None and r["tmin"] <= t and r.get("status") in ("correct", "fallback", "wrong")


def _rectified(r: dict, t: int, error_aware: bool) -> float:
    s = r.get("speedup_vs_eager")
    if _correct_at(r, t) and s:
        return s
    if not error_aware or t < 1:
        return FPDB
    if r.get("status") == "wrong":
        return 1.0
    return FPDB if t < 3 else 1.0


def speedup_scores(rows: list[dict]) -> dict[int, dict]:
    """{t: {"S": S(t), "ES": ES(t)}} over the attempted samples."""
    rows = attempted(rows)
    return {t: {"S": geomean(_rectified(r, t, False) for r in rows),
                "ES": geomean(_rectified(r, t, True) for r in rows)} for t in T_LEVELS} if rows else {}


# ---- summary ------------------------------------------------------------------------------------
def percentiles(xs: list[float]) -> dict | None:
    if not xs:
        return None
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]  # noqa: E731
    return {"n": len(xs), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": xs[-1]}


def crash_causes(rows: list[dict]) -> list[dict]:
    """Crashes grouped by exception type and message with numbers and names masked; most common first."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "crash":
            msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", r.get("error", ""))
            msg = re.sub(r"\d+", "N", msg)[:110]
            groups[msg].append(r)
    out = [{"cause": k, "count": len(v), "example": v[0]["name"], "error": v[0].get("error", ""),
            "where": v[0].get("where", "")} for k, v in groups.items()]
    return sorted(out, key=lambda g: -g["count"])


def op_coverage(rows: list[dict]) -> list[dict]:
    """Per ATen op: graph nodes, samples holding it, and how the nodes ran."""
    table: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        for op, c in (r.get("ops") or {}).items():
            table[op]["samples"] += 1
            table[op].update(c)
    return sorted(({"op": k, **v} for k, v in table.items()), key=lambda d: (-d.get("count", 0), d["op"]))


def summarize(rows: list[dict]) -> dict:
    att = attempted(rows)
    n = len(att)
    counts = Counter(r.get("status", "?") for r in rows)
    ok = [r for r in att if matched(r) and r.get("speedup_vs_eager")]
    summary = {
        "samples": len(rows), "attempted": n, "counts": dict(counts),
        "pass_rate": counts["correct"] / n if n else None,
        "outputs_match_rate": (counts["correct"] + counts["fallback"]) / n if n else None,
        "timed": len(ok),
        "geomean_vs_eager": geomean(r["speedup_vs_eager"] for r in ok),
        "median_vs_eager": median(r["speedup_vs_eager"] for r in ok),
        "geomean_vs_eager_unguarded": geomean(r["speedup_vs_eager_unguarded"] for r in ok
                                              if r.get("speedup_vs_eager_unguarded")),
        "timed_unguarded": sum(1 for r in ok if r.get("speedup_vs_eager_unguarded")),
        "below_0.95": sorted(r["name"] for r in ok if r["speedup_vs_eager"] < 0.95),
        "fast_p": {str(p): sum(1 for r in ok if r["speedup_vs_eager"] >= p) / n if n else None for p in FAST_P},
        "graphnet_scores": speedup_scores(rows),
        "compile_s": percentiles([r["solder_compile_s"] for r in att if r.get("solder_compile_s") is not None]),
        "crash_causes": crash_causes(rows),
        "float64_arbitrated": [r["name"] for r in rows if r.get("float64", {}).get("as_accurate")],
        "crashes_not_exportable": sum(1 for r in rows if r.get("status") == "crash" and r.get("torch_export") is False),
        "eager_ops": Counter(op for r in att for op in r.get("eager_ops", [])).most_common(),
    }
    for peer in peers_of(rows):
        sel = [r for r in ok if r.get(f"speedup_vs_{peer}")]
        summary[f"geomean_vs_{peer}"] = geomean(r[f"speedup_vs_{peer}"] for r in sel)
        summary[f"median_vs_{peer}"] = median(r[f"speedup_vs_{peer}"] for r in sel)
        summary[f"timed_vs_{peer}"] = len(sel)
        summary[f"{peer}_compile_s"] = percentiles([r[f"{peer}_compile_s"] for r in att if f"{peer}_compile_s" in r])
    summary["by_category"] = by_category(rows)
    return summary


def by_category(rows: list[dict]) -> dict:
    cats: dict[str, list] = defaultdict(list)
    for r in rows:
        cats[f"{r.get('source', '?')}/{r.get('category', '?')}"].append(r)
    return {c: {**Counter(r.get("status", "?") for r in rs), "n": len(rs),
                "geomean_vs_eager": geomean(r.get("speedup_vs_eager") for r in rs if matched(r))}
            for c, rs in sorted(cats.items())}


# ---- markdown and PNG -------------------------------------------------------------------------
def _f(v, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _table(cols: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def markdown(meta: dict, summary: dict, rows: list[dict]) -> str:
    s = summary
    c = Counter(s["counts"])
    lines = [f"# solder on the public corpus — target `{meta['target']}`", "",
             f"{meta['device']}, {meta['date']}, commit {meta['commit']}, torch {meta['torch']}; corpus commits "
             + ", ".join(f"{k} {v[:10]}" for k, v in meta.get("corpus_commits", {}).items()) + ".", "",
             meta.get("note", ""), "",
             "Samples ran on commit(s): " + (", ".join(meta.get("sample_commits") or []) or "not recorded") + ".", "",
             f"Command: `{meta.get('command', '')}`", "",
             "## Summary", "",
             f"- samples: {s['samples']} run, {s['attempted']} attempted ({c['eager_error']} whose own eager call "
             "failed are left out)",
             f"- **pass rate (correct, fully compiled): {_pct(s['pass_rate'])}**; outputs match eager (correct + "
             f"fallback): {_pct(s['outputs_match_rate'])}",
             f"- correct {c['correct']}, fallback {c['fallback']}, wrong {c['wrong']}, crash {c['crash']}, "
             f"timeout {c['timeout']}, eager_error {c['eager_error']} ({s['crashes_not_exportable']} of the crashes "
             "are samples the manifest marks as not captured by plain torch.export)",
             f"- outside eager's tolerance but as accurate as eager against a float64 run (counted correct/fallback; "
             f"benchmarks/corpus_check.py `arbitrate`): {len(s.get('float64_arbitrated', []))}"
             + (f" ({', '.join(s['float64_arbitrated'])})" if s.get("float64_arbitrated") else ""),
             f"- geomean speed-up vs eager: {_f(s['geomean_vs_eager'])}x (median {_f(s['median_vs_eager'])}x) over "
             f"{s['timed']} timed samples whose outputs match",
             f"- speed guard off (same compile, timed in the same rounds): geomean "
             f"{_f(s.get('geomean_vs_eager_unguarded'))}x vs eager over {s.get('timed_unguarded', 0)} samples; "
             f"guarded samples below 0.95x eager: {len(s.get('below_0.95', []))}"]
    for peer in peers_of(rows):
        lines.append(f"- geomean speed-up vs {peer}: {_f(s.get(f'geomean_vs_{peer}'))}x (median "
                     f"{_f(s.get(f'median_vs_{peer}'))}x) over {s.get(f'timed_vs_{peer}')} samples")
    if not s["timed"]:  # a correctness-only run (--backends solder): no speed figures to show
        lines[-1] = "- not timed (a correctness-only run): no speed-ups, fast_p, S(t)/ES(t) or compile times"
        return "\n".join(lines + _category_lines(s) + _crash_lines(s) + _wrong_lines(rows) + _eager_op_lines(s)
                         + _op_lines(rows) + _sample_lines(rows)) + "\n"
    lines.append("- fast_p (outputs match and >= p x eager, over attempted): " +
                 ", ".join(f"p={p}: {_pct(v)}" for p, v in s["fast_p"].items()))
    lines += _compile_lines(s, rows) + _score_lines(s) + _category_lines(s) + _crash_lines(s) + _wrong_lines(rows)
    lines += _eager_op_lines(s) + _op_lines(rows) + _sample_lines(rows)
    return "\n".join(lines) + "\n"


def _compile_lines(s: dict, rows: list[dict]) -> list[str]:
    out = ["", "## Compile time (first call minus a steady call, s)", ""]
    rows_ = [["solder", *(_f(s["compile_s"].get(k)) if s["compile_s"] else "-" for k in ("p50", "p90", "p99", "max")),
              s["compile_s"]["n"] if s["compile_s"] else 0]]
    for peer in peers_of(rows):
        p = s.get(f"{peer}_compile_s")
        rows_.append([peer, *(_f(p.get(k)) if p else "-" for k in ("p50", "p90", "p99", "max")), p["n"] if p else 0])
    return out + _table(["compiler", "p50", "p90", "p99", "max", "samples"], rows_)


def _score_lines(s: dict) -> list[str]:
    sc = s["graphnet_scores"]
    if not sc:
        return []
    ts = [t for t in T_LEVELS if t >= -6]
    return ["", "## GraphNet speed-up scores S(t) and ES(t) (definitions in benchmarks/corpus_report.py)", "",
            *_table(["", *(f"t={t}" for t in ts)],
                    [[k + "(t)", *(_f(sc[t][k], "{:.3f}") for t in ts)] for k in ("S", "ES")])]


def _category_lines(s: dict) -> list[str]:
    rows = [[c, v["n"], *(v.get(k, 0) for k in STATUSES), _f(v["geomean_vs_eager"])]
            for c, v in s["by_category"].items()]
    return ["", "## By category", "", *_table(["category", "n", *STATUSES, "geomean vs eager"], rows)]


def _crash_lines(s: dict) -> list[str]:
    if not s["crash_causes"]:
        return []
    rows = [[g["count"], g["cause"].replace("|", "/"), g["example"], g["where"]] for g in s["crash_causes"]]
    return ["", "## Crash causes (message with names and numbers masked)", "",
            *_table(["samples", "cause", "example", "raised at"], rows)]


def _wrong_lines(rows: list[dict]) -> list[str]:
    wrong = [r for r in rows if r.get("status") == "wrong"]
    if not wrong:
        return []
    out = []
    for r in wrong:
        bad = [o for o in r.get("outputs", []) if not o.get("ok")]
        o = bad[0] if bad else {}
        out.append([r["name"], f"{len(bad)}/{len(r.get('outputs', []))}", o.get("dtype", ""),
                    _err(o.get("max_abs", o.get("why", ""))), _err(o.get("max_rel", "")),
                    ", ".join(r.get("eager_ops", []))[:80]])
    return ["", "## Wrong results", "", *_table(["sample", "bad outputs", "dtype", "max abs err", "max rel err",
                                                 "ops run eagerly"], out)]


def _err(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _eager_op_lines(s: dict) -> list[str]:
    if not s["eager_ops"]:
        return []
    return ["", "## Ops solder ran eagerly (graph.extern or reference backend), by samples", "",
            *_table(["op", "samples"], [[op, n] for op, n in s["eager_ops"][:40]])]


def _op_lines(rows: list[dict]) -> list[str]:
    cov = op_coverage(rows)
    kinds = ("generated", "library", "eager", "view", "decomposed", "unrun")
    body = [[d["op"], d.get("count", 0), d["samples"], *(d.get(k, 0) for k in kinds)] for d in cov]
    return ["", "## Op coverage: ATen ops of the imported graphs (nodes), and how they ran", "",
            "Routes are mapped from each node's graph op to the backend step that ran that op name in the same sample "
            "(majority route of the name): an approximation where one name ran several ways. `view`: no step of its "
            "own (a view absorbed by its consumer, or an op folded away); `decomposed`: capture decomposed it before "
            "import (counted once per sample); `unrun`: in a sample whose compile crashed after capture.", "",
            *_table(["ATen op", "nodes", "samples", *kinds], body)]


def _sample_lines(rows: list[dict]) -> list[str]:
    body = []
    for r in rows:
        t = r.get("times", {})
        body.append([r["name"], r.get("status", "?"), _f(t.get("solder_s"), "{:.4g}") if t.get("solder_s") else "-",
                     _f(t.get("eager_s"), "{:.4g}") if t.get("eager_s") else "-", _f(r.get("speedup_vs_eager")),
                     _f(r.get("speedup_vs_inductor")), _f(r.get("solder_compile_s")),
                     " ".join(f"{k}={v[1]}" for k, v in (r.get("sizes") or {}).items()),
                     (r.get("error") or "")[:90].replace("|", "/")])
    return ["", "## Samples (seconds per call)", "",
            *_table(["sample", "status", "solder s", "eager s", "vs eager", "vs inductor", "compile s", "sizes used",
                     "error"], body)]


def write_png(meta: dict, rows: list[dict], path: Path) -> bool:
    """A histogram of log2 speed-up vs eager (and vs each peer) over samples whose outputs match."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {"vs eager": [r["speedup_vs_eager"] for r in rows if matched(r) and r.get("speedup_vs_eager")]}
    for peer in peers_of(rows):
        series[f"vs {peer}"] = [r[f"speedup_vs_{peer}"] for r in rows if matched(r) and r.get(f"speedup_vs_{peer}")]
    if not any(series.values()):
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    vals = [math.log2(v) for xs in series.values() for v in xs]
    bins = [x / 4 for x in range(math.floor(min(vals) * 4) - 1, math.ceil(max(vals) * 4) + 2)]
    for label, xs in series.items():
        if xs:
            ax.hist([math.log2(v) for v in xs], bins=bins, alpha=0.6, label=f"{label} (n={len(xs)}, "
                    f"geomean {geomean(xs):.2f}x)")
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_xlabel("log2 speed-up of solder (> 0: solder faster)")
    ax.set_ylabel("samples")
    ax.set_title(f"corpus, {meta['target']} — {meta['device'][:40]}, {meta['commit']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
