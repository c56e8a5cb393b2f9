"""`graph` dialect, spatial ops of vision and audio models: padding, resampling, transposed convolution.

Layouts are PyTorch's: [N, C, *spatial] for resampling and convolution. `graph.pad` and
`graph.upsample_nearest` only move elements (each result element is an input element at a computed index,
or the fill value), so they are `Layout` ops that a generated kernel turns into index arithmetic.
"""

from __future__ import annotations

from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, StringAttr, TensorType, UnitAttr
from xdsl.ir import Attribute
from xdsl.irdl import (
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

from solder.compiler.dialects.base import Shape, _check, _shape, _ttype
from solder.compiler.dialects.traits import Layout
from solder.compiler.dialects.types import DYNAMIC

PAD_MODES = ("constant", "reflect", "replicate", "circular")


@irdl_op_definition
class PadOp(IRDLOperation):
    """`F.pad`: `low[d]` elements before and `high[d]` after dim d, filled per `mode`.

        %y = graph.pad constant %x {low = array<i64: 0, 1>, high = array<i64: 0, 2>, value = 0.0 : f64}
               : tensor<4x5xf32> -> tensor<4x8xf32>

    "constant" fills with `value` (a float or integer attribute, or "inf"/"-inf"/"nan" as `graph.constant`
    writes them); a negative count crops instead. "reflect" mirrors without repeating the edge (a pad
    smaller than the dim), "replicate" repeats the edge, "circular" wraps around (a pad no larger than
    the dim); their counts are non-negative.
    """

    name = "graph.pad"
    input = operand_def(TensorType)
    mode = prop_def(StringAttr)
    low = prop_def(DenseArrayBase)
    high = prop_def(DenseArrayBase)
    value = opt_prop_def(Attribute)
    result = result_def(TensorType)
    traits = traits_def(Pure(), Layout())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$mode $input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        mode, shape = self.mode.data, _shape(self.input)
        low, high = list(self.low.get_values()), list(self.high.get_values())
        _check(mode in PAD_MODES, self, "mode", "one of " + ", ".join(PAD_MODES), mode)
        _check(len(low) == len(high) == len(shape), self, "one low and one high count per dim", len(shape),
               (len(low), len(high)))
        _check((mode == "constant") == (self.value is not None), self, "a fill value exactly for mode constant",
               "value" if mode == "constant" else "none", self.value)
        expected = []
        for n, lo, hi in zip(shape, low, high):
            if mode != "constant":
                bound = {"reflect": "< the dim", "circular": "<= the dim"}.get(mode, "")
                fits = n == DYNAMIC or not bound or max(lo, hi) < n + (mode == "circular")
                _check(lo >= 0 and hi >= 0 and fits, self, f"{mode} padding", f"counts >= 0 {bound}".strip(),
                       f"{lo}, {hi} on a dim of {n}")
            expected.append(n if n == DYNAMIC else n + lo + hi)
        _check(tuple(expected) == _shape(self.result), self, "result shape", tuple(expected), _shape(self.result))
        _check(_ttype(self.input).element_type == _ttype(self.result).element_type, self, "result element type",
               _ttype(self.input).element_type, _ttype(self.result).element_type)


class _Upsample(IRDLOperation):
    input = operand_def(TensorType)
    scales = opt_prop_def(DenseArrayBase)
    result = result_def(TensorType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def verify_(self) -> None:
        x, y = _shape(self.input), _shape(self.result)
        _check(3 <= len(x) <= 5, self, "input rank", "3 to 5 ([N, C, *spatial])", len(x))
        _check(len(y) == len(x) and y[:2] == x[:2], self, "result shape", f"{x[:2]} + {len(x) - 2} sizes", y)
        if self.scales is not None:
            n = len(self.scales.get_values())
            _check(n == len(x) - 2, self, "one scale per spatial dim", len(x) - 2, n)


@irdl_op_definition
class UpsampleNearestOp(_Upsample):
    """Nearest-neighbour resampling of the spatial dims (`F.interpolate(mode="nearest")`, or
    `"nearest-exact"` with `exact`) to the result's sizes.

        %y = graph.upsample_nearest %x {scales = array<f64: 2.0, 2.0>} : tensor<1x3x4x5xf32> -> tensor<1x3x8x10xf32>

    Source index along a dim: floor(i * s) (exact: floor((i + 0.5) * s)), clamped to the input, with s the
    input/output size ratio in fp32, or 1/scale where `scales` gives the factors the model asked for, as
    torch computes it.
    """

    name = "graph.upsample_nearest"
    exact = opt_prop_def(UnitAttr)
    traits = traits_def(Pure(), Layout())


@irdl_op_definition
class UpsampleLinearOp(_Upsample):
    """Linear interpolation of the spatial dims to the result's sizes (`F.interpolate` with mode linear,
    bilinear or trilinear for 1, 2 or 3 spatial dims); `align_corners` and `scales` as torch takes them.

        %y = graph.upsample_linear %x {align_corners} : tensor<1x3x4x5xf32> -> tensor<1x3x7x9xf32>
    """

    name = "graph.upsample_linear"
    align_corners = opt_prop_def(UnitAttr)
    traits = traits_def(Pure())


@irdl_op_definition
class ConvTransposeOp(IRDLOperation):
    """N-d transposed convolution (NC[D]HW layout) with optional bias, as `F.conv_transpose2d`: weight is
    [C_in, C_out / groups, *kernel].

        %y = graph.conv_transpose %x, %w {stride = array<i64: 2, 2>, padding = array<i64: 1, 1>,
               output_padding = array<i64: 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64}
               : tensor<1x8x5x5xf32>, tensor<8x4x3x3xf32> -> tensor<1x4x10x10xf32>
    """

    name = "graph.conv_transpose"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    stride = prop_def(DenseArrayBase)
    padding = prop_def(DenseArrayBase)
    output_padding = prop_def(DenseArrayBase)
    dilation = prop_def(DenseArrayBase)
    groups = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = ("$input `,` $weight (`bias` $bias^ `:` type($bias))? attr-dict `:` type($input) `,` "
                       "type($weight) `->` type($result)")

    def verify_(self) -> None:
        x, w, y = _shape(self.input), _shape(self.weight), _shape(self.result)
        n = len(x) - 2
        _check(1 <= n <= 3 and len(w) == len(x) == len(y), self, "ranks of input, weight and result",
               "3 to 5, all equal", (len(x), len(w), len(y)))
        for k in ("stride", "padding", "output_padding", "dilation"):
            got = len(self.properties[k].get_values())
            _check(got == n, self, f"{k} entries (one per spatial dim)", n, got)
        groups = self.groups.value.data
        _check(Shape((x[1], y[1])) == (w[0], w[1] * groups), self,
               "channels (input = weight[0], result = weight[1] * groups)", (w[0], w[1] * groups), (x[1], y[1]))
