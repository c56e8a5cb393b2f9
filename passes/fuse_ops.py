"""`fuse-ops`: operator fusion into `graph.kernel` regions, planned with the cost model.

    fuse-ops{max-ops=32 mode=cost target=cpu}

Vertical fusion of producer→consumer chains of elementwise ops and row reductions (bias-GELU,
residual-add-layer-norm, softmax with its scale and mask, RMSNorm written out as pow/mean/add/rsqrt/mul),
horizontal fusion of siblings that read the same input (multi-output reductions, the epilogues of
Q/K/V slices), and epilogue fusion into matmul/linear/attention (the anchor plus the elementwise and
layout ops after it). Layout ops (reshape, permute, expand, slice, concat) join the groups they feed or
consume. `graph.extern`, gathers, pooling and convolutions stay outside (fuse-blocks takes conv).

    %k:2 = "graph.kernel"(%x, %b) ({
    ^bb0(%a: tensor<8x64xf32>, %c: tensor<64xf32>):
      %0 = graph.add %a, %c ...
      %1 = graph.gelu %0 ...
      graph.yield %1 : tensor<8x64xf32>
    }) {kernel_id = 0 : i64, reason = "vertical: bias-gelu", est_seconds = ..., est_parts_seconds = ...}

mode: `cost` fuses a candidate only when the cost model says it saves time, `always` fuses every
legal candidate, `never` puts every op in a kernel of its own (one launch per op, for comparison).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import FloatAttr, ModuleOp, f64
from xdsl.ir import Block, Operation
from xdsl.passes import ModulePass

from solder.compiler import log
from solder.compiler.dialects import graph as g
from solder.compiler.dialects.traits import Activation, Anchor, Layout, Reduction
from solder.compiler.errors import PipelineError
from solder.compiler.targets import Target, get_target
from solder.passes import fusion_rules
from solder.passes.fusion_build import (
    FusionCycleError,
    flatten_kernels,
    kernel_attrs,
    materialize,
)
from solder.passes.fusion_plan import (
    BodyGraph,
    CostOracle,
    Group,
    Planner,
    Verdict,
    itemsize,
    reduction_sig,
    short,
)

_log = log.get("fusion")

FUSIBLE_KINDS = ("elementwise", "layout", "reduction", "anchor")
ANCHOR_TILE_ROWS = 16
"""Rows of a matmul tile that must hold a whole reduced row when a reduction joins its epilogue."""
MODES = ("always", "never", "cost")


@dataclass(frozen=True)
class FuseOpsPass(ModulePass):
    """Fuses elementwise chains, row reductions, siblings and matmul/attention epilogues into kernels."""

    name = "fuse-ops"

    max_ops: int = 32
    mode: str = "cost"
    target: str = ""  # empty: the pipeline's target, else cpu
    cost_model: str = ""  # empty: the target's learned model (roofline if none); "roofline"; or a model path
    horizontal: bool = True
    recompute: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.mode not in MODES:
            raise PipelineError(f"fuse-ops: mode={self.mode!r}; expected one of {', '.join(MODES)}")
        if self.max_ops < 1:
            raise PipelineError(f"fuse-ops: max-ops={self.max_ops}; expected a positive number of ops")
        target = get_target(self.target or "cpu")
        next_id = 0
        for f in [o for o in op.walk() if isinstance(o, func.FuncOp)]:
            next_id = fuse_ops_in(f.body.block, target, self, next_id)


def fuse_ops_in(block: Block, target: Target, opts: FuseOpsPass, first_id: int = 0) -> int:
    """Plan and build the kernels of one function body; returns the next free kernel id."""
    flatten_kernels(block)
    try:
        return _plan_and_build(block, target, opts, first_id, attach_layout=True)
    except FusionCycleError as e:  # a planner bug; never fail the compile over it
        _log.warning("%s; planning again without attaching layout ops to kernels", e)
    try:
        return _plan_and_build(block, target, opts, first_id, attach_layout=False)
    except FusionCycleError as e:
        _log.warning("%s; leaving this function unfused", e)
    return _plan_and_build(block, target, dataclasses.replace(opts, mode="never"), first_id, attach_layout=False)


def _plan_and_build(block: Block, target: Target, opts: FuseOpsPass, first_id: int, attach_layout: bool) -> int:
    graph = BodyGraph(block)
    est = CostOracle(graph, target, opts.cost_model or None)
    groups = [Group(i, {i}) for i, kind in enumerate(graph.kinds) if kind in FUSIBLE_KINDS]
    planner = Planner(graph, groups, est, lambda a, b, ops: with_backend(op_rule(ops, target), ops), mode=opts.mode,
                      max_ops=opts.max_ops, horizontal=opts.horizontal, log=_log)
    if attach_layout:
        planner.attach_layout()
    planner.run()
    planner.undo_losers()
    if opts.recompute:
        planner.recompute(lambda n: graph.kinds[n] in ("elementwise", "layout"))
    plan = planner.result()
    attrs = []
    for i, gr in enumerate(plan):
        reason = describe(graph, gr) + (f" (mode={opts.mode})" if opts.mode == "never" else "")
        if gr.notes and not gr.merged:
            reason += "; " + planner.note(gr)
        nodes = gr.nodes | set(gr.dups)
        attrs.append(kernel_attrs(first_id + i, reason, est(gr.nodes), est.parts(nodes)))
    kernels = materialize(graph, plan, attrs)
    refresh_estimates(kernels, plan, target, opts.cost_model or None)
    _log.info("fuse-ops: %d ops -> %d kernels (%d merges, %d cost-model calls)", len(graph.ops), len(kernels),
              planner.merges, est.calls)
    return first_id + len(plan)


def refresh_estimates(kernels: list[Operation], plan: list[Group], target: Target, model=None) -> None:
    """Kernels holding recomputed copies get their fused estimate from the built region."""
    if not any(gr.dups for gr in plan):
        return
    from solder import costmodel

    for k, gr in zip(sorted(kernels, key=lambda k: k.attributes["kernel_id"].value.data), plan):
        if gr.dups:
            k.attributes["est_seconds"] = FloatAttr(costmodel.estimate(k, target, model), f64)


# ---------------------------------------------------------------------------------------------
# Legality of one candidate group
# ---------------------------------------------------------------------------------------------


def op_rule(ops: list[Operation], target: Target, max_anchors: int = 1, prologues: bool = False) -> Verdict:
    """Whether `ops` can be one kernel: anchors first and few, reductions over one row shape that fits.

    `prologues` lets computed ops feed an anchor (block kernels: GEMM -> activation -> GEMM).
    """
    anchors = [o for o in ops if _is_anchor(o)]
    if len(anchors) > max_anchors:
        return Verdict(False, f"{len(anchors)} matmul/attention/conv anchors (at most {max_anchors}; fuse-blocks joins them)")
    members = set(ops)
    for a in anchors:
        if not prologues and _computed_prologue(a, members):
            return Verdict(False, f"computed ops before {short(a)} (only layout prologues fuse into an anchor)")
    reductions = [o for o in ops if o.has_trait(Reduction)]
    if not reductions:
        return Verdict(True)
    sigs = {reduction_sig(o) for o in reductions}
    if len(sigs) > 1:
        return Verdict(False, "reductions over different row shapes")
    (sig,) = sigs
    if sig[1] < 0:
        return Verdict(False, f"{short(reductions[0])} over non-contiguous dims")
    row = sig[1] * max(itemsize(o) for o in reductions) * (ANCHOR_TILE_ROWS if anchors else 1)
    if row > target.shared_mem_per_block:
        return Verdict(False, f"a row tile of {row} B exceeds {target.name}'s {target.shared_mem_per_block} B on-chip memory")
    return Verdict(True)


def with_backend(verdict: Verdict, ops: list[Operation]) -> Verdict:
    """`verdict`, unless the target's backend says it cannot emit `ops` as one launch (fusion_rules.py)."""
    if not verdict.ok:
        return verdict
    why = fusion_rules.ask(ops)
    return verdict if why is None else Verdict(False, why)


def _is_anchor(op: Operation) -> bool:
    """An op a kernel is built around: a contraction that takes epilogues, or a convolution."""
    return op.has_trait(Anchor) or isinstance(op, g.ConvOp)


def _computed_prologue(anchor: Operation, members: set[Operation]) -> bool:
    """Whether a non-layout member of the group feeds `anchor` (directly or through layout ops)."""
    stack = [v.owner for v in anchor.operands if v.owner in members]
    while stack:
        op = stack.pop()
        if not op.has_trait(Layout):
            return True
        stack.extend(v.owner for v in op.operands if v.owner in members)
    return False


# ---------------------------------------------------------------------------------------------
# Why a kernel is what it is
# ---------------------------------------------------------------------------------------------


def describe(graph: BodyGraph, gr: Group) -> str:
    """A short reason: `single: gelu`, `epilogue: linear+gelu`, `vertical: softmax+scale+mask`,
    `horizontal: reduce+reduce`, `block: mlp`."""
    nodes = sorted(gr.nodes | set(gr.dups))
    ops = [graph.ops[i] for i in nodes]
    if gr.tag.startswith("block:"):
        return gr.tag
    if len(ops) == 1:
        return f"single: {short(ops[0])}"
    core = [o for o in ops if not o.has_trait(Layout)]
    anchors = [o for o in core if _is_anchor(o)]
    if anchors:
        tail = [o for o in core if o not in anchors]
        rest = [_named_pattern(tail)] if _named_pattern(tail) else _unique(short(o) for o in tail)[:4]
        text = "epilogue: " + "+".join([short(anchors[0])] + (rest or ["layout"]))
    else:
        text = "vertical: " + (_named_pattern(core) or "+".join(_unique(short(o) for o in core)[:5]) or "layout")
    if _components(graph, gr.nodes) > 1:
        text = "horizontal: " + text.split(": ", 1)[1]
    if gr.dups:
        text += f" (recomputes {', '.join(short(graph.ops[p]) for p in gr.dups)})"
    return text


def _named_pattern(core: list[Operation]) -> str:
    kinds = {type(o) for o in core}
    reduces = [o.kind.data for o in core if isinstance(o, g.ReduceOp)]
    if g.RmsNormOp in kinds or (g.RsqrtOp in kinds and reduces.count("mean") == 1):
        return "rms-norm"
    if g.LayerNormOp in kinds or (g.RsqrtOp in kinds and reduces.count("mean") >= 2):
        return "add-layer-norm" if _add_feeds(core, g.LayerNormOp) else "layer-norm"
    if g.SoftmaxOp in kinds or (g.ExpOp in kinds and "max" in reduces and "sum" in reduces):
        extra = ["scale"] * bool(kinds & {g.DivOp, g.MulOp}) + ["mask"] * bool(kinds & {g.WhereOp, g.AddOp})
        return "+".join(["softmax", *extra])
    acts = [o for o in core if o.has_trait(Activation)]
    if acts and g.AddOp in kinds and not any(o.has_trait(Reduction) for o in core):
        return "bias-" + short(acts[0])
    return ""


def _add_feeds(core: list[Operation], cls: type[Operation]) -> bool:
    return any(isinstance(o, cls) and isinstance(o.operands[0].owner, g.AddOp) for o in core)


def _unique(items) -> list[str]:
    out: list[str] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def _components(graph: BodyGraph, nodes: set[int]) -> int:
    """Weakly connected pieces of the group (more than one: a horizontal fusion of siblings)."""
    parent = {n: n for n in nodes}

    def find(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n in nodes:
        for m in graph.g._succ[n]:
            if m in parent:
                parent[find(m)] = find(n)
    return len({find(n) for n in nodes})
