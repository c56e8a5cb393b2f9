"""`canonicalize`: local simplifications that never trade speed (no cost decisions here).

Folds identity layout ops and casts, merges reshape∘reshape, permute∘permute and cast chains that
lose nothing, turns casts of constants into constants, and removes dead ops.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.transforms.dead_code_elimination import region_dce

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import is_float


class FoldIdentity(RewritePattern):
    """reshape/permute/expand/cast whose result type equals its input's, with the identity perm."""

    def match_and_rewrite(self, op, rewriter: PatternRewriter) -> None:
        if not isinstance(op, (g.ReshapeOp, g.PermuteOp, g.ExpandOp, g.CastOp)):
            return
        if op.input.type != op.result.type:
            return
        if isinstance(op, g.PermuteOp) and list(op.perm.get_values()) != sorted(op.perm.get_values()):
            return
        rewriter.replace(op, [], [op.input])


class MergeReshapes(RewritePattern):
    """reshape(reshape(x)) -> reshape(x)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.ReshapeOp, rewriter: PatternRewriter) -> None:
        inner = op.input.owner
        if not isinstance(inner, g.ReshapeOp):
            return
        rewriter.replace(op, g.ReshapeOp(inner.input, op.result.type))


class MergePermutes(RewritePattern):
    """permute(permute(x, p), q) -> permute(x, p∘q)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.PermuteOp, rewriter: PatternRewriter) -> None:
        inner = op.input.owner
        if not isinstance(inner, g.PermuteOp):
            return
        p, q = inner.perm.get_values(), op.perm.get_values()
        rewriter.replace(op, g.PermuteOp(operands=[inner.input], properties={"perm": g.ints_attr([p[i] for i in q])},
                                            result_types=[op.result.type]))


class FoldCastOfConstant(RewritePattern):
    """cast(constant v) -> constant v of the new type (values representable in both)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.CastOp, rewriter: PatternRewriter) -> None:
        c = op.input.owner
        if not isinstance(c, g.ConstantOp):
            return
        v = c.py_value
        et = op.result.type.element_type
        if is_float(et):
            from solder.compiler.importer import scalar_attr

            attr = scalar_attr(float(v))
        elif isinstance(v, float) and not v.is_integer():
            return
        else:
            from solder.compiler.importer import scalar_attr

            attr = scalar_attr(int(v))
        rewriter.replace(op, g.ConstantOp(attr, op.result.type))


class MergeLosslessCasts(RewritePattern):
    """cast(cast(x: A -> B) -> A) -> x when B holds every value of A (e.g. f16 -> f32 -> f16)."""

    WIDER = {("f16", "f32"), ("bf16", "f32"), ("f32", "f64"), ("f16", "f64"), ("bf16", "f64"), ("i32", "i64")}

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.CastOp, rewriter: PatternRewriter) -> None:
        inner = op.input.owner
        if not isinstance(inner, g.CastOp) or inner.input.type != op.result.type:
            return
        a, b = str(op.result.type.element_type), str(inner.result.type.element_type)
        if (a, b) in self.WIDER:
            rewriter.replace(op, [], [inner.input])


PATTERNS = (FoldIdentity(), MergeReshapes(), MergePermutes(), FoldCastOfConstant(), MergeLosslessCasts())


@dataclass(frozen=True)
class CanonicalizePass(ModulePass):
    """Folds identity layout ops and casts, merges reshape/permute/cast chains, removes dead ops."""

    name = "canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(GreedyRewritePatternApplier(list(PATTERNS)), apply_recursively=True).rewrite_module(op)
        region_dce(op.body)
