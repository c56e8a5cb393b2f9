"""`graph` dialect, structure ops: `graph.kernel` regions, their `graph.yield`, and `graph.extern` calls."""

from __future__ import annotations

from collections.abc import Set

from xdsl.dialects.builtin import (
    DenseArrayBase,
    StringAttr,
    TensorType,
)
from xdsl.ir import Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import (
    EffectInstance,
    HasParent,
    IsolatedFromAbove,
    IsTerminator,
    MemoryEffect,
    MemoryEffectKind,
    Pure,
    RecursiveMemoryEffect,
)

from solder.compiler.dialects.base import _check

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


ASSERT_ON_DATA = "aten._assert_async.msg"
"""The callee of a run-time assertion on data (compiler/import_context.py `check_on_data`): no result, but
an effect, so that it runs where the program reaches it."""


def is_check(op: Operation) -> bool:
    """A run-time assertion on data: an effect, no result, and no computation (not a fallback)."""
    return isinstance(op, ExternOp) and op.callee.data == ASSERT_ON_DATA


class ExternEffects(MemoryEffect):
    """`graph.extern`'s memory effects: none for a functional callee, so cse and dce treat it as pure; a read
    and a write for a callee that writes into operands (`writes`), so dce keeps it and cse never merges it;
    a write of no value in particular for an assertion on data (it may raise)."""

    @classmethod
    def get_effects(cls, op: Operation) -> Set[EffectInstance]:
        if is_check(op):
            return frozenset([EffectInstance(MemoryEffectKind.WRITE)])
        if not isinstance(op, ExternOp) or not op.written_operands():
            return frozenset()
        return frozenset(EffectInstance(kind, op.inputs[i]) for i in op.written_operands()
                         for kind in (MemoryEffectKind.READ, MemoryEffectKind.WRITE))


@irdl_op_definition
class ExternOp(IRDLOperation):
    """A call into eager PyTorch (or a library): `callee` names an ATen overload, e.g. "aten.cumprod.default".

    `args` is the JSON of the call's (args, kwargs) where `{"$t": i}` stands for operand i; the results
    are the op's tensor outputs in order. `writes` lists the operands the callee writes in place (its
    schema's `Tensor(a!)` arguments); such an extern has a write effect (`ExternEffects`), every other one
    is pure. The importer only meets in-place ops when capture did not functionalize the graph:

        %z2 = graph.extern "aten.scatter_add_.default"(%z, %i, %s) {args = "...", writes = array<i64: 0>}
              : (tensor<4x2xf32>, tensor<3x2xi64>, tensor<3x2xf32>) -> tensor<4x2xf32>
    """

    name = "graph.extern"
    inputs = var_operand_def(TensorType)
    callee = prop_def(StringAttr)
    args = prop_def(StringAttr)
    writes = opt_prop_def(DenseArrayBase)
    outputs = var_result_def(TensorType)
    traits = traits_def(ExternEffects())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$callee `(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs)"

    def written_operands(self) -> tuple[int, ...]:
        """The indices of the operands this call writes in place (empty for a functional callee)."""
        return tuple(self.writes.get_values()) if self.writes is not None else ()

    def verify_(self) -> None:
        bad = [i for i in self.written_operands() if not 0 <= i < len(self.inputs)]
        _check(not bad, self, "written operand indices", f"in [0, {len(self.inputs)})", bad)
