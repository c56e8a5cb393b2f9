"""One corpus sample through solder: compile, compare with eager, classify, and record what ran where.

`check(sample, target)` is the correctness half of the corpus benchmark, also used in-process by the
CI subset (tests/test_corpus_subset.py); `benchmarks.corpus_worker` adds timing and peers around it.

Classification: `correct` (outputs match eager, every op compiled), `fallback` (outputs match, but
solder ran some ops or the whole model eagerly: an EagerFallbackWarning / UnsupportedOpWarning, a
`graph.extern`, or an op the backend left to the reference backend), `wrong` (an output differs beyond
atol/rtol, or its shape/dtype differs, and solder is less accurate than eager against a float64 run of
the same model: see `arbitrate`), `crash` (an exception out of `solder.compile` or the compiled
call). Integer and bool outputs must be equal.

Op coverage: the ATen ops of the graph solder imported (after capture's decompositions; ops capture
decomposed are listed as such) are counted per node, and each is given the route of the graph op it
became. ATen nodes are not tracked through fusion: the importer's table entries are wrapped here to
record which graph op each ATen node produced, and that graph op's name is looked up among the backend's
steps of the same sample (the most frequent route of that op name). A name routed several ways in one
sample is attributed by that majority, so the per-op split is an approximation; the eager count of an
op that became `graph.extern` is exact.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from collections import Counter, defaultdict
from contextlib import contextmanager

import torch
import torch.utils._pytree as pytree

from benchmarks.corpus_load import REPO

GRAPHNET_T = range(-10, 5)  # GraphNet's tolerance levels t
"""GraphNet's float32 tolerance at level t: atol = 10**t, rtol = 10**(t * 5.886 / 5) (its dtype table)."""
_RTOL_EXP = {torch.float16: 3 / 5, torch.bfloat16: 1.796 / 5, torch.float32: 5.886 / 5, torch.float64: 7 / 5}


def tolerance(target: str) -> tuple[float, float]:
    """(atol, rtol) for fp32 outputs: 1e-4 on the CPU; 1e-3 on the GPU, where matmuls may use TF32."""
    return (1e-4, 1e-4) if target == "cpu" else (1e-3, 1e-3)


LOW_PRECISION = {torch.float16: 1e-3, torch.bfloat16: 1e-2}
"""The least atol = rtol a 16-bit output is held to: about one unit in the last place of a value near 1
(float16 keeps 11 significant bits, bfloat16 8); the fp32 tolerance would call rounding a wrong result."""


# ---- comparing outputs --------------------------------------------------------------------------
def compare(got, want, atol: float, rtol: float) -> list[dict]:
    """One dict per output leaf of `want`: dtype, shape, max abs/rel error, `ok`, and `tmin`, the smallest
    GraphNet tolerance level at which it passes (None: at none; integer outputs pass at every level
    when equal)."""
    g_leaves, w_leaves = pytree.tree_leaves(got), pytree.tree_leaves(want)
    if len(g_leaves) != len(w_leaves):
        return [{"ok": False, "why": f"{len(g_leaves)} outputs, eager has {len(w_leaves)}", "tmin": None}]
    return [_compare_leaf(a, b, atol, rtol) for a, b in zip(g_leaves, w_leaves)]


def _compare_leaf(a, b, atol: float, rtol: float) -> dict:
    if not isinstance(b, torch.Tensor):
        same = a == b if not isinstance(a, torch.Tensor) else False
        return {"dtype": type(b).__name__, "ok": bool(same), "tmin": GRAPHNET_T[0] if same else None}
    row = {"dtype": str(b.dtype).removeprefix("torch."), "shape": list(b.shape)}
    if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
        got = f"{type(a).__name__}" if not isinstance(a, torch.Tensor) else f"{list(a.shape)} {a.dtype}"
        return {**row, "ok": False, "why": f"got {got}", "tmin": None}
    if not b.is_floating_point() and not b.is_complex():
        same = bool(torch.equal(a, b))
        bad = (a != b).sum().item() if not same else 0
        return {**row, "ok": same, "mismatched": bad, "tmin": GRAPHNET_T[0] if same else None}
    x, y = a.detach().double(), b.detach().double()
    both_nan = torch.isnan(x) & torch.isnan(y)
    err = torch.where(both_nan, torch.zeros_like(x), (x - y).abs())
    err = torch.nan_to_num(err, nan=math.inf)
    ref = y.abs().nan_to_num(nan=0.0)
    row["max_abs"] = _num(err.max().item()) if err.numel() else 0.0
    row["max_rel"] = _num((err / ref.clamp_min(1e-12)).max().item()) if err.numel() else 0.0
    low = LOW_PRECISION.get(b.dtype, 0.0)
    row["ok"] = bool((err <= max(atol, low) + max(rtol, low) * ref).all())
    exp = _RTOL_EXP.get(b.dtype, 5.886 / 5)
    row["tmin"] = next((t for t in GRAPHNET_T if bool((err <= 10.0 ** t + 10.0 ** (t * exp) * ref).all())), None)
    return row


def _num(v: float):
    return v if math.isfinite(v) else str(v)


FP64_SLACK = 2.0
"""How much larger than eager's own error (both against float64) solder's may be and still count as
rounding: another summation order (a blocked reduction, another convolution algorithm) can double it."""


def arbitrate(sample, target: str, got, want) -> dict:
    """Where solder and eager differ beyond tolerance: which is nearer the exact answer? Runs a float64
    copy of the model on float64 copies of the inputs and compares each float output's max abs error,
    solder's and eager's. `as_accurate`: solder's is at most FP64_SLACK x eager's on every output (then
    eager's own rounding is what the tolerance caught, not a wrong answer)."""
    import copy

    def f64(x):
        return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    try:
        model = copy.deepcopy(sample.model).double()
        args, kwargs = pytree.tree_map(f64, sample.args), pytree.tree_map(f64, sample.kwargs)
        with torch.no_grad():
            try:
                ref = _call(model, type(sample)(sample.name, model, args, kwargs, sample.sizes), target)
            except RuntimeError:  # the graph builds 16/32-bit tensors of its own: widen every op's floats
                with _Float64Everywhere():
                    ref = _call(model, type(sample)(sample.name, model, args, kwargs, sample.sizes), target)
        del model
    except Exception as e:  # noqa: BLE001 - no float64 run: the eager comparison stands
        return {"as_accurate": False, "error": _error(e)["error"]}
    rows = []
    for g, w, r in zip(pytree.tree_leaves(got), pytree.tree_leaves(want), pytree.tree_leaves(ref)):
        if not (isinstance(w, torch.Tensor) and w.is_floating_point()):
            continue
        if not (isinstance(g, torch.Tensor) and g.shape == w.shape == r.shape):
            return {"as_accurate": False, "why": "output shapes differ"}
        r = r.double()
        es, ee = (g.double() - r).abs().max().item(), (w.double() - r).abs().max().item()
        rows.append({"solder_err": _num(es), "eager_err": _num(ee)})
    ok = bool(rows) and all(isinstance(x["solder_err"], float) and x["solder_err"] <= FP64_SLACK * x["eager_err"]
                            for x in rows)
    return {"as_accurate": ok, "outputs": rows}


class _Float64Everywhere(torch.overrides.TorchFunctionMode):
    """Runs every torch call with its floating tensors, and any floating `dtype` it asks for, as float64:
    a graph's own float16 masks and casts then stay exact too."""

    _WIDE = {torch.float16, torch.bfloat16, torch.float32}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        def wide(x):
            if isinstance(x, torch.Tensor) and x.dtype in self._WIDE:
                return x.double()
            if isinstance(x, torch.dtype) and x in self._WIDE:
                return torch.float64
            return x
        return func(*pytree.tree_map(wide, args), **pytree.tree_map(wide, kwargs or {}))


# ---- op coverage ----------------------------------------------------------------------------------
class OpTrace:
    """While active, records the ATen ops solder imports (per node) and the graph op each one became."""

    def __init__(self):
        self.aten: Counter = Counter()
        self.became: dict[str, Counter] = defaultdict(Counter)  # aten op -> graph op names it produced

    @contextmanager
    def active(self):
        from solder import runtime
        from solder.compiler.aten_table import TABLE

        real = runtime.import_program

        def traced(ep, table=None, *args, **kwargs):
            self._count(ep)
            return real(ep, {k: self._wrap(k, v) for k, v in (table or TABLE).items()}, *args, **kwargs)

        runtime.import_program = traced
        try:
            yield self
        finally:
            runtime.import_program = real

    def _count(self, ep) -> None:
        for node in ep.graph.nodes:
            if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
                self.aten[str(node.target)] += 1

    def _wrap(self, name: str, entry):
        def wrapped(ctx, *args, **kwargs):
            before = ctx.block.last_op
            out = entry(ctx, *args, **kwargs)
            op = ctx.block.last_op
            if op is not None and op is not before:
                self.became[name][op.name.removeprefix("graph.")] += 1
            return out

        return wrapped


def route_kind(route: str) -> str:
    """A backend step's route as one of generated / library / eager / view."""
    if route.startswith("library") or "torch" in route or "sdpa" in route.lower():
        return "library"
    if route in ("reference", "eager"):
        return "eager"
    if route == "view":
        return "view"
    return "generated"


def op_routes(trace: OpTrace, compiled) -> dict[str, dict]:
    """{aten op: {count, generated, library, eager, view, decomposed}} for one compiled sample (a sample
    that crashed after import has its nodes counted as `unrun`)."""
    steps: dict[str, Counter] = defaultdict(Counter)
    externs, decomposed = set(), set()
    for sp in compiled.specializations.values():
        externs.update(sp.imported.externs)
        decomposed.update(sp.decomposed)
        for k in sp.program.kernels:
            ops = k.get("ops", [])
            for o in ([ops] if isinstance(ops, str) else ops):
                steps[o][route_kind(k.get("route") or k.get("kind", ""))] += 1
    table: dict[str, dict] = {}
    for op, n in trace.aten.items():
        row = table.setdefault(op, Counter())
        row["count"] += n
        if op in externs:
            row["eager"] += n
            continue
        produced = trace.became.get(op)
        if not produced:  # no table entry ran (sizes, asserts) or it produced no op (an identity)
            row["view"] += n
            continue
        main = produced.most_common(1)[0][0]
        kinds = steps.get(main)
        row[kinds.most_common(1)[0][0] if kinds else "view"] += n
    for op in decomposed:
        table.setdefault(op, Counter())["decomposed"] += 1
    return {k: dict(v) for k, v in table.items()}


# ---- one sample -------------------------------------------------------------------------------
def _call(fn, sample, target: str):
    out = fn(*sample.args, **sample.kwargs)
    if target != "cpu":
        torch.cuda.synchronize()
    return out


_SOLDER_DIRS = tuple(str(REPO / d) + "/" for d in ("compiler", "passes", "backends", "costmodel", "solder"))


def _rel(path: str) -> str:
    return path.removeprefix(str(REPO) + "/")


def _error(e: BaseException) -> dict:
    """The exception as a one-line message plus the innermost solder frame (where it was raised)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(_SOLDER_DIRS)]
    where = f"{_rel(frames[-1].filename)}:{frames[-1].lineno} {frames[-1].name}" if frames else ""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    msg = " ".join(lines[:2] if lines and lines[0].endswith(":") else lines[:1])[:300]  # "...: <the cause>"
    return {"error": f"{type(e).__name__}: {msg}", "error_type": type(e).__name__, "where": where}


def check(sample, target: str = "cpu", atol: float | None = None, rtol: float | None = None) -> tuple[dict, object]:
    """Run eager and solder on `sample`; returns (result dict, the compiled callable or None)."""
    from solder import compile as solder_compile
    from solder.compiler.importer import UnsupportedOpWarning
    from solder.runtime import EagerFallbackWarning

    d_atol, d_rtol = tolerance(target)
    atol, rtol = atol if atol is not None else d_atol, rtol if rtol is not None else d_rtol
    res: dict = {"name": sample.name, "sizes": sample.sizes, "atol": atol, "rtol": rtol}
    with torch.no_grad():
        t0 = time.perf_counter()
        try:
            want = _call(sample.model, sample, target)
        except Exception as e:  # noqa: BLE001 - the sample does not run eagerly (out of memory, ...)
            res.update(status="eager_error", phase="eager", **_error(e))
            return res, None
        res["eager_first_s"] = time.perf_counter() - t0
        trace = OpTrace()
        with warnings.catch_warnings(record=True) as caught, trace.active():
            warnings.simplefilter("always")
            try:
                compiled = solder_compile(sample.model, target=target)
                t0 = time.perf_counter()
                got = _call(compiled, sample, target)
                res["solder_first_call_s"] = time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001 - any exception out of solder is the finding
                res.update(status="crash", phase="solder", **_error(e))
                res["ops"] = {op: {"count": n, "unrun": n} for op, n in trace.aten.items()}
                return res, None
    fell = [f"{w.category.__name__}: {str(w.message)[:200]}" for w in caught
            if issubclass(w.category, (EagerFallbackWarning, UnsupportedOpWarning))]
    res["outputs"] = compare(got, want, atol, rtol)
    res["ops"] = op_routes(trace, compiled)
    res["eager_ops"] = sorted({op for sp in compiled.specializations.values()
                               for op in [*sp.imported.externs, *sp.program.fallbacks]
                               if op != "graph.extern"})
    res["fallback_warnings"] = fell
    if compiled.specializations:
        res["solder_compile_breakdown_s"] = next(iter(compiled.specializations.values())).seconds
    ok = all(o["ok"] for o in res["outputs"])
    if not ok:
        res["float64"] = arbitrate(sample, target, got, want)
        ok = res["float64"].get("as_accurate", False)
    res["status"] = "wrong" if not ok else "fallback" if fell or res["eager_ops"] or not compiled.specializations \
        else "correct"
    tmins = [o["tmin"] for o in res["outputs"]]
    res["tmin"] = None if any(t is None for t in tmins) else max(tmins, default=GRAPHNET_T[0])
    return res, compiled
