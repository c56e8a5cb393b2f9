"""`graph` dialect, layout and indexing ops: reshape, permute, expand, slice, concat, gathers."""

from __future__ import annotations

from xdsl.dialects.builtin import (
    DenseArrayBase,
    IntegerAttr,
    StringAttr,
    TensorType,
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
    var_operand_def,
)
from xdsl.traits import Pure

from solder.compiler.dialects.base import _check, _shape, _ttype
from solder.compiler.dialects.traits import Layout, ViewLike
from solder.compiler.dialects.types import DYNAMIC, broadcast_shapes

# ---------------------------------------------------------------------------------------------
# Layout and indexing
# ---------------------------------------------------------------------------------------------


@irdl_op_definition
class ReshapeOp(IRDLOperation):
    """Same elements in row-major order, new shape (a view in PyTorch)."""

    name = "graph.reshape"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), ViewLike())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, result_type: Attribute):
        super().__init__(operands=[x], result_types=[result_type])

    def verify_(self) -> None:
        a, b = _ttype(self.input), _ttype(self.result)
        if DYNAMIC in a.get_shape() or DYNAMIC in b.get_shape():
            return  # dynamic element counts: the backends compute the `?` sizes from the expressions
        _check(a.element_count() == b.element_count(), self, "element count", a.element_count(), b.element_count())


@irdl_op_definition
class PermuteOp(IRDLOperation):
    """Reorders dims: result dim i is input dim `perm[i]`."""

    name = "graph.permute"
    input = operand_def(TensorType)
    perm = prop_def(DenseArrayBase)
    result = result_def(TensorType)
    traits = traits_def(Pure(), ViewLike())
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
    traits = traits_def(Pure(), ViewLike())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        try:
            ok = broadcast_shapes(_shape(self.input), _shape(self.result)) == _shape(self.result)
        except ValueError:
            ok = False
        _check(ok, self, "a shape the input broadcasts to", f"broadcastable from {_shape(self.input)}", _shape(self.result))


@irdl_op_definition
class SliceOp(IRDLOperation):
    """Elements `start:end:step` of `dim`: bounds clamped and non-negative on a static dim; on a `?` dim
    they keep PyTorch's slice semantics (negative from the end, past the end clamped) at run time.
    `end_expr` (a size expression such as "s0") replaces `end` by its value at run time, clamped."""

    name = "graph.slice"
    input = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    start = prop_def(IntegerAttr)
    end = prop_def(IntegerAttr)
    step = prop_def(IntegerAttr)
    end_expr = opt_prop_def(StringAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), ViewLike())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        shape = list(_shape(self.input))
        d, s, e, st = (a.value.data for a in (self.dim, self.start, self.end, self.step))
        if shape[d] == DYNAMIC or self.end_expr is not None:  # PyTorch's slice semantics at run time
            _check(st > 0, self, "step > 0", "a positive step", st)
            shape[d] = DYNAMIC
        else:
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
    traits = traits_def(Pure(), Layout())
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
