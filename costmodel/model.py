"""Learned latency models: gradient-boosted trees on log-seconds, a Ridge baseline, save/load, adaptation.

A `LearnedModel` predicts ln(seconds) from `solder.costmodel.features` with histogram gradient-boosted trees,
fitted by scikit-learn and kept as arrays (costmodel/trees.py). The trees are compiled into one plain Python
function (nested `if`s) at load time, so that `predict_ops` costs tens of microseconds; `predict_features_batch`
walks the arrays with numpy and the tests check the two agree with scikit-learn's own predictions. An adapted model (`adapt`) is a source model plus a linear correction fitted
on a few dozen measurements of the new target.

Two structures (`fit(structure=...)`):
- "direct": one set of trees maps any kernel's features to its seconds.
- "parts": the trees are fitted on single-op kernels only; a kernel of several ops that holds a GEMM or
  attention, or launches more than once (`uses_ratio`), is estimated as the sum of its ops' estimates
  times a learned fusion factor, a second set of trees on ln(fused seconds / sum of the parts' seconds)
  fitted on the measured fuse-or-not pairs. Such a fusion decision (fused < sum of parts) then rests on
  the factor alone, which the pairs train directly, instead of on the difference of two independent
  estimates, each ~10% off (most of these pairs launch the same library kernels either way and differ
  by a few percent). With `ratio_all` (the default of `solder-costmodel train`, picked by 5-fold
  cross-validation on the H100 training groups: decisions 0.921 vs 0.914, MAPE 14.3% vs 14.6%) every
  kernel of several ops is estimated so, elementwise and reduction chains in one launch too; without
  it those are estimated by a third set of direct trees fitted on every row.
CPU kernels on threads: a model fitted on rows measured both ways (compiled serial and with the outer loop across
threads, on the same team: `collect`'s configurations) also holds `parallel_factor`, trees on ln(parallel seconds /
serial seconds) of those pairs, read from the parallel run's features. A parallel kernel is estimated as the
kernel's serial estimate on the same team times that factor, so that the serial-or-parallel choice rests on the
factor (the fork/join and the split, learned directly from the pairs) rather than on the difference of two
independent estimates, each ~20% off.
With `free_views` (GPU targets), a kernel that launches nothing (layout ops only: the backend returns a
view) is estimated as the median measured time of such rows, and is left out of the fit.

Files, per target under costmodel/shipped/<target>/: `model.npz` (the model: numeric arrays plus one JSON string
of its settings and card, written with `np.savez` and read with `allow_pickle=False`, so the file holds no code),
`data.jsonl` (the measurements it was trained on) and `card.json` (hardware, software versions, date, sample
count, held-out scores).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from solder.compiler.dialects import graph as g
from solder.costmodel import features as feats
from solder.costmodel.trees import Linear, ModelFormatError, Trees

FORMAT = "solder-costmodel"
FORMAT_VERSION = 4
MODEL_FILE = "model.npz"
RATIO_EXTRA = ("log_parts_pred", "n_parts", "parts_launches")
PARTS = ("gbr", "ridge", "ratio", "direct", "parallel_factor")  # the arrays a model file may hold


def ratio_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The fusion-factor trees' features for a model whose trees read `names`: its features without the IR
    tokens, then the parts' summary. Taken from the model's stored names, not today's op list, so that a
    `graph` op added after training does not shift the columns the trees read."""
    return tuple(n for n in names if not n.startswith("tok")) + RATIO_EXTRA


@dataclass
class LearnedModel:
    """Predicts seconds of one kernel on `target` from its feature dict."""

    target: str
    names: tuple[str, ...]
    gbr: Trees  # gradient-boosted trees on ln(seconds)
    ridge: Linear | None = None  # standardized Ridge on ln(seconds): the linear baseline
    tokens: bool = False  # whether the features include hashed IR tokens (needs printing the IR)
    adapter: tuple[float, ...] | None = None  # (w0, w_source, w_roofline): ln s = w0 + w1*src + w2*ln(roofline)
    log_scale: float = 0.0  # added to the trees' ln(seconds): the MAPE calibration of `fit`
    card: dict = field(default_factory=dict)
    ratio: Trees | None = None  # structure "parts": trees on ln(fused / sum of parts), features ratio_names(names)
    view_seconds: float | None = None  # free_views: the estimate of a kernel that launches nothing
    direct: Trees | None = None  # structure "parts": trees on all rows, for kernels of several ops in one launch
    ratio_all: bool = False  # structure "parts": the fusion factor for every kernel of several ops (no direct trees)
    parallel_factor: Trees | None = None  # trees on ln(parallel / serial seconds) on one team, features `names`
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        self._fast = self.gbr.compile()
        self._ratio_fast = self.ratio.compile() if self.ratio is not None else None
        self._ratio_names = ratio_names(self.names)
        self._direct_fast = self.direct.compile() if self.direct is not None else None
        self._parallel_fast = self.parallel_factor.compile() if self.parallel_factor is not None else None

    # -- prediction ---------------------------------------------------------------------------

    def log_seconds(self, f: dict[str, float], parts: list[dict[str, float]] | None = None) -> float:
        """ln(seconds) for one feature dict (compiled-tree path); `parts`: the features of each op of a
        kernel of several ops as its own kernel (used by the "parts" structure, ignored otherwise)."""
        if self.view_seconds is not None and f.get("launches", 1.0) == 0:
            return math.log(self.view_seconds)
        if self._parallel_fast is not None and f.get("parallel"):
            serial = feats.with_threads(dict(f), int(f["threads"]), False)
            return self.log_seconds(serial, parts) + self._parallel_fast(feats.vector(f, self.names))
        if parts and len(parts) > 1 and self._ratio_fast is not None:
            if self.ratio_all or uses_ratio(f) or self._direct_fast is None:
                z = self._parts_log(f, parts)
            else:
                z = self._direct_fast(feats.vector(f, self.names))
        else:
            z = self._fast(feats.vector(f, self.names))
        z += self.log_scale
        if self.adapter is None:
            return z
        w0, w1, w2 = self.adapter
        return w0 + w1 * z + w2 * f["log_roofline"] * math.log(2)

    def _parts_log(self, f: dict[str, float], parts: list[dict[str, float]]) -> float:
        """ln(sum of the parts' estimates × the learned fusion factor)."""
        total = 0.0
        for p in parts:
            if self.view_seconds is not None and p.get("launches", 1.0) == 0:
                total += self.view_seconds
            else:
                total += math.exp(self._fast(feats.vector(p, self.names)))
        rf = ratio_features(f, parts, total)
        return math.log(total) + self._ratio_fast(feats.vector(rf, self._ratio_names))

    def predict_features(self, f: dict[str, float], parts: list[dict[str, float]] | None = None) -> float:
        return math.exp(self.log_seconds(f, parts))

    def predict_rows(self, rows: list[dict]) -> np.ndarray:
        """Seconds of dataset rows (`features`, and `parts` for kernels of several ops) through the fast path."""
        return np.array([self.predict_features(r["features"], r.get("parts")) for r in rows])

    def predict_features_batch(self, rows: list[dict[str, float]]) -> np.ndarray:
        """Seconds for many single-kernel feature dicts, the trees walked with numpy (the reference for the fast path)."""
        x = np.array([feats.vector(f, self.names) for f in rows], dtype=np.float64)
        z = self.gbr.predict(x) + self.log_scale
        if self.parallel_factor is not None:
            par = np.array([bool(f.get("parallel")) for f in rows])
            if par.any():
                serial = [feats.with_threads(dict(f), int(f["threads"]), False) for f, p in zip(rows, par) if p]
                xs = np.array([feats.vector(f, self.names) for f in serial], dtype=np.float64)
                z[par] = self.gbr.predict(xs) + self.log_scale + self.parallel_factor.predict(x[par])
        if self.adapter is not None:
            w0, w1, w2 = self.adapter
            z = w0 + w1 * z + w2 * np.array([f["log_roofline"] for f in rows]) * math.log(2)
        return np.exp(z)

    def predict_ridge(self, rows: list[dict[str, float]]) -> np.ndarray:
        x = np.array([feats.vector(f, self.names) for f in rows], dtype=np.float64)
        return np.exp(self.ridge.predict(x))

    def predict_op(self, op, target, threads: int = 1, parallel: bool = False) -> float:
        """Seconds of one op or `graph.kernel` as one kernel (on `threads`, parallel or not: see predict_ops)."""
        if self._ratio_fast is None:
            return self.predict_features(feats.kernel_features(op, target, tokens=self.tokens, threads=threads,
                                                               parallel=parallel))
        return self.predict_ops(feats.body_ops(op) if isinstance(op, g.KernelOp) else [op], target, threads, parallel)

    def predict_ops(self, ops: list, target, threads: int = 1, parallel: bool = False) -> float:
        """Seconds of `ops` fused as one kernel run on a team of `threads`, its outer loop across them when
        `parallel` (a model without the thread features ignores both); a token model prints the ops (slower)."""
        f = feats.ops_features(ops, target, threads, parallel)
        if self.tokens:
            from solder.compiler.ir import print_ir

            f.update(feats.ir_token_features("".join(print_ir(o) for o in ops)))
        parts = (feats.part_features(ops, target, threads, parallel)
                 if self._ratio_fast is not None and len(ops) > 1 else None)
        return self.predict_features(f, parts)

    @property
    def reads_threads(self) -> bool:
        """Whether the model was trained with the thread features (feats.THREAD_NAMES), so that its estimates of
        a kernel on one thread, on several, serial and parallel differ."""
        return all(n in self.names for n in feats.THREAD_NAMES)

    # -- files --------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the model to `path` (a `.npz` of numeric arrays and one JSON string), atomically."""
        meta = {"format": FORMAT, "format_version": self.format_version, "target": self.target,
                "names": list(self.names), "tokens": self.tokens, "log_scale": self.log_scale,
                "adapter": list(self.adapter) if self.adapter is not None else None,
                "view_seconds": self.view_seconds, "ratio_all": self.ratio_all, "card": self.card,
                "parts": [k for k in PARTS if getattr(self, k) is not None]}
        arrays = {"meta": np.array(json.dumps(meta))}
        for k in meta["parts"]:
            arrays.update(getattr(self, k).arrays(k))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> "LearnedModel":
        """Read a model written by `save`; ModelFormatError says what is wrong with a file that is not one."""
        if not zipfile.is_zipfile(path):
            raise ModelFormatError(f"{path}: not a solder cost model file (expected the .npz archive that "
                                   "`solder-costmodel train` writes)")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except ValueError:  # numpy refuses object arrays without allow_pickle
            raise ModelFormatError(f"{path}: not a solder cost model file: it holds pickled objects, which solder "
                                   "never loads") from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise ModelFormatError(f"{path}: not a solder cost model file ({type(e).__name__}: {e})") from None
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except (KeyError, ValueError):
            raise ModelFormatError(f"{path}: no model settings (meta) in the file") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFormatError(f"{path}: not a solder cost model file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelFormatError(f"{path}: model format {meta.get('format_version')}, this solder reads "
                                   f"{FORMAT_VERSION}; train it again (solder-costmodel train)")
        return _from_meta(path, meta, arrays)


def _from_meta(path: Path, meta: dict, arrays: dict) -> LearnedModel:
    """The model that `meta` (the settings) and `arrays` describe; ModelFormatError names what is malformed."""
    try:
        names = tuple(str(n) for n in meta["names"])
        parts = {k: None for k in PARTS}
        for k in meta["parts"]:
            if k not in parts:
                raise ModelFormatError(f"unknown model part {k!r}")
            width = len(ratio_names(names)) if k == "ratio" else len(names)
            parts[k] = (Linear if k == "ridge" else Trees).from_arrays(k, arrays, width)
        if parts["gbr"] is None:
            raise ModelFormatError("the model has no trees")
        adapter = meta["adapter"]
        return LearnedModel(
            target=str(meta["target"]), names=names, tokens=bool(meta["tokens"]), log_scale=float(meta["log_scale"]),
            adapter=tuple(float(w) for w in adapter) if adapter is not None else None,
            view_seconds=None if meta["view_seconds"] is None else float(meta["view_seconds"]),
            ratio_all=bool(meta["ratio_all"]), card=dict(meta["card"]), **parts)
    except ModelFormatError as e:
        raise ModelFormatError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"{path}: malformed model settings ({type(e).__name__}: {e})") from None


# Features along which latency may only grow: more work or more bytes never makes a kernel faster.
MONOTONE = frozenset({
    "log_flops", "log_bytes", "log_bytes_read", "log_bytes_written", "log_roofline", "log_roofline_parts",
    "log_bytes_parts", "log_flops_trans", "log_out_numel", "log_max_numel", "log_reduce_outer",
    "log_mm_m", "log_mm_n", "log_mm_k", "log_mm_batch", "log_bytes_internal", "log_max_buffer",
    "log_bytes_per_thread",
})


def is_view(row: dict) -> bool:
    """A row whose kernel launches nothing (layout ops only)."""
    return row["features"].get("launches", 1.0) == 0


def fit(rows: list[dict], target: str, tokens: bool = False, seed: int = 0, n_estimators: int = 300,
        learning_rate: float = 0.05, max_leaf_nodes: int = 15, calibrate: bool = True, structure: str = "direct",
        free_views: bool = False, ratio_all: bool = False) -> LearnedModel:
    """Fit the trees (monotone in the size features) and the Ridge baseline on rows with `features` and `seconds`
    (and, for structure "parts", `parts`: see the module docstring).

    `calibrate` scales predictions by the factor that minimizes the out-of-fold MAPE of the training rows
    (5 folds by (family, shape) group): a log-space model predicts medians, and MAPE, which punishes
    over-prediction without bound, is lowest a little below them.
    """
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if structure not in ("direct", "parts"):
        raise ValueError(f"unknown model structure {structure!r}; expected direct or parts")
    if structure == "parts" and tokens:
        raise ValueError("structure 'parts' does not take IR-token features")
    names = feats.ALL_NAMES if tokens else feats.FEATURE_NAMES
    measured: dict[str, float] = {}  # pair -> measured seconds of its parts, views included
    for r in rows:
        if r.get("role") == "part":
            measured[r["pair"]] = measured.get(r["pair"], 0.0) + r["seconds"]
    views = [r for r in rows if is_view(r)] if free_views else []
    rows = [r for r in rows if not is_view(r)] if free_views else rows
    params = dict(max_iter=n_estimators, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes, random_state=seed,
                  monotonic_cst=[1 if n in MONOTONE else 0 for n in names])
    x = np.array([feats.vector(r["features"], names) for r in rows], dtype=np.float64)
    y = np.log(np.array([r["seconds"] for r in rows]))
    ridge = Linear.from_sklearn(make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x, y))
    view_seconds = float(np.median([r["seconds"] for r in views])) if views else (1e-7 if free_views else None)
    groups = [f"{r.get('family')}|{r.get('shape')}" for r in rows]
    factor = _fit_parallel(rows, names, params)
    if structure == "direct":
        gbr = Trees.from_sklearn(_trees(**params).fit(x, y))
        log_scale = _mape_scale(x, y, groups, params) if calibrate else 0.0
        return LearnedModel(target=target, names=names, gbr=gbr, ridge=ridge, tokens=tokens, log_scale=log_scale,
                            view_seconds=view_seconds, parallel_factor=factor)
    gbr, ratio, direct = _fit_parts(rows, names, params, view_seconds, measured, ratio_all)
    model = LearnedModel(target=target, names=names, gbr=gbr, ridge=ridge, ratio=ratio, view_seconds=view_seconds,
                         direct=direct, ratio_all=ratio_all, parallel_factor=factor)
    if calibrate:
        model.log_scale = _mape_scale_parts(rows, names, params, view_seconds, groups, measured, ratio_all)
    return model


def parallel_pairs(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(serial row, parallel row) of one kernel on one team: rows whose ids differ only in the `s`/`p` of
    collect's `<row>@t<n><s|p>`."""
    by_id = {r["id"]: r for r in rows if "@" in str(r.get("id", ""))}
    return [(by_id[i[:-1] + "s"], r) for i, r in by_id.items()
            if r.get("parallel") and i.endswith("p") and i[:-1] + "s" in by_id]


def _fit_parallel(rows: list[dict], names: tuple[str, ...], params: dict) -> Trees | None:
    """Trees on ln(parallel / serial seconds) of the `parallel_pairs` of `rows`; None below 10 pairs."""
    pairs = parallel_pairs(rows)
    if len(pairs) < 10:
        return None
    x = np.array([feats.vector(p["features"], names) for _, p in pairs], dtype=np.float64)
    y = np.log(np.array([p["seconds"] / s["seconds"] for s, p in pairs]))
    return Trees.from_sklearn(_trees(**{**params, "monotonic_cst": None}).fit(x, y))


def _single(row: dict) -> bool:
    return not (row.get("parts") and len(row["parts"]) > 1)


def _fit_parts(rows: list[dict], names: tuple[str, ...], params: dict, view_seconds: float | None,
               measured: dict[str, float], ratio_all: bool = False):
    """(trees on single-op rows, trees on ln(fused / sum of measured parts) of the pairs `uses_ratio` picks,
    trees on every row) of the "parts" structure."""
    base_rows = [r for r in rows if _single(r)]
    xb = np.array([feats.vector(r["features"], names) for r in base_rows], dtype=np.float64)
    gbr = Trees.from_sklearn(_trees(**params).fit(xb, np.log(np.array([r["seconds"] for r in base_rows]))))
    base = LearnedModel(target="", names=names, gbr=gbr, view_seconds=view_seconds)
    xr, yr = [], []
    for r in rows:
        if r.get("role") != "fused" or _single(r) or not measured.get(r["pair"]):
            continue
        if not (ratio_all or uses_ratio(r["features"])):
            continue
        total = sum(base.predict_features(p) for p in r["parts"])
        xr.append(feats.vector(ratio_features(r["features"], r["parts"], total), ratio_names(names)))
        yr.append(math.log(r["seconds"] / measured[r["pair"]]))
    if len(xr) < 10:
        raise ValueError(f"structure 'parts' needs at least 10 fused rows with measured parts, got {len(xr)}")
    ratio = Trees.from_sklearn(_trees(**{**params, "monotonic_cst": None}).fit(np.array(xr), np.array(yr)))
    if ratio_all:  # the fusion factor estimates every kernel of several ops: no direct trees
        return gbr, ratio, None
    xd = np.array([feats.vector(r["features"], names) for r in rows], dtype=np.float64)
    direct = Trees.from_sklearn(_trees(**params).fit(xd, np.log(np.array([r["seconds"] for r in rows]))))
    return gbr, ratio, direct


def uses_ratio(f: dict[str, float]) -> bool:
    """Whether the "parts" structure estimates a kernel of several ops as parts × fusion factor: it holds
    a contraction or launches more than once. A kernel of several ops in one launch (an elementwise or
    reduction chain) is estimated by the direct trees, whose time follows its own bytes and FLOPs."""
    return f.get("n_contractions", 0.0) >= 1 or f.get("launches", 1.0) >= 2


def ratio_features(f: dict[str, float], parts: list[dict[str, float]], parts_seconds: float) -> dict[str, float]:
    """The fused kernel's features plus what its parts add up to (estimated seconds, count, launches)."""
    out = dict(f)
    out["log_parts_pred"] = math.log2(max(parts_seconds, 1e-12))
    out["n_parts"] = float(len(parts))
    out["parts_launches"] = float(sum(p.get("launches", 1.0) for p in parts))
    return out


def _mape_scale_parts(rows: list[dict], names, params: dict, view_seconds, groups: list[str],
                      measured: dict[str, float], ratio_all: bool = False) -> float:
    """`_mape_scale` for the "parts" structure: both tree sets refitted per fold."""
    from sklearn.model_selection import GroupKFold

    if len(set(groups)) < 10:
        return 0.0
    pred = np.zeros(len(rows))
    idx = np.arange(len(rows))
    for tr, va in GroupKFold(n_splits=5).split(idx, idx, groups):
        gbr, ratio, direct = _fit_parts([rows[i] for i in tr], names, params, view_seconds, measured, ratio_all)
        m = LearnedModel(target="", names=names, gbr=gbr, ratio=ratio, view_seconds=view_seconds, direct=direct,
                         ratio_all=ratio_all)
        pred[va] = m.predict_rows([rows[i] for i in va])
    meas = np.array([r["seconds"] for r in rows])
    scales = np.linspace(0.7, 1.05, 36)
    errs = [np.mean(np.abs(pred * c - meas) / meas) for c in scales]
    return float(math.log(scales[int(np.argmin(errs))]))


def _trees(**params):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(min_samples_leaf=4, l2_regularization=1e-3, early_stopping=False, **params)


def _mape_scale(x: np.ndarray, y: np.ndarray, groups: list[str], params: dict) -> float:
    """ln of the factor in [0.7, 1.05] that minimizes the out-of-fold MAPE (0 when there are too few groups)."""
    from sklearn.model_selection import GroupKFold

    if len(set(groups)) < 10:
        return 0.0
    oof = np.zeros_like(y)
    for tr, va in GroupKFold(n_splits=5).split(x, y, groups):
        oof[va] = _trees(**params).fit(x[tr], y[tr]).predict(x[va])
    meas, pred = np.exp(y), np.exp(oof)
    scales = np.linspace(0.7, 1.05, 36)
    errs = [np.mean(np.abs(pred * c - meas) / meas) for c in scales]
    return float(math.log(scales[int(np.argmin(errs))]))


def adapt(source: LearnedModel, rows: list[dict], target: str) -> LearnedModel:
    """A copy of `source` with a least-squares correction ln s = w0 + w1·src + w2·ln(roofline) fitted on `rows`."""
    base = LearnedModel(target=source.target, names=source.names, gbr=source.gbr, ridge=source.ridge,
                        tokens=source.tokens, log_scale=source.log_scale, ratio=source.ratio,
                        view_seconds=source.view_seconds, direct=source.direct, ratio_all=source.ratio_all,
                        parallel_factor=source.parallel_factor)
    src = np.log(base.predict_rows(rows))
    roof = np.array([r["features"]["log_roofline"] for r in rows]) * math.log(2)
    a = np.stack([np.ones_like(src), src, roof], axis=1)
    y = np.log(np.array([r["seconds"] for r in rows]))
    w, *_ = np.linalg.lstsq(a.T @ a + 1e-3 * np.eye(3), a.T @ y, rcond=None)
    return LearnedModel(target=target, names=source.names, gbr=source.gbr, ridge=source.ridge, tokens=source.tokens,
                        adapter=tuple(float(v) for v in w), log_scale=source.log_scale, ratio=source.ratio,
                        view_seconds=source.view_seconds, direct=source.direct, ratio_all=source.ratio_all,
                        parallel_factor=source.parallel_factor, card={"adapted_from": source.target})
