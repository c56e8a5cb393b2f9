"""`fuse-blocks`: block fusion — whole sub-graphs into one kernel where the cost model says it pays.

    fuse-blocks{patterns=mlp,attention,conv mode=cost max-ops=64 target=h100}

Runs after fuse-ops and joins its kernels (and the convolutions it left outside) along three patterns:

- `mlp`: GEMM → activation → GEMM: a kernel holding a linear/matmul and an activation (GELU, ReLU,
  SiLU, ...) whose output feeds the next linear/matmul; gated MLPs (silu(x W1) * x W3) W2 also take
  the gate's kernel (at most 3 GEMMs). Legal when a tile of the hidden activation (64 rows × hidden)
  fits the target's on-chip memory.
- `attention`: `graph.attention` (plus its permute/reshape epilogue) followed by the output projection.
- `conv`: convolution → batch norm → activation → residual add (at most one convolution per kernel).

Every candidate must stay convex (no cycle between kernels) and, with mode=cost, save estimated time:
est(producer kernel) + est(consumer kernel) − est(both as one kernel) > 0. Kernels that no pattern
joins keep their attributes (fuse-ops' reason and estimates); joined ones get `reason = "block: mlp"`.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import Block, Operation
from xdsl.passes import ModulePass

from solder.compiler import log
from solder.compiler.dialects import graph as g
from solder.compiler.dialects.symbolic import hint_shape
from solder.compiler.dialects.traits import Activation, Layout
from solder.compiler.errors import PipelineError
from solder.compiler.targets import Target, get_target
from solder.passes.fuse_ops import describe, op_rule, with_backend
from solder.passes.fusion_build import flatten_kernels, former_attrs, kernel_attrs, materialize
from solder.passes.fusion_plan import (
    BodyGraph,
    CostOracle,
    Group,
    Planner,
    Verdict,
    itemsize,
)

_log = log.get("fusion")

PATTERNS = ("mlp", "attention", "conv")
GEMMS = (g.LinearOp, g.MatmulOp)
TILE_ROWS = 64
"""Rows of the intermediate that one block kernel keeps on chip (hidden activation, attention output)."""


def _is_gate(op: Operation) -> bool:
    """An activation, or the product of a gated MLP (silu(x W1) * x W3), between the two GEMMs."""
    return op.has_trait(Activation) or isinstance(op, g.MulOp)


@dataclass(frozen=True)
class FuseBlocksPass(ModulePass):
    """Joins kernels into MLP, attention+projection and conv-bn-act-residual block kernels where it pays."""

    name = "fuse-blocks"

    patterns: tuple[str, ...] = PATTERNS
    mode: str = "cost"
    max_ops: int = 64
    target: str = ""  # empty: the pipeline's target, else cpu
    cost_model: str = ""  # empty: the target's learned model (roofline if none); "roofline"; or a model path

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        unknown = [p for p in self.patterns if p not in PATTERNS]
        if unknown:
            raise PipelineError(f"fuse-blocks: unknown pattern(s) {', '.join(unknown)}; expected some of {', '.join(PATTERNS)}")
        if self.mode not in ("always", "never", "cost"):
            raise PipelineError(f"fuse-blocks: mode={self.mode!r}; expected always, never or cost")
        target = get_target(self.target or "cpu")
        next_id = 0
        for f in [o for o in op.walk() if isinstance(o, func.FuncOp)]:
            next_id = fuse_blocks_in(f.body.block, target, self, next_id)


def fuse_blocks_in(block: Block, target: Target, opts: FuseBlocksPass, first_id: int = 0) -> int:
    """Join the kernels of one function body along the enabled patterns; returns the next kernel id."""
    before = former_attrs(block)
    member = flatten_kernels(block)
    graph = BodyGraph(block)
    by_kernel: dict[int, set[int]] = {}
    groups = []
    for i, op in enumerate(graph.ops):
        k = member.get(op)
        if k is not None:
            by_kernel.setdefault(k, set()).add(i)
        elif isinstance(op, g.ConvOp) and "conv" in opts.patterns:
            groups.append(Group(i, {i}))
    groups += [Group(min(nodes), nodes, attrs=before[k]) for k, nodes in by_kernel.items()]
    est = CostOracle(graph, target, opts.cost_model or None)
    rule = BlockRule(graph, target, tuple(opts.patterns))
    planner = Planner(graph, groups, est, rule, mode=opts.mode, max_ops=opts.max_ops, horizontal=False, log=_log)
    planner.run()
    plan = [gr for gr in planner.result() if gr.attrs is not None or gr.merged]
    attrs = []
    for i, gr in enumerate(plan):
        if gr.attrs is not None and not gr.merged:
            attrs.append({**gr.attrs, "kernel_id": IntegerAttr(first_id + i, i64)})
            continue
        nodes = gr.nodes | set(gr.dups)
        attrs.append(kernel_attrs(first_id + i, describe(graph, gr), est(gr.nodes), est.parts(nodes)))
    materialize(graph, plan, attrs)
    _log.info("fuse-blocks: %d kernels -> %d (%d block merges)", len(by_kernel), len(plan), planner.merges)
    return first_id + len(plan)


class BlockRule:
    """The fuse-blocks rule: the pair must match an enabled pattern and stay a legal kernel."""

    def __init__(self, graph: BodyGraph, target: Target, patterns: tuple[str, ...]):
        self.graph, self.target, self.patterns = graph, target, patterns

    def __call__(self, a: Group, b: Group, ops: list[Operation]) -> Verdict:
        gg = self.graph
        prod, cons = (a, b) if min(a.nodes) < min(b.nodes) else (b, a)
        p_ops = {gg.ops[i] for i in prod.nodes}
        c_ops = {gg.ops[i] for i in cons.nodes}
        tag = self.match(p_ops, c_ops)
        if not tag:
            return Verdict(False, "no block pattern")
        convs = sum(isinstance(o, g.ConvOp) for o in ops)
        verdict = op_rule(ops, self.target, max_anchors=3 if tag == "gated-mlp" else 2, prologues=True)
        if not verdict.ok or convs > 1:
            return verdict if not verdict.ok else Verdict(False, "two convolutions")
        return with_backend(Verdict(True, f"block: {tag.removeprefix('gated-')}"), ops)

    def match(self, p_ops: set[Operation], c_ops: set[Operation]) -> str:
        """The name of the pattern that joins producer ops `p_ops` to consumer ops `c_ops`, or ''."""
        gemm_in = any(isinstance(o, GEMMS) for o in p_ops)
        for op in c_ops:
            if isinstance(op, GEMMS) and _fed_by(op, c_ops, p_ops):
                width = hint_shape(op.operands[0].type)[-1] * itemsize(op)
                if TILE_ROWS * width > self.target.shared_mem_per_block:
                    continue
                if "mlp" in self.patterns and gemm_in and any(_is_gate(o) for o in p_ops):
                    return "mlp"
                if "attention" in self.patterns and any(isinstance(o, g.AttentionOp) for o in p_ops):
                    return "attention"
            if ("mlp" in self.patterns and isinstance(op, g.MulOp) and gemm_in
                    and any(o.has_trait(Activation) for o in p_ops) and any(isinstance(o, GEMMS) for o in c_ops)
                    and any(v.owner in p_ops for v in op.operands)):
                return "gated-mlp"  # the gate of a SwiGLU/GeGLU MLP joining its up- and down-projection
            if isinstance(op, g.BatchNormOp) and "conv" in self.patterns:
                src = op.operands[0].owner
                if src in p_ops and isinstance(src, g.ConvOp):
                    return "conv-bn-act"
        return ""


def _fed_by(op: Operation, own: set[Operation], producers: set[Operation]) -> bool:
    """Whether `op`'s first operand comes from `producers`, directly or through layout ops of `own`."""
    v = op.operands[0]
    while True:
        owner = v.owner
        if owner in producers:
            return True
        if owner not in own or not owner.has_trait(Layout):
            return False
        v = owner.operands[0]
