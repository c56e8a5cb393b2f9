"""The per-op lowering table of the CPU backend: `graph` op class -> fn(builder, op, operand vals) -> vals.

Each entry turns one op into lazy values (lower.py): elementwise ops become `Node`s with a body
emitter, layout ops re-index their operand, reductions and normalizations emit their reduction
generics and return the final elementwise part lazily, so the consumer (or the kernel output) fuses
it. An entry raises `Unsupported` for cases it does not cover; the kernel then runs on the
reference backend. Transcendentals use mathapprox's arith-only polynomials.
"""

from __future__ import annotations

from typing import Callable

from xdsl.ir import Operation, SSAValue

from solder.backends.cpu.lower import (
    DTYPES, Aff, Const, FuncBuilder, Index, Leaf, Node, Unsupported, Val, broadcast, ident, node, reindex,
)
from solder.compiler.dialects import graph as g
from solder.compiler.dialects.optable import OpTable
from solder.compiler.dialects.types import dims_of
from solder.compiler.interpret import sizes

LOWERINGS: OpTable = OpTable("cpu lowering")
"""op class -> fn(builder, op, operand vals) -> result vals."""
lowering = LOWERINGS.register


def lowers(op: Operation) -> bool:
    """Whether `op` has a lowering for its operands' shapes (so a kernel does not fall back whole)."""
    if isinstance(op, g.ConcatOp):
        return len({dims_of(v.type)[op.dim.value.data] for v in op.operands}) == 1
    return type(op) in LOWERINGS


def rtype(op: Operation, i: int = 0) -> tuple[tuple[int, ...], str]:
    t = op.results[i].type
    return dims_of(t), str(t.element_type)


def _f32(*vals: Val) -> None:
    for v in vals:
        if v.dtype != "f32":
            raise Unsupported(f"operand of element type {v.dtype}; this op lowers for f32 only")


# -- elementwise --------------------------------------------------------------------------------
_UNARY_F32: dict[type[Operation], Callable] = {
    g.NegOp: lambda b, x: b.em.un("negf", x),
    g.AbsOp: lambda b, x: b.em.un("absf", x),
    g.ExpOp: lambda b, x: b.em.exp(x),
    g.LogOp: lambda b, x: b.em.log(x),
    g.SqrtOp: lambda b, x: b.em.un("sqrt", x),
    g.RsqrtOp: lambda b, x: b.em.rsqrt(x),
    g.TanhOp: lambda b, x: b.em.tanh(x),
    g.SigmoidOp: lambda b, x: b.em.sigmoid(x),
    g.ReluOp: lambda b, x: b.em.bin("maximumf", x, b.em.const(0.0)),
    g.SiluOp: lambda b, x: b.em.silu(x),
    g.ErfOp: lambda b, x: b.em.erf(x),
    g.ReciprocalOp: lambda b, x: b.em.div(b.em.const(1.0), x),
    g.FloorOp: lambda b, x: b.em.un("floor", x),
    g.CeilOp: lambda b, x: b.em.un("ceil", x),
    g.RoundOp: lambda b, x: b.em.un("roundeven", x),
    g.TruncOp: lambda b, x: b.em.un("trunc", x),
    g.SinOp: lambda b, x: b.em.un("sin", x),
    g.CosOp: lambda b, x: b.em.un("cos", x),
    g.Expm1Op: lambda b, x: _expm1(b, x),
    g.Log1pOp: lambda b, x: _log1p(b, x),
}


def _where_eq(b, x: SSAValue, value: float, then: SSAValue, other: SSAValue) -> SSAValue:
    """`then` where x == value (ordered: false for NaN), else `other`."""
    hit = b.em.cmpf("oeq", x, b.em.const(value))
    return b.em.select(hit, then, other)


def _expm1(b, x: SSAValue) -> SSAValue:
    """e^x - 1 without the cancellation near 0 (Kahan): (u - 1) * (x / log u) for u = e^x, whose rounding
    errors in u - 1 and log u cancel; x itself where u rounds to 1, -1 where u - 1 does, inf where u is."""
    em = b.em
    u = em.exp(x)
    um1 = em.sub(u, em.const(1.0))
    r = em.mul(um1, em.div(x, em.log(u)))
    r = _where_eq(b, u, float("inf"), u, r)
    r = _where_eq(b, um1, -1.0, um1, r)
    return _where_eq(b, u, 1.0, x, r)


def _log1p(b, x: SSAValue) -> SSAValue:
    """log(1 + x) without the rounding of 1 + x near 0: log(u) * (x / (u - 1)) for u = 1 + x; x itself
    where u rounds to 1, inf where u is inf (x = -1 gives -inf, x < -1 NaN, through log)."""
    em = b.em
    u = em.add(em.const(1.0), x)
    r = em.mul(em.log(u), em.div(x, em.sub(u, em.const(1.0))))
    r = _where_eq(b, u, float("inf"), u, r)
    return _where_eq(b, u, 1.0, x, r)


@lowering(*_UNARY_F32)
def _unary(fb, op, args):
    (x,) = args
    _f32(x)
    f = _UNARY_F32[type(op)]
    return [node(x.shape, "f32", lambda b, a, n: f(b, a[0]), x)]


@lowering(g.SignOp)
def _sign(fb, op, args):
    """-1, 0 or 1 as torch.sign: 0 for NaN and for both zeros; a boolean is its own sign."""
    (x,) = args
    t = x.dtype
    if t == "i1":
        return [x]
    gt, lt = ("ogt", "olt") if t == "f32" else ("sgt", "slt")

    def body(b, a, n):
        cmp = b.em.cmpf if t == "f32" else b.em.cmpi
        zero = b.const(0, t)
        pos = cmp(gt, a[0], zero)
        neg = cmp(lt, a[0], zero)
        r = b.em.select(neg, b.const(-1, t), zero)
        return b.em.select(pos, b.const(1, t), r)
    return [node(x.shape, t, body, x)]


@lowering(g.GeluOp)
def _gelu(fb, op, args):
    (x,) = args
    _f32(x)
    approx = op.approximate.data
    return [node(x.shape, "f32", lambda b, a, n: b.em.gelu_tanh(a[0]) if approx == "tanh"
                 else b.em.gelu_erf(a[0]), x)]


@lowering(g.IsNanOp)
def _isnan(fb, op, args):
    _f32(args[0])
    return [node(args[0].shape, "i1", lambda b, a, n: b.em.cmpf("uno", a[0], a[0]), args[0])]


@lowering(g.LogicalNotOp)
def _logical_not(fb, op, args):
    if args[0].dtype != "i1":
        raise Unsupported("logical_not of a non-boolean")
    return [node(args[0].shape, "i1", lambda b, a, n: b.em.ibin("xori", a[0], b.const(1, "i1")), args[0])]


_FLOAT_BIN = {g.AddOp: "addf", g.SubOp: "subf", g.MulOp: "mulf", g.DivOp: "divf", g.MaximumOp: "maximumf",
              g.MinimumOp: "minimumf"}
_INT_BIN = {g.AddOp: "addi", g.SubOp: "subi", g.MulOp: "muli", g.MaximumOp: "maxsi", g.MinimumOp: "minsi",
            g.LogicalAndOp: "andi", g.LogicalOrOp: "ori"}
_CMP_F = {g.EqOp: "oeq", g.NeOp: "une", g.LtOp: "olt", g.LeOp: "ole", g.GtOp: "ogt", g.GeOp: "oge"}
_CMP_I = {g.EqOp: "eq", g.NeOp: "ne", g.LtOp: "slt", g.LeOp: "sle", g.GtOp: "sgt", g.GeOp: "sge"}
_LOGICAL = (g.LogicalAndOp, g.LogicalOrOp)


@lowering(*dict.fromkeys([*_FLOAT_BIN, *_INT_BIN, *_CMP_F]))
def _binary(fb, op, args):
    x, y = args
    kind = type(op)
    shape, dt = rtype(op)
    t = x.dtype
    if kind in _CMP_F:
        if t == "f32":
            return [node(shape, "i1", lambda b, a, n: b.em.cmpf(_CMP_F[kind], a[0], a[1]), x, y)]
        return [node(shape, "i1", lambda b, a, n: b.em.cmpi(_CMP_I[kind], a[0], a[1]), x, y)]
    if t == "f32" and kind in _FLOAT_BIN:
        return [node(shape, t, lambda b, a, n: b.em.bin(_FLOAT_BIN[kind], a[0], a[1]), x, y)]
    if t != "f32" and kind in _INT_BIN and (t == "i1") == (kind in _LOGICAL):
        return [node(shape, t, lambda b, a, n: b.em.ibin(_INT_BIN[kind], a[0], a[1]), x, y)]
    raise Unsupported(f"{op.name} on {t}")


@lowering(g.FmodOp)
def _fmod(fb, op, args):
    """C's fmod, the sign of a: arith.remf on f32 (LLVM frem, libm's exact fmodf; no fastmath flags), and
    arith.remsi on integers with a divisor of 0 or -1 taken as 1, which would trap (x % -1 is 0 anyway;
    eager raises for 0)."""
    x, y = args
    shape, t = rtype(op)
    if t == "f32":
        return [node(shape, t, lambda b, a, n: b.em.ir.bin("remf", a[0], a[1]), x, y)]
    if t not in ("i8", "i32", "i64"):
        raise Unsupported(f"{op.name} on {t}")

    def body(b, a, n):
        one = b.const(1, t)
        unsafe = b.em.ibin("ori", b.em.cmpi("eq", a[1], b.const(0, t)), b.em.cmpi("eq", a[1], b.const(-1, t)))
        return b.em.ibin("remsi", a[0], b.em.select(unsafe, one, a[1]))
    return [node(shape, t, body, x, y)]


@lowering(g.FloorDivideOp)
def _floor_divide(fb, op, args):
    """floor(a / b) on integers: arith.floordivsi, with -a for a divisor of -1 and a divisor of 0 taken as 1
    (both would trap; eager raises for 0). Floats run on the reference backend."""
    x, y = args
    shape, t = rtype(op)
    if t not in ("i8", "i32", "i64"):
        raise Unsupported(f"{op.name} on {t}")

    def body(b, a, n):
        minus_one = b.em.cmpi("eq", a[1], b.const(-1, t))
        unsafe = b.em.ibin("ori", b.em.cmpi("eq", a[1], b.const(0, t)), minus_one)
        q = b.em.ibin("floordivsi", a[0], b.em.select(unsafe, b.const(1, t), a[1]))
        return b.em.select(minus_one, b.em.ibin("subi", b.const(0, t), a[0]), q)
    return [node(shape, t, body, x, y)]


@lowering(g.PowOp)
def _pow(fb, op, args):
    x, y = args
    _f32(x)
    if not isinstance(y, Const) or y.value not in (0.5, 1.0, 2.0, 3.0, -1.0, -0.5):
        raise Unsupported("pow with a non-constant exponent or one other than 0.5, 1, 2, 3, -1, -0.5")
    e = float(y.value)

    def body(b, a, n):
        v = a[0]
        if e == 0.5:
            return b.em.un("sqrt", v)
        if e == -0.5:
            return b.em.rsqrt(v)
        if e == -1.0:
            return b.em.div(b.em.const(1.0), v)
        r = v
        for _ in range(int(e) - 1):
            r = b.em.mul(r, v)
        return r
    return [node(rtype(op)[0], "f32", body, x)]


@lowering(g.WhereOp)
def _where(fb, op, args):
    c, x, y = args
    shape, dt = rtype(op)
    if c.dtype != "i1":
        raise Unsupported("where with a non-boolean condition")
    return [node(shape, dt, lambda b, a, n: b.em.select(a[0], a[1], a[2]), c, x, y)]


_WIDTH = {"i1": 1, "i8": 8, "i32": 32, "i64": 64}


@lowering(g.CastOp)
def _cast(fb, op, args):
    (x,) = args
    shape, dt = rtype(op)
    src = x.dtype
    if src == dt:
        return [x]

    def body(b, a, n):
        v = a[0]
        if src == "f32":
            if dt == "i1":
                return b.em.cmpf("une", v, b.const(0.0, "f32"))
            return b.em.cast("fptosi", v, dt)
        if dt == "f32":
            return b.em.cast("uitofp" if src == "i1" else "sitofp", v, "f32")
        if dt == "i1":
            return b.em.cmpi("ne", v, b.const(0, src))
        ext = "extui" if src == "i1" else "extsi"
        return b.em.cast(ext if _WIDTH[dt] > _WIDTH[src] else "trunci", v, dt)
    if src not in ("f32", *_WIDTH) or dt not in ("f32", *_WIDTH):
        raise Unsupported(f"cast {src} -> {dt}")
    return [node(shape, dt, body, x)]


@lowering(g.ConstantOp)
def _constant(fb, op, args):
    shape, dt = rtype(op)
    if dt not in DTYPES:  # an f64 constant has no input to be refused at (FuncBuilder.arg)
        raise Unsupported(f"element type {dt} (the CPU kernels compute in {'/'.join(DTYPES)})")
    return [Const(shape, dt, g.scalar_value(op.value))]


@lowering(g.ArangeOp)
def _arange(fb, op, args):
    shape, dt = rtype(op)
    if dt not in DTYPES:
        raise Unsupported(f"element type {dt} (the CPU kernels compute in {'/'.join(DTYPES)})")
    start, step = (g.scalar_value(op.properties[k]) for k in ("start", "step"))
    if int(start) != start or int(step) != step:
        raise Unsupported("arange with a fractional start or step")
    return [Index(shape, dt, Aff(int(start), ((0, int(step)),)))]


@lowering(g.TriangularOp)
def _triangular(fb, op, args):
    (x,) = args
    shape, dt = rtype(op)
    r = len(shape)
    diag, upper = op.diagonal.value.data, op.upper is not None
    # keep where col - row <= diag (lower) or col - row >= diag (upper)
    delta = Index(shape, "i64", Aff(0, ((r - 2, -1), (r - 1, 1))))
    pred = "sge" if upper else "sle"
    zero = Const(shape, dt, 0)

    def body(b, a, n):
        keep = b.em.cmpi(pred, a[1], b.const(diag, "i64"))
        return b.em.select(keep, a[0], a[2])
    return [node(shape, dt, body, x, delta, zero)]


# -- layout -------------------------------------------------------------------------------------
@lowering(g.ReshapeOp)
def _reshape(fb, op, args):
    return [fb.reshape(args[0], rtype(op)[0])]


@lowering(g.PermuteOp)
def _permute(fb, op, args):
    (x,) = args
    perm = list(op.perm.get_values())
    sub = [Aff()] * len(perm)
    for i, p in enumerate(perm):
        sub[p] = Aff.dim(i)
    return [reindex(x, rtype(op)[0], sub)]


@lowering(g.ExpandOp)
def _expand(fb, op, args):
    return [broadcast(args[0], rtype(op)[0])]


@lowering(g.SliceOp)
def _slice(fb, op, args):
    (x,) = args
    d, s, st = (op.properties[k].value.data for k in ("dim", "start", "step"))
    if rtype(op)[0][d] == 0:
        s = 0  # an empty slice may start at the end (x[4:] of 4 rows): no element is read, keep it in bounds
    sub = list(ident(len(x.shape)))
    sub[d] = Aff(s, ((d, st),))
    return [reindex(x, rtype(op)[0], sub)]


@lowering(g.ConcatOp)
def _concat(fb, op, args):
    """Concatenation of k equal parts along `dim` (rotate_half, stack): the result's dim of size k*n read
    as (part, row) = (d // n, d % n), i.e. a value over [.., k, n, ..] that selects part d_dim, written
    once into a temporary and reshaped. Parts of different sizes run on the reference backend."""
    shape, dt = rtype(op)
    d = op.dim.value.data
    k, sizes = len(args), {a.shape[d] for a in args}
    if len(sizes) != 1 or 0 in sizes:
        raise Unsupported(f"concat of parts of sizes {sorted(a.shape[d] for a in args)} along dim {d}")
    if k == 1:
        return [args[0]]
    n = sizes.pop()
    split = shape[:d] + (k, n) + shape[d + 1:]
    sub = [Aff.dim(j) for j in range(d)] + [Aff.dim(d + 1)] + [Aff.dim(j + 1) for j in range(d + 1, len(shape))]
    parts = [reindex(a, split, sub) for a in args]
    which = Index(split, "i64", Aff.dim(d))

    def body(b, a, node):
        r = a[k - 1]
        for i in range(k - 2, -1, -1):
            c = b.em.cmpi("eq", a[k], b.const(i, "i64"))
            r = b.em.select(c, a[i], r)
        return r
    return [fb.reshape(Node(split, dt, body, tuple(parts) + (which,)), shape)]


# -- reductions and normalizations ----------------------------------------------------------------
def _combine(kind: str):
    return {
        "sum": lambda b, x, acc: b.em.add(x, acc),
        "prod": lambda b, x, acc: b.em.mul(x, acc),
        "max": lambda b, x, acc: b.em.bin("maximumf", x, acc),
        "min": lambda b, x, acc: b.em.bin("minimumf", x, acc),
        "any": lambda b, x, acc: b.em.ibin("ori", x, acc),  # bools combine as bytes (lower.py)
        "all": lambda b, x, acc: b.em.ibin("andi", x, acc),
    }[kind]


_INIT = {"sum": 0.0, "mean": 0.0, "prod": 1.0, "max": float("-inf"), "min": float("inf"), "any": False,
         "all": True}


LONG_ROW = 16384
"""Longest row a generated kernel sums in one fp32 pass; a longer one (a norm over a whole feature map) runs as
torch's reduction, whose cascaded sums keep fp32 accurate (a 258,064-element layer norm was off by 3e-3)."""


def _check_row(x: Val, dims) -> None:
    n = _row_elements(x.shape, dims)
    if n > LONG_ROW:
        raise Unsupported(f"a sum over {n} elements in one fp32 pass loses precision (longer than {LONG_ROW}); "
                          "torch's reduction runs it")


def _row_elements(shape, dims) -> int:
    """Elements summed per row (a symbolic dim counts as 1 here: `long_row(op, env)` checks it per binding)."""
    n = 1
    for d in dims:
        n *= shape[d] if isinstance(shape[d], int) else 1
    return n


def long_row(op: Operation, env: dict | None = None) -> bool:
    """Whether `op` sums rows longer than LONG_ROW (its kernel would refuse them): it runs alone, as torch's.
    With `env`, a size-generic kernel's binding: its symbolic rows are checked at those sizes."""
    if not op.operands:
        return False
    t = op.operands[0].type
    shape = sizes(t, env, unknown=1) if env is not None else dims_of(t)
    if isinstance(op, g.ReduceOp) and op.kind.data in ("sum", "mean"):
        dims = [d % len(shape) for d in op.dims.get_values()] if shape else []
    elif isinstance(op, (g.LayerNormOp, g.RmsNormOp)):
        dims = list(range(len(shape) - op.normalized_ndim.value.data, len(shape)))
    elif isinstance(op, (g.SoftmaxOp, g.LogSoftmaxOp)):
        dims = [op.dim.value.data % len(shape)] if shape else []
    else:
        return False
    return _row_elements(shape, dims) > LONG_ROW


def reduce_keep(fb: FuncBuilder, x: Val, dims, kind: str, keepdim: bool = True) -> Val:
    """`kind`-reduce `x` over `dims`; with `keepdim` the result broadcasts back against `x`."""
    dims = tuple(sorted(d % len(x.shape) for d in dims))
    if kind in ("sum", "mean"):
        _check_row(x, dims)
    if kind in ("any", "all") and x.dtype != "i1":
        raise Unsupported(f"reduce {kind} of {x.dtype}")
    if kind not in ("any", "all"):
        _f32(x)
    r: Val = fb.reduce(x, dims, _INIT[kind], _combine("sum" if kind == "mean" else kind))
    if kind == "mean":
        inv = fb.inv_count([x.shape[d] for d in dims])
        r = node(r.shape, "f32", lambda b, a, nd: b.em.mul(a[0], _k(b, inv)), r)
    if not keepdim:
        return r
    shape = tuple(1 if i in dims else s for i, s in enumerate(x.shape))
    kept = [i for i in range(len(x.shape)) if i not in dims]
    return reindex(r, shape, [Aff.dim(i) for i in kept])


@lowering(g.ReduceOp)
def _reduce(fb, op, args):
    kind = op.kind.data
    if kind not in _INIT:
        raise Unsupported(f"reduce {kind}")
    return [reduce_keep(fb, args[0], list(op.dims.get_values()), kind, op.keepdim is not None)]


def _row_input(fb: FuncBuilder, x: Val) -> Val:
    """A value several reductions read: computed once into a temporary unless it is a plain read."""
    return x if isinstance(x, Leaf) else fb.materialize(x)


@lowering(g.SoftmaxOp, g.LogSoftmaxOp)
def _softmax(fb, op, args):
    x = _row_input(fb, args[0])
    _f32(x)
    d = op.dim.value.data
    mx = reduce_keep(fb, x, (d,), "max")
    shifted = node(x.shape, "f32", lambda b, a, n: b.em.sub(a[0], a[1]), x, mx)
    if isinstance(op, g.LogSoftmaxOp):
        e = node(x.shape, "f32", lambda b, a, n: b.em.exp_nonpositive(a[0]), shifted)
        s = reduce_keep(fb, e, (d,), "sum")
        return [node(x.shape, "f32", lambda b, a, n: b.em.sub(a[0], b.em.log(a[1])), shifted, s)]
    e = fb.materialize(node(x.shape, "f32", lambda b, a, n: b.em.exp_nonpositive(a[0]), shifted))
    s = reduce_keep(fb, e, (d,), "sum")
    return [node(x.shape, "f32", lambda b, a, n: b.em.mul(a[0], b.em.div(b.em.const(1.0), a[1])), e, s)]


def _params(op) -> tuple[bool, bool]:
    return getattr(op, "weight", None) is not None, getattr(op, "bias", None) is not None


@lowering(g.LayerNormOp)
def _layer_norm(fb, op, args):
    x = _row_input(fb, args[0])
    _f32(x)
    k = op.normalized_ndim.value.data
    dims = tuple(range(len(x.shape) - k, len(x.shape)))
    inv = fb.inv_count([x.shape[d] for d in dims])
    eps = op.eps.value.data
    _check_row(x, dims)
    s = reduce_keep(fb, x, dims, "sum")
    d = node(x.shape, "f32", lambda b, a, n: b.em.sub(a[0], b.em.mul(a[1], _k(b, inv))), x, s)
    sq = node(x.shape, "f32", lambda b, a, n: b.em.mul(a[0], a[0]), d)
    v = reduce_keep(fb, sq, dims, "sum")
    has_w, has_b = _params(op)
    extra = args[1:]

    def body(b, a, n):
        mean = b.em.mul(a[1], _k(b, inv))
        rstd = b.em.rsqrt(b.em.fma(a[2], _k(b, inv), b.em.const(eps)))
        y = b.em.mul(b.em.sub(a[0], mean), rstd)
        if has_w and has_b:
            return b.em.fma(y, a[3], a[4])
        if has_w:
            return b.em.mul(y, a[3])
        return b.em.add(y, a[3]) if has_b else y
    return [node(x.shape, "f32", body, x, s, v, *extra)]


@lowering(g.RmsNormOp)
def _rms_norm(fb, op, args):
    x = _row_input(fb, args[0])
    _f32(x)
    k = op.normalized_ndim.value.data
    dims = tuple(range(len(x.shape) - k, len(x.shape)))
    inv, eps = fb.inv_count([x.shape[d] for d in dims]), op.eps.value.data
    ss = reduce_keep(fb, node(x.shape, "f32", lambda b, a, n: b.em.mul(a[0], a[0]), x), dims, "sum")

    def body(b, a, n):
        y = b.em.mul(a[0], b.em.rsqrt(b.em.fma(a[1], _k(b, inv), b.em.const(eps))))
        return b.em.mul(y, a[2]) if len(a) > 2 else y
    return [node(x.shape, "f32", body, x, ss, *args[1:])]


@lowering(g.BatchNormOp)
def _batch_norm(fb, op, args):
    x, mean, var, *params = args
    _f32(x)
    if len(x.shape) < 2:
        raise Unsupported("batch_norm of a rank < 2 input")
    eps = op.eps.value.data
    has_w, has_b = _params(op)
    shape = x.shape
    per_c = [_channel(p, shape) for p in (mean, var, *params)]

    def body(b, a, n):
        y = b.em.mul(b.em.sub(a[0], a[1]), b.em.rsqrt(b.em.add(a[2], b.em.const(eps))))
        i = 3
        if has_w:
            y, i = b.em.mul(y, a[i]), i + 1
        return b.em.add(y, a[i]) if has_b else y
    return [node(shape, "f32", body, x, *per_c)]


def _channel(p: Val, shape: tuple[int, ...]) -> Val:
    """A per-channel [C] parameter read along dim 1 of `shape`."""
    return reindex(p, shape, [Aff.dim(1)])


def _k(b, v: float | SSAValue) -> SSAValue:
    """A constant in a generic body: a float, or an f32 value computed outside it (a symbolic count)."""
    return v if isinstance(v, SSAValue) else b.em.const(v)
