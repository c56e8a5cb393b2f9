"""The `graph` dialect: tensor-level ops with static shapes, the IR every solder pass works on.

Every op is pure (no side effects), takes and returns ranked tensors, and prints as MLIR:

    %y = graph.add %a, %b : (tensor<8x768xf32>, tensor<768xf32>) -> tensor<8x768xf32>
    %s = graph.softmax %y {dim = 1 : i64} : tensor<8x768xf32> -> tensor<8x768xf32>

Elementwise ops broadcast like PyTorch; their operands already have the result's element type
(the importer inserts `graph.cast` where PyTorch would promote), except comparisons, whose result is
i1. Scalars are 0-d tensors made by `graph.constant`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    UnitAttr,
    f64,
    i64,
)
from xdsl.ir import Attribute, Dialect, Region, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import HasParent, IsolatedFromAbove, IsTerminator, Pure, RecursiveMemoryEffect
from xdsl.utils.exceptions import VerifyException

from compiler.dialects.types import broadcast_shapes


def _ttype(v: SSAValue | Attribute) -> TensorType:
    t = v.type if isinstance(v, SSAValue) else v
    assert isinstance(t, TensorType)
    return t


def _shape(v: SSAValue) -> tuple[int, ...]:
    return tuple(_ttype(v).get_shape())


def _ints(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, list(values))


def _check(cond: bool, op: IRDLOperation, what: str, expected: object, got: object) -> None:
    if not cond:
        raise VerifyException(f"{op.name}: {what}: expected {expected}, got {got}")


# ---------------------------------------------------------------------------------------------
# Elementwise ops
# ---------------------------------------------------------------------------------------------


class UnaryOp(IRDLOperation):
    """Base of one-operand elementwise ops; the result has the operand's shape and element type."""

    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, result_type: Attribute | None = None, props: dict | None = None):
        super().__init__(operands=[x], result_types=[result_type or x.type], properties=props or {})

    def verify_(self) -> None:
        _check(_shape(self.input) == _shape(self.result), self, "result shape", _shape(self.input), _shape(self.result))
        if not isinstance(self, (CastOp, IsNanOp, LogicalNotOp)):
            a, b = _ttype(self.input).element_type, _ttype(self.result).element_type
            _check(a == b, self, "result element type", a, b)


class BinaryOp(IRDLOperation):
    """Base of two-operand elementwise ops with PyTorch broadcasting."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)"
    IS_COMPARISON: ClassVar[bool] = False

    def __init__(self, lhs: SSAValue, rhs: SSAValue, result_type: Attribute):
        super().__init__(operands=[lhs, rhs], result_types=[result_type])

    def verify_(self) -> None:
        try:
            expected = broadcast_shapes(_shape(self.lhs), _shape(self.rhs))
        except ValueError as e:
            raise VerifyException(f"{self.name}: operands do not broadcast: {e}") from None
        _check(expected == _shape(self.result), self, "result shape", expected, _shape(self.result))
        lt, rt = _ttype(self.lhs).element_type, _ttype(self.rhs).element_type
        _check(lt == rt, self, "operand element types to match", lt, rt)
        if self.IS_COMPARISON:
            _check(_ttype(self.result).element_type == IntegerType(1), self, "result element type", "i1",
                   _ttype(self.result).element_type)


class CompareOp(BinaryOp):
    """Base of comparisons: broadcasting like `BinaryOp`, with an i1 result."""

    IS_COMPARISON: ClassVar[bool] = True


def _define(base: type, name: str, doc: str, **extra) -> type[IRDLOperation]:
    cls_name = "".join(p.capitalize() for p in name.split("_")) + "Op"
    return irdl_op_definition(type(cls_name, (base,), {"name": f"graph.{name}", "__doc__": doc, **extra}))


UNARY_OPS: dict[str, type[IRDLOperation]] = {
    n: _define(UnaryOp, n, d)
    for n, d in [
        ("neg", "-x"), ("abs", "|x|"), ("exp", "e^x"), ("log", "natural log"), ("sqrt", "square root"),
        ("rsqrt", "1/sqrt(x)"), ("tanh", "hyperbolic tangent"), ("sigmoid", "1/(1+e^-x)"),
        ("relu", "max(x, 0)"), ("silu", "x*sigmoid(x)"), ("erf", "error function"), ("sin", "sine"),
        ("cos", "cosine"), ("reciprocal", "1/x"), ("floor", "round down"), ("ceil", "round up"),
        ("log1p", "log(1 + x), accurate near 0"), ("expm1", "e^x - 1, accurate near 0"), ("sign", "-1, 0 or 1"),
        ("round", "round half to even"), ("trunc", "round toward zero"),
    ]
}
NegOp, ExpOp, RsqrtOp, TanhOp = UNARY_OPS["neg"], UNARY_OPS["exp"], UNARY_OPS["rsqrt"], UNARY_OPS["tanh"]


@irdl_op_definition
class GeluOp(UnaryOp):
    """GELU, exact (`approximate = "none"`) or with the tanh approximation."""

    name = "graph.gelu"
    approximate = prop_def(StringAttr)

    def verify_(self) -> None:
        super().verify_()
        _check(self.approximate.data in ("none", "tanh"), self, "approximate", '"none" or "tanh"', self.approximate.data)


@irdl_op_definition
class CastOp(UnaryOp):
    """Elementwise conversion to the result's element type (PyTorch `.to(dtype)` semantics)."""

    name = "graph.cast"


@irdl_op_definition
class IsNanOp(UnaryOp):
    """x != x, with an i1 result."""

    name = "graph.isnan"


@irdl_op_definition
class LogicalNotOp(UnaryOp):
    """Logical negation; the result is i1."""

    name = "graph.logical_not"


BINARY_OPS: dict[str, type[IRDLOperation]] = {
    n: _define(BinaryOp, n, d)
    for n, d in [
        ("add", "a + b"), ("sub", "a - b"), ("mul", "a * b"), ("div", "a / b (true division)"),
        ("pow", "a ** b"), ("maximum", "max(a, b)"), ("minimum", "min(a, b)"),
        ("logical_and", "a and b"), ("logical_or", "a or b"), ("remainder", "Python-style a % b"),
        ("floor_divide", "floor(a / b)"),
    ]
}
BINARY_OPS.update({
    n: _define(CompareOp, n, d)
    for n, d in [("eq", "a == b"), ("ne", "a != b"), ("lt", "a < b"), ("le", "a <= b"), ("gt", "a > b"),
                 ("ge", "a >= b")]
})
AddOp, SubOp, MulOp, DivOp = (BINARY_OPS[n] for n in ("add", "sub", "mul", "div"))


@irdl_op_definition
class WhereOp(IRDLOperation):
    """cond ? a : b, broadcasting all three; `a` and `b` share the result's element type."""

    name = "graph.where"
    cond = operand_def(TensorType)
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$cond `,` $lhs `,` $rhs attr-dict `:` functional-type(operands, results)"

    def __init__(self, cond: SSAValue, a: SSAValue, b: SSAValue, result_type: Attribute):
        super().__init__(operands=[cond, a, b], result_types=[result_type])

    def verify_(self) -> None:
        expected = broadcast_shapes(_shape(self.cond), _shape(self.lhs), _shape(self.rhs))
        _check(expected == _shape(self.result), self, "result shape", expected, _shape(self.result))


@irdl_op_definition
class ConstantOp(IRDLOperation):
    """A tensor filled with one value (a 0-d tensor for scalars).

    `value` is a float or integer attribute; non-finite floats are the strings "inf", "-inf", "nan"
    so that the text parses back exactly.
    """

    name = "graph.constant"
    value = prop_def(Attribute)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$value attr-dict `:` type($result)"

    def __init__(self, value: Attribute, result_type: Attribute):
        super().__init__(properties={"value": value}, result_types=[result_type])

    def verify_(self) -> None:
        v = self.value
        ok = isinstance(v, (FloatAttr, IntegerAttr)) or (isinstance(v, StringAttr) and v.data in ("inf", "-inf", "nan"))
        _check(ok, self, "value", 'a float, an integer, or "inf"/"-inf"/"nan"', v)

    @property
    def py_value(self) -> float | int:
        return scalar_value(self.value)


def scalar_value(attr: Attribute) -> float | int:
    """The Python number of a scalar attribute (FloatAttr, IntegerAttr, or "inf"/"-inf"/"nan")."""
    if isinstance(attr, StringAttr):
        return float(attr.data)
    return attr.value.data  # type: ignore[attr-defined]


@irdl_op_definition
class ArangeOp(IRDLOperation):
    """1-D tensor `start + step * i` for i in [0, n)."""

    name = "graph.arange"
    start = prop_def(Attribute)
    step = prop_def(Attribute)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "attr-dict `:` type($result)"

    def verify_(self) -> None:
        _check(len(_shape(self.result)) == 1, self, "result rank", 1, len(_shape(self.result)))


@irdl_op_definition
class TriangularOp(IRDLOperation):
    """Keeps the lower (`upper` absent) or upper triangle of the last two dims, zeroing the rest."""

    name = "graph.triangular"
    input = operand_def(TensorType)
    diagonal = prop_def(IntegerAttr)
    upper = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"


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
    traits = traits_def(Pure())
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
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$kind $input attr-dict `:` type($input) `->` type($result)"


class _AlongDim(IRDLOperation):
    input = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        rank, d = len(_shape(self.input)), self.dim.value.data
        _check(0 <= d < rank, self, "dim within rank", f"0..{rank - 1}", d)
        _check(_shape(self.input) == _shape(self.result), self, "result shape", _shape(self.input), _shape(self.result))


SoftmaxOp = _define(_AlongDim, "softmax", "softmax(x) along `dim`, computed in the result's precision.")
LogSoftmaxOp = _define(_AlongDim, "log_softmax", "log(softmax(x)) along `dim`.")
CumsumOp = _define(_AlongDim, "cumsum", "Inclusive prefix sum along `dim`.")


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
    traits = traits_def(Pure())
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
    traits = traits_def(Pure())
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
    traits = traits_def(Pure())
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
    traits = traits_def(Pure())
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
    traits = traits_def(Pure())
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
    """2-d max or average pooling (`kind = "max" | "avg"`), NCHW."""

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


# ---------------------------------------------------------------------------------------------
# Layout and indexing
# ---------------------------------------------------------------------------------------------


@irdl_op_definition
class ReshapeOp(IRDLOperation):
    """Same elements in row-major order, new shape (a view in PyTorch)."""

    name = "graph.reshape"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, result_type: Attribute):
        super().__init__(operands=[x], result_types=[result_type])

    def verify_(self) -> None:
        a, b = _ttype(self.input), _ttype(self.result)
        _check(a.element_count() == b.element_count(), self, "element count", a.element_count(), b.element_count())


@irdl_op_definition
class PermuteOp(IRDLOperation):
    """Reorders dims: result dim i is input dim `perm[i]`."""

    name = "graph.permute"
    input = operand_def(TensorType)
    perm = prop_def(DenseArrayBase)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        perm, shape = self.perm.get_values(), _shape(self.input)
        _check(sorted(perm) == list(range(len(shape))), self, "perm", f"a permutation of 0..{len(shape) - 1}", list(perm))
        expected = tuple(shape[p] for p in perm)
        _check(expected == _shape(self.result), self, "result shape", expected, _shape(self.result))


@irdl_op_definition
class ExpandOp(IRDLOperation):
    """Broadcasts to the result shape (size-1 dims stretch, new leading dims appear)."""

    name = "graph.expand"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        try:
            ok = broadcast_shapes(_shape(self.input), _shape(self.result)) == _shape(self.result)
        except ValueError:
            ok = False
        _check(ok, self, "a shape the input broadcasts to", f"broadcastable from {_shape(self.input)}", _shape(self.result))


@irdl_op_definition
class SliceOp(IRDLOperation):
    """Elements `start:end:step` of `dim` (bounds already clamped, non-negative)."""

    name = "graph.slice"
    input = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    start = prop_def(IntegerAttr)
    end = prop_def(IntegerAttr)
    step = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        shape = list(_shape(self.input))
        d, s, e, st = (a.value.data for a in (self.dim, self.start, self.end, self.step))
        _check(st > 0 and 0 <= s <= e <= shape[d], self, "0 <= start <= end <= size and step > 0",
               f"size {shape[d]}", f"{s}:{e}:{st}")
        shape[d] = (e - s + st - 1) // st
        _check(tuple(shape) == _shape(self.result), self, "result shape", tuple(shape), _shape(self.result))


@irdl_op_definition
class ConcatOp(IRDLOperation):
    """Concatenation of the inputs along `dim`."""

    name = "graph.concat"
    inputs = var_operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$inputs attr-dict `:` functional-type(operands, results)"


@irdl_op_definition
class GatherOp(IRDLOperation):
    """`input.index_select(dim, indices)` generalized: result = input with `dim` replaced by indices' shape.

    An embedding lookup is `graph.gather %weight, %ids {dim = 0}`.
    """

    name = "graph.gather"
    input = operand_def(TensorType)
    indices = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input `,` $indices attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        x, idx, d = _shape(self.input), _shape(self.indices), self.dim.value.data
        expected = x[:d] + idx + x[d + 1:]
        _check(expected == _shape(self.result), self, "result shape", expected, _shape(self.result))


@irdl_op_definition
class IndexOp(IRDLOperation):
    """Advanced indexing of the leading dims: `input[i0, i1, ..., ik-1]` with broadcast integer index tensors.

    The result is broadcast(index shapes) + input.shape[k:], as in PyTorch.
    """

    name = "graph.index"
    input = operand_def(TensorType)
    indices = var_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input `[` $indices `]` attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        x = _shape(self.input)
        k = len(self.indices)
        _check(1 <= k <= len(x), self, "number of index tensors", f"1..{len(x)}", k)
        expected = broadcast_shapes(*(_shape(i) for i in self.indices)) + x[k:]
        _check(expected == _shape(self.result), self, "result shape", expected, _shape(self.result))


@irdl_op_definition
class GatherElementsOp(IRDLOperation):
    """`torch.gather(input, dim, indices)`: result[i][j] = input[i][indices[i][j]] along `dim`."""

    name = "graph.gather_elements"
    input = operand_def(TensorType)
    indices = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input `,` $indices attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        _check(_shape(self.indices) == _shape(self.result), self, "result shape", _shape(self.indices), _shape(self.result))


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
    traits = traits_def(Pure())
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
    traits = traits_def(Pure())
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


# ---------------------------------------------------------------------------------------------
# Structure: kernels and extern calls
# ---------------------------------------------------------------------------------------------


@irdl_op_definition
class KernelOp(IRDLOperation):
    """A group of ops launched as one kernel. Isolated from above: its operands enter as block arguments.

    Attributes record the fusion decision: `kernel_id`, `reason` (why fused), and the cost model's
    `est_seconds` for the fused kernel and `est_parts_seconds` for the ops run separately.
    """

    name = "graph.kernel"
    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    body = region_def("single_block")
    traits = traits_def(IsolatedFromAbove(), RecursiveMemoryEffect())

    def verify_(self) -> None:
        block = self.body.block
        _check(len(block.args) == len(self.inputs), self, "block arguments", len(self.inputs), len(block.args))
        for a, v in zip(block.args, self.inputs):
            _check(a.type == v.type, self, "block argument type", v.type, a.type)
        term = block.last_op
        _check(isinstance(term, YieldOp), self, "terminator", "graph.yield", term.name if term else None)
        got = [o.type for o in term.operands]  # type: ignore[union-attr]
        _check(got == [r.type for r in self.outputs], self, "yielded types", [str(r.type) for r in self.outputs], [str(t) for t in got])


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Terminates a `graph.kernel` body, returning its outputs."""

    name = "graph.yield"
    values = var_operand_def(TensorType)
    traits = traits_def(IsTerminator(), HasParent(KernelOp), Pure())
    assembly_format = "($values^ `:` type($values))? attr-dict"

    def __init__(self, *values: SSAValue):
        super().__init__(operands=[list(values)])


@irdl_op_definition
class ExternOp(IRDLOperation):
    """A call into eager PyTorch (or a library): `callee` names an ATen overload, e.g. "aten.cumprod.default".

    `args` is the JSON of the call's (args, kwargs) where `{"$t": i}` stands for operand i; the results
    are the op's tensor outputs in order.
    """

    name = "graph.extern"
    inputs = var_operand_def(TensorType)
    callee = prop_def(StringAttr)
    args = prop_def(StringAttr)
    outputs = var_result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$callee `(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs)"


Graph = Dialect(
    "graph",
    [
        *UNARY_OPS.values(), GeluOp, CastOp, IsNanOp, LogicalNotOp, *BINARY_OPS.values(), WhereOp,
        ConstantOp, ArangeOp, TriangularOp, ReduceOp, ArgReduceOp, SoftmaxOp, LogSoftmaxOp, CumsumOp,
        LayerNormOp, RmsNormOp, BatchNormOp, MatmulOp, LinearOp, ConvOp, PoolOp, ReshapeOp, PermuteOp,
        ExpandOp, SliceOp, ConcatOp, GatherOp, IndexOp, GatherElementsOp, AttentionOp, KernelOp, YieldOp, ExternOp,
        BlockSparseAttentionOp,
    ],
    [],
)


def int_attr(v: int) -> IntegerAttr:
    return IntegerAttr(v, i64)


def float_attr(v: float) -> FloatAttr:
    return FloatAttr(v, f64)


def ints_attr(values: Sequence[int]) -> DenseArrayBase:
    return _ints(values)


__all__ = [n for n in dir() if n.endswith("Op")] + ["Graph", "UNARY_OPS", "BINARY_OPS", "int_attr", "float_attr",
                                                      "ints_attr", "scalar_value"]
