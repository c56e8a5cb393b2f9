"""The lazy values of the CPU lowering: affine index expressions, `Val` trees and generic bodies.

A `Leaf` reads a tensor through affine index expressions (`Aff`), so broadcasts, permutes, expands and
slices are indexing maps, never copies; a `Node` is an elementwise op over values of its shape; `Const`
and `Index` are an immediate and the value of an index expression. `reindex`/`broadcast` move values
between iteration spaces; `Body` emits one `linalg.generic` body, inlining every node once. lower.py's
`FuncBuilder` decides what to materialize and emits the generics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from solder.backends.cpu.mathapprox import Emitter, f32_literal
from solder.compiler.errors import SolderError

LOOP_FM = "nsz,arcp,contract,afn"  # no `reassoc` in loop bodies (notes: it serializes accumulators)
STORAGE = {"i1": "i8"}  # element type in memory where it differs from the one in registers
DTYPES = ("f32", "i1", "i8", "i32", "i64")


class Unsupported(SolderError):
    """The CPU lowering cannot express this op (its kernel runs on the reference backend instead)."""


# -- affine index expressions -------------------------------------------------------------------
@dataclass(frozen=True)
class Aff:
    """const + sum(coef * d_dim): an index of a tensor dim in terms of the iteration dims."""

    const: int = 0
    terms: tuple[tuple[int, int], ...] = ()

    @staticmethod
    def dim(k: int) -> Aff:
        return Aff(0, ((k, 1),))

    def subst(self, sub: list[Aff]) -> Aff:
        """Replace each d_k by sub[k]."""
        c, acc = self.const, {}
        for d, k in self.terms:
            c += k * sub[d].const
            for d2, k2 in sub[d].terms:
                acc[d2] = acc.get(d2, 0) + k * k2
        return Aff(c, tuple(sorted((d, k) for d, k in acc.items() if k)))


def ident(rank: int) -> tuple[Aff, ...]:
    return tuple(Aff.dim(i) for i in range(rank))


# -- lazy values --------------------------------------------------------------------------------
@dataclass(eq=False)
class Val:
    shape: tuple[int, ...]
    dtype: str


@dataclass(eq=False)
class Leaf(Val):
    """Element `exprs(d)` of tensor `ssa` (shape `tshape`, element type `storage`)."""

    ssa: str = ""
    tshape: tuple[int, ...] = ()
    exprs: tuple[Aff, ...] = ()

    @property
    def is_identity(self) -> bool:
        return self.tshape == self.shape and self.exprs == ident(len(self.shape))


@dataclass(eq=False)
class Node(Val):
    """An elementwise op: `fn(body, arg_ssa_names, node) -> ssa` over args of this node's shape."""

    fn: Callable = None  # type: ignore[assignment]
    args: tuple[Val, ...] = ()


@dataclass(eq=False)
class Const(Val):
    value: float | int | bool = 0


@dataclass(eq=False)
class Index(Val):
    """The i64 value of an affine expression of the iteration indices (arange, triangular masks)."""

    expr: Aff = field(default_factory=Aff)


def reindex(v: Val, shape: tuple[int, ...], sub: list[Aff], memo: dict | None = None) -> Val:
    """`v` read at index sub(d) for d over `shape` (sub[k] gives v's dim k in the new dims)."""
    memo = {} if memo is None else memo
    if id(v) in memo:
        return memo[id(v)]
    if isinstance(v, Leaf):
        out: Val = Leaf(shape, v.dtype, v.ssa, v.tshape, tuple(e.subst(sub) for e in v.exprs))
    elif isinstance(v, Node):
        out = Node(shape, v.dtype, v.fn, tuple(reindex(a, shape, sub, memo) for a in v.args))
    elif isinstance(v, Const):
        out = Const(shape, v.dtype, v.value)
    else:
        assert isinstance(v, Index)
        out = Index(shape, v.dtype, v.expr.subst(sub))
    memo[id(v)] = out
    return out


def broadcast(v: Val, shape: tuple[int, ...]) -> Val:
    """PyTorch broadcasting of `v` to `shape`: size-1 dims read index 0, new leading dims are ignored."""
    if v.shape == shape:
        return v
    off = len(shape) - len(v.shape)
    if off < 0:
        raise Unsupported(f"cannot broadcast {v.shape} to {shape}")
    sub = [Aff() if n == 1 and shape[j + off] != 1 else Aff.dim(j + off) for j, n in enumerate(v.shape)]
    return reindex(v, shape, sub)


def node(shape, dtype, fn, *args: Val) -> Node:
    """An elementwise node whose args are broadcast to `shape`."""
    return Node(tuple(shape), dtype, fn, tuple(broadcast(a, tuple(shape)) for a in args))


def ttype(shape, dtype: str) -> str:
    """The tensor type; a symbolic dim (an expression string, symdims.py) prints as `?`."""
    return "tensor<" + "".join(f"{n}x" if isinstance(n, int) else "?x" for n in shape) + STORAGE.get(dtype, dtype) + ">"


def mtype(shape, dtype: str) -> str:
    return "memref<" + "".join(f"{n}x" if isinstance(n, int) else "?x" for n in shape) + STORAGE.get(dtype, dtype) \
        + ">"


def literal(value, dtype: str) -> str:
    if dtype == "f32":
        return f32_literal(float(value))
    return str(int(value))  # i1 too: `1 : i1` (`true` takes no type suffix)


# -- generic bodies -----------------------------------------------------------------------------
class Body:
    """Emits one `linalg.generic` body: leaves are block arguments, nodes are inlined once each."""

    def __init__(self, prefix: str, leaf_args: dict) -> None:
        self.em = Emitter(prefix, fastmath=LOOP_FM)
        self.leaf_args = leaf_args
        self._memo: dict[int, str] = {}
        self._index: dict[int, str] = {}

    def emit(self, rhs: str) -> str:
        return self.em.emit(rhs)

    def const(self, value, dtype: str) -> str:
        if dtype == "f32":
            return self.em.const(float(value))
        return self.em._const(literal(value, dtype), dtype)

    def value(self, v: Val) -> str:
        if id(v) in self._memo:
            return self._memo[id(v)]
        if isinstance(v, Leaf):
            name = self.leaf_args[leaf_key(v)]
            if v.dtype in STORAGE:
                name = self.emit(f"arith.trunci {name} : {STORAGE[v.dtype]} to {v.dtype}")
        elif isinstance(v, Node):
            name = v.fn(self, [self.value(a) for a in v.args], v)
        elif isinstance(v, Const):
            name = self.const(v.value, v.dtype)
        else:
            name = self._affine(v.expr, v.dtype)
        self._memo[id(v)] = name
        return name

    def _affine(self, e: Aff, dtype: str) -> str:
        acc = self.emit(f"arith.constant {e.const} : index")
        for d, k in e.terms:
            if d not in self._index:
                self._index[d] = self.emit(f"linalg.index {d} : index")
            term = self._index[d]
            if k != 1:
                term = self.emit(f"arith.muli {term}, {self.emit(f'arith.constant {k} : index')} : index")
            acc = self.emit(f"arith.addi {acc}, {term} : index")
        i64 = self.emit(f"arith.index_cast {acc} : index to i64")
        if dtype == "i64":
            return i64
        if dtype == "f32":
            return self.emit(f"arith.sitofp {i64} : i64 to f32")
        return self.emit(f"arith.trunci {i64} : i64 to {dtype}")


def leaf_key(v: Leaf) -> tuple:
    return (v.ssa, v.exprs)


def leaves(v: Val) -> list[Leaf]:
    """The distinct leaves of `v`'s DAG, in first-visit order."""
    out, seen, keys = [], set(), set()

    def walk(x: Val) -> None:
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, Leaf) and leaf_key(x) not in keys:
            keys.add(leaf_key(x))
            out.append(x)
        elif isinstance(x, Node):
            for a in x.args:
                walk(a)
    walk(v)
    return out
