"""The importer's table: one entry per ATen op overload, each building `graph` ops for one FX node.

An entry is `fn(ctx, *node.args, **node.kwargs) -> SSAValue | list[SSAValue] | None`; returning
`NotImplemented` sends the node to `graph.extern` (for argument forms the entry does not handle).
Adding an op touches this file alone.
"""

from __future__ import annotations

import math

import torch
from xdsl.dialects.builtin import StringAttr, UnitAttr

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import dims_of, tensor_type
from solder.compiler import aten_layout, aten_spatial  # noqa: F401  (their entries join TABLE: importing this module gives all)
from solder.compiler.import_context import (
    TABLE,
    ImportContext,
    _dim,
    _elem_dtype,
    _rank,
    _reshape_to,
    lower,
    scalar_attr,
    torch_dtype_name,
    type_of_meta,
)

def _dtype(ctx: ImportContext, arg) -> torch.dtype:
    return ctx.meta(arg).dtype


def _promote(ctx: ImportContext, *xs) -> torch.dtype:
    """PyTorch's result type of tensors and scalars (dim-0 tensors are scalar-like, as in PyTorch)."""
    probes = [torch.empty([1] * ctx.meta(x).dim(), dtype=ctx.meta(x).dtype) if isinstance(x, torch.fx.Node) else x
              for x in xs]
    if len(probes) == 1:
        return probes[0].dtype if isinstance(probes[0], torch.Tensor) else torch.tensor(probes[0]).dtype
    out = torch.result_type(probes[0], probes[1])
    for p in probes[2:]:
        out = torch.promote_types(out, torch.result_type(p, torch.empty([1], dtype=out)))
    return out


# --------------------------------------------------------------------------------------------
# Elementwise
# --------------------------------------------------------------------------------------------

_UNARY = {
    "neg": "neg", "abs": "abs", "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt", "tanh": "tanh",
    "sigmoid": "sigmoid", "relu": "relu", "silu": "silu", "erf": "erf", "sin": "sin", "cos": "cos",
    "reciprocal": "reciprocal", "floor": "floor", "ceil": "ceil", "log1p": "log1p", "expm1": "expm1",
    "sign": "sign", "round": "round", "trunc": "trunc",
}


def _unary(kind: str):
    def fn(ctx: ImportContext, x):
        out_dt = ctx.meta().dtype
        return ctx.emit(g.UNARY_OPS[kind](ctx.cast(ctx.value(x), out_dt)))

    return fn


for _aten, _kind in _UNARY.items():
    lower(f"aten.{_aten}.default")(_unary(_kind))


@lower("aten.gelu.default")
def _gelu(ctx, x, approximate="none"):
    v = ctx.value(x)
    return ctx.emit(g.GeluOp(v, props={"approximate": StringAttr(approximate)}))


@lower("aten.leaky_relu.default")
def _leaky_relu(ctx, x, slope=0.01):
    v, dt = ctx.value(x), ctx.meta().dtype
    positive = ctx.emit(g.BINARY_OPS["gt"](v, ctx.constant(0, dt), _bool_like(ctx, x)))
    return ctx.emit(g.WhereOp(positive, v, ctx.emit(g.MulOp(v, ctx.constant(slope, dt), v.type)), v.type))


@lower("aten.elu.default")
def _elu(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    """x * scale where x > 0, else expm1(x * input_scale) * (alpha * scale), as eager (SELU: its constants)."""
    v, dt = ctx.value(x), ctx.meta().dtype
    if not dt.is_floating_point:
        return NotImplemented
    positive = ctx.emit(g.BINARY_OPS["gt"](v, ctx.constant(0, dt), _bool_like(ctx, x)))
    inner = v if input_scale == 1.0 else ctx.emit(g.MulOp(v, ctx.constant(input_scale, dt), v.type))
    negative = ctx.emit(g.MulOp(ctx.emit(g.UNARY_OPS["expm1"](inner)), ctx.constant(alpha * scale, dt), v.type))
    kept = v if scale == 1.0 else ctx.emit(g.MulOp(v, ctx.constant(scale, dt), v.type))
    return ctx.emit(g.WhereOp(positive, kept, negative, v.type))


@lower("aten.selu.default")
def _selu(ctx, x):
    return _elu(ctx, x, 1.6732632423543772848170429916717, 1.0507009873554804934193349852946)


@lower("aten.hardswish.default")
def _hardswish(ctx, x):
    """x * relu6(x + 3) / 6, in eager's order."""
    dt = ctx.meta().dtype
    if not dt.is_floating_point:
        return NotImplemented
    v = ctx.value(x)
    r = ctx.emit(g.AddOp(v, ctx.constant(3, dt), v.type))
    r = ctx.emit(g.BINARY_OPS["maximum"](r, ctx.constant(0, dt), v.type))
    r = ctx.emit(g.BINARY_OPS["minimum"](r, ctx.constant(6, dt), v.type))
    return ctx.emit(g.DivOp(ctx.emit(g.MulOp(v, r, v.type)), ctx.constant(6, dt), v.type))


def _bool_like(ctx, x):
    return tensor_type(tuple(ctx.meta(x).shape), "bool")


@lower("aten.logical_not.default", "aten.bitwise_not.default")
def _not(ctx, x):
    if ctx.meta(x).dtype != torch.bool:
        return NotImplemented
    return ctx.emit(g.LogicalNotOp(ctx.value(x), ctx.out_type()))


@lower("aten.isnan.default")
def _isnan(ctx, x):
    return ctx.emit(g.IsNanOp(ctx.value(x), ctx.out_type()))


_ARITH = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "maximum": "maximum",
          "minimum": "minimum", "remainder": "remainder", "floor_divide": "floor_divide",
          "logical_and": "logical_and", "logical_or": "logical_or", "bitwise_and": "logical_and",
          "bitwise_or": "logical_or"}
_COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")


def _binary(kind: str, compare: bool):
    def fn(ctx: ImportContext, a, b, alpha=1):
        if kind.startswith("logical_") and (ctx.meta().dtype != torch.bool or not all(
                not isinstance(x, torch.fx.Node) or ctx.meta(x).dtype == torch.bool for x in (a, b))):
            return NotImplemented  # bitwise ops on integers (bool | 2 is the integer 3)
        dt = _promote(ctx, a, b) if compare or kind.startswith("logical_") else ctx.meta().dtype
        if kind.startswith("logical_"):
            dt = torch.bool
        if compare and dt == torch.bool and kind not in ("eq", "ne"):
            dt = torch.int32  # order bools as 0 < 1: as i1, True is -1 to a signed comparison
        vb = ctx.operand(b, dt)
        if alpha != 1:
            vb = ctx.emit(g.MulOp(vb, ctx.constant(alpha, dt), _like(ctx, b, dt)))
        return ctx.emit(g.BINARY_OPS[kind](ctx.operand(a, dt), vb, ctx.out_type()))

    return fn


def _like(ctx, x, dt):
    shape = tuple(ctx.meta(x).shape) if isinstance(x, torch.fx.Node) else ()
    return tensor_type(shape, torch_dtype_name(dt))


for _aten, _kind in _ARITH.items():
    for _ov in ("Tensor", "Scalar", "default"):
        lower(f"aten.{_aten}.{_ov}")(_binary(_kind, False))
lower("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor")(_binary("pow", False))
lower("aten.fmod.Tensor", "aten.fmod.Scalar")(_binary("fmod", False))
# `a & b` / `a | b` on bool masks (HF mask building): taken here so no run_decompositions() is needed
lower("aten.__and__.Tensor", "aten.__and__.Scalar")(_binary("logical_and", False))
lower("aten.__or__.Tensor", "aten.__or__.Scalar")(_binary("logical_or", False))
for _kind in _COMPARE:
    lower(f"aten.{_kind}.Tensor", f"aten.{_kind}.Scalar")(_binary(_kind, True))


@lower("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(ctx, a, b, alpha=1):
    return _binary("sub", False)(ctx, b, a, alpha=1) if alpha == 1 else NotImplemented


@lower("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div_mode(ctx, a, b, rounding_mode=None):
    if rounding_mode is None:
        return _binary("div", False)(ctx, a, b)
    if rounding_mode == "floor":
        return _binary("floor_divide", False)(ctx, a, b)
    if rounding_mode == "trunc":
        return _div_trunc(ctx, a, b)
    return NotImplemented


def _div_trunc(ctx, a, b):
    """Division rounded toward zero, exact as eager: trunc(a / b) on floats, the quotient rounded to the
    result type first (fp16/bf16 divide in fp32 and round explicitly, so a kernel computing in fp32 rounds
    there too); on integers (a - fmod(a, b)) // b, a multiple of b divided exactly: floor and trunc agree."""
    dt = ctx.meta().dtype
    if dt == torch.bool:
        return NotImplemented
    out = ctx.out_type()
    va, vb = ctx.operand(a, dt), ctx.operand(b, dt)
    if dt in (torch.float16, torch.bfloat16):
        wide = tensor_type(tuple(ctx.meta().shape), "float32")
        q = ctx.emit(g.DivOp(ctx.cast(va, torch.float32), ctx.cast(vb, torch.float32), wide))
        return ctx.emit(g.TruncOp(ctx.cast(q, dt)))
    if dt.is_floating_point:
        return ctx.emit(g.TruncOp(ctx.emit(g.DivOp(va, vb, out))))
    exact = ctx.emit(g.SubOp(va, ctx.emit(g.FmodOp(va, vb, out)), out))
    return ctx.emit(g.FloorDivideOp(exact, vb, out))


@lower("aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf", "aten.where.Scalar")
def _where(ctx, cond, a, b):
    dt = ctx.meta().dtype
    return ctx.emit(g.WhereOp(ctx.value(cond), ctx.operand(a, dt), ctx.operand(b, dt), ctx.out_type()))


@lower("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(ctx, x, mask, value):
    dt = ctx.meta().dtype
    return ctx.emit(g.WhereOp(ctx.value(mask), ctx.operand(value, dt), ctx.value(x), ctx.out_type()))


@lower("aten.clamp.default", "aten.clamp_min.default", "aten.clamp_max.default", "aten.hardtanh.default",
       "aten.clamp.Tensor")
def _clamp(ctx, x, lo=None, hi=None):
    node = ctx.node
    if str(node.target) == "aten.clamp_max.default":
        lo, hi = None, lo
    if str(node.target) == "aten.hardtanh.default":
        lo, hi = (-1.0 if lo is None else lo), (1.0 if hi is None else hi)
    dt, v = ctx.meta().dtype, ctx.value(x)
    v = ctx.cast(v, dt)
    if lo is not None:  # tensor bounds (clamp.Tensor) may broadcast x to the result's shape
        v = ctx.emit(g.BINARY_OPS["maximum"](v, ctx.operand(lo, dt), ctx.out_type()))
    if hi is not None:
        v = ctx.emit(g.BINARY_OPS["minimum"](v, ctx.operand(hi, dt), ctx.out_type()))
    return v


@lower("aten.to.dtype", "aten._to_copy.default", "aten.to.dtype_layout", "aten.type_as.default",
       "aten.to.device")
def _to(ctx, x, *args, **kwargs):
    return ctx.cast(ctx.value(x), ctx.meta().dtype)


@lower("aten.contiguous.default", "aten.clone.default", "aten.alias.default", "aten.detach.default",
       "aten.lift_fresh_copy.default", "aten.dropout.default", "aten.feature_dropout.default",
       "aten.alpha_dropout.default")
def _identity(ctx, x, *args, **kwargs):
    name = str(ctx.node.target)
    if "dropout" in name and (args[1] if len(args) > 1 else kwargs.get("train", False)):
        return NotImplemented  # dropout in training mode is random: run it eagerly
    return ctx.value(x)


@lower("aten._assert_tensor_metadata.default", "aten._assert_scalar.default", "aten.sym_constrain_range_for_size.default")
def _assertion(ctx, *args, **kwargs):
    return None


# --------------------------------------------------------------------------------------------
# Creation
# --------------------------------------------------------------------------------------------


@lower("aten.full.default", "aten.zeros.default", "aten.ones.default", "aten.scalar_tensor.default",
       "aten.zeros_like.default", "aten.ones_like.default", "aten.full_like.default", "aten.new_ones.default",
       "aten.new_zeros.default", "aten.new_full.default")
def _full(ctx, *args, **kwargs):
    name = str(ctx.node.target).split(".")[1]
    meta = ctx.meta()
    value = {"zeros": 0, "ones": 1, "new_ones": 1, "new_zeros": 0, "zeros_like": 0, "ones_like": 1}.get(name)
    if value is None:
        position = {"full": 1, "scalar_tensor": 0, "full_like": 1, "new_full": 2}[name]
        value = args[position] if len(args) > position else kwargs["fill_value"]
    if isinstance(value, torch.fx.Node):  # a value read with .item(): its 0-d tensor, broadcast
        v = ctx.cast(ctx.value(value), meta.dtype)
        return ctx.emit(g.ExpandOp(operands=[v], result_types=[ctx.out_type()])) if meta.dim() else v
    return ctx.constant(value, meta.dtype, tuple(meta.shape))


@lower("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def _arange(ctx, *args, **kwargs):
    nums = [ctx.meta(a) if isinstance(a, torch.fx.Node) else a for a in args]  # SymInt bounds: the type has them
    nums = [a for a in nums if isinstance(a, (int, float, torch.SymInt, torch.SymFloat))]
    if len(nums) > 1 and any(isinstance(a, (torch.SymInt, torch.SymFloat)) for a in [nums[0]] + nums[2:]):
        return NotImplemented  # a symbolic start or step: the dim compiles static
    start, step = (0, 1) if len(nums) == 1 else (nums[0], nums[2] if len(nums) > 2 else 1)

    return ctx.emit(g.ArangeOp(properties={"start": scalar_attr(start), "step": scalar_attr(step)},
                               result_types=[ctx.out_type()]))


@lower("aten.tril.default", "aten.triu.default")
def _tri(ctx, x, diagonal=0):
    props = {"diagonal": g.int_attr(diagonal)}
    if str(ctx.node.target).startswith("aten.triu"):
        props["upper"] = UnitAttr()
    return ctx.emit(g.TriangularOp(operands=[ctx.value(x)], properties=props, result_types=[ctx.out_type()]))


# --------------------------------------------------------------------------------------------
# Reductions and normalizations
# --------------------------------------------------------------------------------------------


def _reduce(ctx, kind, x, dims, keepdim):
    rank = _rank(ctx, x)
    if dims is None or dims == []:
        dims = list(range(rank))
    dims = sorted({_dim(d, rank) for d in ([dims] if isinstance(dims, int) else dims)})
    out_dt = ctx.meta().dtype
    v = ctx.value(x) if kind in ("max", "min", "any", "all") else ctx.cast(ctx.value(x), out_dt)
    props = {"kind": StringAttr(kind), "dims": g.ints_attr(dims)}
    if keepdim:
        props["keepdim"] = UnitAttr()
    return ctx.emit(g.ReduceOp(operands=[v], properties=props, result_types=[ctx.out_type()]))


@lower("aten.sum.default", "aten.sum.dim_IntList", "aten.mean.default", "aten.mean.dim", "aten.amax.default",
       "aten.amin.default", "aten.prod.default", "aten.prod.dim_int", "aten.any.default", "aten.any.dim",
       "aten.any.dims", "aten.all.default", "aten.all.dim")
def _reductions(ctx, x, dims=None, keepdim=False, *, dtype=None):
    kind = {"amax": "max", "amin": "min"}.get(str(ctx.node.target).split(".")[1], str(ctx.node.target).split(".")[1])
    if isinstance(dims, torch.dtype):  # sum.default(x, dtype)
        dims = None
    return _reduce(ctx, kind, x, dims, keepdim)


@lower("aten.max.dim", "aten.min.dim")
def _max_dim(ctx, x, dim, keepdim=False):
    kind = str(ctx.node.target).split(".")[1]
    vals, idx = ctx.meta()
    vt, it = type_of_meta(vals), type_of_meta(idx)
    d = _dim(dim, _rank(ctx, x))
    props = {"kind": StringAttr(kind), "dims": g.ints_attr([d])}
    aprops = {"kind": StringAttr("arg" + kind), "dim": g.int_attr(d)}
    if keepdim:
        props["keepdim"] = aprops["keepdim"] = UnitAttr()
    v = ctx.emit(g.ReduceOp(operands=[ctx.value(x)], properties=props, result_types=[vt]))
    i = ctx.emit(g.ArgReduceOp(operands=[ctx.value(x)], properties=aprops, result_types=[it]))
    return [v, i]


@lower("aten.max.default", "aten.min.default")
def _max_all(ctx, x):
    return _reduce(ctx, str(ctx.node.target).split(".")[1], x, None, False)


@lower("aten.argmax.default", "aten.argmin.default")
def _argmax(ctx, x, dim=None, keepdim=False):
    if dim is None:
        return NotImplemented
    props = {"kind": StringAttr(str(ctx.node.target).split(".")[1]), "dim": g.int_attr(_dim(dim, _rank(ctx, x)))}
    if keepdim:
        props["keepdim"] = UnitAttr()
    return ctx.emit(g.ArgReduceOp(operands=[ctx.value(x)], properties=props, result_types=[ctx.out_type()]))


def _along(op_cls):
    def fn(ctx, x, dim, half_or_dtype=None):
        v = ctx.cast(ctx.value(x), ctx.meta().dtype)
        d = _dim(dim, _rank(ctx, x))
        return ctx.emit(op_cls(operands=[v], properties={"dim": g.int_attr(d)}, result_types=[ctx.out_type()]))

    return fn


lower("aten.softmax.int", "aten._softmax.default")(_along(g.SoftmaxOp))
lower("aten.log_softmax.int", "aten._log_softmax.default")(_along(g.LogSoftmaxOp))
lower("aten.cumsum.default")(_along(g.CumsumOp))
lower("aten.cumprod.default")(_along(g.CumprodOp))


@lower("aten.linalg_vector_norm.default")
def _vector_norm(ctx, x, ord=2, dim=None, keepdim=False, *, dtype=None):
    """(sum |x|^ord)^(1/ord) over `dim`, in eager's accumulation type (fp32 for fp16/bf16 results): ord 2 is
    sqrt(sum(x * x)), 1 sum(|x|), inf and -inf max and min of |x|, 0 the count of non-zeros."""
    out_dt, rank = ctx.meta().dtype, _rank(ctx, x)
    if not out_dt.is_floating_point or ctx.meta(x).dtype.is_complex or rank == 0 or isinstance(ord, bool):
        return NotImplemented
    acc = torch.float32 if out_dt in (torch.float16, torch.bfloat16) else out_dt
    v = ctx.cast(ctx.value(x), acc)
    dims = list(range(rank)) if dim is None or dim == [] else dim

    def reduce(kind, y):
        return _reduce_value(ctx, kind, y, dims, keepdim, acc)

    if ord == 2:
        r = ctx.emit(g.SqrtOp(reduce("sum", ctx.emit(g.MulOp(v, v, v.type)))))
    elif ord in (1, math.inf, -math.inf):
        r = reduce({1: "sum", math.inf: "max", -math.inf: "min"}[ord], ctx.emit(g.AbsOp(v)))
    elif ord == 0:
        nonzero = ctx.emit(g.NeOp(v, ctx.constant(0, acc), _bool_like(ctx, x)))
        r = reduce("sum", ctx.cast(nonzero, acc))
    else:
        powered = ctx.emit(g.PowOp(ctx.emit(g.AbsOp(v)), ctx.constant(float(ord), acc), v.type))
        s = reduce("sum", powered)
        r = ctx.emit(g.PowOp(s, ctx.constant(1.0 / ord, acc), s.type))
    return ctx.cast(r, out_dt)


def _reduce_value(ctx, kind, v, dims, keepdim, dt):
    """A `graph.reduce` of the value `v` over `dims` (ints, negative ones allowed) to the node's result
    shape in element type `dt`."""
    rank = len(dims_of(v.type))
    dims = sorted({_dim(d, rank) for d in ([dims] if isinstance(dims, int) else dims)})
    props = {"kind": StringAttr(kind), "dims": g.ints_attr(dims)}
    if keepdim:
        props["keepdim"] = UnitAttr()
    t = tensor_type(tuple(ctx.meta().shape), torch_dtype_name(dt))
    return ctx.emit(g.ReduceOp(operands=[v], properties=props, result_types=[t]))


def _opt(ctx, x):
    return None if x is None else ctx.value(x)


@lower("aten.layer_norm.default")
def _layer_norm(ctx, x, shape, weight=None, bias=None, eps=1e-5, cudnn_enable=False):
    return ctx.emit(g.LayerNormOp(
        operands=[ctx.value(x), _opt(ctx, weight), _opt(ctx, bias)],
        properties={"normalized_ndim": g.int_attr(len(shape)), "eps": g.float_attr(eps)},
        result_types=[ctx.out_type()]))


@lower("aten.rms_norm.default")
def _rms_norm(ctx, x, shape, weight=None, eps=None):
    if eps is None:  # eager takes the eps of the type it computes in: fp32 for fp16/bf16 inputs
        dt = ctx.meta(x).dtype
        eps = torch.finfo(torch.float32 if dt in (torch.float16, torch.bfloat16) else dt).eps
    return ctx.emit(g.RmsNormOp(
        operands=[ctx.value(x), _opt(ctx, weight)],
        properties={"normalized_ndim": g.int_attr(len(shape)), "eps": g.float_attr(eps)},
        result_types=[ctx.out_type()]))


@lower("aten.batch_norm.default")
def _batch_norm(ctx, x, weight, bias, mean, var, training, momentum, eps, cudnn_enabled=False):
    if training and mean is None and var is None:  # no running statistics: the batch's own, nothing updated
        return aten_spatial.batch_stats_norm(ctx, x, weight, bias, eps)
    if training or mean is None:
        return NotImplemented
    return ctx.emit(g.BatchNormOp(
        operands=[ctx.value(x), ctx.value(mean), ctx.value(var), _opt(ctx, weight), _opt(ctx, bias)],
        properties={"eps": g.float_attr(eps)}, result_types=[ctx.out_type()]))


@lower("aten._native_batch_norm_legit_no_training.default")
def _bn_no_training(ctx, x, weight, bias, mean, var, momentum, eps):
    out = ctx.emit(g.BatchNormOp(
        operands=[ctx.value(x), ctx.value(mean), ctx.value(var), _opt(ctx, weight), _opt(ctx, bias)],
        properties={"eps": g.float_attr(eps)}, result_types=[type_of_meta(ctx.meta()[0])]))
    if any(len(u.args) > 1 and u.args[1] != 0 for u in ctx.node.users):
        return NotImplemented
    return [out]


# --------------------------------------------------------------------------------------------
# Contractions and attention (convolution and pooling: aten_spatial.py)
# --------------------------------------------------------------------------------------------


@lower("aten.linear.default")
def _linear(ctx, x, w, b=None):
    return ctx.emit(g.LinearOp(operands=[ctx.value(x), ctx.value(w), _opt(ctx, b)], result_types=[ctx.out_type()]))


@lower("aten.matmul.default", "aten.mm.default", "aten.bmm.default")
def _matmul(ctx, a, b):
    sa, sb = list(ctx.meta(a).shape), list(ctx.meta(b).shape)
    va, vb = ctx.value(a), ctx.value(b)
    if len(sa) == 1:
        va = _reshape_to(ctx, va, [1] + sa)
    if len(sb) == 1:
        vb = _reshape_to(ctx, vb, sb + [1])
    from solder.compiler.dialects.types import broadcast_shapes, dims_of

    sa2, sb2 = list(dims_of(va.type)), list(dims_of(vb.type))

    full = list(broadcast_shapes(tuple(sa2[:-2]), tuple(sb2[:-2]))) + [sa2[-2], sb2[-1]]
    out = ctx.emit(g.MatmulOp(va, vb, tensor_type(tuple(full), torch_dtype_name(ctx.meta().dtype))))
    return _reshape_to(ctx, out, list(ctx.meta().shape))


@lower("aten.addmm.default")
def _addmm(ctx, bias, a, b, beta=1, alpha=1):
    if beta != 1 or alpha != 1:
        return NotImplemented
    mm = ctx.emit(g.MatmulOp(ctx.value(a), ctx.value(b), ctx.out_type()))
    return ctx.emit(g.AddOp(mm, ctx.value(bias), ctx.out_type()))


@lower("aten.scaled_dot_product_attention.default")
def _sdpa(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if dropout_p != 0.0 or _rank(ctx, q) != 4:
        return NotImplemented
    d = ctx.meta(q).shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    props = {"scale": g.float_attr(scale)}
    if is_causal:
        props["causal"] = UnitAttr()
    return ctx.emit(g.AttentionOp(operands=[ctx.value(q), ctx.value(k), ctx.value(v), _opt(ctx, attn_mask)],
                                  properties=props, result_types=[ctx.out_type()]))

