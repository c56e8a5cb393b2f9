"""The lazy values of the CPU lowering: affine index expressions, `Val` trees and generic bodies.

A `Leaf` reads a tensor through affine index expressions (`Aff`), so broadcasts, permutes, expands and
slices are indexing maps, never copies; a `Node` is an elementwise op over values of its shape; `Const`
and `Index` are an immediate and the value of an index expression. `reindex`/`broadcast` move values
between iteration spaces; `Body` builds one `linalg.generic` body (xDSL ops, mlir_builder.py), inlining every
node once. lower.py's
`FuncBuilder` decides what to materialize and emits the generics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from xdsl.dialects.builtin import MemRefType, TensorType
from xdsl.ir import SSAValue

from solder.backends.cpu.mathapprox import Emitter
from solder.backends.cpu.mlir_builder import INDEX, IR, IndexOp, memref_t, tensor_t
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
    """Element `exprs(d)` of tensor `ssa` (an xDSL value of shape `tshape`, element type `storage`)."""

    ssa: SSAValue = None  # type: ignore[assignment]
    tshape: tuple[int, ...] = ()
    exprs: tuple[Aff, ...] = ()

    @property
    def is_identity(self) -> bool:
        return self.tshape == self.shape and self.exprs == ident(len(self.shape))


@dataclass(eq=False)
class Node(Val):
    """An elementwise op: `fn(body, arg_values, node) -> value` over args of this node's shape."""

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


def ttype(shape, dtype: str) -> TensorType:
    """The tensor type (in-memory element type); a symbolic dim (an expression string, symdims.py) is `?`."""
    return tensor_t(shape, STORAGE.get(dtype, dtype))


def mtype(shape, dtype: str) -> MemRefType:
    return memref_t(shape, STORAGE.get(dtype, dtype))


# -- generic bodies -----------------------------------------------------------------------------
class Body:
    """Emits one `linalg.generic` body: leaves are block arguments, nodes are inlined once each.

    A node's `fn(body, args, node)` builds its ops through `body.em` (mathapprox.Emitter: named results,
    constants made once per body) and returns its value."""

    def __init__(self, ir: IR, prefix: str, leaf_args: dict) -> None:
        self.em = Emitter(ir, prefix, fastmath=LOOP_FM)
        self.leaf_args = leaf_args
        self._memo: dict[int, SSAValue] = {}
        self._index: dict[int, SSAValue] = {}

    def const(self, value, dtype: str) -> SSAValue:
        if dtype == "f32":
            return self.em.const(float(value))
        return self.em.typed_const(value, dtype)

    def value(self, v: Val) -> SSAValue:
        if id(v) in self._memo:
            return self._memo[id(v)]
        if isinstance(v, Leaf):
            r = self.leaf_args[leaf_key(v)]
            if v.dtype in STORAGE:
                r = self.em.cast("trunci", r, v.dtype)
        elif isinstance(v, Node):
            r = v.fn(self, [self.value(a) for a in v.args], v)
        elif isinstance(v, Const):
            r = self.const(v.value, v.dtype)
        else:
            r = self._affine(v.expr, v.dtype)
        self._memo[id(v)] = r
        return r

    def _affine(self, e: Aff, dtype: str) -> SSAValue:
        em = self.em
        acc = em.ir.const(e.const, INDEX, em.name())  # not shared: each index expression its own constants
        for d, k in e.terms:
            if d not in self._index:
                self._index[d] = em.ir.op(IndexOp(d), em.name())
            term = self._index[d]
            if k != 1:
                term = em.ibin("muli", term, em.ir.const(k, INDEX, em.name()))
            acc = em.ibin("addi", acc, term)
        i64 = em.cast("index_cast", acc, "i64")
        if dtype == "i64":
            return i64
        if dtype == "f32":
            return em.cast("sitofp", i64, "f32")
        return em.cast("trunci", i64, dtype)


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
