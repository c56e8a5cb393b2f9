"""Calibration for the `calibrate` sparse-attention policy: per layer and head, the sparsest pattern within
the error budget, measured on the user's calibration inputs (compiler/sparse_attention.py holds the policies,
layouts and masks this chooses among)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from compiler.sparse_attention import (
    DYNAMIC,
    SparseAttention,
    density,
    head_masks,
    is_dynamic,
    token_mask,
)


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


def collect_attention(model, inputs: list) -> list[AttentionSample]:
    """Run `model` through capture, import and recognize-attention on each calibration input and record
    the q/k/v of every `graph.attention` (interpreted with the reference backend), in IR order."""
    import torch.fx._pytree as fx_pytree

    from backends.reference import OPS, attention_reference  # noqa: F401  (registers the op table)
    from compiler.aten_table import TABLE
    from compiler.capture import capture
    from compiler.importer import import_program
    from compiler.pipeline import run_pipeline

    seen: list[list] = []
    for args in inputs:
        args = args if isinstance(args, tuple) else (args,)
        cap = capture(model, args, {}, set(TABLE))
        imported = import_program(cap.program)
        run_pipeline(imported.module, "canonicalize,cse,recognize-attention")
        flat = fx_pytree.tree_flatten_spec((args, {}), cap.program.call_spec.in_spec)
        values = _state(model, cap.program, imported) + [flat[i] for i in imported.input_positions]
        seen.append(_interpret(imported, values, OPS))
    return [AttentionSample(recs[0][0], *(torch.cat([r[j] for r in recs]) for j in (1, 2, 3)), *recs[0][4:])
            for recs in zip(*seen)]


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


def _interpret(imported, values, ops) -> list:
    from compiler.dialects import graph as g

    env = dict(zip(imported.func.body.block.args, values))
    recs = []
    with torch.no_grad():
        for op in imported.func.body.block.ops:
            if op.name == "func.return":
                break
            ins = [env[o] for o in op.operands]
            if isinstance(op, g.AttentionOp):
                recs.append((op, *ins[:3], op.scale.value.data, op.causal is not None, op.mask is not None))
            out = ops[op.name](op)(*ins)
            outs = out if isinstance(out, list) else [out]
            env.update(zip(op.results, outs))
    return recs




def pattern_error(x: AttentionSample, pattern: dict, block: int, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(error per head, density per head) of one pattern on the calibration samples.

    Error: max over samples and query rows of |o - o_dense| / rms row norm of the head's values (the
    output is a convex combination of value rows, so this is an error in units of the values' size).
    """
    from backends.reference import attention_reference

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


def calibrate_attention(x: AttentionSample, sa: SparseAttention, target=None) -> dict:
    """The plan entry of one attention: per-head patterns, density, errors, or dense with a reason."""
    from backends.reference import attention_reference

    if x.masked or not x.causal:
        return {"dense": True, "reason": "explicit mask operand" if x.masked else "not causal"}
    t = x.q.shape[2]
    dense = attention_reference(x.q, x.k, x.v, None, x.scale, True)
    hq = x.q.shape[1]
    best: list[tuple[float, dict, float]] = [(1.0, {"pattern": "dense"}, 0.0)] * hq
    for cand in sa.candidates or default_candidates(t, sa.block):
        err, dens = pattern_error(x, cand, sa.block, dense)
        for h in range(hq):
            if err[h] <= sa.budget and dens[h] < min(best[h][0], sa.max_density):
                best[h] = (float(dens[h]), cand, float(err[h]))
    d = sum(b[0] for b in best) / hq
    entry = {"heads": [b[1] for b in best], "density": round(d, 4), "errors": [round(b[2], 4) for b in best],
             "block": sa.block}
    return _cost_check(entry, x, target)


def _cost_check(entry: dict, x: AttentionSample, target) -> dict:
    """Stay dense unless the cost model's dense time, scaled by density (+ the per-call layout work of
    content-dependent heads), comes out lower than dense."""
    import costmodel
    from compiler.targets import get_target

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


def calibrate(model, sa: SparseAttention, target=None) -> list[dict]:
    """Measure, per attention and head, the pattern to use on `sa.calibration_inputs`; sets `sa.plan`."""
    samples = collect_attention(model, list(sa.calibration_inputs or []))
    sa.plan = [calibrate_attention(x, sa, target) for x in samples]
    return sa.plan


def save_plan(sa: SparseAttention, path: str) -> None:
    """Write `sa.plan` as JSON, for `solder-opt -p 'rewrite-sparse-attention{policy=calibrate plan=FILE}'`."""
    with open(path, "w") as f:
        json.dump(sa.plan, f, indent=1)
