"""Compute a row kernel's full-row temporary in its output row: a rewrite of the scheduled, vectorized
tensor IR, between the transform schedule and bufferization (jit.py runs it).

A row kernel's schedule (lower_schedule.py) leaves, per row, a temporary that several loops read (softmax's
exp, add + layer norm's sum) and a last loop, the root, that reads it tile by tile and writes the output row:

    %t   = scf.for ... iter_args(%a = tensor.empty)         // E: writes the temporary, tile by tile
    ... loops that read %t ...                             // the reductions over it
    %s   = tensor.extract_slice %out[...]                   // the output row
    %r   = scf.for %i ... iter_args(%b = %s) {              // R: reads %t[.., %i], writes %b[.., %i]
             %v = vector.transfer_read %t[.., %i] ...; ... tensor.insert_slice ... into %b[.., %i] }

Bufferized as is, the temporary is a row on the stack and the root writes the output row for the first time in a
loop that does almost nothing else, so every store misses (read-for-ownership) in one burst: softmax
4096x1024 ran at ~70% of copy bandwidth. Rewritten, E writes into the output row itself and R updates it in
place (its reads of %t become reads of its own iteration argument, at the tile it then overwrites), so the
output's lines are fetched while E computes and the temporary is gone:

    %s = tensor.extract_slice %out[...]                     // moved before E
    %t = scf.for ... iter_args(%a = %s)
    %r = scf.for %i ... iter_args(%b = %t) { %v = vector.transfer_read %b[.., %i] ... }

Matched strictly (anything else is left alone): an iteration argument of R (the first that fits) is
initialized by a slice used only there, whose source is used only by that slice and by the insertion of R's result; R counts from 0 to
the slice's size in steps of the tile it inserts, the tile covering the slice's other dims whole; R reads %t
only as vectors of exactly that tile at the tile's offsets; %t is E's only result, E's initial value a
`tensor.empty` (CSE may share it with other temporaries), and every other reader of %t comes before R.
"""

from __future__ import annotations

from torch_mlir import ir

VERSION = 1  # bump when the rewrite changes what it emits (part of the JIT cache key)
_DYNAMIC = -(2 ** 63)  # ShapedType::kDynamic in static offset/size arrays


def temps_into_outputs(module: ir.Module) -> int:
    """Rewrite every matching root loop of `module` (see the module docstring); returns how many."""
    loops: list[ir.Operation] = []

    def visit(op):
        if op.name == "scf.for":
            loops.append(op)
        return ir.WalkResult.ADVANCE
    module.operation.walk(visit)
    return sum(_rewrite(r) for r in loops)


def _rewrite(r: ir.Operation) -> bool:
    for k in range(len(r.results)):
        m = _match(r, k)
        if m is not None:
            break
    else:
        return False
    e, empty, s, t = m
    s.move_before(e)
    e.operands[3] = s.result
    if _n_uses(empty.result) == 0:
        empty.erase()
    arg = r.regions[0].blocks[0].arguments[1 + k]
    for read in _reads_inside(t, r):
        read.operands[0] = arg
    r.operands[3 + k] = t
    return True


def _match(r: ir.Operation, k: int):
    """(E, its tensor.empty, the output slice, the temporary) when root loop `r`'s iteration argument `k` can
    hold the temporary, else None."""
    if len(r.operands) != 3 + len(r.results):
        return None
    s = _defining(r.operands[3 + k])
    if s is None or s.name != "tensor.extract_slice" or _n_uses(s.result) != 1 or s.block != r.block:
        return None
    if not _source_only_sliced_and_filled(s, r.results[k]):
        return None
    tile = _tile(r, s, k)
    if tile is None:
        return None
    reads, t = _temp_reads(r, s, tile)
    if not reads or t is None:
        return None
    e = _defining(t)
    if e is None or e.name != "scf.for" or len(e.results) != 1 or e.block != r.block or len(e.operands) != 4:
        return None
    empty = _defining(e.operands[3])
    if empty is None or empty.name != "tensor.empty":
        return None
    if not all(_dominates_op(v, e) for v in s.operands):
        return None
    for use in t.uses:  # every other reader of the temporary runs before R overwrites it
        owner = _ancestor_in(use.owner, r.block)
        if owner is None or (owner != r and not owner.is_before_in_block(r)):
            return None
    return e, empty, s, t


def _tile(r: ir.Operation, s: ir.Operation, k: int) -> tuple[list, list[int]] | None:
    """The offsets (values or ints) and sizes of the one tile root loop `r` writes per iteration into its
    iteration argument `k`, if the loop's tiles cover slice `s` exactly once; else None."""
    body = r.regions[0].blocks[0]
    iv, arg = body.arguments[0], body.arguments[1 + k]
    yield_op = list(body.operations)[-1]
    ins = _defining(yield_op.operands[k])
    if ins is None or ins.name != "tensor.insert_slice" or ins.operands[1] != arg or not _only_written(arg, ins):
        return None
    offs, sizes = _static(ins, "static_offsets"), _static(ins, "static_sizes")
    dyn_offs = list(ins.operands[2:2 + sum(1 for o in offs if o == _DYNAMIC)])
    if len(dyn_offs) != 1 or dyn_offs[0] != iv or any(n == _DYNAMIC for n in sizes):
        return None
    shape = ir.RankedTensorType(s.result.type).shape
    d = offs.index(_DYNAMIC)
    lb, ub, step = (_const(v) for v in r.operands[:3])
    if (lb, ub, step) != (0, shape[d], sizes[d]) or any(
            (o, n) != (0, shape[j]) for j, (o, n) in enumerate(zip(offs, sizes)) if j != d):
        return None
    return [iv if o == _DYNAMIC else o for o in offs], sizes


def _only_written(arg: ir.Value, ins: ir.Operation) -> bool:
    """Whether loop argument `arg` is only written: the destination of `ins`, or sliced for transfer writes."""
    for use in arg.uses:
        o = use.owner.operation
        if o == ins and use.operand_number == 1:
            continue
        if o.name != "tensor.extract_slice" or any(
                u.owner.operation.name != "vector.transfer_write" or u.operand_number != 1 for u in o.result.uses):
            return False
    return True


def _temp_reads(r: ir.Operation, s: ir.Operation, tile) -> tuple[list[ir.Operation], ir.Value | None]:
    """The transfer reads in `r` of one tensor defined outside it, of `s`'s type, each reading exactly the
    written tile; ([], None) if any read of such a tensor does otherwise."""
    offs, sizes = tile
    t, reads = None, []
    for op in _walk(r):
        if op.name != "vector.transfer_read":
            continue
        src = op.operands[0]
        if src.type != s.result.type or _inside(src, r):
            continue
        if not _reads_tile(op, offs, sizes) or (t is not None and src != t):
            return [], None
        t = src
        reads.append(op)
    if t is None:
        return [], None
    if sum(1 for u in t.uses if _ancestor_in(u.owner, r.block) == r) != len(reads):
        return [], None  # the temporary has other uses inside the root loop
    return reads, t


def _reads_tile(read: ir.Operation, offs: list, sizes: list[int]) -> bool:
    """Whether transfer read `read` reads exactly the tile at `offs` of `sizes`: in bounds, minor identity,
    its vector the tile's trailing sizes (the leading ones 1), no mask."""
    attrs = read.attributes
    rank = len(offs)
    vshape = ir.VectorType(read.results[0].type).shape
    idx = list(read.operands[1:1 + rank])
    if len(read.operands) != rank + 2 or len(idx) != rank:
        return False  # a mask operand
    if "permutation_map" in attrs:
        pm = ir.AffineMapAttr(attrs["permutation_map"]).value
        if pm != ir.AffineMap.get_minor_identity(rank, len(vshape)):
            return False
    if "in_bounds" in attrs and not all(ir.BoolAttr(b).value for b in ir.ArrayAttr(attrs["in_bounds"])):
        return False
    n = len(vshape)
    if list(sizes[rank - n:]) != list(vshape) or any(x != 1 for x in sizes[:rank - n]):
        return False
    return all(i == o if isinstance(o, ir.Value) else _const(i) == o for i, o in zip(idx, offs))


def _source_only_sliced_and_filled(s: ir.Operation, result: ir.Value) -> bool:
    """Whether the output `s` slices is used only by `s` and by the insertion of `result` into it."""
    src = s.operands[0]
    for use in src.uses:
        o = use.owner
        if o == s:
            continue
        if o.name in ("tensor.insert_slice", "tensor.parallel_insert_slice") and use.operand_number == 1 \
                and o.operands[0] == result:
            continue
        return False
    return True


def _reads_inside(t: ir.Value, r: ir.Operation) -> list[ir.Operation]:
    return [u.owner.operation for u in t.uses if _ancestor_in(u.owner, r.block) == r]


def _walk(op: ir.Operation):
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                yield inner.operation
                yield from _walk(inner.operation)


def _defining(v: ir.Value) -> ir.Operation | None:
    owner = v.owner
    return None if isinstance(owner, ir.Block) else owner.operation


def _inside(v: ir.Value, op: ir.Operation) -> bool:
    """Whether `v` is defined within `op`'s regions."""
    owner = v.owner
    node = owner.owner if isinstance(owner, ir.Block) else owner.operation.parent
    while node is not None:
        if node == op:
            return True
        node = node.parent
    return False


def _ancestor_in(op: ir.Operation, block: ir.Block) -> ir.Operation | None:
    """`op` or its ancestor whose block is `block`, or None."""
    node = op.operation
    while node is not None and node.block != block:
        node = node.parent
    return node


def _dominates_op(v: ir.Value, op: ir.Operation) -> bool:
    """Whether `v` is available just before `op`: a block argument or a value from an enclosing block, or
    defined by an op before `op` in its block."""
    d = _defining(v)
    if d is None or d.block != op.block:
        return True
    return d.is_before_in_block(op)


def _n_uses(v: ir.Value) -> int:
    return sum(1 for _ in v.uses)


def _static(op: ir.Operation, name: str) -> list[int]:
    return list(ir.DenseI64ArrayAttr(op.attributes[name]))


def _const(v: ir.Value) -> int | None:
    d = _defining(v)
    if d is None or d.name != "arith.constant":
        return None
    try:
        return ir.IntegerAttr(d.attributes["value"]).value
    except (ValueError, TypeError):
        return None
