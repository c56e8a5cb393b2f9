"""`merge-linears`: horizontal GEMM fusion — linears that read the same input become one GEMM.

    merge-linears{mode=cost target=cpu}

BERT's and LLaMA's attention projections (q = x Wqᵀ, k = x Wkᵀ, v = x Wvᵀ) and a gated MLP's gate and up
projections read one input through several weights. They become one linear over the weights stacked
along N and a column slice per former result:

    %w = graph.concat %wq, %wk, %wv {dim = 0}     (function arguments only: computed once per weight
    %y = graph.linear %x, %w                       version by the backend, not per call)
    %q = graph.slice %y {dim = -1, 0:Nq}   %k = graph.slice %y {Nq:Nq+Nk}   %v = ...

One GEMM launch instead of several, each of which is small; the slices are then exactly what a fused QKV
projection (GPT-2's c_attn) gives, so fuse-ops puts them in the epilogue kernels, which read them through
indexing maps, and attention reads its heads in place.

Legal when the linears are in one block, read the same SSA value, have the same weight dtype, and their
weights (and biases, all or none) are arguments of the function — parameters, so the stacked weight is a
constant between weight updates. With mode=cost the merge happens only when the cost model estimates the
one GEMM faster than the separate ones (`est_seconds` / `est_parts_seconds` are recorded on the merged
linear as `merged_est_seconds` / `merged_parts_seconds`); mode=always merges every legal group; mode=never
is the pass off. Runs before fuse-ops.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Block, BlockArgument, Operation, SSAValue
from xdsl.passes import ModulePass

from solder.compiler import log
from solder.compiler.dialects.layout import ConcatOp, SliceOp
from solder.compiler.dialects.nn import LinearOp
from solder.compiler.dialects.types import dims_of, shape_of, with_dims
from solder.compiler.errors import PipelineError
from solder.compiler.targets import get_target

_log = log.get("fusion")

MODES = ("always", "never", "cost")


@dataclass(frozen=True)
class MergeLinearsPass(ModulePass):
    """Stacks the weights of linears that share their input into one linear plus column slices."""

    name = "merge-linears"
    mode: str = "cost"
    target: str = ""  # empty: the pipeline's target, else cpu
    cost_model: str = ""  # empty: the target's learned model (roofline if none); "roofline"; or a model path

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.mode not in MODES:
            raise PipelineError(f"merge-linears: mode={self.mode!r}; expected one of {', '.join(MODES)}")
        if self.mode == "never":
            return
        target = get_target(self.target or "cpu")
        for f in [o for o in op.walk() if isinstance(o, func.FuncOp)]:
            for group in sibling_linears(f.body.block):
                decide_and_merge(group, target, self)


def sibling_linears(block: Block) -> list[list[LinearOp]]:
    """Groups (in program order, 2+ each) of the block's linears that may become one GEMM."""
    groups: dict[tuple, list[LinearOp]] = {}
    for op in block.ops:
        if not isinstance(op, LinearOp):
            continue
        params = [op.weight] + ([op.bias] if op.bias is not None else [])
        if not all(isinstance(p, BlockArgument) and p.block is block for p in params):
            continue
        key = (op.input, op.bias is not None, str(op.weight.type.element_type),
               None if op.bias is None else str(op.bias.type.element_type))
        groups.setdefault(key, []).append(op)
    return [g for g in groups.values() if len(g) > 1]


def decide_and_merge(group: list[LinearOp], target, opts: MergeLinearsPass) -> Operation | None:
    """Merge `group` if the mode (and the cost model) says so; returns the merged linear or None."""
    from solder import costmodel

    model = opts.cost_model or None
    parts = sum(costmodel.estimate(op, target, model) for op in group)
    merged = _merged_linear(group)
    fused = costmodel.estimate(merged, target, model)
    names = ", ".join(f"N={shape_of(op.weight.type)[0]}" for op in group)
    if opts.mode == "cost" and fused >= parts:
        _log.info("merge-linears: %d linears (%s) kept apart: est %.2f us merged vs %.2f us apart",
                  len(group), names, fused * 1e6, parts * 1e6)
        concats = [v.owner for v in merged.operands[1:]]
        merged.erase()
        for c in concats:
            c.erase()  # drops their uses of the weights
        return None
    _log.info("merge-linears: %d linears (%s) -> one GEMM: est %.2f us vs %.2f us apart",
              len(group), names, fused * 1e6, parts * 1e6)
    _insert(group, merged, fused, parts)
    return merged


def _merged_linear(group: list[LinearOp]) -> LinearOp:
    """The stacked linear, detached (its concat operands are created when it is inserted)."""
    first = group[0]
    n = sum(shape_of(op.weight.type)[0] for op in group)
    k = shape_of(first.weight.type)[1]
    elem_w = first.weight.type.element_type
    w = _concat([op.weight for op in group], TensorType(elem_w, [n, k]))
    b = None
    if first.bias is not None:
        b = _concat([op.bias for op in group], TensorType(first.bias.type.element_type, [n]))
    res = with_dims(first.result.type, dims_of(first.result.type)[:-1] + (n,))  # keeps `?` dims' symbols
    return LinearOp.create(operands=[first.input, w.result] + ([b.result] if b else []), result_types=[res],
                           attributes=dict(first.attributes),
                           properties=dict(first.properties))


def _concat(values: list[SSAValue], ty: TensorType) -> ConcatOp:
    return ConcatOp.create(operands=values, result_types=[ty], properties={"dim": IntegerAttr(0, i64)})


def _insert(group: list[LinearOp], merged: LinearOp, fused: float, parts: float) -> None:
    first = group[0]
    block = first.parent_block()
    concats = [o.owner for o in merged.operands[1:]]
    block.insert_ops_before([*concats, merged], first)
    merged.attributes["merged"] = StringAttr(f"{len(group)} linears on one input")
    merged.attributes["merged_est_seconds"] = FloatAttr(fused, f64)
    merged.attributes["merged_parts_seconds"] = FloatAttr(parts, f64)
    rank = len(shape_of(merged.result.type))
    start = 0
    anchor: Operation = merged
    for op in group:
        n = shape_of(op.weight.type)[0]
        sl = SliceOp.create(operands=[merged.result], result_types=[op.result.type],
                            properties={"dim": IntegerAttr(rank - 1, i64), "start": IntegerAttr(start, i64),
                                        "end": IntegerAttr(start + n, i64), "step": IntegerAttr(1, i64)})
        block.insert_op_after(sl, anchor)
        anchor = sl
        op.result.replace_all_uses_with(sl.result)
        start += n
    for op in group:
        block.erase_op(op)
