"""`graph` dialect, elementwise ops: unary/binary/compare with PyTorch broadcasting, where, constants, arange."""

from __future__ import annotations

from typing import ClassVar

from xdsl.dialects.builtin import (
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from solder.compiler.dialects.base import _check, _shape, _ttype
from solder.compiler.dialects.traits import Activation, Elementwise, Source, Transcendental
from solder.compiler.dialects.types import broadcast_shapes

# ---------------------------------------------------------------------------------------------
# Elementwise ops
# ---------------------------------------------------------------------------------------------


class UnaryOp(IRDLOperation):
    """Base of one-operand elementwise ops; the result has the operand's shape and element type."""

    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Elementwise())
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
    traits = traits_def(Pure(), Elementwise())
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


def _define(base: type, name: str, doc: str, *more_traits, **extra) -> type[IRDLOperation]:
    """An op class `<Name>Op` named `graph.<name>` on `base`, with `more_traits` added to the base's traits."""
    cls_name = "".join(p.capitalize() for p in name.split("_")) + "Op"
    if more_traits:
        extra["traits"] = traits_def(*base.traits.traits, *more_traits)
    return irdl_op_definition(type(cls_name, (base,), {"name": f"graph.{name}", "__doc__": doc, **extra}))


_T, _A = Transcendental(), Activation()


UNARY_OPS: dict[str, type[IRDLOperation]] = {
    n: _define(UnaryOp, n, d, *t)
    for n, d, *t in [
        ("neg", "-x"), ("abs", "|x|"), ("exp", "e^x", _T), ("log", "natural log", _T), ("sqrt", "square root", _T),
        ("rsqrt", "1/sqrt(x)", _T), ("tanh", "hyperbolic tangent", _T, _A), ("sigmoid", "1/(1+e^-x)", _T, _A),
        ("relu", "max(x, 0)", _A), ("silu", "x*sigmoid(x)", _T, _A), ("erf", "error function", _T), ("sin", "sine", _T),
        ("cos", "cosine", _T), ("reciprocal", "1/x"), ("floor", "round down"), ("ceil", "round up"),
        ("log1p", "log(1 + x), accurate near 0", _T), ("expm1", "e^x - 1, accurate near 0", _T), ("sign", "-1, 0 or 1"),
        ("round", "round half to even"), ("trunc", "round toward zero"),
    ]
}
(NegOp, AbsOp, ExpOp, LogOp, SqrtOp, RsqrtOp, TanhOp, SigmoidOp, ReluOp, SiluOp, ErfOp, SinOp, CosOp, ReciprocalOp,
 FloorOp, CeilOp, Log1pOp, Expm1Op, SignOp, RoundOp, TruncOp) = UNARY_OPS.values()


@irdl_op_definition
class GeluOp(UnaryOp):
    """GELU, exact (`approximate = "none"`) or with the tanh approximation."""

    name = "graph.gelu"
    approximate = prop_def(StringAttr)
    traits = traits_def(Pure(), Elementwise(), Transcendental(), Activation())

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
    n: _define(BinaryOp, n, d, *t)
    for n, d, *t in [
        ("add", "a + b"), ("sub", "a - b"), ("mul", "a * b"), ("div", "a / b (true division)"),
        ("pow", "a ** b", _T), ("maximum", "max(a, b)"), ("minimum", "min(a, b)"),
        ("logical_and", "a and b"), ("logical_or", "a or b"), ("remainder", "Python-style a % b"),
        ("floor_divide", "floor(a / b)"), ("fmod", "C's fmod: a - trunc(a / b) * b, exact, with the sign of a"),
    ]
}
BINARY_OPS.update({
    n: _define(CompareOp, n, d)
    for n, d in [("eq", "a == b"), ("ne", "a != b"), ("lt", "a < b"), ("le", "a <= b"), ("gt", "a > b"),
                 ("ge", "a >= b")]
})
(AddOp, SubOp, MulOp, DivOp, PowOp, MaximumOp, MinimumOp, LogicalAndOp, LogicalOrOp, RemainderOp, FloorDivideOp,
 FmodOp, EqOp, NeOp, LtOp, LeOp, GtOp, GeOp) = BINARY_OPS.values()


@irdl_op_definition
class WhereOp(IRDLOperation):
    """cond ? a : b, broadcasting all three; `a` and `b` share the result's element type."""

    name = "graph.where"
    cond = operand_def(TensorType)
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Elementwise())
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
    traits = traits_def(Pure(), Source())
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
    traits = traits_def(Pure(), Source())
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
    traits = traits_def(Pure(), Elementwise())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"
