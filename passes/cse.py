"""`cse`: common subexpression elimination of pure ops (xDSL's, which honours the ops' memory effects).

An op with a write effect (a `graph.extern` of an in-place ATen op) is never merged, and neither is any op
whose memory it may write: the producer of a written operand, the ops it may be a view of (followed through
first operands, which is where every view op takes its base), views of those, and every op that reads them.
Merging two `new_zeros` that two `scatter_add_` calls then fill would make both write one buffer.
"""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.traits import MemoryEffectKind, get_effects
from xdsl.transforms.common_subexpression_elimination import CSEDriver


@dataclass(frozen=True)
class CsePass(ModulePass):
    """Merges identical pure ops with identical operands (e.g. the repeated reshapes of q, k and v)."""

    name = "cse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        _PinnedCSEDriver(pinned=written_memory_ops(op)).simplify(op)


@dataclass
class _PinnedCSEDriver(CSEDriver):
    """xDSL's CSE driver that leaves the `pinned` ops alone."""

    pinned: frozenset[Operation] = frozenset()

    def _simplify_operation(self, op: Operation):
        if op not in self.pinned:
            super()._simplify_operation(op)


def written_memory_ops(root: Operation) -> frozenset[Operation]:
    """The ops under `root` that define, alias or read memory that some op writes in place."""
    stack = [e.value for op in root.walk() for e in (get_effects(op) or ())
             if e.kind is MemoryEffectKind.WRITE and isinstance(e.value, SSAValue)]
    seen: set[SSAValue] = set()
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if isinstance(v.owner, Operation) and v.owner.operands:
            stack.append(v.owner.operands[0])  # v may be a view of its producer's first operand
        for use in v.uses:
            if use.index == 0:
                stack.extend(use.operation.results)  # a view of v
    ops = {v.owner for v in seen if isinstance(v.owner, Operation)}
    return frozenset(ops | {use.operation for v in seen for use in v.uses})
