"""From planned groups to `graph.kernel` ops and back: building kernels, reading former ones apart.

`fuse-ops` and `fuse-blocks` plan with `solder.passes.fusion_plan`; this module turns the planned groups into
`graph.kernel` regions (isolated from above, with the planner's reason and estimates as attributes) and
flattens existing kernels when a pass re-plans them.
"""

from __future__ import annotations

import heapq

from xdsl.dialects.builtin import FloatAttr, IntegerAttr, StringAttr, f64, i64
from xdsl.ir import Block, Operation, Region

from solder.compiler.dialects import graph as g
from solder.compiler.errors import SolderError
from solder.passes.fusion_plan import BodyGraph, Group, is_source


def kernel_attrs(kernel_id: int, reason: str, est: float, parts: float) -> dict:
    """The attributes every graph.kernel carries (printable and parsable MLIR attributes)."""
    return {"kernel_id": IntegerAttr(kernel_id, i64), "reason": StringAttr(reason),
            "est_seconds": FloatAttr(est, f64), "est_parts_seconds": FloatAttr(parts, f64)}


def flatten_kernels(block: Block) -> dict[Operation, int]:
    """Inline every `graph.kernel` of `block` back into it; returns op -> index of its former kernel.

    Lets a planner re-plan on plain ops (fuse-blocks starts from fuse-ops' kernels this way).
    The returned indices count kernels in block order; `former_attrs` keeps their attributes.
    """
    member: dict[Operation, int] = {}
    for idx, k in enumerate([op for op in block.ops if isinstance(op, g.KernelOp)]):
        body = k.body.block
        for arg, v in zip(body.args, k.inputs):
            arg.replace_all_uses_with(v)
        yld = body.last_op
        for r, v in zip(k.outputs, yld.operands):
            r.replace_all_uses_with(v)
        yld.detach()
        yld.erase()
        for op in list(body.ops):
            op.detach()
            block.insert_op_before(op, k)
            member[op] = idx
        k.detach()
        k.erase()
    return member


def former_attrs(block: Block) -> list[dict]:
    """The attribute dicts of the `graph.kernel` ops of `block`, in block order (before flattening)."""
    return [dict(op.attributes) for op in block.ops if isinstance(op, g.KernelOp)]


def materialize(graph: BodyGraph, groups: list[Group], attrs: list[dict]) -> list[g.KernelOp]:
    """Rebuild the block: sources first, then each group as one `graph.kernel` and every other op as is.

    Units (kernels and lone ops) are placed in a topological order that follows block order where it
    can; convex groups make that order exist. Sources are cloned into the kernels that read them.
    """
    block, term = graph.block, graph.block.last_op
    dropped = {p for gr in groups for p in gr.dups if p not in {n for x in groups for n in x.nodes}}
    unit_of: dict[int, int] = {}
    units: list[tuple[int, Group | None]] = []
    for gr in groups:
        for n in gr.nodes:
            unit_of[n] = len(units)
        units.append((min(gr.nodes), gr))
    for n in range(len(graph.ops)):
        if n not in unit_of and n not in dropped:
            unit_of[n] = len(units)
            units.append((n, None))
    order = _unit_order(graph, units, unit_of, dropped)
    sources = [op for op in block.ops if is_source(op)]
    for op in list(block.ops):
        if op is not term:
            op.detach()
    for op in sources:
        block.insert_op_before(op, term)
    dropped_ops = {graph.ops[p] for p in dropped}
    attrs_of = {id(gr): a for gr, a in zip(groups, attrs)}
    kernels = []
    for u in order:
        first, gr = units[u]
        if gr is None:
            block.insert_op_before(graph.ops[first], term)
            continue
        k = _build_kernel(graph, gr, attrs_of.get(id(gr), {}), dropped_ops)
        block.insert_op_before(k, term)
        kernels.append(k)
    for op in dropped_ops:
        op.erase()
    for op in sources:
        if all(not r.uses for r in op.results):
            block.erase_op(op)
    return kernels


class FusionCycleError(SolderError):
    """The planned groups are not convex (a planner bug): the caller re-plans more conservatively."""


def _unit_order(graph: BodyGraph, units, unit_of: dict[int, int], dropped: set[int]) -> list[int]:
    """Kahn's algorithm over units, smallest first node first."""
    succ: list[set[int]] = [set() for _ in units]
    indeg = [0] * len(units)
    for u, (first, gr) in enumerate(units):
        nodes = (gr.nodes | set(gr.dups)) if gr is not None else {first}
        for n in nodes:
            for m in graph.g._pred[n]:
                pu = unit_of.get(m)
                if pu is None or pu == u or u in succ[pu]:
                    continue  # a dropped producer is copied into this unit
                succ[pu].add(u)
                indeg[u] += 1
    ready = [(units[u][0], u) for u in range(len(units)) if indeg[u] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, u = heapq.heappop(ready)
        order.append(u)
        for v in succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(ready, (units[v][0], v))
    if len(order) != len(units):
        raise FusionCycleError(f"fusion: the planned kernels form a cycle ({len(units) - len(order)} of {len(units)} "
                          "units unordered); expected convex groups. This is a planner bug: report the IR")
    return order


def _build_kernel(graph: BodyGraph, gr: Group, attrs: dict, dropped_ops: set) -> g.KernelOp:
    """Move the group's ops into a new kernel body; external values become block arguments."""
    members = {graph.ops[i] for i in gr.nodes}
    dups = set(gr.dups)
    body = Block()
    mapping: dict = {}
    inputs: list = []
    consts: list[Operation] = []
    nodes = sorted(gr.nodes | dups)
    for i in nodes:
        for v in graph.ops[i].operands:
            owner = v.owner
            if v in mapping or owner in members or graph.index.get(owner) in dups:
                continue
            if is_source(owner):
                c = owner.clone()
                consts.append(c)
                mapping[v] = c.results[0]
                continue
            mapping[v] = body.insert_arg(v.type, len(body.args))
            inputs.append(v)
    body.add_ops(consts)
    inside = set(members)
    for i in nodes:
        op = graph.ops[i]
        if i in dups:
            op = op.clone(value_mapper=dict(mapping))
            mapping.update(zip(graph.ops[i].results, op.results))
            inside.add(op)
        else:
            op.operands = [mapping.get(v, v) for v in op.operands]
        body.add_op(op)
    outs = [r for i in sorted(gr.nodes) for r in graph.ops[i].results
            if any(u.operation not in inside and u.operation not in dropped_ops for u in r.uses)]
    yld = g.YieldOp(*outs)
    body.add_op(yld)
    inside.add(yld)
    k = g.KernelOp(operands=[inputs], result_types=[[r.type for r in outs]], regions=[Region([body])],
                   attributes=attrs)
    for r, kr in zip(outs, k.outputs):
        r.replace_uses_with_if(kr, lambda use: use.operation not in inside and use.operation not in dropped_ops)
    return k
