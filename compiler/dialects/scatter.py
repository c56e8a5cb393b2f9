"""`graph` dialect, writes as values: slice_scatter, scatter, index_put.

Capture functionalizes in-place writes (`buf.scatter_add_(...)`, `x[idx] = v`, `x[:, 2:4] = v`), so each of
these ops is pure and out of place: its result is a new tensor, the input with some elements replaced (or
accumulated into); the input itself is never written. The runtime copies a result that replaces a model's
input or buffer back into it (compiler/write_back.py).
"""

from __future__ import annotations

from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, StringAttr, TensorType, UnitAttr
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import Pure

from solder.compiler.dialects.base import _check, _shape, _ttype
from solder.compiler.dialects.traits import Layout
from solder.compiler.dialects.types import DYNAMIC


def _same_type(op: IRDLOperation, a, b) -> None:
    _check(_shape(a) == _shape(b), op, "result shape (the input's)", _shape(a), _shape(b))
    ea, eb = _ttype(a).element_type, _ttype(b).element_type
    _check(ea == eb, op, "result element type (the input's)", ea, eb)


@irdl_op_definition
class SliceScatterOp(IRDLOperation):
    """`input` with its slice `start:end:step` of `dim` replaced by `src` (`torch.slice_scatter`).

        %y = graph.slice_scatter %x, %v {dim = 1 : i64, start = 2 : i64, end = 4 : i64, step = 1 : i64}
               : (tensor<3x6xf32>, tensor<3x2xf32>) -> tensor<3x6xf32>

    Bounds are normalized as `graph.slice`'s: non-negative and clamped to a static size.
    """

    name = "graph.slice_scatter"
    input = operand_def(TensorType)
    src = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    start = prop_def(IntegerAttr)
    end = prop_def(IntegerAttr)
    step = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Layout())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input `,` $src attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        shape = list(_shape(self.input))
        d, s, e, st = (a.value.data for a in (self.dim, self.start, self.end, self.step))
        _check(0 <= d < len(shape), self, "dim within rank", f"0..{len(shape) - 1}", d)
        _check(shape[d] != DYNAMIC, self, "a static size of the scattered dim", "an int", "?")
        _check(st > 0 and 0 <= s <= e <= shape[d], self, "0 <= start <= end <= size and step > 0",
               f"size {shape[d]}", f"{s}:{e}:{st}")
        shape[d] = (e - s + st - 1) // st
        _check(tuple(shape) == _shape(self.src), self, "src shape (the slice's)", tuple(shape), _shape(self.src))
        _same_type(self, self.input, self.result)


SCATTER_REDUCE = ("none", "sum", "prod", "mean", "amax", "amin")


@irdl_op_definition
class ScatterOp(IRDLOperation):
    """`torch.scatter` / `scatter_add` / `scatter_reduce` along `dim`, out of place:
    result = input, then result[..., indices[i, j], ...] (op)= src[i, j] along `dim` for every index of `indices`.

        %y = graph.scatter sum %x, %idx, %src {dim = 0 : i64}
               : (tensor<4x5xf32>, tensor<2x5xi64>, tensor<2x5xf32>) -> tensor<4x5xf32>

    `reduce` is "none" (plain assignment; with duplicate indices one of the writes wins, as in torch), "sum",
    "prod", "mean", "amax" or "amin"; `exclude_self` leaves the input's own values out of the reduction
    (`include_self=False`). Which elements are written depends on the data: no kernel can fuse it.
    """

    name = "graph.scatter"
    input = operand_def(TensorType)
    indices = operand_def(TensorType)
    src = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    reduce = prop_def(StringAttr)
    exclude_self = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$reduce $input `,` $indices `,` $src attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        rank, d = len(_shape(self.input)), self.dim.value.data
        _check(self.reduce.data in SCATTER_REDUCE, self, "reduce", "one of " + ", ".join(SCATTER_REDUCE),
               self.reduce.data)
        _check(0 <= d < rank, self, "dim within rank", f"0..{rank - 1}", d)
        _check(len(_shape(self.indices)) == rank and len(_shape(self.src)) == rank, self,
               "ranks of indices and src (the input's)", rank, (len(_shape(self.indices)), len(_shape(self.src))))
        _same_type(self, self.input, self.result)


@irdl_op_definition
class IndexPutOp(IRDLOperation):
    """`torch.index_put` out of place: result = input, then result[indices] = values (`+=` with `accumulate`).

        %y = graph.index_put %x[%i] = %v {positions = array<i64: 1>}
               : (tensor<4x5xf32>, tensor<3xi64>, tensor<4x3xf32>) -> tensor<4x5xf32>

    `positions[k]` is where index tensor k stands in torch's index list (the other entries are `None`,
    whole dims), so `x[:, i] = v` is position 1. Integer index tensors broadcast together; a boolean one
    selects the elements where it is true. `values` broadcast to the indexed shape. `x[idx] = v`,
    `index_copy` and `index_add` capture as this op; which elements are written depends on the data.
    """

    name = "graph.index_put"
    input = operand_def(TensorType)
    indices = var_operand_def(TensorType)
    values = operand_def(TensorType)
    positions = prop_def(DenseArrayBase)
    accumulate = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input `[` $indices `]` `=` $values attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        pos = list(self.positions.get_values())
        _check(len(pos) == len(self.indices) >= 1, self, "one position per index tensor", len(self.indices), len(pos))
        _check(pos == sorted(set(pos)) and pos[0] >= 0, self, "positions", "distinct and increasing from 0", pos)
        _check(pos[-1] < len(_shape(self.input)), self, "positions within rank", len(_shape(self.input)), pos)
        _check(_ttype(self.values).element_type == _ttype(self.input).element_type, self,
               "values element type (the input's)", _ttype(self.input).element_type, _ttype(self.values).element_type)
        _same_type(self, self.input, self.result)
