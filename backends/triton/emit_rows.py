"""Row ops for the Triton backend's emit table: one tile of whole rows per program, reduced along the
column axis (reductions with NaN-propagating max/min, softmax/log-softmax, cumsum, cumprod, layer norm, RMS norm).
Registered in `emit.EMITTERS` when codegen.py (which generates from the table) imports this module."""

from __future__ import annotations

from solder.backends.triton.emit import Index, Unsupported, Val, emits, par
from solder.compiler.dialects import graph as g

_NEUTRAL = {"sum": "0", "mean": "0", "max": 'float("-inf")', "min": 'float("inf")', "any": "0", "all": "1"}


@emits(g.ReduceOp)
def _reduce(k, op, index):
    kind = op.kind.data
    if kind not in _NEUTRAL:
        raise Unsupported(f"triton: graph.reduce kind {kind!r} has no row kernel; expected one of {sorted(_NEUTRAL)}")
    dims = tuple(op.dims.get_values())
    x = k.value(op.input, k.tile_index(op.input, dims, index, op.keepdim is not None))
    if x.const is not None:  # a folded literal: a typed scalar, so that `!=` and `.to` work on it
        x = k.let(f"tl.full([], {x.code}, {x.ty})", frozenset(), x.ty)
    if kind in ("any", "all"):
        x = k.let(f"({x.code} != 0).to(tl.int32)", x.deps, "tl.int32")
    fn = {"sum": "sum", "mean": "sum", "max": "max", "min": "min", "any": "max", "all": "min"}[kind]
    r = k.reduce(x, fn, _NEUTRAL[kind])
    if kind == "mean":
        return k.let(f"{r.code} / {par(k.row_size)}", r.deps, r.ty)
    if kind in ("any", "all"):
        return k.let(f"{r.code} != 0", r.deps, "tl.int1")
    if kind in ("max", "min") and x.ty.startswith("tl.float"):
        # tl.max/tl.min skip NaN; torch's amax/amin return NaN for a row holding one (masked lanes hold +-inf)
        nan = k.reduce(k.let(f"({x.code} != {x.code}).to(tl.int32)", x.deps, "tl.int32"), "max", "0")
        return k.let(f'tl.where({nan.code} != 0, float("nan"), {r.code})', r.deps, r.ty)
    return r


def _row_input(k, op, dims, index) -> Val:
    k.require_full(index)
    return k.value(op.input, k.tile_index(op.input, dims, index, True))


@emits(g.SoftmaxOp, g.LogSoftmaxOp)
def _softmax(k, op, index):
    x = _row_input(k, op, (op.dim.value.data,), index)
    m = k.reduce(x, "max", _NEUTRAL["max"])
    e = k.let(f"tl.exp({x.code} - {m.code})", x.deps | m.deps, x.ty)
    s = k.reduce(e, "sum", "0")
    if isinstance(op, g.LogSoftmaxOp):
        return k.let(f"{x.code} - {m.code} - tl.log({s.code})", e.deps, x.ty)
    return k.let(f"{e.code} / {s.code}", e.deps, x.ty)


@emits(g.CumsumOp, g.CumprodOp)
def _cumsum(k, op, index):
    x = _row_input(k, op, (op.dim.value.data,), index)
    fn, neutral = ("cumprod", "1") if isinstance(op, g.CumprodOp) else ("cumsum", "0")
    t = k.masked(x, neutral)
    return k.let(f"tl.{fn}({t.code}, 1)", t.deps, x.ty)


def _norm_dims(k, op) -> tuple[int, ...]:
    rank, n = len(k.shape(op.input)), op.normalized_ndim.value.data
    return tuple(range(rank - n, rank))


def _affine(k, op, y: Val, index: Index, params) -> Val:
    n = op.normalized_ndim.value.data
    pidx = Index(index.dims[-n:])
    code, deps = y.code, y.deps
    for p, sym in params:
        if p is not None:
            v = k.value(p, pidx)
            code, deps = f"{code} {sym} {v.code}", deps | v.deps
    return k.let(code, deps, y.ty) if code != y.code else y


@emits(g.LayerNormOp)
def _layer_norm(k, op, index):
    x = _row_input(k, op, _norm_dims(k, op), index)
    mean = k.let(f"{k.reduce(x, 'sum', '0').code} / {par(k.row_size)}", k.row_deps, x.ty)
    xc = k.let(f"{x.code} - {mean.code}", x.deps | mean.deps, x.ty)
    sq = k.let(f"{xc.code} * {xc.code}", xc.deps, x.ty)
    var = k.let(f"{k.reduce(sq, 'sum', '0').code} / {par(k.row_size)}", k.row_deps, x.ty)
    y = k.let(f"{xc.code} * tl.rsqrt({var.code} + {op.eps.value.data!r})", xc.deps, x.ty)
    return _affine(k, op, y, index, [(op.weight, "*"), (op.bias, "+")])


@emits(g.RmsNormOp)
def _rms_norm(k, op, index):
    x = _row_input(k, op, _norm_dims(k, op), index)
    sq = k.let(f"{x.code} * {x.code}", x.deps, x.ty)
    ms = k.let(f"{k.reduce(sq, 'sum', '0').code} / {par(k.row_size)}", k.row_deps, x.ty)
    y = k.let(f"{x.code} * tl.rsqrt({ms.code} + {op.eps.value.data!r})", x.deps | ms.deps, x.ty)
    return _affine(k, op, y, index, [(op.weight, "*")])
