"""Importer entries for layout and indexing ops (views, permutes, slices, concatenation, gathers) and for the
functionalized writes into them (fill, copy, slice/select scatter, scatter, index_put).

Every view-like ATen op becomes one of `graph.reshape`, `graph.permute`, `graph.expand`,
`graph.slice`, `graph.concat` or `graph.gather`; the result shapes come from the FX node's metadata.
"""

from __future__ import annotations

import torch
from xdsl.dialects.builtin import StringAttr, UnitAttr  # noqa: F401

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import dims_of, size_expr, tensor_type
from solder.compiler.errors import ImportError_
from solder.compiler.import_context import ImportContext, _dim, _rank, _reshape_to, lower, torch_dtype_name, type_of_meta


def _reshape(ctx: ImportContext, x, *args, **kwargs):
    return _reshape_to(ctx, ctx.value(x), list(ctx.meta().shape))


lower("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default", "aten.unsqueeze.default",
      "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default", "aten.flatten.using_ints",
      "aten.unflatten.int", "aten.view_as.default", "aten.reshape_as.default")(_reshape)


def _permute_to(ctx, v, perm):
    if list(perm) == list(range(len(perm))):
        return v
    shape = dims_of(v.type)
    t = tensor_type(tuple(shape[p] for p in perm), torch_dtype_name(ctx.meta().dtype))
    return ctx.emit(g.PermuteOp(operands=[v], properties={"perm": g.ints_attr(perm)}, result_types=[t]))


@lower("aten.permute.default")
def _permute(ctx, x, dims):
    rank = _rank(ctx, x)
    return _permute_to(ctx, ctx.value(x), [_dim(d, rank) for d in dims])


@lower("aten.transpose.int", "aten.swapaxes.default")
def _transpose(ctx, x, a, b):
    rank = _rank(ctx, x)
    perm = list(range(rank))
    a, b = _dim(a, rank), _dim(b, rank)
    perm[a], perm[b] = perm[b], perm[a]
    return _permute_to(ctx, ctx.value(x), perm)


@lower("aten.t.default", "aten.numpy_T.default")
def _t(ctx, x):
    rank = _rank(ctx, x)
    return ctx.value(x) if rank < 2 else _permute_to(ctx, ctx.value(x), list(range(rank))[::-1])


@lower("aten.expand.default", "aten.expand_as.default", "aten.broadcast_to.default")
def _expand(ctx, x, *args, **kwargs):
    v, t = ctx.value(x), ctx.out_type()
    return v if v.type == t else ctx.emit(g.ExpandOp(operands=[v], result_types=[t]))


@lower("aten.repeat.default")
def _repeat(ctx, x, repeats):
    """x.repeat(r): reshape to interleave size-1 dims, expand them to r, reshape back."""
    shape = list(ctx.meta(x).shape)
    shape = [1] * (len(repeats) - len(shape)) + shape
    v = _reshape_to(ctx, ctx.value(x), [d for s in shape for d in (1, s)])
    dt = torch_dtype_name(ctx.meta().dtype)
    v = _expand_to(ctx, v, [d for r, s in zip(repeats, shape) for d in (r, s)], dt)
    return _reshape_to(ctx, v, list(ctx.meta().shape))


def _expand_to(ctx, v, shape, dt):
    t = tensor_type(tuple(shape), dt)
    return v if v.type == t else ctx.emit(g.ExpandOp(operands=[v], result_types=[t]))


@lower("aten.repeat_interleave.self_int")
def _repeat_interleave(ctx, x, repeats, dim=None, output_size=None):
    if dim is None:
        return NotImplemented
    shape = list(ctx.meta(x).shape)
    d = _dim(dim, len(shape))
    v = _reshape_to(ctx, ctx.value(x), shape[:d + 1] + [1] + shape[d + 1:])
    v = _expand_to(ctx, v, shape[:d + 1] + [repeats] + shape[d + 1:], torch_dtype_name(ctx.meta().dtype))
    return _reshape_to(ctx, v, list(ctx.meta().shape))


def _slice_to(ctx, v, dim, start, end, step, out_type):
    size = dims_of(v.type)[dim]
    start, end = (None if x is None else size_expr(ctx.meta(x) if isinstance(x, torch.fx.Node) else x)
                  for x in (start, end))
    if not isinstance(size, int) or isinstance(start, str) or isinstance(end, str):
        return _dynamic_slice(ctx, v, dim, start, end, step, out_type, size)
    start = 0 if start is None else (start + size if start < 0 else start)
    end = size if end is None or end > size else (end + size if end < 0 else end)
    start, end = max(0, min(start, size)), max(0, min(end, size))
    end = max(start, end)
    if (start, end, step) == (0, size, 1):
        return v
    props = {"dim": g.int_attr(dim), "start": g.int_attr(start), "end": g.int_attr(end), "step": g.int_attr(step)}
    return ctx.emit(g.SliceOp(operands=[v], properties=props, result_types=[out_type]))


_OPEN_END = 2**63 - 1


def _from_end(bound, size):
    """A symbolic slice bound that is `size - c` as the static negative index -c (`size` itself: open end)."""
    if not isinstance(bound, str) or not isinstance(size, str):
        return bound
    import sympy

    diff = sympy.sympify(size) - sympy.sympify(bound)
    if diff.is_Integer and int(diff) >= 0:
        return -int(diff) if int(diff) else _OPEN_END
    return bound


def _dynamic_slice(ctx, v, dim, start, end, step, out_type, size):
    """A slice of a `?` dim (or with symbolic bounds): static bounds keep PyTorch's semantics at run time."""
    start = 0 if start is None else _from_end(start, size)
    end = None if end is None else _from_end(end, size)
    if start == 0 and step == 1 and (end is None or end == size or isinstance(end, int) and end >= _OPEN_END):
        return v
    if isinstance(start, str):
        raise ImportError_(f"{ctx.where()}: slice {start}:{end} of a dim of size {size}: a symbolic slice start "
                           "is not supported (the dim compiles static)")
    props = {"dim": g.int_attr(dim), "start": g.int_attr(start), "step": g.int_attr(step),
             "end": g.int_attr(_OPEN_END if end is None or isinstance(end, str) else min(end, _OPEN_END))}
    if isinstance(end, str):
        props["end_expr"] = StringAttr(end)
    return ctx.emit(g.SliceOp(operands=[v], properties=props, result_types=[out_type]))


@lower("aten.slice.Tensor")
def _slice(ctx, x, dim=0, start=None, end=None, step=1):
    return _slice_to(ctx, ctx.value(x), _dim(dim, _rank(ctx, x)), start, end, step, ctx.out_type())


@lower("aten.narrow.default")
def _narrow(ctx, x, dim, start, length):
    size = ctx.meta(x).shape[dim]
    start = start + size if start < 0 else start
    return _slice(ctx, x, dim, start, start + length)


@lower("aten.select.int")
def _select(ctx, x, dim, index):
    shape = list(ctx.meta(x).shape)
    d = _dim(dim, len(shape))
    index = index + shape[d] if index < 0 else index
    sliced = shape[:d] + [1] + shape[d + 1:]
    t = tensor_type(tuple(sliced), torch_dtype_name(ctx.meta().dtype))
    v = _slice_to(ctx, ctx.value(x), d, index, index + 1, 1, t)
    return _reshape_to(ctx, v, list(ctx.meta().shape))


@lower("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default", "aten.unbind.int",
       "aten.tensor_split.sections")
def _split(ctx, x, *args, **kwargs):
    name = str(ctx.node.target)
    dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) if "unbind" not in name else (args[0] if args else 0)
    d = _dim(dim, _rank(ctx, x))
    outs, start, v = [], 0, ctx.value(x)
    for meta in ctx.meta():
        n = meta.shape[d] if "unbind" not in name else 1
        t = type_of_meta(meta)
        if "unbind" in name:
            shape = list(ctx.meta(x).shape)
            t1 = tensor_type(tuple(shape[:d] + [1] + shape[d + 1:]), torch_dtype_name(meta.dtype))
            outs.append(_reshape_to(ctx, _slice_to(ctx, v, d, start, start + 1, 1, t1), list(meta.shape)))
        else:
            outs.append(_slice_to(ctx, v, d, start, start + n, 1, t))
        start += n
    return outs


@lower("aten.cat.default", "aten.concat.default", "aten.concatenate.default")
def _cat(ctx, xs, dim=0):
    xs = [x for x in xs if ctx.meta(x).numel() > 0 or ctx.meta(x).dim() > 1]
    d = _dim(dim, ctx.meta().dim())
    dt = ctx.meta().dtype
    vs = [ctx.cast(ctx.value(x), dt) for x in xs]
    if len(vs) == 1:
        return vs[0]
    return ctx.emit(g.ConcatOp(operands=[vs], properties={"dim": g.int_attr(d)}, result_types=[ctx.out_type()]))


@lower("aten.stack.default")
def _stack(ctx, xs, dim=0):
    d = _dim(dim, ctx.meta().dim())
    vs = []
    for x in xs:
        shape = list(ctx.meta(x).shape)
        vs.append(_reshape_to(ctx, ctx.cast(ctx.value(x), ctx.meta().dtype), shape[:d] + [1] + shape[d:]))
    if len(vs) == 1:
        return vs[0]
    return ctx.emit(g.ConcatOp(operands=[vs], properties={"dim": g.int_attr(d)}, result_types=[ctx.out_type()]))


@lower("aten.embedding.default")
def _embedding(ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return ctx.emit(g.GatherOp(operands=[ctx.value(weight), ctx.value(indices)], properties={"dim": g.int_attr(0)},
                               result_types=[ctx.out_type()]))


@lower("aten.index_select.default")
def _index_select(ctx, x, dim, index):
    d = _dim(dim, _rank(ctx, x))
    return ctx.emit(g.GatherOp(operands=[ctx.value(x), ctx.value(index)], properties={"dim": g.int_attr(d)},
                               result_types=[ctx.out_type()]))


@lower("aten.index.Tensor")
def _index(ctx, x, indices):
    """x[i0, i1, ...]: one index tensor is a gather along its dim; several a graph.index of the indexed dims
    moved to the front. PyTorch puts the broadcast index dims where the indexed dims were when these are
    adjacent, else first: the result is permuted back in the first case. Boolean masks (a data-dependent
    size) stay eager."""
    pos = [i for i, t in enumerate(indices) if t is not None]
    if not pos or any(ctx.meta(indices[p]).dtype == torch.bool for p in pos):
        return NotImplemented
    sizes = dims_of(ctx.value(x).type)
    if len(pos) == 1:
        return ctx.emit(g.GatherOp(operands=[ctx.value(x), _wrap_negative(ctx, indices[pos[0]], sizes[pos[0]])],
                                   properties={"dim": g.int_attr(pos[0])}, result_types=[ctx.out_type()]))
    rank = len(sizes)
    rest = [d for d in range(rank) if d not in pos]
    v = _permute_to(ctx, ctx.value(x), pos + rest)
    idx = [_wrap_negative(ctx, indices[p], sizes[p]) for p in pos]
    out = list(ctx.meta().shape)
    adjacent = pos == list(range(pos[0], pos[-1] + 1))
    if not adjacent or pos[0] == 0:
        return ctx.emit(g.IndexOp(operands=[v, idx], result_types=[ctx.out_type()]))
    # the result has [*x[:p0], *B, *x[p_last+1:]]; graph.index gives [*B, *x[:p0], *x[p_last+1:]]
    nb = len(out) - len(rest)
    front = out[pos[0]:pos[0] + nb] + out[:pos[0]] + out[pos[0] + nb:]
    got = ctx.emit(g.IndexOp(operands=[v, idx], result_types=[tensor_type(tuple(front), torch_dtype_name(ctx.meta().dtype))]))
    back = list(range(nb, nb + pos[0])) + list(range(nb)) + list(range(nb + pos[0], len(out)))
    return _permute_to(ctx, got, back)


def _wrap_negative(ctx, index, size):
    """x[i] reads i in [-size, size); graph.gather and graph.index take [0, size): add size to negatives."""
    v = ctx.value(index)
    if not isinstance(size, int):
        return v
    dt = ctx.meta(index).dtype
    negative = ctx.emit(g.BINARY_OPS["lt"](v, ctx.constant(0, dt), tensor_type(dims_of(v.type), "bool")))
    shifted = ctx.emit(g.BINARY_OPS["add"](v, ctx.constant(size, dt), v.type))
    return ctx.emit(g.WhereOp(negative, shifted, v, v.type))


@lower("aten.gather.default")
def _gather_elements(ctx, x, dim, index, sparse_grad=False):
    d = _dim(dim, _rank(ctx, x))
    return ctx.emit(g.GatherElementsOp(operands=[ctx.value(x), ctx.value(index)], properties={"dim": g.int_attr(d)},
                                       result_types=[ctx.out_type()]))


@lower("aten.diff.default")
def _diff(ctx, x, n=1, dim=-1, prepend=None, append=None):
    """`x.diff(dim, prepend=, append=)`: cat(prepend, x, append), then x[1:] - x[:-1] along `dim` (n=1)."""
    dt = ctx.meta(x).dtype
    parts = [p for p in (prepend, x, append) if p is not None]
    if n != 1 or dt == torch.bool or not all(isinstance(p, torch.fx.Node) for p in parts):
        return NotImplemented  # higher orders, bool xor-diffs, scalar prepends: run eagerly
    shape = list(ctx.meta(x).shape)
    d = _dim(dim, len(shape))
    vs = [ctx.cast(ctx.value(p), dt) for p in parts]
    total = sum(ctx.meta(p).shape[d] for p in parts)
    name = torch_dtype_name(dt)
    v = vs[0] if len(vs) == 1 else ctx.emit(g.ConcatOp(
        operands=[vs], properties={"dim": g.int_attr(d)},
        result_types=[tensor_type(tuple(shape[:d] + [total] + shape[d + 1:]), name)]))
    part = tensor_type(tuple(shape[:d] + [max(total - 1, 0)] + shape[d + 1:]), name)
    hi = _slice_to(ctx, v, d, 1, None, 1, part)
    lo = _slice_to(ctx, v, d, 0, total - 1, 1, part)
    return ctx.emit(g.SubOp(hi, lo, ctx.out_type()))


# --------------------------------------------------------------------------------------------
# Writes as values: functionalized in-place writes (`x[i] = v`, `buf.scatter_add_(...)`, `x[:, a:b] = v`)
# --------------------------------------------------------------------------------------------


@lower("aten.fill.Scalar", "aten.fill.Tensor")
def _fill(ctx, x, value):
    """A tensor of x's shape and dtype holding `value` (a scalar, or a 0-d tensor broadcast)."""
    meta = ctx.meta()
    if not isinstance(value, torch.fx.Node):
        return ctx.constant(value, meta.dtype, tuple(meta.shape))
    return _broadcast_to(ctx, ctx.cast(ctx.value(value), meta.dtype), ctx.out_type())


@lower("aten.copy.default")
def _copy(ctx, x, src, non_blocking=False):
    """`x.copy_(src)` functionalized: src cast to x's dtype and broadcast to its shape."""
    return _broadcast_to(ctx, ctx.cast(ctx.value(src), ctx.meta().dtype), ctx.out_type())


def _broadcast_to(ctx, v, t):
    return v if v.type == t else ctx.emit(g.ExpandOp(operands=[v], result_types=[t]))


@lower("aten.slice_scatter.default")
def _slice_scatter(ctx, x, src, dim=0, start=None, end=None, step=1):
    shape = list(ctx.meta(x).shape)
    d = _dim(dim, len(shape))
    size = shape[d]
    v, s = ctx.value(x), ctx.cast(ctx.value(src), ctx.meta().dtype)
    whole = start in (None, 0) and step == 1 and (end is None or isinstance(end, int) and end >= _OPEN_END)
    if whole and s.type == v.type:  # x[:] = src, as functionalization writes back a slice of a `?` dim
        return s
    if not isinstance(size, int) or not all(b is None or isinstance(b, int) for b in (start, end)):
        return NotImplemented  # a `?` dim or symbolic bounds: the slice's extent is known only at run time
    start = 0 if start is None else (start + size if start < 0 else start)
    end = size if end is None or end > size else (end + size if end < 0 else end)
    start, end = max(0, min(start, size)), max(0, min(end, size))
    end = max(start, end)
    if start == end:
        return v
    if (start, end, step) == (0, size, 1) and s.type == v.type:
        return s
    props = {"dim": g.int_attr(d), "start": g.int_attr(start), "end": g.int_attr(end), "step": g.int_attr(step)}
    return ctx.emit(g.SliceScatterOp(operands=[v, s], properties=props, result_types=[ctx.out_type()]))


@lower("aten.select_scatter.default")
def _select_scatter(ctx, x, src, dim, index):
    shape = list(ctx.meta(x).shape)
    d = _dim(dim, len(shape))
    if not isinstance(shape[d], int) or not isinstance(index, int):
        return NotImplemented
    index = index + shape[d] if index < 0 else index
    s = _reshape_to(ctx, ctx.cast(ctx.value(src), ctx.meta().dtype), shape[:d] + [1] + shape[d + 1:])
    props = {"dim": g.int_attr(d), "start": g.int_attr(index), "end": g.int_attr(index + 1), "step": g.int_attr(1)}
    return ctx.emit(g.SliceScatterOp(operands=[ctx.value(x), s], properties=props, result_types=[ctx.out_type()]))


_SCATTER_REDUCE = {None: "none", "add": "sum", "multiply": "prod", "sum": "sum", "prod": "prod", "mean": "mean",
                   "amax": "amax", "amin": "amin"}


@lower("aten.scatter.src", "aten.scatter.value", "aten.scatter.reduce", "aten.scatter.value_reduce",
       "aten.scatter_add.default", "aten.scatter_reduce.two")
def _scatter(ctx, x, dim, index, src, reduce=None, *, include_self=True):
    if "scatter_add" in str(ctx.node.target):
        reduce = "add"
    if str(ctx.node.target) == "aten.scatter_reduce.two" and not isinstance(reduce, str):
        return NotImplemented
    rank, dt = _rank(ctx, x), ctx.meta().dtype
    kind = _SCATTER_REDUCE.get(reduce)
    if kind is None or rank == 0:
        return NotImplemented
    if isinstance(src, torch.fx.Node):
        s = ctx.cast(ctx.value(src), dt)
    else:  # scatter.value: one value written at every index
        s = _broadcast_to(ctx, ctx.constant(src, dt), tensor_type(dims_of(ctx.value(index).type), torch_dtype_name(dt)))
    props = {"dim": g.int_attr(_dim(dim, rank)), "reduce": StringAttr(kind)}
    if not include_self:
        props["exclude_self"] = UnitAttr()
    return ctx.emit(g.ScatterOp(operands=[ctx.value(x), ctx.value(index), s], properties=props,
                                result_types=[ctx.out_type()]))


@lower("aten.index_put.default")
def _index_put(ctx, x, indices, values, accumulate=False):
    """x[indices] = values (+= with accumulate). One boolean mask and one value is a `graph.where`."""
    pos = [i for i, t in enumerate(indices) if t is not None]
    if not pos or _rank(ctx, x) == 0:
        return NotImplemented
    dt = ctx.meta().dtype
    v = ctx.cast(ctx.value(values), dt)
    masked = _masked_put(ctx, x, indices, pos, v, accumulate)
    if masked is not None:
        return masked
    props = {"positions": g.ints_attr(pos)}
    if accumulate:
        props["accumulate"] = UnitAttr()
    return ctx.emit(g.IndexPutOp(operands=[ctx.value(x), [ctx.value(indices[p]) for p in pos], v],
                                 properties=props, result_types=[ctx.out_type()]))


def _masked_put(ctx, x, indices, pos, v, accumulate):
    """where(mask, value, x) (or x + value where accumulating) for `x[mask] = value` with one boolean mask
    over whole dims and a one-element value; None for other forms."""
    if len(pos) != 1 or ctx.meta(indices[pos[0]]).dtype != torch.bool:
        return None
    if accumulate and ctx.meta().dtype == torch.bool:
        return None  # `+=` on booleans is a logical or in torch, not graph.add's
    shape, mask = list(ctx.meta(x).shape), list(ctx.meta(indices[pos[0]]).shape)
    p = pos[0]
    static = all(isinstance(n, int) for n in shape + mask + list(dims_of(v.type)))
    if not static or shape[p:p + len(mask)] != mask or any(n != 1 for n in dims_of(v.type)):
        return None
    cond = _reshape_to(ctx, ctx.value(indices[p]), [1] * p + mask + [1] * (len(shape) - p - len(mask)))
    scalar = _reshape_to(ctx, v, [])
    xv = ctx.value(x)
    new = ctx.emit(g.AddOp(xv, scalar, xv.type)) if accumulate else scalar
    return ctx.emit(g.WhereOp(cond, new, xv, ctx.out_type()))
