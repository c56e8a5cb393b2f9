"""Index-mapping ops for the Triton backend's emit table: pad, slice_scatter, nearest and linear upsampling.

Each result element is an operand element at a computed index (or, for a constant pad, the fill value; for
linear upsampling, a blend of the 2**n neighbours), so the emitter maps the result index onto its operands'
and the op fuses into any pointwise kernel like a view. Every load is at a clamped, in-bounds index; a
`tl.where` picks the value. Registered in `emit.EMITTERS` when codegen.py (which generates from the table)
imports this module.

    %p = graph.pad constant %x {low = array<i64: 0, 1>, high = array<i64: 0, 2>, value = 0.0 : f64} ...
    // t = tl.where((x1 - 1 >= 0) & (x1 - 1 < 5), load(x[x0, clamp(x1 - 1)]), 0.0)
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from solder.backends.triton.emit import Index, Ix, Unsupported, Val, compute_type, emits, minus_one, par
from solder.compiler.dialects import graph as g


def _literal(ix: Ix) -> int | None:
    """The index as a Python int when it is a literal (a size-1 dim's index), else None."""
    if ix.deps:
        return None
    try:
        return int(ix.code)
    except ValueError:
        return None


def _fill(op, ty: str) -> str:
    """The fill value of a constant pad as Triton source (of compute type `ty`)."""
    v = g.scalar_value(op.value)
    if ty == "tl.int1":
        return "True" if v else "False"
    if isinstance(v, float) and not math.isfinite(v):
        return f'float("{v}")'
    return repr(v)


def _pad_index(mode: str, i: str, lo: int, n) -> tuple[str, str | None]:
    """(source index expression, in-bounds condition or None) of result index `i` along a dim of size `n`."""
    src = i if lo == 0 else f"({i} - {lo})" if lo > 0 else f"({i} + {-lo})"
    clamped = f"tl.minimum(tl.maximum({src}, 0), {minus_one(n)})"
    if mode == "constant":
        return clamped, f"({src} >= 0) & ({src} < {par(n)})"
    if mode == "replicate":
        return clamped, None
    if mode == "reflect":  # mirror at both edges without repeating them (a pad smaller than the dim)
        return f"{minus_one(n)} - tl.abs({minus_one(n)} - tl.abs({src}))", None
    return f"({src} + {par(n)}) % {par(n)}", None  # circular: a pad no larger than the dim


def _pad_literal(mode: str, i: int, lo: int, n: int) -> tuple[int, bool]:
    """`_pad_index` at a literal index, computed here: (source index, in bounds)."""
    src = i - lo
    if mode == "constant":
        return min(max(src, 0), n - 1), 0 <= src < n
    if mode == "replicate":
        return min(max(src, 0), n - 1), True
    if mode == "reflect":
        return (n - 1) - abs((n - 1) - abs(src)), True
    return (src + n) % n, True


@emits(g.PadOp)
def _pad(k, op, index):
    mode = op.mode.data
    low, high = op.low.get_values(), op.high.get_values()
    shape = k.shape(op.input)
    dims, inside, deps = [], [], frozenset()
    for ix, n, lo, hi in zip(index.dims, shape, low, high):
        if lo == 0 and hi == 0:
            dims.append(ix)
            continue
        at = _literal(ix)
        if at is not None and isinstance(n, int):
            src, ok = _pad_literal(mode, at, lo, n)
            if not ok:
                inside.append("False")
            dims.append(Ix(str(src)))
            continue
        code, cond = _pad_index(mode, ix.code, lo, n)
        dims.append(Ix(k.let(code, ix.deps, "int").code, ix.deps))
        deps |= ix.deps
        if cond is not None:
            inside.append(cond)
    x = k.value(op.input, Index(tuple(dims)))
    if not inside:
        return x
    if "False" in inside:  # a literal index outside the input: the fill value everywhere
        return k.let(f"tl.full([], {_fill(op, x.ty)}, {x.ty})", frozenset(), x.ty)
    return k.let(f"tl.where({' & '.join(inside)}, {x.code}, {_fill(op, x.ty)})", x.deps | deps, x.ty)


@emits(g.SliceScatterOp)
def _slice_scatter(k, op, index):
    """src where the index falls on the slice start:end:step of `dim`, the input elsewhere."""
    d, start, end, step = (op.properties[n].value.data for n in ("dim", "start", "end", "step"))
    i = index.dims[d]
    at = _literal(i)
    if at is not None:  # a size-1 dim: decided here
        hit = start <= at < end and (at - start) % step == 0
        if not hit:
            return k.value(op.input, index)
        dims = list(index.dims)
        dims[d] = Ix(str((at - start) // step))
        return k.value(op.src, Index(tuple(dims)))
    rel = i.code if start == 0 else f"({i.code} - {start})"
    cond = f"({rel} >= 0) & ({rel} < {end - start})"
    pos = rel
    if step != 1:
        cond += f" & ({rel} % {step} == 0)"
        pos = f"{rel} // {step}"
    n_src = k.shape(op.src)[d]
    dims = list(index.dims)
    dims[d] = Ix(k.let(f"tl.minimum(tl.maximum({pos}, 0), {minus_one(n_src)})", i.deps, "int").code, i.deps)
    s = k.value(op.src, Index(tuple(dims)))
    x = k.value(op.input, index)
    return k.let(f"tl.where({cond}, {s.code}, {x.code})", s.deps | x.deps | i.deps, x.ty)


def _f32(x: float) -> str:
    """An fp32 value as a Python literal that Triton reads back exactly."""
    return repr(float(np.float32(x)))


def nearest_scale(n_in: int, n_out: int, scale: float | None) -> np.float32:
    """torch's `compute_scales_value<float>`: 1/scale where the model gave a positive factor, else in/out."""
    if scale is not None and scale > 0:
        return np.float32(1.0 / scale)
    return np.float32(n_in) / np.float32(n_out)


def nearest_source(i: int, n_in: int, n_out: int, scale: float | None, exact: bool) -> int:
    """torch's `nearest_idx` / `nearest_exact_idx` for one output index (for literal indices and tests)."""
    s = nearest_scale(n_in, n_out, scale)
    if exact:
        return min(int(math.floor(np.float32(np.float64(i + 0.5) * np.float64(s)))), n_in - 1)
    if n_out == n_in:
        return i
    if n_out == 2 * n_in:
        return i >> 1
    return min(int(math.floor(np.float32(i) * s)), n_in - 1)


@emits(g.UpsampleNearestOp)
def _upsample_nearest(k, op, index):
    """Source index per spatial dim as torch computes it: fp32 `floor(i * s)` with its exact special cases
    (same size: i; twice the size: i >> 1), or for nearest-exact `floor((i + 0.5) * s)` taken in fp64 and
    rounded to fp32 before the floor, as torch's C++ does."""
    n_in, n_out = k.shape(op.input)[2:], k.shape(op.result)[2:]
    if not all(isinstance(n, int) for n in (*n_in, *n_out)):
        raise Unsupported("triton: graph.upsample_nearest of a symbolic size (its scale is a size ratio)")
    scales = list(op.scales.get_values()) if op.scales is not None else [None] * len(n_in)
    exact = op.exact is not None
    dims = list(index.dims[:2])
    for ix, a, b, sc in zip(index.dims[2:], n_in, n_out, scales):
        at = _literal(ix)
        if at is not None:
            dims.append(Ix(str(nearest_source(at, a, b, sc, exact))))
            continue
        s = nearest_scale(a, b, sc)
        if exact:
            code = f"tl.floor(((({ix.code}).to(tl.float64) + 0.5) * {float(s)!r}).to(tl.float32)).to(tl.int32)"
        elif b == a:
            dims.append(ix)
            continue
        elif b == 2 * a:
            code = f"{ix.code} // 2"
        else:
            code = f"tl.floor(({ix.code}).to(tl.float32) * {_f32(s)}).to(tl.int32)"
        dims.append(Ix(k.let(f"tl.minimum({code}, {a - 1})", ix.deps, "int").code, ix.deps))
    return k.value(op.input, Index(tuple(dims)))


def linear_source(i: int, n_in: int, n_out: int, scale: float | None, align_corners: bool) -> tuple[int, int, float]:
    """(left index, right index, right weight) of output index `i` for linear interpolation, in fp32 as
    torch's `area_pixel_compute_source_index` (for literal indices; the emitter writes the same in Triton)."""
    f = np.float32(_linear_scale(n_in, n_out, scale, align_corners))
    src = f * np.float32(i) if align_corners else max(f * (np.float32(i) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = min(int(src), n_in - 1)
    return i0, min(i0 + 1, n_in - 1), float(min(max(np.float32(src) - np.float32(i0), 0), 1))


def _linear_scale(n_in: int, n_out: int, scale: float | None, align_corners: bool) -> float:
    if align_corners:
        return (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else n_in / n_out


@emits(g.UpsampleLinearOp)
def _upsample_linear(k, op, index):
    """Linear interpolation along each spatial dim: the 2**n corner loads, blended innermost dim first as
    `a + (b - a) * w` (torch's decomposition); source positions in fp32 as torch computes them."""
    n_in, n_out = k.shape(op.input)[2:], k.shape(op.result)[2:]
    if not all(isinstance(n, int) for n in (*n_in, *n_out)):
        raise Unsupported("triton: graph.upsample_linear of a symbolic size (its scale is a size ratio)")
    if not compute_type(op.result.type).startswith("tl.float"):
        raise Unsupported("triton: graph.upsample_linear of integers (torch rounds the blend)")
    scales = list(op.scales.get_values()) if op.scales is not None else [None] * len(n_in)
    align = op.align_corners is not None
    ends, weights = [], []
    for ix, a, b, sc in zip(index.dims[2:], n_in, n_out, scales):
        at = _literal(ix)
        if at is not None:
            i0, i1, w = linear_source(at, a, b, sc, align)
            ends.append((Ix(str(i0)), Ix(str(i1))))
            weights.append(Val(repr(w), frozenset(), "tl.float32", w))
            continue
        s = _f32(_linear_scale(a, b, sc, align))
        x = f"({ix.code}).to(tl.float32)"
        src = k.let(f"{x} * {s}" if align else f"tl.maximum(({x} + 0.5) * {s} - 0.5, 0.0)", ix.deps, "tl.float32")
        i0 = k.let(f"tl.minimum({src.code}.to(tl.int32), {a - 1})", ix.deps, "int")
        i1 = k.let(f"tl.minimum({i0.code} + 1, {a - 1})", ix.deps, "int")
        ends.append((Ix(i0.code, ix.deps), Ix(i1.code, ix.deps)))
        weights.append(k.let(f"tl.minimum(tl.maximum({src.code} - {i0.code}.to(tl.float32), 0.0), 1.0)",
                             ix.deps, "tl.float32"))
    vals = [k.value(op.input, Index(tuple(index.dims[:2]) + tuple(e[c] for e, c in zip(ends, corner))))
            for corner in itertools.product((0, 1), repeat=len(ends))]
    for w in reversed(weights):
        vals = [k.let(f"{a.code} + ({b.code} - {a.code}) * {w.code}", a.deps | b.deps | w.deps, a.ty)
                for a, b in zip(vals[::2], vals[1::2])]
    return vals[0]
