"""`dce`: removes ops whose results are unused and that have no side effects."""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.transforms.dead_code_elimination import region_dce


@dataclass(frozen=True)
class DcePass(ModulePass):
    """Deletes dead pure ops (every `graph` op is pure), e.g. the unused outputs of a split."""

    name = "dce"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        region_dce(op.body)
