"""Two rewrites of a row kernel's loops in the scheduled, vectorized tensor IR, between the transform schedule and
bufferization (jit.py runs them): a reduction over a row temporary fused into the loop that computes it, and the
temporary computed in the output row.

A row kernel's schedule (lower_schedule.py) leaves, per row, a temporary that several loops read (softmax's
exp, add + layer norm's sum) and a last loop, the root, that reads it tile by tile and writes the output row:

    %t   = scf.for ... iter_args(%a = tensor.empty)         // E: writes the temporary, tile by tile
    %sum = scf.for ... { %x = vector.transfer_read %t[...] } // S: a reduction over it
    %s   = tensor.extract_slice %out[...]                   // the output row
    %r   = scf.for %i ... iter_args(%b = %s) {              // R: reads %t[.., %i], writes %b[.., %i]
             %v = vector.transfer_read %t[.., %i] ...; ... tensor.insert_slice ... into %b[.., %i] }

1. `temps_into_outputs`. Bufferized as is, the temporary is a row on the stack and the root writes the output row
for the first time in a loop that does almost nothing else, so every store misses (read-for-ownership) in one
burst, with no work to hide it behind. Rewritten, E writes into the output row itself and R
updates it in place (its reads of %t become reads of its own iteration argument, at the tile it then
overwrites), so the output's lines are fetched while E computes and the temporary is gone:

    %s = tensor.extract_slice %out[...]                     // moved before E
    %t = scf.for ... iter_args(%a = %s)
    %r = scf.for %i ... iter_args(%b = %t) { %v = vector.transfer_read %b[.., %i] ... }

Matched strictly (anything else is left alone): an iteration argument of R (the first that fits) is initialized by
a slice used only there, whose source is used only by that slice and by the insertion of R's result; R counts from
0 to the slice's size in steps of the tile it inserts, the tile covering the slice's other dims whole; R reads %t
only as vectors of exactly that tile at the tile's offsets; %t is a result of E (after 2., E may carry a fused
reduction's accumulators too) whose initial value is a `tensor.empty` (CSE may share it with other temporaries);
and R is the only reader of %t left: where another loop still reads the row (layer norm's variance), the in-place
form measured slower, and the temporary stays on the stack.

2. `fuse_reductions` (run first). S re-reads every tile of %t that E just wrote, and its accumulators form a
dependent chain that nothing overlaps: S's body moves into E's loop (one loop with E's and S's iteration
arguments), its reads of %t replaced by the vector E writes at that tile. Matched when S has E's bounds and step,
E writes each tile once, S reads %t only as exactly E's tile of the same iteration, and everything else S uses is
available before E (so a reduction that needs another's result, layer norm's variance, stays where it is).
"""

from __future__ import annotations

from torch_mlir import ir
from torch_mlir.dialects import scf

VERSION = 2  # bump when a rewrite changes what it emits (part of the JIT cache key)
_DYNAMIC = -(2 ** 63)  # ShapedType::kDynamic in static offset/size arrays


def temps_into_outputs(module: ir.Module) -> int:
    """Rewrite every matching root loop of `module` (1. in the module docstring); returns how many."""
    return sum(_rewrite(r) for r in _loops(module))


def fuse_reductions(module: ir.Module) -> int:
    """Fuse every matching reduction loop into the loop that writes what it reads (2. in the module docstring);
    returns how many."""
    n = 0
    while any(_fuse_next(e) is not None for e in _loops(module)):  # a fusion erases loops: walk again
        n += 1
    return n


def _loops(module: ir.Module) -> list[ir.Operation]:
    loops: list[ir.Operation] = []

    def visit(op):
        if op.name == "scf.for":
            loops.append(op.operation)
        return ir.WalkResult.ADVANCE
    module.operation.walk(visit)
    return loops


def _fuse_next(e: ir.Operation) -> ir.Operation | None:
    """Fuse the first loop after producer loop `e` that uses its result, if it fits; the fused loop, or None."""
    written = _written_tile(e)
    if written is None:
        return None
    v, offs, sizes = written
    t = e.results[0]
    users = [_ancestor_in(u.owner, e.block) for u in t.uses]
    sibling = next((op.operation for op in _after(e) if any(op.operation == x for x in users)), None)
    if sibling is None or sibling.name != "scf.for" or not _same_space(e, sibling):
        return None
    iv = sibling.regions[0].blocks[0].arguments[0]
    reads = []
    for op in _walk(sibling):
        for i, x in enumerate(op.operands):
            if _inside(x, sibling):
                continue
            if x == t and op.name == "vector.transfer_read" and i == 0 and op.results[0].type == v.type \
                    and _reads_tile(op, [iv if isinstance(o, ir.Value) else o for o in offs], sizes):
                reads.append(op)
            elif not _dominates_op(x, e):
                return None
    if not reads or any(not _dominates_op(x, e) for x in sibling.operands):
        return None
    return _fuse(e, sibling, v, reads)


def _after(op: ir.Operation):
    """The ops after `op` in its block."""
    seen = False
    for x in op.block.operations:
        if seen:
            yield x
        seen = seen or x.operation == op


def _same_space(a: ir.Operation, b: ir.Operation) -> bool:
    """Whether loops `a` and `b` have the same bounds and step (the same values, or equal constants)."""
    pairs = zip(a.operands[:3], b.operands[:3])
    return all(x == y or (_const(x) is not None and _const(x) == _const(y)) for x, y in pairs)


def _written_tile(e: ir.Operation):
    """(vector, tile offsets, tile sizes) when loop `e` has one tensor result, written per iteration as one whole
    vector transfer into one tile of its iteration argument; else None."""
    if len(e.results) != 1 or len(e.operands) != 4:
        return None
    body = e.regions[0].blocks[0]
    arg = body.arguments[1]
    ins = _defining(list(body.operations)[-1].operands[0])
    if ins is None or ins.name != "tensor.insert_slice" or ins.operands[1] != arg:
        return None
    w = _defining(ins.operands[0])
    if w is None or w.name != "vector.transfer_write" or len(w.operands) != 2 + len(_static(ins, "static_sizes")):
        return None  # no mask
    offs, sizes = _static(ins, "static_offsets"), _static(ins, "static_sizes")
    dyn = list(ins.operands[2:2 + sum(1 for o in offs if o == _DYNAMIC)])
    if dyn != [body.arguments[0]] or any(n == _DYNAMIC for n in sizes):
        return None
    if _const(e.operands[2]) != sizes[offs.index(_DYNAMIC)]:
        return None  # tiles that overlap: a later iteration would overwrite part of this one's
    zeros = [0] * len(sizes)
    if not _reads_tile(w, zeros, sizes, vector=w.operands[0]):  # the vector covers the whole tile
        return None
    return w.operands[0], [body.arguments[0] if o == _DYNAMIC else o for o in offs], sizes


def _fuse(e: ir.Operation, s: ir.Operation, v: ir.Value, reads: list[ir.Operation]) -> ir.Operation:
    """One loop doing `e`'s then `s`'s iteration; `reads` (of `e`'s result in `s`) become `v`."""
    n_s = len(s.results)
    with ir.InsertionPoint(e):
        f = scf.ForOp(e.operands[0], e.operands[1], e.operands[2], [e.operands[3], *s.operands[3:]])
    eb, sb = e.regions[0].blocks[0], s.regions[0].blocks[0]
    e_yield, s_yield = list(eb.operations)[-1], list(sb.operations)[-1]
    with ir.InsertionPoint(f.body):
        y = scf.YieldOp([*e_yield.operands, *s_yield.operands])
    for op in list(eb.operations)[:-1] + list(sb.operations)[:-1]:
        op.operation.move_before(y)
    for r in reads:
        r.results[0].replace_all_uses_with(v)
        r.erase()
    eb.arguments[0].replace_all_uses_with(f.induction_variable)
    sb.arguments[0].replace_all_uses_with(f.induction_variable)
    eb.arguments[1].replace_all_uses_with(f.inner_iter_args[0])
    for i in range(n_s):
        sb.arguments[1 + i].replace_all_uses_with(f.inner_iter_args[1 + i])
    e.results[0].replace_all_uses_with(f.results[0])
    for i in range(n_s):
        s.results[i].replace_all_uses_with(f.results[1 + i])
    e.erase()
    s.erase()
    return f.operation


def _rewrite(r: ir.Operation) -> bool:
    for k in range(len(r.results)):
        m = _match(r, k)
        if m is not None:
            break
    else:
        return False
    e, j, s, t = m
    empty = _defining(e.operands[3 + j])
    s.move_before(e)
    e.operands[3 + j] = s.result
    if _n_uses(empty.result) == 0:
        empty.erase()
    arg = r.regions[0].blocks[0].arguments[1 + k]
    for read in _reads_inside(t, r):
        read.operands[0] = arg
    r.operands[3 + k] = t
    return True


def _match(r: ir.Operation, k: int):
    """(E, the index of the temporary among E's results, the output slice, the temporary) when root loop `r`'s
    iteration argument `k` can hold the temporary, else None."""
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
    if e is None or e.name != "scf.for" or e.block != r.block or len(e.operands) != 3 + len(e.results):
        return None
    j = next(i for i, x in enumerate(e.results) if x == t)
    empty = _defining(e.operands[3 + j])
    if empty is None or empty.name != "tensor.empty":
        return None
    if not all(_dominates_op(v, e) for v in s.operands):
        return None
    if any(_ancestor_in(use.owner, r.block) != r for use in t.uses):
        return None  # another loop reads the temporary too: measured slower in place (add + layer norm)
    return e, j, s, t


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


def _reads_tile(read: ir.Operation, offs: list, sizes: list[int], vector: ir.Value | None = None) -> bool:
    """Whether transfer read `read` (or transfer write of `vector`) reads exactly the tile at `offs` of `sizes`:
    in bounds, minor identity, its vector the tile's trailing sizes (the leading ones 1), no mask."""
    attrs = read.attributes
    rank = len(offs)
    first = 1 if vector is None else 2  # a write's operands: vector, tensor, indices
    vshape = ir.VectorType((read.results[0] if vector is None else vector).type).shape
    idx = list(read.operands[first:first + rank])
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
