"""`plan-memory`: one liveness buffer plan, shown on the IR and used by every backend's executor.

`plan_buffers` is the algorithm: walk the launches in order; an output written into a preallocated buffer
takes the smallest free buffer that fits (else a new one) and gives it back after the last launch that
reads it or anything aliasing it. Values the caller receives (a result, or anything a result may alias)
and outputs a launch keeps between calls are never pooled: the caller may hold or write them.

The pass runs it over `@forward`'s launches as the IR states them (each `graph.kernel`, each top-level op)
and records the plan on the IR: `graph.buffers = [id, ...]` on each launch whose results are pooled (-1:
not pooled), `graph.buffer_bytes = [bytes, ...]` on the function. The lowering layer runs the same function
over the steps it actually launches (backends/lowering/executor.py); where each kernel is one launch, the
two plans are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.traits import Source, ViewLike
from solder.compiler.dialects.types import dims_of, torch_dtype
from solder.compiler.ir import forward_func

ALIGN = 256
"""Buffers start on 256-byte boundaries (vector loads on the CPU, coalesced access on the GPU)."""


@dataclass
class Launch:
    """What the plan needs to know of one launch: the values it reads and writes, whether its outputs
    may alias its inputs (views, eager and library calls), and whether it writes into buffers it is given."""

    ins: Sequence[SSAValue]
    outs: Sequence[SSAValue]
    aliasing: bool = False
    pooled: bool = False


@dataclass
class BufferPlan:
    assign: dict[SSAValue, int] = field(default_factory=dict)
    """Pooled value -> buffer id."""
    sizes: list[int] = field(default_factory=list)
    """Buffer id -> bytes."""


def plan_buffers(launches: Sequence[Launch], results: Iterable[SSAValue], nbytes: Callable[[SSAValue], int],
                 keep: Iterable[SSAValue] = ()) -> BufferPlan:
    """The liveness plan of `launches` (in order); `results` and `keep` are never pooled."""
    root: dict[SSAValue, SSAValue] = {}

    def find(v: SSAValue) -> SSAValue:
        while v in root:
            v = root[v]
        return v

    for s in launches:  # alias classes: an aliasing launch's outputs may share storage with any input
        if s.aliasing:
            for o in s.outs:
                for v in s.ins:
                    a, b = find(o), find(v)
                    if a is not b:
                        root[a] = b
    last: dict[SSAValue, int] = {}
    for i, s in enumerate(launches):
        for v in s.ins:
            last[find(v)] = i
    pinned = {find(v) for v in results} | {find(v) for v in keep}
    plan = BufferPlan()
    free: list[int] = []
    release: dict[int, list[int]] = {}
    for i, s in enumerate(launches):
        if s.pooled:
            for o in s.outs:
                if find(o) in pinned:
                    continue
                need = -(-nbytes(o) // ALIGN) * ALIGN
                fits = [b for b in free if plan.sizes[b] >= need]
                if fits:
                    b = min(fits, key=lambda b: plan.sizes[b])
                    free.remove(b)
                else:
                    b = len(plan.sizes)
                    plan.sizes.append(need)
                plan.assign[o] = b
                release.setdefault(max(last.get(find(o), i), i), []).append(b)
        free += release.pop(i, [])
    return plan


def static_nbytes(v: SSAValue) -> int:
    """Bytes of a value of static shape."""
    import torch

    n = 1
    for d in dims_of(v.type):
        n *= d
    return n * torch.empty((), dtype=torch_dtype(v.type.element_type)).element_size()


def ir_launches(fn: func.FuncOp) -> list[tuple[Operation, Launch]]:
    """`fn`'s launches as the IR states them: each `graph.kernel` (pooled outputs) and each other top-level
    op (a view or source: aliasing, no launch; anything else: its own launch, pooled when generated)."""
    out = []
    for op in fn.body.block.ops:
        if isinstance(op, func.ReturnOp):
            continue
        free = op.has_trait(ViewLike) or op.has_trait(Source)
        aliasing = free or isinstance(op, g.ExternOp)
        out.append((op, Launch(list(op.operands), list(op.results), aliasing=aliasing,
                               pooled=not aliasing)))
    return out


@dataclass(frozen=True)
class PlanMemoryPass(ModulePass):
    """Annotates `@forward` with its liveness buffer plan (static shapes only; a dynamic module's buffers
    are planned per size binding by the executor)."""

    name = "plan-memory"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fn = forward_func(op)
        if any(not isinstance(d, int) for a in fn.body.block.args for d in dims_of(a.type)):
            return
        launches = ir_launches(fn)
        results = list(fn.body.block.last_op.operands)
        try:
            plan = plan_buffers([l for _, l in launches], results, static_nbytes)
        except (TypeError, KeyError):  # an element type without a torch dtype: nothing planned
            return
        for lop, l in launches:
            if l.pooled and any(r in plan.assign for r in l.outs):
                lop.attributes["graph.buffers"] = ArrayAttr(
                    [IntegerAttr(plan.assign.get(r, -1), i64) for r in l.outs])
        fn.attributes["graph.buffer_bytes"] = ArrayAttr([IntegerAttr(n, i64) for n in plan.sizes])
