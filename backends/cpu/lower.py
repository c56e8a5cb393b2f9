"""Lower `graph` ops to linalg-on-tensors MLIR text, one function per kernel (stage 1 of the CPU backend).

A kernel (a `graph.kernel` region, or one top-level op with the layout ops and constants that feed it)
becomes a public function with the ABI of notes/cpu-backend-mlir.md: memref arguments (inputs, then
preallocated outputs), `llvm.emit_c_interface`, `bufferization.to_tensor ... restrict` inside, and
`bufferization.materialize_in_destination` into each output.

Values are built lazily (`Val` trees): a `Leaf` reads a tensor through affine index expressions, so
broadcasts, permutes, expands and slices are indexing maps, never copies; elementwise ops are `Node`s
that compose until something forces them into memory (a kernel output, a reduction, a reshape of
non-contiguous data). One `linalg.generic` is emitted per materialized value, with every elementwise
op on the way inlined into its body: an elementwise chain is one loop nest per output.

The values themselves (`Aff`, `Leaf`, `Node`, `Body`, ...) are lower_values.py's.
Booleans live as i8 in memory (torch's byte layout; `vector<Nxi1>` in memory would be bit-packed)
and as i1 in registers. The per-op table is lower_ops.py, the transform schedules
lower_schedule.py, the partition of @forward into kernels backend.py; backend.py's `emit_module` prints the
text the backend compiles (`solder-opt --emit linalg`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
    literal,
    mtype,
    node,
    reindex,
    ttype,
)
from solder.backends.cpu.mathapprox import f32_literal


# -- one function -------------------------------------------------------------------------------
@dataclass
class GenericInfo:
    kind: str  # "root" (writes an output), "ew" (parallel temporary), "red" (reduction)
    domain: tuple[int, ...]
    reduced: tuple[int, ...] = ()
    uid: str = ""  # the generic's own tag suffix


class FuncBuilder:
    """Builds one kernel function: arguments, generics, stores; then its text and schedule."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.args: list[str] = []
        self.arg_types: list[tuple[tuple[int, ...], str]] = []
        self.lines: list[str] = []
        self.generics: list[GenericInfo] = []
        self.tags: set[str] = set()
        self._n = 0
        self._slices: dict[tuple, tuple[str, tuple[int, ...]]] = {}
        # symbolic dims (a dynamic module, symdims.py): trailing `index` arguments, one per symbol used
        self.symbols: list[str] = []
        self.samples: list[dict[str, int]] = []  # bindings to check symbolic index ranges against
        self._dims = symdims.IndexExprs(self._emit_index, self._symbol)

    def _emit_index(self, rhs: str) -> str:
        r = self.fresh("i")
        self.lines.append(f"{r} = {rhs}")
        return r

    def _symbol(self, name: str) -> str:
        if name not in self.symbols:
            self.symbols.append(name)
        return f"%sym_{name}"

    def dim(self, d) -> str:
        """A dim as it appears in an op's size list: the int, or the SSA index value of its expression."""
        if isinstance(d, int):
            return str(d)
        try:
            return self._dims.value(d)
        except symdims.SymbolicUnsupported as e:
            raise Unsupported(str(e)) from None

    def dynamic_sizes(self, shape) -> str:
        """`(%d0, %d1)` for the symbolic dims of `shape` (tensor.empty's operands)."""
        return "(" + ", ".join(self.dim(d) for d in shape if not isinstance(d, int)) + ")"

    def fresh(self, stem: str = "v") -> str:
        self._n += 1
        return f"%{stem}{self._n}"

    def arg(self, shape, dtype: str, writable: bool = False) -> Leaf:
        if dtype not in DTYPES:
            raise Unsupported(f"element type {dtype} (the CPU kernels compute in f32/i1/i32/i64)")
        name = f"%a{len(self.args)}"
        self.args.append(f"{name}_m: {mtype(shape, dtype)}")
        self.arg_types.append((tuple(shape), dtype))
        flags = "restrict writable" if writable else "restrict"
        self.lines.append(f"{name} = bufferization.to_tensor {name}_m {flags} : "
                          f"{mtype(shape, dtype)} to {ttype(shape, dtype)}")
        return Leaf(tuple(shape), dtype, name, tuple(shape), ident(len(shape)))

    def empty(self, shape, dtype: str) -> str:
        e = self.fresh("e")
        self.lines.append(f"{e} = tensor.empty{self.dynamic_sizes(shape)} : {ttype(shape, dtype)}")
        return e

    def filled(self, shape, dtype: str, value) -> str:
        e, c, f = self.empty(shape, dtype), self.fresh("c"), self.fresh("f")
        st = STORAGE.get(dtype, dtype)
        self.lines.append(f"{c} = arith.constant {literal(value, dtype)} : {st}")
        self.lines.append(f"{f} = linalg.fill ins({c} : {st}) outs({e} : {ttype(shape, dtype)}) "
                          f"-> {ttype(shape, dtype)}")
        return f

    # -- leaves: slices and unit dims become tensor.extract_slice, the rest an indexing map --
    def _operand(self, leaf: Leaf, domain: tuple[int, ...]) -> tuple[str, str, str]:
        """(ssa, tensor type, map results) of `leaf` read over `domain`.

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
                raise Unsupported(f"index expression {e} of {leaf.ssa} leaves its dim of size {leaf.tshape[i]}")
            offs.append(e.const), sizes.append(domain[d]), strides.append(k)
            res.append(d), kept.append(i)
        if len(set(res)) != len(res):
            raise Unsupported(f"{leaf.ssa} reads one loop dim in two tensor dims (a diagonal)")
        ssa, shape = leaf.ssa, leaf.tshape
        if len(kept) != len(leaf.tshape) or tuple(sizes) != leaf.tshape or any(offs) or set(strides) - {1}:
            # the kept dims belong in the key: x[1:2] and x[1] read the same window, one keeping the dim
            key = (leaf.ssa, tuple(offs), tuple(sizes), tuple(strides), tuple(kept))
            if key not in self._slices:
                shape = tuple(sizes[i] for i in kept)
                s = self.fresh("s")
                j = lambda xs: ", ".join(map(self.dim, xs))  # noqa: E731
                self.lines.append(f"{s} = tensor.extract_slice {leaf.ssa}[{j(offs)}] [{j(sizes)}] "
                                  f"[{j(strides)}] : {ttype(leaf.tshape, leaf.dtype)} to "
                                  f"{ttype(shape, leaf.dtype)}")
                self._slices[key] = (s, shape)
            ssa, shape = self._slices[key]
        return ssa, ttype(shape, leaf.dtype), ", ".join(f"d{d}" for d in res)

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
            r = self.fresh("x")
            grp = ", ".join("[" + ", ".join(map(str, g)) + "]" for g in groups)
            self.lines.append(f"{r} = tensor.expand_shape {leaf.ssa} [{grp}] output_shape "
                              f"[{', '.join(map(self.dim, shape))}] : {ttype(leaf.tshape, leaf.dtype)} into "
                              f"{ttype(shape, leaf.dtype)}")
            self._slices[key] = (r, tuple(shape))
        return Leaf(leaf.shape, leaf.dtype, self._slices[key][0], tuple(shape), tuple(exprs))

    def generic(self, v: Val | list[Val], out: str | list[str], out_shape, out_dtype: str | list[str],
                kind: str, reduced: tuple[int, ...] = (), combine: Callable | None = None) -> list[str] | str:
        """One linalg.generic over the values' (common) shape writing `out` (kept dims when reducing).

        Several values (same shape, parallel only) make one generic with several outputs."""
        vals, outs = (v, out) if isinstance(v, list) else ([v], [out])
        dts = out_dtype if isinstance(out_dtype, list) else [out_dtype]
        domain = vals[0].shape
        rank = len(domain)
        ls = [leaf for x in vals for leaf in leaves(x)]
        ls = list({leaf_key(leaf): leaf for leaf in ls}.values())
        ops = [self._operand(leaf, domain) for leaf in ls]
        dims = ", ".join(f"d{i}" for i in range(rank))
        kept = ", ".join(f"d{i}" for i in range(rank) if i not in reduced)
        maps = [f"affine_map<({dims}) -> ({m})>" for _, _, m in ops]
        maps += [f"affine_map<({dims}) -> ({kept})>"] * len(outs)
        iters = ", ".join('"reduction"' if i in reduced else '"parallel"' for i in range(rank))
        res = self.fresh("g")
        tag = f"solder.{self.name}.{kind}"
        self.generics.append(GenericInfo(kind, tuple(domain), tuple(reduced), res[1:]))
        uniq = f"solder.{self.name}.{res[1:]}"
        ots = [ttype(out_shape, dt) for dt in dts]
        ins = f"ins({', '.join(o[0] for o in ops)} : {', '.join(o[1] for o in ops)}) " if ops else ""
        results = res if len(outs) == 1 else f"{res}:{len(outs)}"
        self.lines.append(f"{results} = linalg.generic {{indexing_maps = [{', '.join(maps)}], "
                          f"iterator_types = [{iters}]}} {ins}outs({', '.join(outs)} : {', '.join(ots)}) "
                          f"attrs = {{{tag}, {uniq}}} {{")
        bargs = [f"{res[1:]}_i{i}" for i in range(len(ops))] + [f"{res[1:]}_o{i}" for i in range(len(outs))]
        btypes = [STORAGE.get(leaf.dtype, leaf.dtype) for leaf in ls] + [STORAGE.get(dt, dt) for dt in dts]
        self.lines.append("^bb0(" + ", ".join(f"%{a}: {t}" for a, t in zip(bargs, btypes)) + "):")
        body = Body(f"%{res[1:]}_t", {leaf_key(leaf): f"%{a}" for leaf, a in zip(ls, bargs)})
        ys = [body.value(x) for x in vals]
        stored = dts
        if combine is not None:
            y = ys[0]
            if dts[0] in STORAGE:  # bool any/all: combine in i8, where the accumulator lives (a combiner
                y = body.emit(f"arith.extui {y} : {dts[0]} to {STORAGE[dts[0]]}")  # on the block argument
                stored = [STORAGE[dts[0]]]  # itself keeps the reduction recognizable to the tiling)
            ys = [combine(body, y, f"%{bargs[-1]}")]
        ys = [body.emit(f"arith.extui {y} : {dt} to {STORAGE[dt]}") if dt in STORAGE else y
              for y, dt in zip(ys, stored)]
        self.lines.extend("  " + ln for ln in body.em.lines)
        self.lines.append(f"  linalg.yield {', '.join(ys)} : {', '.join(STORAGE.get(dt, dt) for dt in dts)}")
        self.lines.append(f"}} -> {ots[0] if len(ots) == 1 else '(' + ', '.join(ots) + ')'}")
        return res if len(outs) == 1 else [f"{res}#{i}" for i in range(len(outs))]

    # -- materializing values -----------------------------------------------------------------
    def materialize(self, v: Val) -> Leaf:
        """`v` computed into a temporary (a tensor.empty the schedule shrinks to a row)."""
        if isinstance(v, Leaf) and v.is_identity:
            return v
        t = self.generic(v, self.empty(v.shape, v.dtype), v.shape, v.dtype, "ew")
        return Leaf(v.shape, v.dtype, t, v.shape, ident(len(v.shape)))

    def reduce(self, v: Val, dims: tuple[int, ...], init, combine: Callable) -> Leaf:
        """Reduce `v` over `dims` (result: the kept dims only), starting from `init`."""
        dims = tuple(sorted(dims))
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

    def _regroup(self, leaf: Leaf, shape: tuple, kind: str, groups: list[list[int]]) -> Leaf:
        """A symbolic reshape of a tensor as one tensor.expand_shape / collapse_shape (`groups`: symdims.regroup)."""
        r, dt = self.fresh("r"), leaf.dtype
        grp = ", ".join("[" + ", ".join(map(str, g)) + "]" for g in groups)
        if kind == "expand":
            sizes = ", ".join(map(self.dim, shape))
            self.lines.append(f"{r} = tensor.expand_shape {leaf.ssa} [{grp}] output_shape [{sizes}] : "
                              f"{ttype(leaf.tshape, dt)} into {ttype(shape, dt)}")
        else:
            self.lines.append(f"{r} = tensor.collapse_shape {leaf.ssa} [{grp}] : {ttype(leaf.tshape, dt)} into "
                              f"{ttype(shape, dt)}")
        return Leaf(shape, dt, r, shape, ident(len(shape)))

    def _reshape_tensor(self, leaf: Leaf, shape: tuple[int, ...]) -> Leaf:
        src, dt = leaf.tshape, leaf.dtype
        cur, cur_shape = leaf.ssa, src
        if len(src) != 1:
            flat = (symdims.product(src),)
            reassoc = "[" + ", ".join(str(i) for i in range(len(src))) + "]" if src else ""
            nxt = self.fresh("r")
            self.lines.append(f"{nxt} = tensor.collapse_shape {cur} [{reassoc}] : "
                              f"{ttype(src, dt)} into {ttype(flat, dt)}")
            cur, cur_shape = nxt, flat
        if len(shape) != 1:
            reassoc = "[" + ", ".join(str(i) for i in range(len(shape))) + "]" if shape else ""
            nxt = self.fresh("r")
            out_shape = ", ".join(map(self.dim, shape))
            self.lines.append(f"{nxt} = tensor.expand_shape {cur} [{reassoc}] output_shape [{out_shape}] : "
                              f"{ttype(cur_shape, dt)} into {ttype(shape, dt)}")
            cur = nxt
        return Leaf(shape, dt, cur, shape, ident(len(shape)))

    def inv_count(self, dims) -> float | str:
        """1/prod(dims) for a mean: a float, or (symbolic dims) the SSA f32 computed from the sizes."""
        n = symdims.product(dims)
        if isinstance(n, int):
            return 1.0 / n if n else float("nan")  # the mean of nothing is NaN, as in eager
        i64 = self._emit_index(f"arith.index_cast {self.dim(n)} : index to i64")
        f = self._emit_index(f"arith.sitofp {i64} : i64 to f32")
        one = self._emit_index(f"arith.constant {f32_literal(1.0)} : f32")
        return self._emit_index(f"arith.divf {one}, {f} : f32")

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
                t = ttype(d.shape, d.dtype)
                self.lines.append(f"bufferization.materialize_in_destination {r} in restrict writable "
                                  f"{d.ssa}_m : ({t}, {mtype(d.shape, d.dtype)}) -> ()")

    def text(self) -> str:
        args = self.args + [f"%sym_{n}: index" for n in self.symbols]
        head = f"func.func @{self.name}({', '.join(args)}) attributes {{llvm.emit_c_interface}} {{"
        return head + "\n" + "\n".join("  " + ln for ln in self.lines) + "\n  return\n}"


def _unit_reshape(v: Val, shape: tuple[int, ...]) -> Val:
    """A reshape that only inserts or drops size-1 dims: a reindexing, no data movement."""
    src = [i for i, n in enumerate(v.shape) if n != 1]
    dst = [i for i, n in enumerate(shape) if n != 1]
    sub = [Aff() for _ in v.shape]
    for i, j in zip(src, dst):
        sub[i] = Aff.dim(j)
    return reindex(v, shape, sub)

