"""`graph` dialect, compute ops: reductions, normalizations, contractions, convolution, pooling, attention."""

from __future__ import annotations

from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from solder.compiler.dialects.base import _check, _shape
from solder.compiler.dialects.traits import Anchor, Attention, Elementwise, Reduction, RowReduction, RowWise
from solder.compiler.dialects.elementwise import _define
from solder.compiler.dialects.types import broadcast_shapes

# ---------------------------------------------------------------------------------------------
# Reductions and normalizations
# ---------------------------------------------------------------------------------------------

REDUCE_KINDS = ("sum", "mean", "max", "min", "prod", "any", "all")


@irdl_op_definition
class ReduceOp(IRDLOperation):
    """Reduces `dims` with `kind` (sum, mean, max, min, prod, any, all); `keepdim` keeps them as size 1."""

    name = "graph.reduce"
    input = operand_def(TensorType)
    kind = prop_def(StringAttr)
    dims = prop_def(DenseArrayBase)
    keepdim = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), RowReduction())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$kind $input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        _check(self.kind.data in REDUCE_KINDS, self, "kind", "one of " + ", ".join(REDUCE_KINDS), self.kind.data)
        shape, dims = _shape(self.input), self.dims.get_values()
        _check(all(0 <= d < len(shape) for d in dims), self, "dims within rank", len(shape), list(dims))
        keep = self.keepdim is not None
        expected = tuple(1 if i in dims else s for i, s in enumerate(shape) if keep or i not in dims)
        _check(expected == _shape(self.result), self, "result shape", expected, _shape(self.result))


@irdl_op_definition
class ArgReduceOp(IRDLOperation):
    """Index (i64) of the max (`kind = "argmax"`) or min along `dim`."""

    name = "graph.arg_reduce"
    input = operand_def(TensorType)
    kind = prop_def(StringAttr)
    dim = prop_def(IntegerAttr)
    keepdim = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Reduction())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$kind $input attr-dict `:` type($input) `->` type($result)"


class _AlongDim(IRDLOperation):
    input = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), RowWise())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        rank, d = len(_shape(self.input)), self.dim.value.data
        _check(0 <= d < rank, self, "dim within rank", f"0..{rank - 1}", d)
        _check(_shape(self.input) == _shape(self.result), self, "result shape", _shape(self.input), _shape(self.result))


SoftmaxOp = _define(_AlongDim, "softmax", "softmax(x) along `dim`, computed in the result's precision.")
LogSoftmaxOp = _define(_AlongDim, "log_softmax", "log(softmax(x)) along `dim`.")
CumsumOp = _define(_AlongDim, "cumsum", "Inclusive prefix sum along `dim`.")
CumprodOp = _define(_AlongDim, "cumprod", "Inclusive prefix product along `dim`.")


@irdl_op_definition
class LayerNormOp(IRDLOperation):
    """Layer norm over the last `normalized_ndim` dims, with optional affine weight and bias."""

    name = "graph.layer_norm"
    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    normalized_ndim = prop_def(IntegerAttr)
    eps = prop_def(FloatAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), RowWise())
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = (
        "$input (`weight` $weight^ `:` type($weight))? (`bias` $bias^ `:` type($bias))? attr-dict `:` type($input) `->` type($result)"
    )

    def verify_(self) -> None:
        n, shape = self.normalized_ndim.value.data, _shape(self.input)
        _check(1 <= n <= len(shape), self, "normalized_ndim", f"1..{len(shape)}", n)
        for p in (self.weight, self.bias):
            if p is not None:
                _check(_shape(p) == shape[-n:], self, "affine parameter shape", shape[-n:], _shape(p))


@irdl_op_definition
class RmsNormOp(IRDLOperation):
    """x * rsqrt(mean(x^2 over the last `normalized_ndim` dims) + eps) * weight."""

    name = "graph.rms_norm"
    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    normalized_ndim = prop_def(IntegerAttr)
    eps = prop_def(FloatAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), RowWise())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input (`weight` $weight^ `:` type($weight))? attr-dict `:` type($input) `->` type($result)"


@irdl_op_definition
class BatchNormOp(IRDLOperation):
    """Inference batch norm over dim 1: (x - mean) * rsqrt(var + eps) * weight + bias."""

    name = "graph.batch_norm"
    input = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    eps = prop_def(FloatAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Elementwise())
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = (
        "$input `,` $mean `,` $var (`weight` $weight^ `:` type($weight))? (`bias` $bias^ `:` type($bias))? attr-dict `:` "
        "type($input) `,` type($mean) `,` type($var) `->` type($result)"
    )


# ---------------------------------------------------------------------------------------------
# Contractions, convolution, pooling
# ---------------------------------------------------------------------------------------------


@irdl_op_definition
class MatmulOp(IRDLOperation):
    """Batched matrix product `a[..., M, K] @ b[..., K, N]` with broadcast batch dims (rank >= 2)."""

    name = "graph.matmul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Anchor())
    assembly_format = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)"

    def __init__(self, a: SSAValue, b: SSAValue, result_type: Attribute):
        super().__init__(operands=[a, b], result_types=[result_type])

    def verify_(self) -> None:
        a, b = _shape(self.lhs), _shape(self.rhs)
        _check(len(a) >= 2 and len(b) >= 2, self, "operand ranks", ">= 2", (len(a), len(b)))
        _check(a[-1] == b[-2], self, "contraction sizes to match", a[-1], b[-2])
        expected = broadcast_shapes(a[:-2], b[:-2]) + (a[-2], b[-1])
        _check(expected == _shape(self.result), self, "result shape", expected, _shape(self.result))


@irdl_op_definition
class LinearOp(IRDLOperation):
    """`x @ weightᵀ + bias`, as `nn.Linear`: x[..., K], weight[N, K], bias[N] -> [..., N]."""

    name = "graph.linear"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Anchor())
    assembly_format = "$input `,` $weight (`bias` $bias^ `:` type($bias))? attr-dict `:` type($input) `,` type($weight) `->` type($result)"

    def verify_(self) -> None:
        x, w = _shape(self.input), _shape(self.weight)
        _check(len(w) == 2, self, "weight rank", 2, len(w))
        _check(x[-1] == w[1], self, "input features to match weight", w[1], x[-1])
        _check(x[:-1] + (w[0],) == _shape(self.result), self, "result shape", x[:-1] + (w[0],), _shape(self.result))


@irdl_op_definition
class ConvOp(IRDLOperation):
    """N-d convolution (NC[D]HW layout) with optional bias, as `torch.nn.functional.conv2d`."""

    name = "graph.conv"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    stride = prop_def(DenseArrayBase)
    padding = prop_def(DenseArrayBase)
    dilation = prop_def(DenseArrayBase)
    groups = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input `,` $weight (`bias` $bias^ `:` type($bias))? attr-dict `:` type($input) `,` type($weight) `->` type($result)"


@irdl_op_definition
class PoolOp(IRDLOperation):
    """Max or average pooling (`kind = "max" | "avg"`) over 1 to 3 spatial dims of [N, C, *spatial] (or
    unbatched [C, *spatial]): one kernel, stride and padding entry per spatial dim; average pooling counts
    the padding.

        %y = graph.pool max %x {kernel = array<i64: 3, 3, 3>, stride = array<i64: 2, 2, 2>,
               padding = array<i64: 1, 1, 1>} : tensor<1x4x9x9x9xf32> -> tensor<1x4x5x5x5xf32>
    """

    name = "graph.pool"
    input = operand_def(TensorType)
    kind = prop_def(StringAttr)
    kernel = prop_def(DenseArrayBase)
    stride = prop_def(DenseArrayBase)
    padding = prop_def(DenseArrayBase)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$kind $input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        _check(self.kind.data in ("max", "avg"), self, "kind", '"max" or "avg"', self.kind.data)
        x, y = _shape(self.input), _shape(self.result)
        n = len(self.kernel.get_values())
        _check(1 <= n <= 3 and len(x) == len(y) and len(x) in (n + 1, n + 2), self, "input and result ranks",
               f"{n + 2} or unbatched {n + 1} ([N, C] and {n} spatial dims, 1 to 3)", (len(x), len(y)))
        for k in ("stride", "padding"):
            got = len(self.properties[k].get_values())
            _check(got == n, self, f"{k} entries (one per spatial dim)", n, got)


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------


@irdl_op_definition
class AttentionOp(IRDLOperation):
    """softmax(q @ kᵀ * scale + mask) @ v over q[B,Hq,T,D], k/v[B,Hkv,S,D] (Hq a multiple of Hkv).

    `mask` is boolean (true = keep) or additive, broadcastable to [B,Hq,T,S]; `causal` masks j > i.
    """

    name = "graph.attention"
    query = operand_def(TensorType)
    key = operand_def(TensorType)
    value = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    scale = prop_def(FloatAttr)
    causal = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Anchor(), Attention())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$query `,` $key `,` $value (`mask` $mask^ `:` type($mask))? attr-dict `:` type($query) `,` type($key) `,` "
        "type($value) `->` type($result)"
    )

    def verify_(self) -> None:
        q, k, v = _shape(self.query), _shape(self.key), _shape(self.value)
        _check(len(q) == 4 and len(k) == 4 and len(v) == 4, self, "q, k, v ranks", 4, (len(q), len(k), len(v)))
        _check(k == v[:3] + (k[3],) and q[3] == k[3], self, "head dims and key/value shapes to agree", "q[...,D], k[B,H,S,D], v[B,H,S,Dv]", (q, k, v))
        _check(q[1] % k[1] == 0, self, "query heads a multiple of key/value heads", f"multiple of {k[1]}", q[1])
        _check(_shape(self.result) == q[:3] + (v[3],), self, "result shape", q[:3] + (v[3],), _shape(self.result))


@irdl_op_definition
class BlockSparseAttentionOp(IRDLOperation):
    """Attention that visits only the key blocks of a block layout (written by `rewrite-sparse-attention`).

        %o = graph.block_sparse_attention %q, %k, %v {block = 64 : i64, scale = 0.125 : f64, causal,
               policy = "window", heads = "[{\"pattern\": \"window\", \"window\": 1024, \"sinks\": 64}]",
               density = 0.033 : f64} : tensor<1x16x65536x128xbf16>, ... -> tensor<1x16x65536x128xbf16>

    q [B,Hq,T,D], k/v [B,Hkv,S,D] as `graph.attention`. `heads` is JSON: one pattern per query head, or
    one shared by all (see compiler/sparse_attention.py for the patterns); the layout is computed from
    it once per shape, or per call for content-dependent patterns. `layout`, for the `blocks` policy at
    small sizes, is an explicit 0/1 block mask [H or 1, ceil(T/block), ceil(S/block)] flattened. `density`
    is the fraction of the dense (causal) key blocks visited, for `explain()`.
    """

    name = "graph.block_sparse_attention"
    query = operand_def(TensorType)
    key = operand_def(TensorType)
    value = operand_def(TensorType)
    block = prop_def(IntegerAttr)
    scale = prop_def(FloatAttr)
    causal = opt_prop_def(UnitAttr)
    policy = prop_def(StringAttr)
    heads = prop_def(StringAttr)
    density = prop_def(FloatAttr)
    layout = opt_prop_def(DenseArrayBase)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Anchor(), Attention())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$query `,` $key `,` $value attr-dict `:` type($query) `,` type($key) `,` type($value) `->` type($result)"

    def verify_(self) -> None:
        q, k, v = _shape(self.query), _shape(self.key), _shape(self.value)
        _check(len(q) == 4 and len(k) == 4 and len(v) == 4, self, "q, k, v ranks", 4, (len(q), len(k), len(v)))
        _check(k == v[:3] + (k[3],) and q[3] == k[3], self, "head dims and key/value shapes to agree", "q[...,D], k[B,H,S,D], v[B,H,S,Dv]", (q, k, v))
        _check(q[1] % k[1] == 0, self, "query heads a multiple of key/value heads", f"multiple of {k[1]}", q[1])
        _check(_shape(self.result) == q[:3] + (v[3],), self, "result shape", q[:3] + (v[3],), _shape(self.result))
        blk = self.block.value.data
        _check(blk in (16, 32, 64, 128), self, "block", "64 or 128 (16, 32 for small models)", blk)
        if self.layout is not None:
            per_head = -(-q[2] // blk) * -(-k[2] // blk)
            n = len(self.layout.get_values())
            _check(n in (per_head, per_head * q[1]), self, "layout length", f"{per_head} or {per_head * q[1]}", n)
