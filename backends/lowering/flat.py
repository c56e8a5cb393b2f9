"""`@forward` with its kernel regions flattened: one value per tensor, ops in program order.

A `graph.kernel`'s block arguments are its operands and its results are its `graph.yield`'s operands, so
a backend that plans launches sees through the regions: `canon(v)` names the value every alias stands for.
Every backend plans over this view (backends/cpu/backend.py, backends/triton/backend.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from xdsl.dialects import func
from xdsl.ir import Block, Operation, OpResult, SSAValue

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.traits import Source, ViewLike
from solder.compiler.ir import forward_func


def free(op: Operation) -> bool:
    """A view or a source op: no launch of its own (a kernel reads it as index arithmetic or an immediate;
    else it runs as a torch view or tensor)."""
    return op.has_trait(ViewLike) or op.has_trait(Source)


class Flat:
    """`module`'s `@forward`, kernel regions seen through."""

    def __init__(self, module) -> None:
        self.fn: func.FuncOp = forward_func(module)
        self.block: Block = self.fn.body.block
        self.alias: dict[SSAValue, SSAValue] = {}
        for op in self.block.ops:
            if isinstance(op, g.KernelOp):
                body = op.body.block
                self.alias.update(zip(body.args, op.operands))
                self.alias.update(zip(op.results, body.last_op.operands))
        self.order = {op: i for i, op in enumerate(self.fn.walk())}
        """Program order of every op, kernel bodies inlined."""
        self.users: dict[SSAValue, list[Operation]] = {}
        for op in self.ops():
            for v in op.operands:
                self.users.setdefault(self.canon(v), []).append(op)
        self.args: list[SSAValue] = list(self.block.args)
        self.results: list[SSAValue] = [self.canon(v) for v in self.block.last_op.operands]

    def canon(self, v: SSAValue) -> SSAValue:
        """The value `v` stands for: through kernel block arguments and kernel results."""
        while v in self.alias:
            v = self.alias[v]
        return v

    def ops(self) -> Iterator[Operation]:
        """Every computing op in program order (kernel bodies inlined; no kernel, yield or return)."""
        for op in self.block.ops:
            if isinstance(op, g.KernelOp):
                yield from (o for o in op.body.block.ops if not isinstance(o, g.YieldOp))
            elif not isinstance(op, func.ReturnOp):
                yield op

    def groups(self) -> Iterator[tuple[list[Operation], Operation | None]]:
        """Each launch group the passes formed: (a kernel's ops, the kernel) or ([a top-level op], None)."""
        for op in self.block.ops:
            if isinstance(op, g.KernelOp):
                yield [o for o in op.body.block.ops if not isinstance(o, g.YieldOp)], op
            elif not isinstance(op, func.ReturnOp):
                yield [op], None

    def top_level(self, op: Operation) -> bool:
        return op.parent_block() is self.block

    def operands(self, op: Operation) -> list[SSAValue]:
        return [self.canon(v) for v in op.operands]

    def inputs(self, ops: list[Operation]) -> list[SSAValue]:
        """The values `ops` read from outside themselves, in first-use order."""
        inside = set(ops)
        out: list[SSAValue] = []
        for op in ops:
            for v in op.operands:
                r = self.canon(v)
                if not (isinstance(r, OpResult) and r.owner in inside) and r not in out:
                    out.append(r)
        return out

    def outputs(self, ops: list[Operation]) -> list[SSAValue]:
        """Results of `ops` read outside the group or returned."""
        inside = set(ops)
        returned = set(self.results)
        return [r for op in ops for r in op.results
                if r in returned or any(u not in inside for u in self.users.get(r, []))]

    @staticmethod
    def producer(v: SSAValue) -> Operation | None:
        return v.owner if isinstance(v, OpResult) else None
