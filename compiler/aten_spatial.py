"""Importer entries for the spatial ops of vision and audio models: convolution (plain and transposed), pooling,
padding, resampling, group and instance norm.

Where an ATen op is a known composition of `graph` ops that the backends already generate code for, the
entry builds that composition: group norm is a layer norm over each group's elements and a per-channel
affine, instance norm a group norm of one channel per group; max pooling with `ceil_mode` is a `-inf` pad followed by floor-mode pooling; adaptive average
pooling to a size that divides the input is plain average pooling.
"""

from __future__ import annotations

import torch
from xdsl.dialects.builtin import DenseArrayBase, StringAttr, UnitAttr, f64

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import dims_of, tensor_type
from solder.compiler.import_context import (
    ImportContext,
    _rank,
    _reshape_to,
    lower,
    scalar_attr,
    torch_dtype_name,
    type_of_meta,
)


def _opt(ctx, x):
    return None if x is None else ctx.value(x)


def _per_dim(v, n: int) -> list[int]:
    """An int or a list of ints (one, or one per spatial dim) as n ints, as torch's conv/pool arguments."""
    return list(v) * (n // len(v)) if isinstance(v, (list, tuple)) else [v] * n


def _static(*xs) -> bool:
    return all(isinstance(x, int) for x in xs)


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------


@lower("aten.conv2d.default", "aten.conv1d.default")
def _conv(ctx, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    n = _rank(ctx, x) - 2
    if isinstance(padding, str):
        return NotImplemented
    return ctx.emit(g.ConvOp(
        operands=[ctx.value(x), ctx.value(w), _opt(ctx, b)],
        properties={"stride": g.ints_attr(_per_dim(stride, n)), "padding": g.ints_attr(_per_dim(padding, n)),
                    "dilation": g.ints_attr(_per_dim(dilation, n)), "groups": g.int_attr(groups)},
        result_types=[ctx.out_type()]))


@lower("aten.convolution.default")
def _convolution(ctx, x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    if transposed:
        return _conv_transpose(ctx, x, w, b, stride, padding, output_padding, groups, dilation)
    return _conv(ctx, x, w, b, stride, padding, dilation, groups)


@lower("aten.conv_transpose1d.default", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input")
def _conv_transpose(ctx, x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    n = _rank(ctx, x) - 2
    if not 1 <= n <= 3 or isinstance(padding, str):
        return NotImplemented
    props = {k: g.ints_attr(_per_dim(v, n)) for k, v in
             (("stride", stride), ("padding", padding), ("output_padding", output_padding), ("dilation", dilation))}
    props["groups"] = g.int_attr(groups)
    return ctx.emit(g.ConvTransposeOp(operands=[ctx.value(x), ctx.value(w), _opt(ctx, b)], properties=props,
                                      result_types=[ctx.out_type()]))


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------


def _pool_op(ctx, v, kind, kernel, stride, padding, out_type):
    return ctx.emit(g.PoolOp(
        operands=[v],
        properties={"kind": StringAttr(kind), "kernel": g.ints_attr(kernel), "stride": g.ints_attr(stride),
                    "padding": g.ints_attr(padding)},
        result_types=[out_type]))


def _ceil_extra(shape, out, kernel, stride, padding) -> list[int]:
    """Per spatial dim, how many elements past the padded input ceil_mode's last window reads."""
    n = len(kernel)
    return [max(0, (o - 1) * s + k - (i + 2 * p))
            for o, s, k, i, p in zip(out[-n:], stride, kernel, shape[-n:], padding)]


def _spatial_dims(ctx) -> int:
    """1, 2 or 3: the spatial dims of a pooling op, from its name (`aten.max_pool3d_with_indices...`)."""
    return int(str(ctx.node.target).split("_pool")[1][0])


def _indices_read(ctx) -> bool:
    """Whether a node's results past the first (a pool's argmax indices, a norm's saved statistics) are
    read (export keeps getitems nobody uses)."""
    return any(len(u.args) > 1 and u.args[1] != 0 and u.users for u in ctx.node.users)


@lower("aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default")
def _max_pool(ctx, x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    n = _spatial_dims(ctx)
    kernel = _per_dim(kernel, n)
    stride, padding = _per_dim(stride or kernel, n), _per_dim(padding, n)
    if _per_dim(dilation, n) != [1] * n:
        return NotImplemented
    if not ceil_mode:
        return _pool_op(ctx, ctx.value(x), "max", kernel, stride, padding, _values_type(ctx))
    # ceil_mode: pad with the lowest value up to the size that floor-mode pooling reads (torch's own
    # implicit padding is -inf as well), then pool with no padding
    shape, out = list(ctx.meta(x).shape), list(_values_meta(ctx).shape)
    if not _static(*shape[-n:], *out[-n:]):
        return NotImplemented
    extra = _ceil_extra(shape, out, kernel, stride, padding)
    dt = ctx.meta(x).dtype
    low = [0] * (len(shape) - n) + padding
    high = [0] * (len(shape) - n) + [p + e for p, e in zip(padding, extra)]
    fill = -float("inf") if dt.is_floating_point else torch.iinfo(dt).min
    padded_type = tensor_type(tuple(d + lo + hi for d, lo, hi in zip(shape, low, high)), torch_dtype_name(dt))
    padded = pad(ctx, ctx.value(x), "constant", low, high, padded_type, _fill_attr(fill, dt))
    return _pool_op(ctx, padded, "max", kernel, stride, [0] * n, _values_type(ctx))


@lower("aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default")
def _max_pool_with_indices(ctx, x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling whose indices nobody reads (1-d max pooling decomposes to this 2-d form)."""
    if _indices_read(ctx):
        return NotImplemented
    out = _max_pool(ctx, x, kernel, stride, padding, dilation, ceil_mode)
    return NotImplemented if out is NotImplemented else [out, None]


def _values_meta(ctx):
    meta = ctx.meta()
    return meta[0] if isinstance(meta, (tuple, list)) else meta


def _values_type(ctx):
    return type_of_meta(_values_meta(ctx))


@lower("aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default")
def _avg_pool(ctx, x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    n = _spatial_dims(ctx)
    kernel = _per_dim(kernel, n)
    stride, padding = _per_dim(stride or kernel, n), _per_dim(padding, n)
    if divisor_override is not None:
        return NotImplemented
    if not ceil_mode and (count_include_pad or padding == [0] * n):
        return _pool_op(ctx, ctx.value(x), "avg", kernel, stride, padding, ctx.out_type())
    return _avg_pool_counted(ctx, x, kernel, stride, padding, count_include_pad)


def _avg_pool_counted(ctx, x, kernel, stride, padding, count_include_pad):
    """Average pooling whose divisor varies by window (ceil_mode's partial windows, or padding left out of
    the count): the zero-padded input's window means over the window means of a 0/1 mask of what torch
    counts (the input, plus the symmetric padding where count_include_pad), i.e. sum / count."""
    shape, out, dt = list(ctx.meta(x).shape), list(ctx.meta().shape), ctx.meta(x).dtype
    n = len(kernel)
    if not _static(*shape[-n:], *out[-n:]) or not dt.is_floating_point:
        return NotImplemented
    rank = len(shape)
    extra = _ceil_extra(shape, out, kernel, stride, padding)
    name = torch_dtype_name(dt)
    padded = [d + 2 * p + e for d, p, e in zip(shape[-n:], padding, extra)]
    lead = [0] * (rank - n)

    def zero_pad(v, low, high, sizes):
        t = tensor_type(tuple(list(dims_of(v.type))[:-n] + sizes), name)
        return pad(ctx, v, "constant", lead + low, lead + high, t, _fill_attr(0, dt))

    xs = zero_pad(ctx.value(x), padding, [p + e for p, e in zip(padding, extra)], padded)
    sums = _pool_op(ctx, xs, "avg", kernel, stride, [0] * n, ctx.out_type())
    counted = shape[-n:] if not count_include_pad else [d + 2 * p for d, p in zip(shape[-n:], padding)]
    ones = ctx.constant(1, dt, tuple([1] * (rank - n) + counted))
    at = [0] * n if count_include_pad else padding
    mask = zero_pad(ones, at, [m - c - a for m, c, a in zip(padded, counted, at)], padded)
    counts = _pool_op(ctx, mask, "avg", kernel, stride, [0] * n, tensor_type(tuple([1] * (rank - n) + out[-n:]), name))
    return ctx.emit(g.DivOp(sums, counts, ctx.out_type()))


@lower("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default")
def _adaptive_avg_pool(ctx, x, output_size):
    """To 1x1: a mean over the spatial dims; to a size that divides the input: average pooling with
    kernel = stride = input / output (the same windows)."""
    hw, out = list(ctx.meta(x).shape[-2:]), list(output_size)
    if out == [1, 1]:
        rank = _rank(ctx, x)
        props = {"kind": StringAttr("mean"), "dims": g.ints_attr([rank - 2, rank - 1]), "keepdim": UnitAttr()}
        return ctx.emit(g.ReduceOp(operands=[ctx.value(x)], properties=props, result_types=[ctx.out_type()]))
    if not _static(*hw, *out) or any(o <= 0 or n % o for n, o in zip(hw, out)):
        return NotImplemented
    k = [n // o for n, o in zip(hw, out)]
    return _pool_op(ctx, ctx.value(x), "avg", k, k, [0, 0], ctx.out_type())


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------


def _fill_attr(value, dt: torch.dtype):
    """The `graph.pad` fill attribute of `value` in a tensor of dtype `dt` (as torch converts it)."""
    if dt == torch.bool:
        return scalar_attr(bool(value))
    return scalar_attr(float(value) if dt.is_floating_point else int(value))


def pad(ctx: ImportContext, v, mode: str, low: list[int], high: list[int], out_type, value=None):
    """A `graph.pad` of `v` to `out_type` (`v` itself when nothing is padded)."""
    if not any(low) and not any(high):
        return v
    props = {"mode": StringAttr(mode), "low": g.ints_attr(low), "high": g.ints_attr(high)}
    if value is not None:
        props["value"] = value
    return ctx.emit(g.PadOp(operands=[v], properties=props, result_types=[out_type]))


def _pairs(ctx, x, pads) -> tuple[list[int], list[int]] | None:
    """torch's pad list (last dim first, (before, after) pairs) as per-dim low/high counts, or None."""
    rank = _rank(ctx, x)
    if len(pads) % 2 or len(pads) // 2 > rank or not _static(*pads):
        return None
    low, high = [0] * rank, [0] * rank
    for i in range(len(pads) // 2):
        low[rank - 1 - i], high[rank - 1 - i] = pads[2 * i], pads[2 * i + 1]
    return low, high


@lower("aten.constant_pad_nd.default")
def _constant_pad(ctx, x, pads, value=0):
    lh = _pairs(ctx, x, pads)
    if lh is None or not isinstance(value, (int, float, bool)):
        return NotImplemented
    if any(isinstance(n, int) and n == 0 for n in ctx.meta().shape):
        return NotImplemented  # an empty result: nothing to index
    return pad(ctx, ctx.value(x), "constant", *lh, ctx.out_type(), _fill_attr(value, ctx.meta(x).dtype))


@lower("aten.pad.default")
def _pad(ctx, x, pads, mode="constant", value=None):
    if mode == "constant":
        return _constant_pad(ctx, x, pads, 0 if value is None else value)
    return _mode_pad(ctx, x, pads, mode)


def _mode_pad(ctx, x, pads, mode):
    lh = _pairs(ctx, x, pads)
    if lh is None or mode not in ("reflect", "replicate", "circular") or len(pads) > 6 or min(pads, default=0) < 0:
        return NotImplemented  # F.pad's own limits: 1-3 trailing dims, no cropping in these modes
    sizes = ctx.meta(x).shape
    for n, lo, hi in zip(sizes, *lh):
        if (lo or hi) and (not isinstance(n, int) or (mode == "reflect" and max(lo, hi) >= n)
                           or (mode == "circular" and max(lo, hi) > n)):
            return NotImplemented  # eager raises its own error
    return pad(ctx, ctx.value(x), mode, *lh, ctx.out_type())


for _n in (1, 2, 3):
    lower(f"aten.reflection_pad{_n}d.default")(lambda ctx, x, p: _mode_pad(ctx, x, p, "reflect"))
    lower(f"aten.replication_pad{_n}d.default")(lambda ctx, x, p: _mode_pad(ctx, x, p, "replicate"))
lower("aten._pad_circular.default")(lambda ctx, x, p: _mode_pad(ctx, x, p, "circular"))


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------


def _upsample(ctx, x, cls, scales, props):
    """An upsample op to the node's result sizes; `scales`: the factors the model gave (one per spatial dim,
    which torch then uses for the source index), or None when it gave output sizes."""
    n = _rank(ctx, x) - 2
    if not 1 <= n <= 3:
        return NotImplemented
    if scales is not None and any(s is not None for s in scales):
        if len(scales) != n or not all(isinstance(s, (int, float)) for s in scales):
            return NotImplemented  # some factors given and some not, or symbolic ones
        props["scales"] = DenseArrayBase.from_list(f64, [float(s) for s in scales])
    return ctx.emit(cls(operands=[ctx.value(x)], properties=props, result_types=[ctx.out_type()]))


def _nearest_vec(ctx, x, output_size, scale_factors):
    exact = "exact" in str(ctx.node.target)
    return _upsample(ctx, x, g.UpsampleNearestOp, scale_factors, {"exact": UnitAttr()} if exact else {})


def _nearest_default(ctx, x, output_size, *scales):
    return _nearest_vec(ctx, x, output_size, list(scales))


def _linear_vec(ctx, x, output_size, align_corners, scale_factors):
    return _upsample(ctx, x, g.UpsampleLinearOp, scale_factors, {"align_corners": UnitAttr()} if align_corners else {})


def _linear_default(ctx, x, output_size, align_corners, *scales):
    return _linear_vec(ctx, x, output_size, align_corners, list(scales))


for _n, _lin in ((1, "upsample_linear1d"), (2, "upsample_bilinear2d"), (3, "upsample_trilinear3d")):
    lower(f"aten.upsample_nearest{_n}d.vec", f"aten._upsample_nearest_exact{_n}d.vec")(_nearest_vec)
    lower(f"aten.upsample_nearest{_n}d.default", f"aten._upsample_nearest_exact{_n}d.default")(_nearest_default)
    lower(f"aten.{_lin}.vec")(_linear_vec)
    lower(f"aten.{_lin}.default")(_linear_default)


# --------------------------------------------------------------------------------------------
# Group norm
# --------------------------------------------------------------------------------------------


@lower("aten.group_norm.default")
def _group_norm(ctx, x, groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    return group_norm(ctx, x, groups, weight, bias, eps)


@lower("aten.native_group_norm.default")
def _native_group_norm(ctx, x, weight, bias, n, c, hw, groups, eps):
    if _indices_read(ctx):
        return NotImplemented  # the mean or rstd is used (training): run it eagerly (export keeps unused getitems)
    out = group_norm(ctx, x, groups, weight, bias, eps)
    return NotImplemented if out is NotImplemented else [out, None, None]  # mean, rstd: unread


@lower("aten.instance_norm.default")
def _instance_norm(ctx, x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                   cudnn_enabled=False):
    """Each sample's channels normalized over their spatial elements: a group norm with one channel a group.
    Running statistics (updated in training, read in eval) go to eager."""
    if not use_input_stats or running_mean is not None or running_var is not None or _rank(ctx, x) < 3:
        return NotImplemented
    return group_norm(ctx, x, ctx.meta(x).shape[1], weight, bias, eps)


@lower("aten._native_batch_norm_legit.no_stats")
def _batch_norm_batch_stats(ctx, x, weight, bias, training, momentum, eps):
    """Batch norm from the batch's own statistics (instance norm decomposes to it with N folded into C; a
    BatchNorm without running stats): each channel normalized over N and the spatial elements."""
    if _indices_read(ctx):
        return NotImplemented  # the saved mean or rstd is read (training)
    out = batch_stats_norm(ctx, x, weight, bias, eps)
    return NotImplemented if out is NotImplemented else [out, None, None]


def batch_stats_norm(ctx, x, weight, bias, eps):
    """[N, C, *S] normalized per channel over N and S (a group norm of one channel a group when N is 1)."""
    shape = list(ctx.meta(x).shape)
    if len(shape) < 2:
        return NotImplemented
    if isinstance(shape[0], int) and shape[0] == 1:
        return group_norm(ctx, x, shape[1], weight, bias, eps)
    return _channel_norm(ctx, x, weight, bias, eps)


def _channel_norm(ctx, x, weight, bias, eps):
    """[N, C, *S] normalized per channel over N and S: C to the front, a layer norm of [C, N * S] rows,
    back to [N, C, *S], then the per-channel affine."""
    shape, dt = list(ctx.meta(x).shape), ctx.meta(x).dtype
    if not _static(*shape) or not dt.is_floating_point or any(
            p is not None and ctx.meta(p).dtype != dt for p in (weight, bias)):
        return NotImplemented
    name, rank = torch_dtype_name(dt), len(shape)
    perm = [1, 0] + list(range(2, rank))
    swapped = [shape[1], shape[0]] + shape[2:]
    v = ctx.emit(g.PermuteOp(operands=[ctx.value(x)], properties={"perm": g.ints_attr(perm)},
                             result_types=[tensor_type(tuple(swapped), name)]))
    rows = [shape[1], int(torch.Size(swapped[1:]).numel())]
    v = _layer_norm_rows(ctx, _reshape_to(ctx, v, rows), eps, name)
    v = _reshape_to(ctx, v, swapped)
    v = ctx.emit(g.PermuteOp(operands=[v], properties={"perm": g.ints_attr(perm)},
                             result_types=[tensor_type(tuple(shape), name)]))
    return _channel_affine(ctx, v, weight, bias, shape)


def _layer_norm_rows(ctx, v, eps, name):
    """A layer norm of the last dim of `v` without affine parameters (fp32 statistics, as torch)."""
    return ctx.emit(g.LayerNormOp(operands=[v, None, None],
                                  properties={"normalized_ndim": g.int_attr(1), "eps": g.float_attr(eps)},
                                  result_types=[tensor_type(dims_of(v.type), name)]))


def _channel_affine(ctx, v, weight, bias, shape):
    """v * weight[C] + bias[C], broadcast per channel of [N, C, *S]."""
    channel = [shape[1]] + [1] * (len(shape) - 2)
    if weight is not None:
        v = ctx.emit(g.MulOp(v, _reshape_to(ctx, ctx.value(weight), channel), v.type))
    if bias is not None:
        v = ctx.emit(g.AddOp(v, _reshape_to(ctx, ctx.value(bias), channel), v.type))
    return v


def group_norm(ctx, x, groups, weight, bias, eps):
    """[N, C, *S] normalized over each group of C/groups channels: a layer norm of [N, groups, C/groups * S]
    (fp32 statistics, as torch), back to [N, C, *S], times weight[C] plus bias[C] broadcast per channel."""
    shape, dt = list(ctx.meta(x).shape), ctx.meta(x).dtype
    if len(shape) < 2 or not _static(*shape[1:]) or shape[1] % groups or not dt.is_floating_point:
        return NotImplemented
    params = [p for p in (weight, bias) if p is not None]
    if any(ctx.meta(p).dtype != dt for p in params):
        return NotImplemented  # mixed precision: eager applies the affine before rounding
    c, rest = shape[1], shape[2:]
    inner = (c // groups) * int(torch.Size(rest).numel())
    v = _reshape_to(ctx, ctx.value(x), [shape[0], groups, inner])
    v = _layer_norm_rows(ctx, v, eps, torch_dtype_name(dt))
    return _channel_affine(ctx, _reshape_to(ctx, v, shape), weight, bias, shape)
