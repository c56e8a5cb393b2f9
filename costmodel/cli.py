"""`solder-costmodel`: collect measurements, train, evaluate and adapt the learned cost models.

    solder-costmodel collect  --target cpu --n 800            # -> costmodel/shipped/cpu/data.jsonl
    solder-costmodel train    --target cpu                    # -> model.npz + card.json beside it
    solder-costmodel evaluate --target cpu                    # held-out MAPE / Spearman / decisions + PNG
    solder-costmodel adapt    --target reference --n 50 --from cpu
    solder-costmodel retime   --target h100 --rounds 10       # pairs re-timed interleaved -> retime.jsonl

A GPU dataset's pairs re-timed by `retime` (costmodel/retime.py) live beside it in retime.jsonl; train and
evaluate overlay them on data.jsonl (the first timing kept as `seconds_first`) unless --first-timing.

`--model` / `--from` take a model file or a folder holding `model.npz`. Every failure (a missing or malformed
file, an unwritable output folder) exits with status 1 and one line `solder-costmodel: error: ...`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np

from solder.compiler.errors import SolderError
from solder.compiler.targets import get_target
from solder.costmodel import SHIPPED
from solder.costmodel import evaluate as ev


def _dir(target: str, given: str | None) -> Path:
    return Path(given) if given else SHIPPED / get_target(target).name


def _load(cmd: str, given: Path):
    """The model at `given` (a model file, or a folder holding one), or a SolderError saying what is missing."""
    from solder.costmodel.model import MODEL_FILE, LearnedModel
    from solder.costmodel.trees import ModelFormatError

    path = given / MODEL_FILE if given.is_dir() else given
    if not path.is_file():
        where = f"{given} holds no {MODEL_FILE}" if given.is_dir() else f"no model file at {given}"
        raise SolderError(f"{cmd}: {where}; expected a model written by `solder-costmodel train` (or a folder "
                          f"holding its {MODEL_FILE})")
    try:
        return LearnedModel.load(path)
    except ModelFormatError as e:
        raise SolderError(f"{cmd}: {e}") from None


def cmd_collect(a) -> int:
    from solder.costmodel.collect import collect

    out = Path(a.out) if a.out else _dir(a.target, None) / "data.jsonl"
    counts = tuple(int(x) for x in a.threads.split(",")) if a.threads else None
    families = tuple(a.families.split(",")) if a.families else None
    added = collect(a.target, a.n, out, seed=a.seed, progress=not a.quiet, backend=a.backend, jobs=a.jobs,
                    time_budget=a.time_budget, threads=counts, families=families)
    print(f"collect: {added} new rows; {out}")
    return 0


def cmd_retime(a) -> int:
    from solder.costmodel.retime import retime

    folder = _dir(a.target, None)
    data = Path(a.data) if a.data else folder / "data.jsonl"
    if not data.exists():
        raise SolderError(f"retime: no dataset at {data}; expected JSON lines from `solder-costmodel collect`")
    out = Path(a.out) if a.out else data.with_name(RETIMED)
    added = retime(ev.load_rows(data), out, rounds=a.rounds, batch_s=a.batch_ms * 1e-3, jobs=a.jobs,
                   time_budget=a.time_budget, target=a.target, progress=not a.quiet, limit=a.limit,
                   warm_budget=a.warm_budget, run=a.run)
    print(f"retime: {added} pairs re-timed; {out}")
    return 0


RETIMED = "retime.jsonl"


def cmd_train(a) -> int:
    from solder.costmodel.model import MODEL_FILE, fit

    folder = _dir(a.target, a.out)
    data = Path(a.data) if a.data else folder / "data.jsonl"
    rows = _rows(data, a.target, a.tokens, first_timing=a.first_timing)
    train, test = ev.split(rows)
    if len(train) < 10 or not test:
        raise SolderError(f"train: {data} has {len(train)} training and {len(test)} held-out rows; "
                          "expected at least 10 and 1: collect more (solder-costmodel collect --n 300)")
    gpu = get_target(a.target).device == "cuda"
    structure = a.structure or ("parts" if gpu else "direct")
    ratio_all = a.ratio_scope == "all"
    model = fit(train, get_target(a.target).name, tokens=a.tokens, n_estimators=a.trees, structure=structure,
                free_views=gpu, ratio_all=ratio_all, max_leaf_nodes=a.leaves)
    results = _score(model, test, a.target)
    model.card = _card(a.target, rows, train, test, results, data, tokens=a.tokens)
    first = [{**r, "seconds": r["seconds_first"]} if "seconds_first" in r else r for r in test]
    if any("seconds_first" in r for r in test):  # the same model scored on the rows' first timing
        model.card["heldout_first_timing"] = _card_scores(_score(model, first, a.target))
        model.card["heldout_first_timing_note"] = (
            "the same held-out rows with each row's first timing (collect), not the re-timed pairs: the scores "
            "before re-timing are comparable with these")
    scope = ("every kernel of several ops" if ratio_all else
             "a kernel of several ops that holds a contraction or launches more than once (others: direct trees)")
    kind = ("HistGradientBoostingRegressor on ln(seconds), monotone in size" if structure == "direct" else
            "parts: HistGradientBoostingRegressor on ln(seconds) of single-op kernels (monotone in size); "
            f"{scope} = sum of its ops' estimates x exp(a second HistGradientBoostingRegressor fitted on "
            "ln(measured fused / measured sum of parts) of the training pairs)")
    model.card["model"] = {"trees": a.trees, "leaves": a.leaves, "structure": structure, "kind": kind,
                           "mape_scale": round(float(np.exp(model.log_scale)), 4)}
    if structure == "parts":
        model.card["model"]["ratio_scope"] = a.ratio_scope
    if model.parallel_factor is not None:
        model.card["model"]["parallel_factor"] = (
            "a kernel compiled parallel = its serial estimate on the same team x exp(a HistGradientBoostingRegressor "
            "fitted on ln(parallel / serial seconds) of the training rows measured both ways)")
    card_path = folder / "card.json"
    if card_path.exists():  # notes written beside the scores (collection, repeatability, ...) are kept
        try:
            old = json.loads(card_path.read_text())
        except json.JSONDecodeError:
            old = {}
        for k, v in old.items():
            model.card.setdefault(k, v)
    if model.view_seconds is not None:
        model.card["model"]["views"] = (
            f"kernels that launch nothing (layout ops only: the backend returns a view) are estimated as "
            f"{model.view_seconds * 1e6:.3f} us, the median of such training rows, and left out of the fit and of "
            "the held-out MAPE/Spearman (mape_all / spearman_all include them); decisions keep them as parts")
    threads = _threads_section(results, test)
    if threads:
        model.card["heldout_threads"] = threads
    model.save(folder / MODEL_FILE)
    (folder / "card.json").write_text(json.dumps(model.card, indent=2) + "\n")
    _report(results)
    _report_threads(threads)
    print(f"train: {len(train)} rows, held out {len(test)}; wrote {folder / MODEL_FILE} and card.json")
    return 0


def cmd_evaluate(a) -> int:
    given = _dir(a.target, a.model)
    model = _load("evaluate", given)
    folder = given if given.is_dir() else given.parent
    data = Path(a.data) if a.data else folder / "data.jsonl"
    _, test = ev.split(_rows(data, a.target, model.tokens, first_timing=a.first_timing))
    results = _score(model, test, a.target)
    _report(results)
    _report_threads(_threads_section(results, test))
    png = Path(a.plot) if a.plot else folder / "eval.png"
    ev.plot(png, test, {k: v["pred"] for k, v in results.items()}, f"{a.target}: held-out kernels")
    print(f"evaluate: {len(test)} held-out rows; plot {png}")
    return 0 if beats_roofline(results["learned"], results["roofline"]) else 1


def beats_roofline(learned: dict, roofline: dict) -> bool:
    """Whether the learned model is better on every metric (a metric without pairs is skipped)."""
    better = [learned["mape"] < roofline["mape"], learned["spearman"] > roofline["spearman"]]
    if learned["pairs"]:
        better.append(learned["decision_accuracy"] > roofline["decision_accuracy"])
    return all(better)


def cmd_adapt(a) -> int:
    from solder.costmodel.collect import collect
    from solder.costmodel.model import MODEL_FILE, adapt

    folder = _dir(a.target, a.out)
    src = getattr(a, "from")
    source = _load("adapt", Path(src) if Path(src).exists() or "/" in src else _dir(src, None))
    data = folder / "data.jsonl"
    collect(a.target, a.n, data, seed=a.seed, progress=not a.quiet, backend=a.backend)
    rows = _rows(data, a.target, source.tokens)
    train, test = ev.split(rows)
    model = adapt(source, train or rows, get_target(a.target).name)
    results = _score(model, test or rows, a.target, source=source)
    model.card = _card(a.target, rows, train, test, results, data, tokens=source.tokens)
    model.card["adapted_from"] = getattr(a, "from")
    model.card["adapter"] = list(model.adapter)
    model.save(folder / MODEL_FILE)
    (folder / "card.json").write_text(json.dumps(model.card, indent=2) + "\n")
    _report(results)
    print(f"adapt: {len(rows)} rows of {a.target}; wrote {folder / MODEL_FILE}")
    return 0


def _rows(path: Path, target: str, tokens: bool, first_timing: bool = False) -> list[dict]:
    if not path.exists():
        raise SolderError(f"no dataset at {path}; expected JSON lines from `solder-costmodel collect --target {target}`")
    rows = ev.load_rows(path)
    if not first_timing and path.with_name(RETIMED).exists():
        from solder.costmodel import retime

        n = retime.apply(rows, retime.load(path.with_name(RETIMED)))
        print(f"{path.with_name(RETIMED)}: {n} rows re-timed (interleaved pairs) replace their first timing")
    ev.refeaturize(rows, target, tokens=tokens)
    return rows


def _score(model, test: list[dict], target: str, source=None) -> dict:
    fs = [r["features"] for r in test]
    preds = {"learned": model.predict_rows(test), "roofline": np.array([r["roofline"] for r in test])}
    if model.ridge is not None and model.adapter is None:
        preds["ridge"] = model.predict_ridge(fs)
    if source is not None:
        preds["unadapted"] = source.predict_rows(test)
    skip = model.view_seconds is not None
    out = {}
    for name, pred in preds.items():
        out[name] = {**ev.scores(test, pred, skip_views=skip), "pred": pred,
                     "per_family_mape": ev.per_family(test, pred, skip_views=skip)}
    return out


def _report(results: dict) -> None:
    for name, s in results.items():
        print(f"  {name:10s} {ev.fmt(s)}")


def _threads_section(results: dict, test: list[dict]) -> dict:
    """Held-out scores per thread count and configuration, and the serial-or-parallel choice (beyond noise too),
    for a dataset whose rows ran on several thread counts; {} otherwise."""
    if len({r.get("threads", 1) for r in test}) < 2:
        return {}
    keys = ("mape", "spearman", "n", "decision_accuracy", "pairs")
    out = {"by_threads": {name: {k: {m: v[m] for m in keys} for k, v in ev.by_threads(test, s["pred"]).items()}
                          for name, s in results.items()}}
    pred = results["learned"]["pred"]
    out["parallel_choice"] = ev.parallel_accuracy(test, pred)
    out["parallel_choice_beyond_noise"] = ev.parallel_accuracy(test, pred, ev.TIE)
    return out


def _report_threads(section: dict) -> None:
    for name, groups in section.get("by_threads", {}).items():
        for key, s in groups.items():
            print(f"  {name:10s} {key:10s} MAPE {s['mape'] * 100:6.1f}%  Spearman {s['spearman']:.3f}  n {s['n']}")
    for key in ("parallel_choice", "parallel_choice_beyond_noise"):
        if section.get(key, {}).get("pairs"):
            print(f"  {key}: {ev.fmt_parallel(section[key])}")


def _card_scores(results: dict) -> dict:
    keys = ("mape", "spearman", "decision_accuracy", "pairs", "n", "decision_accuracy_beyond_noise",
            "pairs_beyond_noise", "mape_all", "spearman_all", "n_all", "per_family_mape")
    return {k: {m: v[m] for m in keys} for k, v in results.items()}


def _card(target: str, rows, train, test, results, data: Path, tokens: bool) -> dict:
    import sklearn
    import torch
    import xdsl

    hw = sorted({r.get("hardware", "?") for r in rows})
    return {
        "target": get_target(target).name, "hardware": hw, "backend": sorted({r.get("backend", "?") for r in rows}),
        "date": datetime.date.today().isoformat(), "samples": len(rows), "train_rows": len(train),
        "heldout_rows": len(test), "split": f"(family, shape) groups, crc32 % {ev.HOLDOUT_MOD} == 0 held out",
        "features": "analytic + op histogram" + (" + hashed IR tokens" if tokens else ""),
        "data": data.name, "timing": timing_method(target, rows),
        "software": {"python": platform.python_version(), "torch": str(torch.__version__),
                                        "scikit-learn": sklearn.__version__, "xdsl": str(getattr(xdsl, "__version__", "?"))},
        "heldout": _card_scores(results),
        "decision_beyond_noise": f"pairs whose measured fused and unfused times differ by more than "
                                 f"{ev.TIE:.0%} (ln); see costmodel/evaluate.py TIE",
    }


CPU_TIMING = ("rows without `threads`: 2 warm-up calls, then the median of >= 10 wall-clock calls (80 ms budget, "
              "<= 100), torch.set_num_threads(1). Rows with `threads` (ids <row>@t<n><s|p>): each kernel compiled "
              "serial and, where it has a parallel schedule, parallel, timed on 1 thread and on torch's count, "
              "interleaved, 3+ rounds of (2 warm-up calls, median of >= 5 calls, 30 ms budget), the lowest round "
              "median kept (costmodel/collect.py measure_cpu_row)")
CUDA_TIMING = ("CUDA events: 2 warm-up calls, then N back-to-back calls (N = 3..200, ~3 ms of host time) captured in "
               "one CUDA graph (the backend's own graph off), one warm-up replay, the median of 5 replays / N; "
               "no L2 flush between calls. Rows whose capture failed were timed as N plain launches between "
               "the events (row field timing = 'events')")


def timing_method(target: str, rows: list[dict]) -> str:
    """How the rows were timed, for the model card (counts of rows per GPU timing method)."""
    if get_target(target).device != "cuda":
        return CPU_TIMING
    from solder.costmodel.retime import describe

    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("timing", "wall clock (old data)")] = counts.get(r.get("timing", "wall clock (old data)"), 0) + 1
    text = CUDA_TIMING + "; rows by method: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    retimed = describe(rows)
    if retimed:
        text += ". Rows 'interleaved' (the fuse-or-not pairs, re-timed by `solder-costmodel retime`; the first timing " \
                "kept as seconds_first): " + retimed
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="solder-costmodel", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="time generated kernels on the target's backend")
    c.add_argument("--target", required=True)
    c.add_argument("--n", type=int, default=300, help="grow the dataset to this many rows")
    c.add_argument("--out", help="JSON-lines file (default costmodel/shipped/<target>/data.jsonl)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--backend", help="time this backend instead of the target's own (e.g. reference)")
    c.add_argument("--quiet", action="store_true")
    c.add_argument("--jobs", type=int, default=1, help="CUDA: helper processes that compile rows ahead of timing")
    c.add_argument("--time-budget", type=float, help="stop adding rows after this many seconds")
    c.add_argument("--threads", help="CPU: thread counts to time each kernel on, e.g. 1,2 (default 1 and torch's)")
    c.add_argument("--families", help="measure only rows of these kernel families, e.g. eltwise,rownorm")
    t = sub.add_parser("train", help="fit the trees and the Ridge baseline; write model.npz and card.json")
    t.add_argument("--target", required=True)
    t.add_argument("--data")
    t.add_argument("--out", help="model folder (default costmodel/shipped/<target>/)")
    t.add_argument("--first-timing", action="store_true", help="ignore retime.jsonl (each row's first timing)")
    t.add_argument("--tokens", action="store_true", help="add hashed IR-token features (slower estimate_ops)")
    t.add_argument("--trees", type=int, default=300)
    t.add_argument("--leaves", type=int, default=15, help="leaves per tree (max_leaf_nodes)")
    t.add_argument("--ratio-scope", choices=["all", "contractions"], default="all",
                   help="parts: the fusion factor estimates every kernel of several ops (all), or only those with a "
                        "contraction or several launches (contractions; the others get direct trees)")
    t.add_argument("--structure", choices=["direct", "parts"],
                   help="direct trees, or single-op trees x a learned fusion factor (default: parts on GPUs)")
    e = sub.add_parser("evaluate", help="held-out scores of learned vs Ridge vs roofline, and a PNG")
    e.add_argument("--target", required=True)
    e.add_argument("--data")
    e.add_argument("--model", help="model file, or a folder holding model.npz (default costmodel/shipped/<target>/)")
    e.add_argument("--plot")
    e.add_argument("--first-timing", action="store_true", help="ignore retime.jsonl (each row's first timing)")
    r = sub.add_parser("retime", help="GPU: re-time the fuse-or-not pairs interleaved in one process")
    r.add_argument("--target", required=True)
    r.add_argument("--data", help="dataset (default costmodel/shipped/<target>/data.jsonl)")
    r.add_argument("--out", help="JSON-lines output (default retime.jsonl beside the dataset)")
    r.add_argument("--rounds", type=int, default=10)
    r.add_argument("--batch-ms", type=float, default=2.0, help="GPU time of one graph replay (ms)")
    r.add_argument("--jobs", type=int, default=1, help="helper processes that compile pairs ahead of timing")
    r.add_argument("--time-budget", type=float, help="stop after this many seconds")
    r.add_argument("--warm-budget", type=float, help="seconds the helpers may compile before timing starts "
                   "(default half the time budget)")
    r.add_argument("--limit", type=int, help="re-time at most this many pairs")
    r.add_argument("--run", type=int, default=0, help="pass number: another number times every pair again")
    r.add_argument("--quiet", action="store_true")
    d = sub.add_parser("adapt", help="fit a new target from a few measurements and an existing model")
    d.add_argument("--target", required=True)
    d.add_argument("--n", type=int, default=50)
    d.add_argument("--from", required=True, help="source target name, or a model file or folder")
    d.add_argument("--out")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--backend", help="time this backend instead of the target's own")
    d.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    cmd = {"collect": cmd_collect, "train": cmd_train, "evaluate": cmd_evaluate, "adapt": cmd_adapt,
           "retime": cmd_retime}[a.cmd]
    try:
        return cmd(a)
    except SolderError as e:
        return _fail(e)
    except OSError as e:  # an unreadable input or an unwritable output folder
        return _fail(f"{e.strerror or e}: {e.filename}" if e.filename else e)


def _fail(message) -> int:
    print(f"solder-costmodel: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
