"""Calibration for the `calibrate` sparse-attention policy: per layer and head, the sparsest pattern within
the error budget, measured on the user's calibration inputs; then the whole model run with that plan, and a
back-off until its end-to-end output drift is within the bound the budget sets (`SparseAttention` says what
the budget means). compiler/sparse_attention.py holds the policies, layouts and masks this chooses among; the
functions at the end put the sparse rewrite (calibrated first where asked) into a pass pipeline."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx._pytree as fx_pytree

from solder import costmodel
from solder.backends.reference import OPS, attention_reference
from solder.compiler import ir
from solder.compiler.aten_table import TABLE
from solder.compiler.capture import capture
from solder.compiler.dialects import graph as g
from solder.compiler.importer import import_program
from solder.passes.pipeline import run_pipeline
from solder.compiler.sparse_attention import (
    DYNAMIC,
    SparseAttention,
    SparseAttentionError,
    density,
    head_masks,
    is_dynamic,
    load_calibration_inputs,
    token_mask,
)
from solder.compiler.targets import get_target
from solder.passes.recognize_attention import RecognizeAttentionPass
from solder.passes.registry import parse
from solder.passes.rewrite_sparse_attention import RewriteSparseAttentionPass

DRIFT_PER_BUDGET = 0.5
"""End-to-end output drift allowed per unit of budget (see `SparseAttention`)."""
MAX_DRIFT = 1.0
"""The largest end-to-end drift any budget allows (reached at budget 2, where the per-head limit stops binding)."""
BACKOFF_STEP = 0.9
"""Each back-off step lowers the worst attention's per-head budget to this fraction of its largest head error."""
MIN_BUDGET = 1e-3
"""Below this per-head error the back-off makes the attention dense."""


def default_candidates(t: int, block: int) -> list[dict]:
    """Windows of 1, 2, 4, ... blocks (with and without one sink block), vertical-slash and top-k."""
    out, w = [], block
    while w < t:
        out += [{"pattern": "window", "window": w, "sinks": 0}, {"pattern": "window", "window": w, "sinks": block}]
        w *= 2
    for n in (1, 2, 4, 8):
        out += [{"pattern": "vertical_slash", "vertical": n, "slash": n}, {"pattern": "topk", "k": n}]
    return out


@dataclass
class AttentionSample:
    """One attention of the model seen on the calibration inputs: q/k/v stacked over the inputs."""

    op: Any
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float
    causal: bool
    masked: bool


@dataclass
class Trace:
    """One calibration input run through capture, import and recognize-attention: the imported function, its
    argument values (state, then inputs) and its dense outputs on the reference backend."""

    imported: Any
    values: list
    outputs: list


def trace(model, inputs: list) -> tuple[list[AttentionSample], list[Trace]]:
    """Run `model` through capture, import and recognize-attention on each calibration input: the q/k/v of
    every `graph.attention` (interpreted with the reference backend), in IR order, and one `Trace` per input."""


    seen: list[list] = []
    traces: list[Trace] = []
    for args in inputs:
        args = args if isinstance(args, tuple) else (args,)
        cap = capture(model, args, {}, set(TABLE))
        imported = import_program(cap.program)
        run_pipeline(imported.module, "canonicalize,cse,recognize-attention")
        flat = fx_pytree.tree_flatten_spec((args, {}), cap.program.call_spec.in_spec)
        values = _state(model, cap.program, imported) + [flat[i] for i in imported.input_positions]
        recs, outs = _interpret(imported.func, values, OPS)
        seen.append(recs)
        traces.append(Trace(imported, values, outs))
    samples = [AttentionSample(recs[0][0], *(torch.cat([r[j] for r in recs]) for j in (1, 2, 3)), *recs[0][4:])
               for recs in zip(*seen)]
    return samples, traces


def collect_attention(model, inputs: list) -> list[AttentionSample]:
    """The q/k/v of every `graph.attention` of `model` on the calibration inputs, in IR order."""
    return trace(model, inputs)[0]


def _state(model, ep, imported) -> list[torch.Tensor]:
    named = dict(model.named_parameters(remove_duplicate=False))
    named.update(dict(model.named_buffers(remove_duplicate=False)))
    out = []
    for a in imported.args:
        if a.kind == "input":
            break
        t = named.get(a.name)
        out.append((t if t is not None else ep.state_dict.get(a.name, ep.constants.get(a.name))).detach())
    return out


def _interpret(fn, values, ops) -> tuple[list, list]:
    """(attention records, returned values) of the function `fn` run op by op with the reference backend."""

    env = dict(zip(fn.body.block.args, values))
    recs = []
    with torch.no_grad():
        for op in fn.body.block.ops:
            if op.name == "func.return":
                return recs, [env[o] for o in op.operands]
            ins = [env[o] for o in op.operands]
            if isinstance(op, g.AttentionOp):
                recs.append((op, *ins[:3], op.scale.value.data, op.causal is not None, op.mask is not None))
            out = ops[op.name](op)(*ins)
            outs = out if isinstance(out, list) else [out]
            env.update(zip(op.results, outs))
    return recs, []


# ---------------------------------------------------------------------------------------------
# Per head: the error and density of each candidate pattern
# ---------------------------------------------------------------------------------------------


def pattern_error(x: AttentionSample, pattern: dict, block: int, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(error per head, density per head) of one pattern on the calibration samples.

    Error: max over samples and query rows of |o - o_dense| / rms row norm of the head's values (the
    output is a convex combination of value rows, so this is an error in units of the values' size).
    """

    n, hq, t, _ = x.q.shape
    s = x.k.shape[2]
    if pattern["pattern"] in DYNAMIC:
        m = torch.stack([head_masks([pattern], hq, t, s, block, x.scale, x.causal, x.q[i], x.k[i]) for i in range(n)])
    else:
        m = head_masks([pattern], hq, t, s, block, x.scale, x.causal)[None].expand(n, -1, -1, -1)
    m = m | torch.eye(m.shape[-2], m.shape[-1], dtype=torch.bool)
    o = attention_reference(x.q, x.k, x.v, token_mask(m, block, t, s, x.causal), x.scale, False)
    vrms = x.v.float().pow(2).sum(-1).mean((0, 2)).sqrt().clamp_min(1e-12)  # [Hkv]
    rms = vrms.repeat_interleave(hq // x.v.shape[1])
    err = (o - dense).norm(dim=-1).amax((0, 2)) / rms
    dens = torch.tensor([density(m[:, h], x.causal) for h in range(hq)])
    return err, dens


@dataclass
class CandidateTable:
    """Every candidate pattern's error and density per head of one attention, measured once: choosing
    under another budget (the back-off) is then a lookup."""

    candidates: list[dict]
    errors: torch.Tensor  # [C, H]
    densities: torch.Tensor  # [C, H]


def candidate_table(x: AttentionSample, sa: SparseAttention) -> CandidateTable:

    dense = attention_reference(x.q, x.k, x.v, None, x.scale, True)
    cands = list(sa.candidates or default_candidates(x.q.shape[2], sa.block))
    errs, dens = zip(*(pattern_error(x, c, sa.block, dense) for c in cands)) if cands else ((), ())
    h = x.q.shape[1]
    return CandidateTable(cands, torch.stack(errs) if errs else torch.zeros(0, h),
                          torch.stack(dens) if dens else torch.zeros(0, h))


def choose(table: CandidateTable, budget: float, max_density: float) -> dict:
    """Per head, the lowest-density candidate with error <= `budget` (dense when none is below
    `max_density`): {"heads", "density", "errors"}."""
    hq = table.errors.shape[1]
    best: list[tuple[float, dict, float]] = [(1.0, {"pattern": "dense"}, 0.0)] * hq
    for c, cand in enumerate(table.candidates):
        for h in range(hq):
            e, d = float(table.errors[c, h]), float(table.densities[c, h])
            if e <= budget and d < min(best[h][0], max_density):
                best[h] = (d, cand, e)
    return {"heads": [b[1] for b in best], "density": round(sum(b[0] for b in best) / hq, 4),
            "errors": [round(b[2], 4) for b in best]}


def calibrate_attention(x: AttentionSample, sa: SparseAttention, target=None, budget: float | None = None,
                        table: CandidateTable | None = None) -> dict:
    """The plan entry of one attention: per-head patterns, density, errors, or dense with a reason.
    `budget` overrides `sa.budget` (the back-off lowers it per attention); `table` reuses measured errors."""
    if x.masked or not x.causal:
        return {"dense": True, "reason": "explicit mask operand" if x.masked else "not causal"}
    table = table or candidate_table(x, sa)
    entry = choose(table, sa.budget if budget is None else budget, sa.max_density)
    entry["block"] = sa.block
    if entry["density"] > sa.max_density:
        return {"dense": True, "reason": f"density {entry['density']:.2f} > max-density {sa.max_density}: dense is "
                                         "faster", "heads": entry["heads"]}
    return _cost_check(entry, x, target)


def _cost_check(entry: dict, x: AttentionSample, target) -> dict:
    """Stay dense unless the cost model's dense time, scaled by density (+ the per-call layout work of
    content-dependent heads), comes out lower than dense."""

    tgt = get_target(target or "cpu")
    dense_s = costmodel.estimate(x.op, tgt)
    n, h, t, d = x.q.shape
    layout_flops = 4.0 * h * min(entry["block"], t) * x.k.shape[2] * d if is_dynamic(entry["heads"]) else 0.0
    sparse_s = dense_s * entry["density"] + layout_flops / tgt.flops("float32") + tgt.launch_overhead
    entry.update(dense_s=dense_s, sparse_s=sparse_s)
    if entry["density"] >= 0.999 or sparse_s >= dense_s:
        return {"dense": True, "reason": f"cost model: sparse {sparse_s * 1e6:.1f} us >= dense {dense_s * 1e6:.1f} us "
                                         f"at density {entry['density']:.2f}", "heads": entry["heads"]}
    return entry


# ---------------------------------------------------------------------------------------------
# End to end: the model's output drift under a plan, and the back-off that bounds it
# ---------------------------------------------------------------------------------------------


def drift_bound(budget: float) -> float:
    """The largest end-to-end output drift `calibrate` accepts for `budget`: DRIFT_PER_BUDGET * budget,
    at most MAX_DRIFT, i.e. min(budget, 2) / 2 (see `SparseAttention`)."""
    return min(DRIFT_PER_BUDGET * budget, MAX_DRIFT)


def output_drift(dense: list, sparse: list) -> float:
    """The worst row's change of the model's outputs, in units of their rms row norm: max over outputs and
    rows (the last dim is a row) of |y - y_dense| / sqrt(mean over rows of |y_dense|^2); inf when either side
    has a NaN or inf (integer and empty outputs are skipped)."""
    worst = 0.0
    for a, b in zip(dense, sparse):
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            continue
        if a.numel() == 0:
            continue
        width = a.shape[-1] if a.dim() else 1
        a2, b2 = a.detach().float().reshape(-1, width), b.detach().float().reshape(-1, width)
        rms = a2.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12)
        d = float((b2 - a2).norm(dim=-1).max() / rms)
        if not math.isfinite(d):  # a NaN or inf anywhere: no bound holds
            return math.inf
        worst = max(worst, d)
    return worst


def plan_outputs(tr: Trace, plan: list[dict], block: int, max_density: float) -> list:
    """The model's outputs on one calibration input with `plan` applied by rewrite-sparse-attention (the
    same pass and reference kernels as a compiled model's, on a copy of the traced function)."""

    module = tr.imported.module.clone()
    RewriteSparseAttentionPass(policy="calibrate", plan=json.dumps(plan), block=block,
                               max_density=max_density).apply(ir.context(), module)
    fn = next(op for op in module.ops if op.name == "func.func")
    return _interpret(fn, tr.values, OPS)[1]


def end_to_end_drift(traces: list[Trace], plan: list[dict], sa: SparseAttention) -> float:
    """`output_drift` of the model under `plan` against dense, worst over the calibration inputs."""
    if all(e.get("dense") for e in plan):
        return 0.0
    return max(output_drift(tr.outputs, plan_outputs(tr, plan, sa.block, sa.max_density)) for tr in traces)


def calibrate(model, sa: SparseAttention, target=None, backoff: bool = True) -> list[dict]:
    """Measure, per attention and head, the pattern to use on `sa.calibration_inputs`; then check the model's
    end-to-end output drift under that plan and back off until it is within `drift_bound(sa.budget)`.

    Back-off, one step at a time while the drift is over the bound: the attention whose densifying alone
    lowers the drift most (one model run per sparse attention) gets its per-head budget lowered to
    `BACKOFF_STEP` times its largest chosen head error, so its worst heads move to denser patterns (or
    dense); an attention whose heads already err by at most `MIN_BUDGET` becomes dense. All attentions dense
    is exactly the dense model, so the loop ends. Sets and returns `sa.plan`, and `sa.calibration` (the drift
    before and after, the bound, the steps). `backoff=False` stops after the per-head choice (measurements).
    """
    samples, traces = trace(model, list(sa.calibration_inputs or []))
    tables = [candidate_table(x, sa) if x.causal and not x.masked else None for x in samples]
    budgets = [float(sa.budget)] * len(samples)
    plan = [calibrate_attention(x, sa, target, table=tb) for x, tb in zip(samples, tables)]
    bound = drift_bound(sa.budget)
    drift = first = end_to_end_drift(traces, plan, sa)
    steps: list[str] = []
    while backoff and drift > bound:
        sparse = [i for i, e in enumerate(plan) if not e.get("dense")]
        if len(sparse) > 1:  # the attention whose densifying lowers the drift most
            alone = {i: end_to_end_drift(traces, plan[:i] + [{"dense": True}] + plan[i + 1:], sa) for i in sparse}
            worst = min(sparse, key=lambda i: (alone[i], -i))
        else:
            worst = sparse[0]
        top = max(plan[worst]["errors"])
        if top > MIN_BUDGET:
            budgets[worst] = min(budgets[worst], top) * BACKOFF_STEP
            plan[worst] = calibrate_attention(samples[worst], sa, target, budget=budgets[worst], table=tables[worst])
        else:
            budgets[worst] = 0.0
            plan[worst] = {"dense": True, "heads": plan[worst]["heads"]}
        drift = end_to_end_drift(traces, plan, sa)
        steps.append(f"attention {worst}: per-head budget -> {budgets[worst]:.3g}, drift {drift:.3g}")
    for i, e in enumerate(plan):
        if e.get("dense") and budgets[i] < sa.budget:
            e["reason"] = (f"back-off: per-head budget {sa.budget:g} -> {budgets[i]:.3g} left no sparse pattern "
                           "(end-to-end drift)")
        e["calibration"] = _note(e, budgets[i], sa.budget, first, drift, bound, len(steps))
    sa.plan = plan
    sa.calibration = {"drift": drift, "bound": bound, "drift_before_backoff": first, "steps": steps,
                      "budgets": budgets}
    return plan


def _note(entry: dict, budget: float, asked: float, first: float, drift: float, bound: float, n: int) -> str:
    """explain()'s text for one attention: the model's end-to-end drift, and what the back-off did here."""
    where = f"end-to-end output drift {drift:.3g} {'<=' if drift <= bound else '>'} bound {bound:.3g}"
    if not n:
        return f"calibrate: {where}, no back-off"
    mine = (f"this attention's per-head budget {asked:g} -> {budget:.3g}" if budget < asked
            else "this attention unchanged")
    return f"calibrate: {where} after back-off ({n} step(s) from drift {first:.3g}; {mine})"


def save_plan(sa: SparseAttention, path: str) -> None:
    """Write `sa.plan` as JSON, for `solder-opt -p 'rewrite-sparse-attention{policy=calibrate plan=FILE}'`."""
    with open(path, "w") as f:
        json.dump(sa.plan, f, indent=1)


# ---------------------------------------------------------------------------------------------
# Wiring the sparse rewrite into a pipeline (calibrating first where the policy asks for it)
# ---------------------------------------------------------------------------------------------


def calibrate_pipeline(passes: list, model, example_args: tuple | None, target=None) -> list:
    """`passes` with each `rewrite-sparse-attention{policy=calibrate}` that has no plan calibrated on `model`
    (the CLI's `--from-torch` model): on the inputs of its `calib=` file, else on `example_args`."""


    out = []
    for p in passes:
        if not (isinstance(p, RewriteSparseAttentionPass) and p.policy == "calibrate" and not p.plan):
            out.append(p)
            continue
        if p.calib:
            inputs = load_calibration_inputs(p.calib)
        elif example_args is not None:
            inputs = [tuple(example_args)]
        else:
            raise SparseAttentionError("rewrite-sparse-attention{policy=calibrate}: no calibration inputs; give "
                                       "calib=\"inputs.pt\"")
        sa = SparseAttention(policy="calibrate", budget=p.budget, block=p.block, max_density=p.max_density,
                             calibration_inputs=inputs)
        calibrate(model, sa, target)
        out.append(dataclasses.replace(p, plan=json.dumps(sa.plan), source=sa))
    return out


def with_sparse_attention(pipeline, sa: SparseAttention, model=None, target=None) -> list:
    """`pipeline` (a string or a list of passes) with the sparse rewrite inserted where it belongs: right
    after its recognize-attention, else recognize-attention + the rewrite before the first fuse-* pass
    (fusion must see graph.block_sparse_attention, not graph.attention), else at the end."""

    passes = parse(pipeline) if isinstance(pipeline, str) else list(pipeline)
    recog, rewrite = pipeline_passes(sa, model, target)
    names = [p.name for p in passes]
    if "recognize-attention" in names:
        at = len(names) - names[::-1].index("recognize-attention")
        return passes[:at] + [rewrite] + passes[at:]
    at = next((i for i, n in enumerate(names) if n.startswith("fuse-")), len(passes))
    return passes[:at] + [recog, rewrite] + passes[at:]


def pipeline_passes(sa: SparseAttention, model=None, target=None) -> list:
    """[recognize-attention, rewrite-sparse-attention] configured from `sa`; calibrates `sa` on `model`
    first when its policy is `calibrate` and no plan exists yet."""

    if sa.policy == "calibrate" and sa.plan is None:
        if model is None:
            raise SparseAttentionError("sparse attention: policy 'calibrate' needs the model to calibrate on")
        calibrate(model, sa, target)
    return [RecognizeAttentionPass(), RewriteSparseAttentionPass.from_options(sa)]
