"""Lower `graph` ops to linalg-on-tensors MLIR, one function per kernel (stage 1 of the CPU backend).

A kernel (a `graph.kernel` region, or one top-level op with the layout ops and constants that feed it)
becomes a public function with the ABI of notes/cpu-backend-mlir.md: memref arguments (inputs, then
preallocated outputs), `llvm.emit_c_interface`, `bufferization.to_tensor ... restrict` inside, and
`bufferization.materialize_in_destination` into each output.

Values are built lazily (`Val` trees): a `Leaf` reads a tensor through affine index expressions, so
broadcasts, permutes, expands and slices are indexing maps, never copies; elementwise ops are `Node`s
that compose until something forces them into memory (a kernel output, a reduction, a reshape of
non-contiguous data). One `linalg.generic` is emitted per materialized value, with every elementwise
op on the way inlined into its body: an elementwise chain is one loop nest per output.

The function is built as xDSL ops through mlir_builder.py (the one builder of the CPU backend's MLIR),
verified by xDSL and printed (`FuncBuilder.text`); only its transform schedule is text (lower_schedule.py).

The values themselves (`Aff`, `Leaf`, `Node`, `Body`, ...) are lower_values.py's.
Booleans live as i8 in memory (torch's byte layout; `vector<Nxi1>` in memory would be bit-packed)
and as i1 in registers. The per-op table is lower_ops.py, the transform schedules
lower_schedule.py, the partition of @forward into kernels backend.py; backend.py's `emit_module` prints the
text the backend compiles (`solder-opt --emit linalg`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from xdsl.dialects.builtin import DYNAMIC_INDEX, ArrayAttr, IntegerAttr, UnitAttr
from xdsl.ir import Block, Region, SSAValue

from solder.backends.cpu import symdims
from solder.backends.cpu.lower_values import (  # noqa: F401 - re-exported: lower_ops and backend import them here
    DTYPES,
    LOOP_FM,
    STORAGE,
    Aff,
    Body,
    Const,
    Index,
    Leaf,
    Node,
    Unsupported,
    Val,
    broadcast,
    ident,
    leaf_key,
    leaves,
    mtype,
    node,
    reindex,
    ttype,
)
from solder.backends.cpu.mlir_builder import (
    EMIT_C,
    INDEX,
    IR,
    FillOp,
    YieldOp,
    affine_map,
    bufferization,
    elem,
    finish,
    func,
    generic,
    name,
    tensor,
)


# -- one function -------------------------------------------------------------------------------
@dataclass
class GenericInfo:
    kind: str  # "root" (writes an output), "ew" (parallel temporary), "red" (reduction)
    domain: tuple[int, ...]
    reduced: tuple[int, ...] = ()
    uid: str = ""  # the generic's own tag suffix


class FuncBuilder:
    """Builds one kernel function as xDSL ops (mlir_builder.py): arguments, generics, stores; `text()` verifies
    and prints it, lower_schedule.py writes its schedule from `generics`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.block = Block()  # the function body; its arguments are added as they come (memrefs, then symbols)
        self.ir = IR(self.block)
        self.args: list[SSAValue] = []
        self.arg_types: list[tuple[tuple[int, ...], str]] = []
        self.generics: list[GenericInfo] = []
        self.tags: set[str] = set()
        self._n = 0
        self._memref: dict[SSAValue, SSAValue] = {}  # an argument's tensor -> its memref
        self._slices: dict[tuple, tuple[SSAValue, tuple[int, ...]]] = {}
        self._text: str | None = None
        # symbolic dims (a dynamic module, symdims.py): trailing `index` arguments, one per symbol used
        self.symbols: list[str] = []
        self._symbol_args: dict[str, SSAValue] = {}
        self.samples: list[dict[str, int]] = []  # bindings to check symbolic index ranges against
        self.graph_ops: list = []  # the graph ops this function computes: what the cost model estimates
        self._dims = symdims.IndexExprs(self._index_const, self._index_op, self._symbol)

    def _index_const(self, n: int) -> SSAValue:
        return self.ir.const(n, INDEX, self.fresh("i"))

    def _index_op(self, kind: str, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.ir.bin(kind, a, b, self.fresh("i"))

    def _symbol(self, sym: str) -> SSAValue:
        if sym not in self._symbol_args:
            self.symbols.append(sym)
            self._symbol_args[sym] = name(self.block.insert_arg(INDEX, len(self.block.args)), f"sym_{sym}")
        return self._symbol_args[sym]

    def dim(self, d) -> int | SSAValue:
        """A dim as an op's size operand: the int, or the index value of its expression."""
        if isinstance(d, int):
            return d
        try:
            return self._dims.value(d)
        except symdims.SymbolicUnsupported as e:
            raise Unsupported(str(e)) from None

    def dynamic_sizes(self, shape) -> list[SSAValue]:
        """The index values of the symbolic dims of `shape` (tensor.empty's operands)."""
        return [self.dim(d) for d in shape if not isinstance(d, int)]

    def fresh(self, stem: str = "v") -> str:
        """A fresh value name `<stem><n>` (the counter is shared by the whole function)."""
        self._n += 1
        return f"{stem}{self._n}"

    def arg(self, shape, dtype: str, writable: bool = False) -> Leaf:
        if dtype not in DTYPES:
            raise Unsupported(f"element type {dtype} (the CPU kernels compute in f32/i1/i32/i64)")
        i = len(self.args)
        m = name(self.block.insert_arg(mtype(shape, dtype), i), f"a{i}_m")
        self.args.append(m)
        self.arg_types.append((tuple(shape), dtype))
        t = self.ir.op(bufferization.ToTensorOp(m, restrict=True, writable=writable), f"a{i}")
        self._memref[t] = m
        return Leaf(tuple(shape), dtype, t, tuple(shape), ident(len(shape)))

    def empty(self, shape, dtype: str) -> SSAValue:
        sizes = self.dynamic_sizes(shape)
        return self.ir.empty(ttype(shape, dtype), sizes, self.fresh("e"))

    def filled(self, shape, dtype: str, value) -> SSAValue:
        e = self.empty(shape, dtype)
        c = self.ir.const(value, elem(STORAGE.get(dtype, dtype)), self.fresh("c"))
        t = ttype(shape, dtype)
        return self.ir.op(FillOp([c], [e], [t]), self.fresh("f"))

    # -- leaves: slices and unit dims become tensor.extract_slice, the rest an indexing map --
    def _operand(self, leaf: Leaf, domain: tuple[int, ...]) -> tuple[SSAValue, list[int]]:
        """(tensor, map results: the loop dim of each of its dims) of `leaf` read over `domain`.

        Per tensor dim: a constant index drops the dim and `k*d + c` is a strided slice; a dim read
        as `T*d_a + d_b + c` (a reshape split) is first expanded into one dim per loop dim."""
        leaf = self._split_leaf(leaf)
        offs, sizes, strides, res, kept = [], [], [], [], []
        for i, e in enumerate(leaf.exprs):
            if not e.terms:
                offs.append(e.const), sizes.append(1), strides.append(1)
                continue
            d, k = e.terms[0]
            if not symdims.in_bounds(e.const, k, domain[d], leaf.tshape[i], self.samples):
                raise Unsupported(f"index expression {e} of {_label(leaf.ssa)} leaves its dim of size "
                                  f"{leaf.tshape[i]}")
            offs.append(e.const), sizes.append(domain[d]), strides.append(k)
            res.append(d), kept.append(i)
        if len(set(res)) != len(res):
            raise Unsupported(f"{_label(leaf.ssa)} reads one loop dim in two tensor dims (a diagonal)")
        ssa = leaf.ssa
        if len(kept) != len(leaf.tshape) or tuple(sizes) != leaf.tshape or any(offs) or set(strides) - {1}:
            # the kept dims belong in the key: x[1:2] and x[1] read the same window, one keeping the dim
            key = (leaf.ssa, tuple(offs), tuple(sizes), tuple(strides), tuple(kept))
            if key not in self._slices:
                shape = tuple(sizes[i] for i in kept)
                hint = self.fresh("s")
                o, z, st = ([self.dim(x) for x in xs] for xs in (offs, sizes, strides))
                op = tensor.ExtractSliceOp(leaf.ssa, o, z, st, ttype(shape, leaf.dtype))
                self._slices[key] = (self.ir.op(op, hint), shape)
            ssa = self._slices[key][0]
        return ssa, res

    def _split_leaf(self, leaf: Leaf) -> Leaf:
        """`leaf` with every multi-term index dim expanded (tensor.expand_shape) into single terms."""
        shape, exprs, groups, changed = [], [], [], False
        for n, e in zip(leaf.tshape, leaf.exprs):
            if len(e.terms) <= 1:
                groups.append([len(shape)])
                shape.append(n), exprs.append(e)
                continue
            if not isinstance(n, int):
                raise Unsupported(f"index expression {e} splits the symbolic dim {n}")
            terms = sorted(e.terms, key=lambda t: -t[1])
            coefs = [k for _, k in terms]
            if coefs[-1] != 1 or n % coefs[0] or any(a % b for a, b in zip(coefs, coefs[1:])):
                raise Unsupported(f"index expression {e} is not a row-major split of a dim of size {n}")
            sizes = [n // coefs[0]] + [a // b for a, b in zip(coefs, coefs[1:])]
            c, qs = e.const, []
            for k in coefs:
                qs.append(c // k)
                c %= k
            groups.append(list(range(len(shape), len(shape) + len(sizes))))
            shape += sizes
            exprs += [Aff(q, ((d, 1),)) for (d, _), q in zip(terms, qs)]
            changed = True
        if not changed:
            return leaf
        key = (leaf.ssa, tuple(shape))
        if key not in self._slices:
            hint = self.fresh("x")
            self._slices[key] = (self._expand(leaf.ssa, groups, shape, leaf.dtype, hint), tuple(shape))
        return Leaf(leaf.shape, leaf.dtype, self._slices[key][0], tuple(shape), tuple(exprs))

    def _expand(self, src: SSAValue, groups: list[list[int]], shape, dtype: str, hint: str) -> SSAValue:
        """tensor.expand_shape of `src` into `shape` (`groups`: the result dims of each source dim)."""
        sizes = [self.dim(n) for n in shape]
        static = [n if isinstance(n, int) else DYNAMIC_INDEX for n in sizes]
        dyn = [n for n in sizes if not isinstance(n, int)]
        op = tensor.ExpandShapeOp(src, dyn, _reassociation(groups), static, ttype(shape, dtype))
        return self.ir.op(op, hint)

    def _collapse(self, src: SSAValue, groups: list[list[int]], shape, dtype: str, hint: str) -> SSAValue:
        op = tensor.CollapseShapeOp.build(operands=[src], result_types=[ttype(shape, dtype)],
                                          properties={"reassociation": _reassociation(groups)})
        return self.ir.op(op, hint)

    def generic(self, v: Val | list[Val], out: SSAValue | list[SSAValue], out_shape,
                out_dtype: str | list[str], kind: str, reduced: tuple[int, ...] = (),
                combine: Callable | None = None) -> list[SSAValue] | SSAValue:
        """One linalg.generic over the values' (common) shape writing `out` (kept dims when reducing).

        Several values (same shape, parallel only) make one generic with several outputs."""
        vals, outs = (v, out) if isinstance(v, list) else ([v], [out])
        dts = out_dtype if isinstance(out_dtype, list) else [out_dtype]
        domain = vals[0].shape
        rank = len(domain)
        ls = [leaf for x in vals for leaf in leaves(x)]
        ls = list({leaf_key(leaf): leaf for leaf in ls}.values())
        ops = [self._operand(leaf, domain) for leaf in ls]
        kept = [i for i in range(rank) if i not in reduced]
        maps = [affine_map(rank, m) for _, m in ops] + [affine_map(rank, kept)] * len(outs)
        iters = ["reduction" if i in reduced else "parallel" for i in range(rank)]
        uid = self.fresh("g")
        self.generics.append(GenericInfo(kind, tuple(domain), tuple(reduced), uid))
        block = Block(arg_types=[elem(STORAGE.get(leaf.dtype, leaf.dtype)) for leaf in ls]
                      + [elem(STORAGE.get(dt, dt)) for dt in dts])
        for i, a in enumerate(block.args):
            name(a, f"{uid}_i{i}" if i < len(ls) else f"{uid}_o{i - len(ls)}")
        body = Body(IR(block), f"{uid}_t", {leaf_key(leaf): a for leaf, a in zip(ls, block.args)})
        ys = [body.value(x) for x in vals]
        stored = dts
        if combine is not None:
            y = ys[0]
            if dts[0] in STORAGE:  # bool any/all: combine in i8, where the accumulator lives (a combiner
                y = body.em.cast("extui", y, STORAGE[dts[0]])  # on the block argument itself keeps the
                stored = [STORAGE[dts[0]]]  # reduction recognizable to the tiling)
            ys = [combine(body, y, block.args[-1])]
        ys = [body.em.cast("extui", y, STORAGE[dt]) if dt in STORAGE else y for y, dt in zip(ys, stored)]
        body.em.ir.insert(YieldOp(*ys))
        op = self.ir.insert(generic([o for o, _ in ops], outs, maps, iters, block,
                                    (f"solder.{self.name}.{kind}", f"solder.{self.name}.{uid}")))
        if len(outs) == 1:
            return name(op.results[0], uid)
        return [name(r, f"{uid}_r{i}") for i, r in enumerate(op.results)]

    # -- materializing values -----------------------------------------------------------------
    def materialize(self, v: Val) -> Leaf:
        """`v` computed into a temporary (a tensor.empty the schedule shrinks to a row)."""
        if isinstance(v, Leaf) and v.is_identity:
            return v
        t = self.generic(v, self.empty(v.shape, v.dtype), v.shape, v.dtype, "ew")
        return Leaf(v.shape, v.dtype, t, v.shape, ident(len(v.shape)))

    def reduce(self, v: Val, dims: tuple[int, ...], init, combine: Callable) -> Val:
        """Reduce `v` over `dims` (result: the kept dims only), starting from `init`.

        The loops follow the memory order of `v`'s largest input where that puts a kept dim innermost and
        the reduced ones outside it (a spatial sum of channels-last data: [N, H, W, C] loops, C innermost,
        instead of a walk down each channel at a stride of C)."""
        dims = tuple(sorted(dims))
        order = _loop_order(v, dims)
        if order is None:
            return self._reduce(v, dims, init, combine)
        inv = {d: i for i, d in enumerate(order)}
        looped = reindex(v, tuple(v.shape[d] for d in order), [Aff.dim(inv[k]) for k in range(len(v.shape))])
        r = self._reduce(looped, tuple(sorted(inv[d] for d in dims)), init, combine)
        kept = [d for d in range(len(v.shape)) if d not in dims]
        got = [d for d in order if d not in dims]  # r's dims, in loop order
        if got == kept:
            return r
        return reindex(r, tuple(v.shape[d] for d in kept), [Aff.dim(kept.index(d)) for d in got])

    def _reduce(self, v: Val, dims: tuple[int, ...], init, combine: Callable) -> Leaf:
        kept = tuple(n for i, n in enumerate(v.shape) if i not in dims)
        read = {d for leaf in leaves(v) for e in leaf.exprs for d, _ in e.terms}
        if not set(dims) <= read:  # a reduced dim no operand map names (a broadcast, a size-1 or
            v = self.materialize(v)  # constant input): the loop would have no bound, write it out first
        out = self.filled(kept, v.dtype, init)
        t = self.generic(v, out, kept, v.dtype, "red", dims, combine)
        return Leaf(kept, v.dtype, t, kept, ident(len(kept)))

    def reshape(self, v: Val, shape: tuple[int, ...]) -> Val:
        """`v` with a new shape (same elements in row-major order)."""
        shape = tuple(shape)
        if shape == v.shape:
            return v
        if [n for n in shape if n != 1] == [n for n in v.shape if n != 1]:
            return _unit_reshape(v, shape)
        static = symdims.is_static(v.shape) and symdims.is_static(shape)
        sub = symdims.split_sub(v.shape, shape)  # static shapes: the plain split
        if sub is not None:
            return reindex(v, shape, sub)
        groups = _merge_groups(v.shape, shape) if static else None
        if groups is not None:  # dims merged: tensors that hold them side by side collapsed, no copy
            merged = self._push_merge(v, shape, groups, {})
            if merged is not None:
                return merged
        how = None if static else symdims.regroup(v.shape, shape, self.samples)
        if how is not None:  # [2*s0, 64] <-> [2, s0, 64]: the tensors it reads regrouped, no copy
            pushed = self._push_regroup(v, shape, *how, {})
            if pushed is not None:
                return pushed
        leaf = self.materialize(v)
        return self._reshape_tensor(leaf, shape)

    def _push_regroup(self, v: Val, shape: tuple, kind: str, groups: list[list[int]], memo: dict) -> Val | None:
        """`v` reshaped by a symbolic regrouping, pushed through elementwise nodes to their leaves: a tensor
        read whole is regrouped (`_regroup`), a leaf that does not read a dim being split is re-indexed.
        None where that does not go (the caller materializes `v` first)."""
        if id(v) in memo:
            return memo[id(v)]
        out: Val | None = None
        if isinstance(v, Leaf) and v.is_identity:
            out = self._regroup(v, shape, kind, groups)
        elif isinstance(v, Const):
            out = Const(shape, v.dtype, v.value)
        elif isinstance(v, Node):
            args = [self._push_regroup(a, shape, kind, groups, memo) for a in v.args]
            out = None if any(a is None for a in args) else Node(shape, v.dtype, v.fn, tuple(args))
        elif isinstance(v, Leaf) and kind == "expand":
            split = {i for i, g in enumerate(groups) if len(g) > 1}
            if not any(d in split for e in v.exprs for d, _ in e.terms):
                out = reindex(v, shape, [Aff.dim(g[0]) if len(g) == 1 else Aff() for g in groups])
        memo[id(v)] = out
        return out

    def _push_merge(self, v: Val, shape: tuple, groups: list[list[int]], memo: dict) -> Val | None:
        """`v` with the dims of each of `groups` merged into one, pushed through elementwise nodes to their
        leaves (`_merge_leaf`); None where a leaf does not hold a merged group's dims side by side."""
        if id(v) in memo:
            return memo[id(v)]
        out: Val | None = None
        if isinstance(v, Leaf):
            out = self._merge_leaf(v, shape, groups)
        elif isinstance(v, Const):
            out = Const(shape, v.dtype, v.value)
        elif isinstance(v, Node):
            args = [self._push_merge(a, shape, groups, memo) for a in v.args]
            out = None if any(a is None for a in args) else Node(shape, v.dtype, v.fn, tuple(args))
        memo[id(v)] = out
        return out

    def _merge_leaf(self, leaf: Leaf, shape: tuple, groups: list[list[int]]) -> Leaf | None:
        """`leaf` read over the merged dims: each merged group must be read by consecutive tensor dims, in order,
        whole (inner sizes equal), so that collapsing those tensor dims gives the merged index (a flatten of
        channels-last data over H and W: its tensor's H and W dims collapse). A leaf that reads no dim of a
        group broadcasts along the merged one."""
        new_dim = {d: j for j, g in enumerate(groups) for d in g}
        tgroups: list[list[int]] = []
        exprs: list[Aff] = []
        t = 0
        while t < len(leaf.exprs):
            e = leaf.exprs[t]
            ds = [d for d, _ in e.terms]
            if not any(len(groups[new_dim[d]]) > 1 for d in ds):  # no merged dim: renumbered
                tgroups.append([t])
                exprs.append(Aff(e.const, tuple((new_dim[d], k) for d, k in e.terms)))
                t += 1
                continue
            g = groups[new_dim[ds[0]]]
            span = list(range(t, t + len(g)))
            if span[-1] >= len(leaf.exprs) or [leaf.exprs[i] for i in span] != [Aff.dim(d) for d in g] or \
                    any(leaf.tshape[i] != leaf.shape[d] for i, d in zip(span[1:], g[1:])):
                return None
            tgroups.append(span)
            exprs.append(Aff.dim(new_dim[g[0]]))
            t += len(g)
        tshape = tuple(symdims.product([leaf.tshape[i] for i in tg]) for tg in tgroups)
        ssa = leaf.ssa
        if any(len(tg) > 1 for tg in tgroups):
            ssa = self._collapse(ssa, tgroups, tshape, leaf.dtype, self.fresh("r"))
        return Leaf(shape, leaf.dtype, ssa, tshape, tuple(exprs))

    def _regroup(self, leaf: Leaf, shape: tuple, kind: str, groups: list[list[int]]) -> Leaf:
        """A symbolic reshape of a tensor as one tensor.expand_shape / collapse_shape (`groups`: symdims.regroup)."""
        hint, dt = self.fresh("r"), leaf.dtype
        if kind == "expand":
            r = self._expand(leaf.ssa, groups, shape, dt, hint)
        else:
            r = self._collapse(leaf.ssa, groups, shape, dt, hint)
        return Leaf(shape, dt, r, shape, ident(len(shape)))

    def _reshape_tensor(self, leaf: Leaf, shape: tuple[int, ...]) -> Leaf:
        src, dt = leaf.tshape, leaf.dtype
        cur = leaf.ssa
        if len(src) != 1:
            flat = (symdims.product(src),)
            cur = self._collapse(cur, [list(range(len(src)))] if src else [], flat, dt, self.fresh("r"))
        if len(shape) != 1:
            cur = self._expand(cur, [list(range(len(shape)))] if shape else [], shape, dt, self.fresh("r"))
        return Leaf(shape, dt, cur, shape, ident(len(shape)))

    def inv_count(self, dims) -> float | SSAValue:
        """1/prod(dims) for a mean: a float, or (symbolic dims) the f32 value computed from the sizes."""
        n = symdims.product(dims)
        if isinstance(n, int):
            return 1.0 / n if n else float("nan")  # the mean of nothing is NaN, as in eager
        i64 = self.ir.cast("index_cast", self.dim(n), "i64", self.fresh("i"))
        f = self.ir.cast("sitofp", i64, "f32", self.fresh("i"))
        one = self.ir.const(1.0, elem("f32"), self.fresh("i"))
        return self.ir.bin("divf", one, f, self.fresh("i"))

    def store(self, pairs: list[tuple[Val, Leaf]]) -> None:
        """Write each value into its output argument: one root generic per distinct shape."""
        by_shape: dict[tuple[int, ...], list[tuple[Val, Leaf]]] = {}
        for v, dest in pairs:
            by_shape.setdefault(v.shape, []).append((v, dest))
        for shape, group in by_shape.items():
            rs = self.generic([v for v, _ in group], [d.ssa for _, d in group], shape,
                              [d.dtype for _, d in group], "root")
            rs = rs if isinstance(rs, list) else [rs]
            for r, (_, d) in zip(rs, group):
                self.ir.insert(bufferization.MaterializeInDestinationOp.build(
                    operands=[r, self._memref[d.ssa]], result_types=[None],
                    properties={"restrict": UnitAttr(), "writable": UnitAttr()}))

    def text(self) -> str:
        """The function, verified by xDSL (mlir_builder.finish) and printed."""
        if self._text is None:
            self.ir.insert(func.ReturnOp())
            f = func.FuncOp(self.name, ([a.type for a in self.block.args], []), Region(self.block))
            f.attributes[EMIT_C] = UnitAttr()
            self._text = finish(f)
        return self._text


def _label(v: SSAValue) -> str:
    """A value as error messages name it."""
    return f"%{v.name_hint}" if v.name_hint else "a tensor"


def _reassociation(groups: list[list[int]]) -> ArrayAttr:
    return ArrayAttr([ArrayAttr([IntegerAttr(i, 64) for i in g]) for g in groups])


def _loop_order(v: Val, dims: tuple[int, ...]) -> list[int] | None:
    """The domain dims of a reduction of `v` over `dims` in the memory order of its largest input, where the
    domain's own order puts a reduced dim innermost but that input's innermost dim is a kept one; else None.
    Only for a reduction over several dims: one over the last dim alone gets the row schedule (threads,
    vector lanes along the row) in the domain's own order."""
    rank = len(v.shape)
    if rank < 2 or rank - 1 not in dims or len(dims) < 2:
        return None
    big = max(leaves(v), key=lambda leaf: _elements(leaf.tshape), default=None)
    if big is None or len(big.exprs) != rank:
        return None
    order = [e.terms[0][0] if e.const == 0 and len(e.terms) == 1 and e.terms[0][1] == 1 else None
             for e in big.exprs]
    if sorted(d for d in order if d is not None) != list(range(rank)) or order[-1] in dims:
        return None
    return order


def _merge_groups(src: tuple[int, ...], dst: tuple[int, ...]) -> list[list[int]] | None:
    """The runs of consecutive `src` dims that `dst` merges, one per `dst` dim, when the reshape only merges
    dims ([1, 8, 4, 5] -> [1, 8, 20]: [[0], [1], [2, 3]]); else None."""
    groups: list[list[int]] = []
    i = 0
    for n in dst:
        g, p = [], 1
        while i < len(src) and (not g or p < n):
            g.append(i)
            p *= src[i]
            i += 1
        if p != n:
            return None
        groups.append(g)
    return groups if i == len(src) and any(len(g) > 1 for g in groups) else None


def _elements(shape) -> int:
    n = 1
    for d in shape:
        n *= d if isinstance(d, int) else 1
    return n


def _unit_reshape(v: Val, shape: tuple[int, ...]) -> Val:
    """A reshape that only inserts or drops size-1 dims: a reindexing, no data movement."""
    src = [i for i, n in enumerate(v.shape) if n != 1]
    dst = [i for i, n in enumerate(shape) if n != 1]
    sub = [Aff() for _ in v.shape]
    for i, j in zip(src, dst):
        sub[i] = Aff.dim(j)
    return reindex(v, shape, sub)

