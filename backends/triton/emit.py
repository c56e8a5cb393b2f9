"""The per-op emit table of the Triton code generator: one decorated function per `graph` op.

An emitter answers "what is the value of op's result at index `index`?" as a Triton expression. It
asks the kernel context for its operands at the indices it needs (`k.value(v, index)`), so layout ops
(reshape, permute, expand, slice, concat, gather) are pure index arithmetic — no copies — and
elementwise ops broadcast by mapping the result index onto each operand. Row ops (reduce, softmax,
layer_norm, rms_norm) ask the context for a whole-row tile and reduce it along the column axis.

Values are computed in fp32 for f16/bf16/f32 tensors (rounding only on the final store, or where a
`graph.cast` to a 16-bit type asks for it); integers and booleans keep their own types.

    @emits(g.AddOp)
    def _add(k, op, index): ...

Adding an op touches one function here; `codegen.KernelContext` is the only caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import sympy
from xdsl.dialects.builtin import IntegerType, TensorType
from xdsl.ir import Attribute, Operation

from solder.compiler.dialects import graph as g
from solder.compiler.dialects import symbolic
from solder.compiler.dialects.optable import OpTable
from solder.compiler.dialects.traits import RowReduction, Source, ViewLike
from solder.compiler.dialects.types import dtype_name, shape_of
from solder.compiler.errors import SolderError


class Unsupported(SolderError):
    """This group of ops cannot become one generated kernel (the backend splits it or falls back)."""


def mul(*xs):
    """The product of sizes: an int when every factor is one, else kernel source (`S0 * 64`)."""
    n, names = 1, []
    for x in xs:
        if isinstance(x, int):
            n *= x
            continue
        for part in x.split(" * "):
            if part.isdigit():
                n *= int(part)
            else:
                names.append(part)
    if not names or n == 0:
        return n
    return " * ".join(names + ([str(n)] if n != 1 else []))


def par(x) -> str:
    """A size as an operand in source: parenthesized when it is an expression."""
    return f"({x})" if isinstance(x, str) and " " in x else str(x)


def minus_one(n) -> str:
    return str(n - 1) if isinstance(n, int) else f"{par(n)} - 1"


@dataclass(frozen=True)
class Ix:
    """One index expression: Triton source text and the launch axes it varies along."""

    code: str
    deps: frozenset = frozenset()


ZERO = Ix("0")


@dataclass(frozen=True)
class Index:
    """A point of a tensor's index space; `linear` is its row-major offset when that is known cheaply."""

    dims: tuple[Ix, ...]
    linear: str | None = None

    @property
    def deps(self) -> frozenset:
        return frozenset().union(*(d.deps for d in self.dims))


@dataclass(frozen=True)
class Val:
    """An emitted value: a variable name (or literal), its axes, compute type, and value if constant."""

    code: str
    deps: frozenset
    ty: str
    const: float | int | None = None


COMPUTE_TYPES = {
    "float32": "tl.float32", "float16": "tl.float32", "bfloat16": "tl.float32", "float64": "tl.float64",
    "int64": "tl.int64", "int32": "tl.int32", "int16": "tl.int16", "int8": "tl.int8", "uint8": "tl.uint8",
    "bool": "tl.int1",
}
STORAGE_TYPES = {"float16": "tl.float16", "bfloat16": "tl.bfloat16"}


def compute_type(t: Attribute) -> str:
    """The Triton type a value of tensor type `t` is computed in."""
    et = t.element_type if isinstance(t, TensorType) else t
    try:
        return COMPUTE_TYPES[dtype_name(et)]
    except (KeyError, ValueError):
        raise Unsupported(f"triton: element type {et} has no Triton lowering; expected one of "
                          f"{sorted(COMPUTE_TYPES)}") from None


def is_float_ty(ty: str) -> bool:
    return ty.startswith("tl.float")


EMITTERS: OpTable = OpTable("triton emitter")
"""op class -> emitter(k, op, index) -> Val; `index` addresses the op's (single) result."""
emits = EMITTERS.register


def is_row_op(op: Operation) -> bool:
    """A row op: one program reduces a tile of whole rows (reduce, softmax, layer_norm, ...)."""
    return op.has_trait(RowReduction)


def is_free(op: Operation) -> bool:
    """Only index arithmetic or a literal (a view or a source op): folded into every generated kernel that
    reads it."""
    return op.has_trait(ViewLike) or op.has_trait(Source)


# ---------------------------------------------------------------------------------------------
# Broadcasting and elementwise ops
# ---------------------------------------------------------------------------------------------


def broadcast_index(index: Index, result_shape, shape) -> Index:
    """The index into an operand of sizes `shape` for a result index under PyTorch broadcasting (trailing
    alignment). Sizes are ints or, in a size-generic kernel, argument names (equal names: equal sizes)."""
    lead = len(result_shape) - len(shape)
    dims = tuple(ZERO if s == 1 else index.dims[lead + i] for i, s in enumerate(shape))
    return Index(dims, index.linear if tuple(shape) == tuple(result_shape) else None)


def operands(k, op: Operation, index: Index) -> list[Val]:
    rshape = k.shape(op.results[0])
    vals = [k.value(o, broadcast_index(index, rshape, k.shape(o))) for o in op.operands]
    if vals and all(v.const is not None and v.ty.startswith("tl.float") for v in vals):
        # only literals: make one a typed scalar, or `1.0 / 0.0` is Python arithmetic at trace time
        # (ZeroDivisionError) instead of IEEE arithmetic in the kernel
        t = k.let(f"tl.full([], {vals[0].code}, {vals[0].ty})", frozenset(), vals[0].ty)
        vals[0] = Val(t.code, t.deps, t.ty, vals[0].const)
    return vals


def _unary(fmt: Callable[[str, str], str]):
    def emit(k, op, index):
        (x,) = operands(k, op, index)
        return k.let(fmt(x.code, x.ty), x.deps, compute_type(op.results[0].type))

    return emit


_FLOAT_UNARY = {
    g.NegOp: lambda x, t: f"-{x}",
    g.AbsOp: lambda x, t: f"tl.abs({x})",
    g.ExpOp: lambda x, t: f"tl.exp({x})",
    g.LogOp: lambda x, t: f"tl.log({x})",
    g.SqrtOp: lambda x, t: f"tl.sqrt({x})",
    g.RsqrtOp: lambda x, t: f"tl.rsqrt({x})",
    g.TanhOp: lambda x, t: f"2.0 * tl.sigmoid(2.0 * {x}) - 1.0",
    g.SigmoidOp: lambda x, t: f"tl.sigmoid({x})",
    g.ReluOp: lambda x, t: f"tl.where({x} < 0, 0, {x})",
    g.SiluOp: lambda x, t: f"{x} * tl.sigmoid({x})",
    g.ErfOp: lambda x, t: f"tl.math.erf({x})",
    g.SinOp: lambda x, t: f"tl.sin({x})",
    g.CosOp: lambda x, t: f"tl.cos({x})",
    g.ReciprocalOp: lambda x, t: f"1.0 / {x}",
    g.FloorOp: lambda x, t: f"tl.floor({x})" if is_float_ty(t) else x,
    g.CeilOp: lambda x, t: f"tl.ceil({x})" if is_float_ty(t) else x,
}
for _c, _f in _FLOAT_UNARY.items():
    EMITTERS[_c] = _unary(_f)
EMITTERS[g.IsNanOp] = _unary(lambda x, t: f"{x} != {x}")
EMITTERS[g.LogicalNotOp] = _unary(lambda x, t: f"{x} == 0")


@emits(g.Expm1Op)
def _expm1(k, op, index):
    """e^x - 1 without the cancellation near 0 (Kahan): (u - 1) * (x / log u) for u = e^x; x where u
    rounds to 1, -1 where u - 1 does, inf where u is."""
    (x,) = operands(k, op, index)
    u = k.let(f"tl.exp({x.code})", x.deps, x.ty)
    um1 = k.let(f"{u.code} - 1.0", u.deps, x.ty)
    r = k.let(f"{um1.code} * ({x.code} / tl.log({u.code}))", u.deps, x.ty)
    r = k.let(f'tl.where({u.code} == float("inf"), {u.code}, tl.where({um1.code} == -1.0, -1.0, {r.code}))',
              u.deps, x.ty)
    return k.let(f"tl.where({u.code} == 1.0, {x.code}, {r.code})", u.deps, x.ty)


@emits(g.Log1pOp)
def _log1p(k, op, index):
    """log(1 + x) without the rounding of 1 + x near 0: log(u) * (x / (u - 1)) for u = 1 + x; x where u
    rounds to 1, inf where u is inf (x = -1 gives -inf, x < -1 NaN, through log)."""
    (x,) = operands(k, op, index)
    u = k.let(f"1.0 + {x.code}", x.deps, x.ty)
    r = k.let(f"tl.log({u.code}) * ({x.code} / ({u.code} - 1.0))", u.deps, x.ty)
    r = k.let(f'tl.where({u.code} == float("inf"), {u.code}, {r.code})', u.deps, x.ty)
    return k.let(f"tl.where({u.code} == 1.0, {x.code}, {r.code})", u.deps, x.ty)


@emits(g.SignOp)
def _sign(k, op, index):
    """-1, 0 or 1 as torch.sign: 0 for NaN and for both zeros; a boolean is its own sign."""
    (x,) = operands(k, op, index)
    ty = compute_type(op.results[0].type)
    if ty == "tl.int1":
        return x
    one, zero = ("1.0", "0.0") if is_float_ty(ty) else ("1", "0")
    return k.let(f"tl.where({x.code} > 0, {one}, tl.where({x.code} < 0, -{one}, {zero})).to({ty})", x.deps, ty)


@emits(g.RoundOp)
def _round(k, op, index):
    """torch.round: half to even (a tie goes to the even neighbour), a zero result keeps the sign of x;
    inf, nan and |x| >= 2**23 (already whole) come out as they went in."""
    (x,) = operands(k, op, index)
    if not is_float_ty(x.ty):
        return x
    f = k.let(f"tl.floor({x.code})", x.deps, x.ty)
    d = k.let(f"{x.code} - {f.code}", x.deps, x.ty)
    even = f"tl.floor({f.code} * 0.5) * 2.0 == {f.code}"
    r = k.let(f"tl.where({d.code} > 0.5, {f.code} + 1.0, tl.where({d.code} < 0.5, {f.code}, "
              f"tl.where({even}, {f.code}, {f.code} + 1.0)))", x.deps, x.ty)
    return k.let(f"tl.where({r.code} == 0, {x.code} * 0.0, {r.code})", x.deps, x.ty)


@emits(g.TruncOp)
def _trunc(k, op, index):
    """Round toward zero: ceil below 0 (so -0.5 gives -0.0, as torch), floor elsewhere."""
    (x,) = operands(k, op, index)
    if not is_float_ty(x.ty):
        return x
    return k.let(f"tl.where({x.code} < 0, tl.ceil({x.code}), tl.floor({x.code}))", x.deps, x.ty)


@emits(g.GeluOp)
def _gelu(k, op, index):
    (x,) = operands(k, op, index)
    if op.approximate.data == "tanh":
        u = f"0.7978845608028654 * ({x.code} + 0.044715 * {x.code} * {x.code} * {x.code})"
        return k.let(f"{x.code} * tl.sigmoid(2.0 * ({u}))", x.deps, x.ty)
    return k.let(f"0.5 * {x.code} * (1.0 + tl.math.erf({x.code} * 0.7071067811865476))", x.deps, x.ty)


_EXACT_POW = {1: "{a}", 2: "{a} * {a}", 3: "{a} * {a} * {a}", 0.5: "tl.sqrt({a})", -0.5: "tl.rsqrt({a})",
              -1: "1.0 / {a}", 0: "{a} * 0 + 1"}


@emits(g.PowOp)
def _pow(k, op, index):
    """a ** b: constant exponents fold; otherwise |a|^b with the sign of odd integer powers, as torch."""
    a, b = operands(k, op, index)
    deps, ty = a.deps | b.deps, a.ty
    if b.const is not None and b.const in _EXACT_POW:
        return k.let(_EXACT_POW[b.const].format(a=a.code), deps, ty)
    if not is_float_ty(ty):
        raise Unsupported("triton: graph.pow on integers with a non-constant exponent")
    m = k.let(f"tl.exp2({b.code} * tl.log2(tl.abs({a.code})))", deps, ty)
    whole = k.let(f"tl.floor({b.code}) == {b.code}", b.deps, "tl.int1")
    odd = k.let(f"{whole.code} & (tl.floor({b.code} * 0.5) * 2.0 != {b.code})", b.deps, "tl.int1")
    neg = f'tl.where({whole.code}, tl.where({odd.code}, -{m.code}, {m.code}), float("nan"))'
    r = k.let(f"tl.where({a.code} < 0, {neg}, {m.code})", deps, ty)
    return k.let(f"tl.where({b.code} == 0, 1.0, {r.code})", deps, ty)


def _remainder(a: Val, b: Val) -> str:
    """PyTorch's: fmod (`%`, the sign of a), moved by b when the signs differ (so x % inf is x or inf)."""
    r = f"({a.code} % {b.code})"
    return f"tl.where(({r} != 0) & (({r} < 0) != ({b.code} < 0)), {r} + {b.code}, {r})"


def _floor_divide(a: Val, b: Val) -> str:
    if is_float_ty(a.ty):
        # PyTorch's div_floor: (a - fmod(a, b)) / b, one less when fmod's sign differs from b's, rounded
        # to the nearest integer; a zero keeps the sign of a / b, and b == 0 gives a / b (-3 // inf is -1)
        m = f"({a.code} % {b.code})"
        d = f"(({a.code} - {m}) / {b.code} - ((({m} != 0) & (({m} < 0) != ({b.code} < 0))).to({a.ty})))"
        f = f"tl.floor({d})"
        r = f"tl.where({d} - {f} > 0.5, {f} + 1.0, {f})"
        z = f"tl.where({a.code} / {b.code} < 0, -0.0, 0.0)"
        return f"tl.where({b.code} == 0, {a.code} / {b.code}, tl.where({d} != 0, {r}, {z}))"
    return (f"({a.code} // {b.code}) - ((({a.code} % {b.code}) != 0) & "
            f"(({a.code} < 0) != ({b.code} < 0))).to({a.ty})")


def _fmod(a: Val, b: Val) -> str:
    """C's fmod on integers (`%` is srem: the sign of a). On floats `%` is frem, which the GPU expands as
    a - trunc(a / b) * b, off where a / b rounds: torch.fmod (libdevice's exact fmod) runs those."""
    if is_float_ty(a.ty):
        raise Unsupported("triton: graph.fmod on floats (frem is not exact on the GPU; torch.fmod runs it)")
    return f"{a.code} % {b.code}"


def _div(a: Val, b: Val) -> str:
    if not is_float_ty(a.ty):
        raise Unsupported("triton: graph.div on integers (the importer casts true division to float)")
    return f"{a.code} / {b.code}"


_BINARY: dict[type[Operation], Callable[[Val, Val], str]] = {
    g.AddOp: lambda a, b: f"{a.code} + {b.code}",
    g.SubOp: lambda a, b: f"{a.code} - {b.code}",
    g.MulOp: lambda a, b: f"{a.code} * {b.code}",
    g.DivOp: _div,
    g.MaximumOp: lambda a, b: f"tl.maximum({a.code}, {b.code}, propagate_nan=tl.PropagateNan.ALL)",
    g.MinimumOp: lambda a, b: f"tl.minimum({a.code}, {b.code}, propagate_nan=tl.PropagateNan.ALL)",
    g.LogicalAndOp: lambda a, b: f"({a.code} != 0) & ({b.code} != 0)",
    g.LogicalOrOp: lambda a, b: f"({a.code} != 0) | ({b.code} != 0)",
    g.RemainderOp: _remainder,
    g.FloorDivideOp: _floor_divide,
    g.FmodOp: _fmod,
    g.EqOp: lambda a, b: f"{a.code} == {b.code}",
    g.NeOp: lambda a, b: f"{a.code} != {b.code}",
    g.LtOp: lambda a, b: f"{a.code} < {b.code}",
    g.LeOp: lambda a, b: f"{a.code} <= {b.code}",
    g.GtOp: lambda a, b: f"{a.code} > {b.code}",
    g.GeOp: lambda a, b: f"{a.code} >= {b.code}",
}


def _binary(fn: Callable[[Val, Val], str]):
    def emit(k, op, index):
        a, b = operands(k, op, index)
        return k.let(fn(a, b), a.deps | b.deps, compute_type(op.results[0].type))

    return emit


for _c, _f in _BINARY.items():
    EMITTERS[_c] = _binary(_f)


@emits(g.WhereOp)
def _where(k, op, index):
    c, a, b = operands(k, op, index)
    return k.let(f"tl.where({c.code}, {a.code}, {b.code})", c.deps | a.deps | b.deps, a.ty)


@emits(g.CastOp)
def _cast(k, op, index):
    (x,) = operands(k, op, index)
    name = dtype_name(op.results[0].type.element_type)
    ty = compute_type(op.results[0].type)
    if name == "bool":
        return k.let(f"{x.code} != 0", x.deps, ty)
    if name in STORAGE_TYPES:  # round to the 16-bit type, keep computing in fp32
        # integers, bools and fp64 go through fp32 as in eager (the interpreter turns int1 -> bf16
        # into 0 and some fp64 -> bf16 into NaN)
        src = x.code if x.ty == "tl.float32" else f"{x.code}.to(tl.float32)"
        return k.let(f"{src}.to({STORAGE_TYPES[name]}).to(tl.float32)", x.deps, ty)
    if x.ty == ty:
        return x
    return k.let(f"{x.code}.to({ty})", x.deps, ty)


@emits(g.ConstantOp)
def _constant(k, op, index):
    v = op.py_value
    ty = compute_type(op.result.type)
    if isinstance(op.result.type.element_type, IntegerType) and ty != "tl.int1":
        return Val(str(int(v)), frozenset(), ty, int(v))
    if ty == "tl.int1":
        return Val("True" if v else "False", frozenset(), ty, int(bool(v)))
    code = repr(float(v)) if math.isfinite(v) else f'float("{v}")'
    return Val(code, frozenset(), ty, float(v))


@emits(g.ArangeOp)
def _arange(k, op, index):
    start, step = (g.scalar_value(op.properties[n]) for n in ("start", "step"))
    ty = compute_type(op.result.type)
    i = index.dims[0]
    if not i.deps:  # a one-element arange: its index is the literal 0, so the value is the start
        return k.let(f"tl.full([], {float(start) if is_float_ty(ty) else int(start)!r}, {ty})", frozenset(), ty)
    if is_float_ty(ty):
        return k.let(f"{i.code}.to(tl.float32) * {float(step)!r} + {float(start)!r}", i.deps, ty)
    return k.let(f"({i.code} * {int(step)} + {int(start)}).to({ty})", i.deps, ty)


@emits(g.TriangularOp)
def _triangular(k, op, index):
    (x,) = operands(k, op, index)
    d = op.diagonal.value.data
    i, j = index.dims[-2], index.dims[-1]
    keep = f"({j.code} - {i.code} >= {d})" if op.upper is not None else f"({j.code} - {i.code} <= {d})"
    return k.let(f"tl.where({keep}, {x.code}, 0)", x.deps | i.deps | j.deps, x.ty)


@emits(g.BatchNormOp)
def _batch_norm(k, op, index):
    x = k.value(op.input, index)
    ch = Index((index.dims[1],))
    parts = [k.value(p, ch) for p in (op.mean, op.var)]
    y = f"({x.code} - {parts[0].code}) * tl.rsqrt({parts[1].code} + {op.eps.value.data!r})"
    if op.weight is not None:
        y = f"{y} * {k.value(op.weight, ch).code}"
    if op.bias is not None:
        y = f"{y} + {k.value(op.bias, ch).code}"
    return k.let(y, x.deps | index.dims[1].deps, x.ty)


# ---------------------------------------------------------------------------------------------
# Layout ops: index arithmetic only
# ---------------------------------------------------------------------------------------------


@emits(g.PermuteOp)
def _permute(k, op, index):
    perm = list(op.perm.get_values())
    dims = [ZERO] * len(perm)
    for i, p in enumerate(perm):
        dims[p] = index.dims[i]
    linear = index.linear if perm == sorted(perm) else None
    return k.value(op.input, Index(tuple(dims), linear))


@emits(g.ExpandOp)
def _expand(k, op, index):
    return k.value(op.input, broadcast_index(index, k.shape(op.result), k.shape(op.input)))


@emits(g.SliceOp)
def _slice(k, op, index):
    d, start, step = (op.properties[n].value.data for n in ("dim", "start", "step"))
    dims = list(index.dims)
    i = dims[d]
    code = i.code if step == 1 else f"{i.code} * {step}"
    dims[d] = Ix(code if start == 0 else f"({code} + {start})", i.deps)
    return k.value(op.input, Index(tuple(dims)))


def reshape_groups(src: tuple, dst: tuple, size=None) -> list[tuple[list[int], list[int]]]:
    """Groups of consecutive non-unit dims with equal element counts: [(src dims, dst dims), ...].

    Symbolic sizes (argument names of a size-generic kernel) are grouped by their size expressions:
    `size(name)` gives a dim's sympy expression with the symbols' bounds and export's assertions built in
    (`Shapes.size`), so `(2, s0) -> (2*s0,)` is one group, and so is `(s0, 4) -> (s0 // 2, 8)` where export
    asserts `Eq(Mod(s0, 2), 0)`; a reshape whose groups sympy cannot prove raises Unsupported (the kernel then
    compiles per size)."""
    if any(isinstance(n, str) for n in tuple(src) + tuple(dst)):
        return _symbolic_reshape_groups(src, dst, size or _plain_size)
    si = [i for i, n in enumerate(src) if n != 1]
    dj = [j for j, n in enumerate(dst) if n != 1]
    groups, a, b = [], 0, 0
    while a < len(si):
        gi, gj = [si[a]], [dj[b]]
        pi, pj = src[si[a]], dst[dj[b]]
        a, b = a + 1, b + 1
        while pi != pj:
            if pi < pj:
                gi.append(si[a])
                pi, a = pi * src[si[a]], a + 1
            else:
                gj.append(dj[b])
                pj, b = pj * dst[dj[b]], b + 1
        groups.append((gi, gj))
    return groups


def _plain_size(d):
    """A dim as a sympy expression when no kernel's `Shapes` says more: an int, or a size expression's text."""
    return symbolic.expr(d)


def _divides(a, b) -> bool:
    """Whether size `a` provably divides size `b` (their quotient is an integer expression)."""
    return a != 0 and sympy.cancel(b / a).is_integer is True


def _symbolic_reshape_groups(src, dst, size) -> list[tuple[list[int], list[int]]]:
    def fail():
        return Unsupported(f"triton: a reshape {tuple(src)} -> {tuple(dst)} regroups symbolic dims in a way "
                           "its size expressions do not prove; no size-generic index for it")

    si = [i for i, n in enumerate(src) if n != 1]
    dj = [j for j, n in enumerate(dst) if n != 1]
    groups, a, b = [], 0, 0
    while a < len(si):
        if b >= len(dj):
            raise fail()
        gi, gj = [si[a]], [dj[b]]
        pi, pj = size(src[si[a]]), size(dst[dj[b]])
        a, b = a + 1, b + 1
        while sympy.expand(pi - pj) != 0:
            if _divides(pi, pj) and a < len(si):
                gi.append(si[a])
                pi, a = pi * size(src[si[a]]), a + 1
            elif _divides(pj, pi) and b < len(dj):
                gj.append(dj[b])
                pj, b = pj * size(dst[dj[b]]), b + 1
            else:
                raise fail()
        groups.append((gi, gj))
    if b < len(dj):
        raise fail()
    return groups


@emits(g.ReshapeOp)
def _reshape(k, op, index):
    src, dst = k.shape(op.input), k.shape(op.result)
    dims: list[Ix] = [ZERO] * len(src)
    for real_i, real_j in reshape_groups(src, dst, k.shapes.size):
        if len(real_i) == 1 and len(real_j) == 1:
            dims[real_i[0]] = index.dims[real_j[0]]
            continue
        lin, deps, stride = [], frozenset(), 1
        for j in reversed(real_j):
            ix = index.dims[j]
            lin.append(ix.code if stride == 1 else f"{ix.code} * {par(stride)}")
            deps |= ix.deps
            stride = mul(stride, dst[j])
        flat = k.let(" + ".join(reversed(lin)), deps, "int").code
        stride = 1
        for i in reversed(real_i):
            code = flat if stride == 1 else f"{flat} // {par(stride)}"
            code = code if i == real_i[0] else f"({code}) % {src[i]}"
            dims[i] = Ix(k.let(code, deps, "int").code, deps)
            stride = mul(stride, src[i])
    return k.value(op.input, Index(tuple(dims), index.linear))


@emits(g.ConcatOp)
def _concat(k, op, index):
    d = op.dim.value.data
    i = index.dims[d]
    pieces, offset = [], 0
    for x in op.inputs:
        n = k.shape(x)[d]
        dims = list(index.dims)
        dims[d] = Ix(f"tl.minimum(tl.maximum({i.code} - {par(offset)}, 0), {minus_one(n)})", i.deps)
        offset = offset + n if isinstance(offset, int) and isinstance(n, int) else \
            n if offset == 0 else f"{offset} + {par(n)}"
        pieces.append((offset, k.value(x, Index(tuple(dims)))))
    code, deps = pieces[-1][1].code, i.deps | pieces[-1][1].deps
    for end, v in reversed(pieces[:-1]):  # every piece is loaded in bounds (clamped), then selected
        code = f"tl.where({i.code} < {end}, {v.code}, {code})"
        deps |= v.deps
    return k.let(code, deps, pieces[0][1].ty)


@emits(g.GatherOp)
def _gather(k, op, index):
    d = op.dim.value.data
    n_idx = len(k.shape(op.indices))
    ids = k.value(op.indices, Index(index.dims[d:d + n_idx]))
    size = k.shape(op.input)[d]
    pos = k.let(f"tl.minimum(tl.maximum({ids.code}, 0), {minus_one(size)})", ids.deps, ids.ty)
    dims = index.dims[:d] + (Ix(pos.code, pos.deps),) + index.dims[d + n_idx:]
    return k.value(op.input, Index(dims))


@emits(g.IndexOp)
def _index(k, op, index):
    """input[i0, ..., ik-1]: each index tensor is read at the broadcast leading dims (negatives wrap)."""
    idx_shapes = [k.shape(i) for i in op.indices]
    nb = max(len(s) for s in idx_shapes)
    lead = Index(index.dims[:nb])
    dims = []
    for d, (i, ishape) in enumerate(zip(op.indices, idx_shapes)):
        ids = k.value(i, broadcast_index(lead, index_shape(idx_shapes, nb), ishape))
        size = k.shape(op.input)[d]
        pos = k.let(f"tl.minimum(tl.maximum(tl.where({ids.code} < 0, {ids.code} + {par(size)}, {ids.code}), 0), "
                    f"{minus_one(size)})",
                    ids.deps, ids.ty)
        dims.append(Ix(pos.code, pos.deps))
    return k.value(op.input, Index(tuple(dims) + index.dims[nb:]))


@emits(g.GatherElementsOp)
def _gather_elements(k, op, index):
    """torch.gather: the index along `dim` is read from `indices` at the same point (negatives wrap)."""
    d = op.dim.value.data
    ids = k.value(op.indices, Index(index.dims))
    size = k.shape(op.input)[d]
    pos = k.let(f"tl.minimum(tl.maximum(tl.where({ids.code} < 0, {ids.code} + {par(size)}, {ids.code}), 0), "
                f"{minus_one(size)})",
                ids.deps, ids.ty)
    dims = index.dims[:d] + (Ix(pos.code, pos.deps),) + index.dims[d + 1:]
    return k.value(op.input, Index(dims))


def index_shape(shapes, rank: int) -> tuple[int, ...]:
    from solder.compiler.dialects.types import broadcast_shapes

    for i in range(1, rank + 1):  # two different symbolic sizes in one dim: which one broadcasts is unknown
        if len({s[-i] for s in shapes if len(s) >= i and isinstance(s[-i], str)}) > 1:
            raise Unsupported("triton: index tensors of different symbolic sizes in one dim")
    return broadcast_shapes(*shapes)[-rank:]


def row_dims(op: Operation, shapes=shape_of) -> tuple[tuple, tuple[int, ...]] | None:
    """(full shape, reduced dims) of a row op, or None for other ops; `shapes` reads a type's sizes."""
    if not is_row_op(op):
        return None
    shape = tuple(shapes(op.operands[0].type))
    if isinstance(op, g.ReduceOp):
        return shape, tuple(sorted(op.dims.get_values()))
    if isinstance(op, (g.SoftmaxOp, g.LogSoftmaxOp, g.CumsumOp, g.CumprodOp)):
        return shape, (op.dim.value.data,)
    n = op.normalized_ndim.value.data
    return shape, tuple(range(len(shape) - n, len(shape)))
