"""Helpers shared by the `graph` dialect's op definitions: shapes of values and expected-vs-got checks."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import IRDLOperation
from xdsl.utils.exceptions import VerifyException

from solder.compiler.dialects.types import DYNAMIC


def _ttype(v: SSAValue | Attribute) -> TensorType:
    t = v.type if isinstance(v, SSAValue) else v
    assert isinstance(t, TensorType)
    return t


class Shape(tuple):
    """A value's shape in a verifier: a `?` dim (DYNAMIC) equals any size, so checks written for static
    shapes accept dynamic ones (export has proven the sizes consistent; backends check at call time)."""

    def __eq__(self, other):
        if not isinstance(other, tuple) or len(self) != len(other):
            return False
        return all(a == b or a == DYNAMIC or b == DYNAMIC for a, b in zip(self, other))

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = tuple.__hash__


def _shape(v: SSAValue) -> Shape:
    return Shape(_ttype(v).get_shape())


def _ints(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, list(values))


def _check(cond: bool, op: IRDLOperation, what: str, expected: object, got: object) -> None:
    if not cond:
        raise VerifyException(f"{op.name}: {what}: expected {expected}, got {got}")


def int_attr(v: int) -> IntegerAttr:
    return IntegerAttr(v, i64)


def float_attr(v: float) -> FloatAttr:
    return FloatAttr(v, f64)


def ints_attr(values: Sequence[int]) -> DenseArrayBase:
    return _ints(values)
