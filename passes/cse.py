"""`cse`: common subexpression elimination of pure ops (xDSL's, which honours the `Pure` trait)."""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.transforms.common_subexpression_elimination import (
    CommonSubexpressionElimination,
)


@dataclass(frozen=True)
class CsePass(ModulePass):
    """Merges identical pure ops with identical operands (e.g. the repeated reshapes of q, k and v)."""

    name = "cse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        CommonSubexpressionElimination().apply(ctx, op)
