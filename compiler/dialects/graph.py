"""The `graph` dialect: tensor-level ops with static shapes, the IR every solder pass works on.

Every op is pure (no side effects; only a `graph.extern` of an in-place ATen op writes, see
structure.py), takes and returns ranked tensors, and prints as MLIR:

    %y = graph.add %a, %b : (tensor<8x768xf32>, tensor<768xf32>) -> tensor<8x768xf32>
    %s = graph.softmax %y {dim = 1 : i64} : tensor<8x768xf32> -> tensor<8x768xf32>

Elementwise ops broadcast like PyTorch; their operands already have the result's element type
(the importer inserts `graph.cast` where PyTorch would promote), except comparisons, whose result is
i1. Scalars are 0-d tensors made by `graph.constant`.
"""

from __future__ import annotations

from xdsl.ir import Dialect

from solder.compiler.dialects.base import float_attr, int_attr, ints_attr
from solder.compiler.dialects.elementwise import *  # noqa: F401,F403
from solder.compiler.dialects.elementwise import BINARY_OPS, UNARY_OPS, scalar_value
from solder.compiler.dialects.layout import *  # noqa: F401,F403
from solder.compiler.dialects.nn import *  # noqa: F401,F403
from solder.compiler.dialects.scatter import *  # noqa: F401,F403
from solder.compiler.dialects.spatial import *  # noqa: F401,F403
from solder.compiler.dialects.structure import *  # noqa: F401,F403

Graph = Dialect(
    "graph",
    [
        *UNARY_OPS.values(), GeluOp, CastOp, IsNanOp, LogicalNotOp, *BINARY_OPS.values(), WhereOp,
        ConstantOp, ArangeOp, TriangularOp, ReduceOp, ArgReduceOp, SoftmaxOp, LogSoftmaxOp, CumsumOp,
        CumprodOp, LayerNormOp, RmsNormOp, BatchNormOp, MatmulOp, LinearOp, ConvOp, PoolOp, ReshapeOp, PermuteOp,
        ExpandOp, SliceOp, ConcatOp, GatherOp, IndexOp, GatherElementsOp, AttentionOp, KernelOp, YieldOp, ExternOp,
        BlockSparseAttentionOp, PadOp, SliceScatterOp, ScatterOp, IndexPutOp, UpsampleNearestOp, UpsampleLinearOp,
        ConvTransposeOp,
    ],
    [],
)
PREFIX = Graph.name + "."
"""The prefix of every op name of the dialect ("graph.")."""


__all__ = [n for n in dir() if n.endswith("Op")] + ["Graph", "PREFIX", "UNARY_OPS", "BINARY_OPS", "int_attr", "float_attr",
                                                      "ints_attr", "scalar_value"]
