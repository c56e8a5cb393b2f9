"""`dce`: removes ops whose results are unused and that have no side effects.

xDSL's liveness asks each op's memory effects: a `graph.extern` whose callee writes in place (`writes`)
has a write effect and stays though nothing reads its result; every other `graph` op is pure."""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.transforms.dead_code_elimination import region_dce


@dataclass(frozen=True)
class DcePass(ModulePass):
    """Deletes dead pure ops, e.g. the unused outputs of a split; keeps in-place externs (their write)."""

    name = "dce"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        region_dce(op.body)
