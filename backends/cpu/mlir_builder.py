"""The CPU backend's one MLIR builder: xDSL operations, verified, printed as the text jit.py compiles.

Kernel functions are built as xDSL ops (`func`, `arith`, `math`, `linalg`, `tensor`, `memref`, `scf`,
`vector`, `bufferization`): `IR` inserts ops at the end of a block (or before an anchor op) and names their
results, so the printed text reads like hand-written MLIR and golden tests can match it (`%a0`, `%g3`,
`%g3_t5`). `kernel_func` makes a function in the kernels' ABI, `finish` verifies it with xDSL's verifier
(a malformed kernel fails here with `KernelVerifyError`, not as a parse error inside the JIT) and prints it
with xDSL's printer; MLIR (torch-mlir's bindings, jit.py) parses that text.

What is not built from xDSL's dialects, and why:
- transform-dialect schedules (lower_schedule.py, schedule.py) stay text, joined to the printed functions by
  `module_text`: xDSL 0.74's transform dialect lacks most of the ops they use
  (`structured.fuse`, `tile_reduction_using_for`, `loop.hoist_loop_invariant_subsets`, the pattern sets).
- `scf.forall` (attention's parallel loop over batch, head and query block): xDSL 0.74 has no `scf.forall`;
  `ForallOp` and `InParallelOp` below declare just what the kernel uses and print in MLIR's generic form.
- `arith.fptosi`, `arith.cmpi`/`arith.cmpf` and `arith.select` on vectors (attention's vector exp and masks):
  xDSL 0.74's take or give scalars only (a vector compare would be typed `i1`); `VectorFPToSIOp`,
  `VectorCmpiOp`, `VectorCmpfOp` and `VectorSelectOp` below, printed as MLIR prints them.
- kernels.py's hand-assembled test kernels append their transform schedules as text, as above.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects import arith, bufferization, func, math, memref, scf, tensor, vector
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    AnyFloatConstr,
    AffineMapAttr,
    ArrayAttr,
    BoolAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    FunctionType,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    NoneAttr,
    StridedLayoutAttr,
    TensorType,
    UnitAttr,
    VectorType,
    f32,
    i1,
    i8,
    i32,
    i64,
)
from xdsl.dialects.linalg.attrs import IteratorTypeAttr
from xdsl.dialects.linalg.ops import FillOp, GenericOp, IndexOp, YieldOp
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.ir.affine import AffineExpr, AffineMap
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    VarConstraint,
    irdl_op_definition,
    operand_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.printer import Printer
from xdsl.traits import HasParent, IsTerminator, NoTerminator, Pure
from xdsl.utils.exceptions import VerifyException

from solder.compiler.errors import SolderError

INDEX = IndexType()
ELEMENTS: dict[str, Attribute] = {"f32": f32, "i1": i1, "i8": i8, "i32": i32, "i64": i64, "index": INDEX}
EMIT_C = "llvm.emit_c_interface"


class KernelVerifyError(SolderError):
    """A generated kernel function that xDSL's verifier rejects: a bug in the CPU lowering."""


# -- types --------------------------------------------------------------------------------------
def elem(dtype: str | Attribute) -> Attribute:
    return ELEMENTS[dtype] if isinstance(dtype, str) else dtype


def _dims(shape) -> list[int]:
    """Static dims as ints, symbolic ones (size-expression strings, symdims.py) as `?`."""
    return [n if isinstance(n, int) else DYNAMIC_INDEX for n in shape]


def tensor_t(shape, dtype: str | Attribute) -> TensorType:
    return TensorType(elem(dtype), _dims(shape))


def memref_t(shape, dtype: str | Attribute, strides=None, offset=None) -> MemRefType:
    """A memref type; `strides` (None: identity layout) and `offset` may hold None for `?`."""
    if strides is None:
        return MemRefType(elem(dtype), _dims(shape))
    layout = StridedLayoutAttr([NoneAttr() if s is None else s for s in strides],
                               NoneAttr() if offset is None else offset)
    return MemRefType(elem(dtype), _dims(shape), layout)


def vector_t(n: int, dtype: str | Attribute) -> VectorType:
    return VectorType(elem(dtype), [n])


def affine_map(rank: int, results: Sequence[int]) -> AffineMapAttr:
    """`(d0, ..., d{rank-1}) -> (d{results[0]}, ...)`."""
    return AffineMapAttr(AffineMap(rank, 0, tuple(AffineExpr.dimension(d) for d in results)))


def f32_value(value: float) -> float:
    """The f32 constant the kernels hold for `value`: its 10-significant-digit decimal rounded to f32, as MLIR
    parsed the text the kernels were spliced from before this builder (kept so that the constants stay bit for
    bit; 1/sqrt(96) is one ulp below `value` rounded to f32 directly)."""
    return struct.unpack("f", struct.pack("f", float(f"{value:.9e}")))[0]


FASTMATH: dict[str, arith.FastMathFlagsAttr] = {}


def fastmath(flags: str) -> arith.FastMathFlagsAttr:
    """The fastmath attribute of `flags` ("nsz,contract,..."; "" for none), made once."""
    if flags not in FASTMATH:
        FASTMATH[flags] = arith.FastMathFlagsAttr(flags.split(",") if flags else "none")
    return FASTMATH[flags]


OPS: dict[str, type[Operation]] = {c.name.split(".", 1)[1]: c for d in (math.Math, arith.Arith) for c in d.operations}
"""arith and math ops by their name without the dialect (no name is in both)."""


# -- what xDSL 0.74 lacks -------------------------------------------------------------------------
@irdl_op_definition
class InParallelOp(IRDLOperation):
    """`scf.forall.in_parallel`, the terminator of `scf.forall` (empty here: results are written in place)."""

    name = "scf.forall.in_parallel"
    body = region_def("single_block")
    traits = traits_def(IsTerminator(), NoTerminator())


@irdl_op_definition
class ForallOp(IRDLOperation):
    """`scf.forall (%i, %j) in (%n, 4) { ... }` without results or mapping, printed in the generic form:

        "scf.forall"(%n) <{operandSegmentSizes = array<i32: 0, 1, 0, 0>, staticLowerBound = array<i64: 0, 0>,
                           staticUpperBound = array<i64: -9223372036854775808, 4>, staticStep = array<i64: 1, 1>}>
    """

    name = "scf.forall"
    dynamicLowerBound = var_operand_def(INDEX)
    dynamicUpperBound = var_operand_def(INDEX)
    dynamicStep = var_operand_def(INDEX)
    outputs = var_operand_def()
    staticLowerBound = prop_def(DenseArrayBase.constr(i64))
    staticUpperBound = prop_def(DenseArrayBase.constr(i64))
    staticStep = prop_def(DenseArrayBase.constr(i64))
    body = region_def("single_block")
    irdl_options = (AttrSizedOperandSegments(as_property=True),)


InParallelOp.traits.add_trait(HasParent(ForallOp))


@irdl_op_definition
class VectorFPToSIOp(IRDLOperation):
    """`arith.fptosi` on vectors (`%n = arith.fptosi %x : vector<64xf32> to vector<64xi32>`): xDSL 0.74's
    `arith.fptosi` takes scalars only. Printed as MLIR prints it."""

    name = "arith.fptosi"
    input = operand_def(VectorType.constr(AnyFloatConstr))
    result = result_def(VectorType.constr(IntegerType))
    assembly_format = "$input attr-dict `:` type($input) `to` type($result)"
    traits = traits_def(Pure())

    def verify_(self) -> None:
        if self.input.type.get_shape() != self.result.type.get_shape():
            raise VerifyException(f"expected the result shape {self.input.type.get_shape()}, "
                                  f"got {self.result.type.get_shape()}")


_VECTOR_CASTS: dict[str, type[Operation]] = {"fptosi": VectorFPToSIOp}


@irdl_op_definition
class RemFOp(arith.FloatingPointLikeBinaryOperation):
    """`arith.remf` (`%r = arith.remf %a, %b : vector<8xf32>`), C's fmod: LLVM's frem, a call of libm's exact
    fmodf. Missing from xDSL 0.74."""

    name = "arith.remf"
    traits = traits_def(Pure())


OPS["remf"] = RemFOp


class _VectorCompare(IRDLOperation):
    """`arith.cmpi`/`arith.cmpf` on vectors, with a vector of i1 as result (`%m = arith.cmpi slt, %a, %b :
    vector<64xi32>`): xDSL 0.74's compare ops return a scalar i1 whatever the operands. Printed as MLIR does."""

    PREDICATES: ClassVar[list[str]] = []
    predicate = prop_def(IntegerAttr)
    lhs = operand_def(VectorType)
    rhs = operand_def(VectorType)
    result = result_def(VectorType.constr(i1))
    traits = traits_def(Pure())

    def verify_(self) -> None:
        if self.lhs.type != self.rhs.type:
            raise VerifyException(f"expected operands of one type, got {self.lhs.type} and {self.rhs.type}")
        if self.result.type.get_shape() != self.lhs.type.get_shape():
            raise VerifyException(f"expected a result of shape {self.lhs.type.get_shape()}, "
                                  f"got {self.result.type.get_shape()}")

    def print(self, printer: Printer) -> None:
        printer.print_string(f" {self.PREDICATES[self.predicate.value.data]}, ")
        printer.print_ssa_value(self.lhs)
        printer.print_string(", ")
        printer.print_ssa_value(self.rhs)
        printer.print_string(" : ")
        printer.print_attribute(self.lhs.type)


@irdl_op_definition
class VectorCmpiOp(_VectorCompare):
    name = "arith.cmpi"
    PREDICATES: ClassVar[list[str]] = arith.CMPI_COMPARISON_OPERATIONS


@irdl_op_definition
class VectorCmpfOp(_VectorCompare):
    name = "arith.cmpf"
    PREDICATES: ClassVar[list[str]] = arith.CMPF_COMPARISON_OPERATIONS


@irdl_op_definition
class VectorSelectOp(IRDLOperation):
    """`arith.select` with a vector condition (`arith.select %m, %a, %b : vector<64xi1>, vector<64xf32>`):
    xDSL 0.74's takes a scalar i1 condition only."""

    name = "arith.select"
    T: ClassVar = VarConstraint("T", VectorType.constr())
    cond = operand_def(VectorType.constr(i1))
    lhs = operand_def(T)
    rhs = operand_def(T)
    result = result_def(T)
    assembly_format = "$cond `,` $lhs `,` $rhs attr-dict `:` type($cond) `,` type($result)"
    traits = traits_def(Pure())

    def verify_(self) -> None:
        if self.cond.type.get_shape() != self.result.type.get_shape():
            raise VerifyException(f"expected a condition of shape {self.result.type.get_shape()}, "
                                  f"got {self.cond.type.get_shape()}")


# -- building -----------------------------------------------------------------------------------
def name(value: SSAValue, hint: str) -> SSAValue:
    """Give `value` the printed name `%hint`. Our hints are generated (a stem and a counter), valid by
    construction, so they skip xDSL's setter, which would also drop a trailing `_<digits>`."""
    value._name = hint  # noqa: SLF001 - as xDSL's Builder does
    return value


class IR:
    """Inserts xDSL ops into `block` (at its end, or before `before`) and names their results."""

    def __init__(self, block: Block, before: Operation | None = None) -> None:
        self.block, self.before = block, before

    def insert(self, op: Operation) -> Operation:
        if self.before is None:
            self.block.add_op(op)
        else:
            self.block.insert_op_before(op, self.before)
        return op

    def op(self, op: Operation, hint: str | None = None) -> SSAValue:
        """Insert `op`; its (first) result, named `%hint` when given."""
        self.insert(op)
        r = op.results[0]
        return name(r, hint) if hint else r

    # arith and math on scalars and vectors
    def const(self, value, ty: Attribute, hint: str | None = None) -> SSAValue:
        """arith.constant of a float, int or bool (a vector type splats it; a list is a dense vector)."""
        if isinstance(ty, VectorType):
            vals = value if isinstance(value, list) else [value]
            conv = int if isinstance(ty.element_type, IntegerType) else f32_value
            attr = DenseIntOrFPElementsAttr.from_list(ty, [conv(v) for v in vals])  # one value: a splat
        elif ty == f32:
            attr = FloatAttr(f32_value(float(value)), f32)
        elif ty == i1:
            attr = IntegerAttr(int(bool(value)), i1)
        else:
            attr = IntegerAttr(int(value), ty)
        return self.op(arith.ConstantOp(attr, ty), hint)

    def bin(self, kind: str, a: SSAValue, b: SSAValue, hint: str | None = None,
            fm: arith.FastMathFlagsAttr | None = None) -> SSAValue:
        """A binary arith/math op by its name without the dialect ("addf", "maxsi", "copysign"); fastmath `fm`."""
        props = {"fastmath": fm} if fm is not None else {}
        return self.op(OPS[kind].build(operands=[a, b], result_types=[a.type], properties=props), hint)

    def un(self, kind: str, x: SSAValue, hint: str | None = None) -> SSAValue:
        """A unary op of the operand's type ("negf", "sqrt", "floor", ...)."""
        return self.op(OPS[kind].build(operands=[x], result_types=[x.type]), hint)

    def fma(self, a: SSAValue, b: SSAValue, c: SSAValue, hint: str | None = None) -> SSAValue:
        return self.op(math.FmaOp.build(operands=[a, b, c], result_types=[a.type]), hint)

    def cast(self, kind: str, x: SSAValue, to: str | Attribute, hint: str | None = None) -> SSAValue:
        """A conversion ("extui", "sitofp", "bitcast", "index_cast", ...) to the type `to`."""
        cls = _VECTOR_CASTS[kind] if isinstance(x.type, VectorType) and kind in _VECTOR_CASTS else OPS[kind]
        return self.op(cls.build(operands=[x], result_types=[elem(to)]), hint)

    def cmpf(self, pred: str, a: SSAValue, b: SSAValue, hint: str | None = None) -> SSAValue:
        return self._compare(arith.CmpfOp, VectorCmpfOp, pred, a, b, hint)

    def cmpi(self, pred: str, a: SSAValue, b: SSAValue, hint: str | None = None) -> SSAValue:
        return self._compare(arith.CmpiOp, VectorCmpiOp, pred, a, b, hint)

    def _compare(self, scalar, vec, pred: str, a: SSAValue, b: SSAValue, hint: str | None) -> SSAValue:
        if not isinstance(a.type, VectorType):
            return self.op(scalar(a, b, pred), hint)
        mask = VectorType(i1, a.type.get_shape())
        return self.op(vec.build(operands=[a, b], result_types=[mask],
                                 properties={"predicate": IntegerAttr(vec.PREDICATES.index(pred), i64)}), hint)

    def select(self, c: SSAValue, a: SSAValue, b: SSAValue, hint: str | None = None) -> SSAValue:
        cls = VectorSelectOp if isinstance(c.type, VectorType) else arith.SelectOp
        return self.op(cls.build(operands=[c, a, b], result_types=[a.type]), hint)

    # tensors, memrefs, vectors
    def empty(self, ty: TensorType, sizes: Sequence[SSAValue], hint: str) -> SSAValue:
        return self.op(tensor.EmptyOp(list(sizes), ty), hint)

    def load(self, ref: SSAValue, idx: Sequence[SSAValue], hint: str) -> SSAValue:
        t = ref.type
        return self.op(memref.LoadOp.build(operands=[ref, list(idx)], result_types=[t.element_type]), hint)

    def store(self, value: SSAValue, ref: SSAValue, idx: Sequence[SSAValue]) -> None:
        self.insert(memref.StoreOp.build(operands=[value, ref, list(idx)]))

    def vload(self, ty: VectorType, ref: SSAValue, idx: Sequence[SSAValue], hint: str) -> SSAValue:
        return self.op(vector.LoadOp.build(operands=[ref, list(idx)], result_types=[ty]), hint)

    def vstore(self, value: SSAValue, ref: SSAValue, idx: Sequence[SSAValue]) -> None:
        self.insert(vector.StoreOp.build(operands=[value, ref, list(idx)]))

    def splat(self, x: SSAValue, ty: VectorType, hint: str) -> SSAValue:
        return self.op(vector.BroadcastOp.build(operands=[x], result_types=[ty]), hint)

    def vfma(self, a: SSAValue, b: SSAValue, c: SSAValue, hint: str) -> SSAValue:
        return self.op(vector.FMAOp.build(operands=[a, b, c], result_types=[a.type]), hint)

    def reduction(self, kind: str, v: SSAValue, hint: str, fm: str = "") -> SSAValue:
        """vector.reduction of `v` (`fm`: its fast-math flags; `nnan` lets a max become a shuffle tree)."""
        k = vector.CombiningKindAttr(vector.CombiningKindFlag(kind))
        props = {"kind": k, **({"fastmath": fastmath(fm)} if fm else {})}
        return self.op(vector.ReductionOp.build(operands=[v, []], result_types=[v.type.element_type],
                                                properties=props), hint)

    def transfer_read(self, ref: SSAValue, idx: Sequence[SSAValue], pad: SSAValue, ty: VectorType,
                      hint: str) -> SSAValue:
        """A 1-d read along the innermost dim that may run past the end (padding there)."""
        rank = len(ref.type.get_shape())
        perm = AffineMapAttr(AffineMap(rank, 0, (AffineExpr.dimension(rank - 1),)))
        return self.op(vector.TransferReadOp(ref, list(idx), pad, ty, ArrayAttr([BoolAttr.from_bool(False)]),
                                             perm), hint)

    # loops
    def for_(self, lo: SSAValue, hi: SSAValue, step: SSAValue, iv: str, inits: Sequence[SSAValue] = (),
             names: Sequence[str] = ()) -> tuple[scf.ForOp, IR, list[SSAValue]]:
        """An scf.for carrying `inits` (block arguments named `names`); the loop, an IR for its body
        (which the caller ends with `yield_`) and the iteration arguments."""
        body = Block(arg_types=[INDEX, *(v.type for v in inits)])
        name(body.args[0], iv)
        for a, n in zip(body.args[1:], names):
            name(a, n)
        loop = scf.ForOp(lo, hi, step, list(inits), Region(body))
        self.insert(loop)
        return loop, IR(body), list(body.args[1:])

    def yield_(self, *values: SSAValue) -> None:
        self.insert(scf.YieldOp(*values))


def kernel_func(fname: str, args: Sequence[tuple[str, Attribute]]) -> tuple[func.FuncOp, IR]:
    """A public `func.func @fname` with `llvm.emit_c_interface` and arguments (name, type); the IR at its body."""
    f = func.FuncOp(fname, FunctionType.from_lists([t for _, t in args], []))
    f.attributes[EMIT_C] = UnitAttr()
    for a, (n, _) in zip(f.body.block.args, args):
        name(a, n)
    return f, IR(f.body.block)


def generic(ins: Sequence[SSAValue], outs: Sequence[SSAValue], maps: Sequence[AffineMapAttr],
            iterators: Sequence[str], body: Block, attrs: Sequence[str] = ()) -> GenericOp:
    """A linalg.generic on tensors with the unit attributes `attrs` (the schedule's tags)."""
    its = [IteratorTypeAttr.reduction() if k == "reduction" else IteratorTypeAttr.parallel() for k in iterators]
    op = GenericOp(list(ins), list(outs), Region(body), ArrayAttr(maps), ArrayAttr(its), [o.type for o in outs])
    for a in attrs:
        op.attributes[a] = UnitAttr()
    return op


def finish(op: Operation) -> str:
    """Verify `op` (a func.func) with xDSL and print it; a `KernelVerifyError` names the function and the op."""
    try:
        op.verify()
    except VerifyException as e:
        where = op.sym_name.data if isinstance(op, func.FuncOp) else op.name
        raise KernelVerifyError(f"CPU kernel @{where} does not verify (a bug in its lowering, caught before "
                                f"MLIR parses it): {_culprit(op) or e}") from None
    out = io.StringIO()
    printer = _ScopedPrinter(stream=out)
    printer.names = _scoped_names(op)
    printer.print_op(op)
    return out.getvalue()


def module_text(funcs: list[str], transform: list[str]) -> str:
    """One module of printed functions and, if `transform` has lines, one transform sequence of them (the text
    exception above) that `transform-interpreter` runs."""
    body = "\n".join(funcs)
    if not transform:
        return "module {\n" + body + "\n}\n"
    seq = ("transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {\n"
           + "\n".join("  " + ln for ln in transform) + "\n  transform.yield\n}")
    return "module attributes {transform.with_named_sequence} {\n" + body + "\n" + seq + "\n}\n"


def _culprit(op: Operation) -> str:
    """The first op inside `op` that fails verification on its own, as text with the reason."""
    for o in op.walk():
        try:
            o.verify(verify_nested_ops=False)
        except VerifyException as e:
            return f"'{o.name}' ({', '.join(str(t) for t in o.operand_types)} -> " \
                   f"{', '.join(str(t) for t in o.result_types)}): {e}"
    return ""


class _ScopedPrinter(Printer):
    """xDSL's printer with value names chosen per region (`_scoped_names`) where it would number them."""

    names: dict[SSAValue, str]

    def print_attribute(self, attribute: Attribute) -> None:
        """A reassociation (`[[0, 1], [2]]`) as MLIR prints it, without xDSL's `: i64` on every index."""
        if _is_reassociation(attribute):
            self.print_string("[" + ", ".join("[" + ", ".join(str(i.value.data) for i in g.data) + "]"
                                              for g in attribute.data) + "]")
            return
        super().print_attribute(attribute)

    def print_ssa_value(self, value: SSAValue) -> str:
        n = self.names.get(value)
        if n is None:
            return super().print_ssa_value(value)
        self.print_string(f"%{n}")
        return n


def _is_reassociation(attr: Attribute) -> bool:
    return (isinstance(attr, ArrayAttr) and bool(attr.data)
            and all(isinstance(g, ArrayAttr) and all(isinstance(i, IntegerAttr) and i.type == i64 for i in g.data)
                    for g in attr.data))


def _scoped_names(op: Operation) -> dict[SSAValue, str]:
    """Printed names of the named values in `op`'s regions, unique within each scope as MLIR's parser requires
    and no further: sibling loops both print their induction variable as `%j` (xDSL's printer would print
    the second as `%j_1`). A repeated name gets `_<n>` appended."""
    names: dict[SSAValue, str] = {}

    def give(v: SSAValue, used: dict[str, int]) -> None:
        hint = v.name_hint
        if hint:
            k = used.get(hint, 0)
            names[v] = hint if k == 0 else f"{hint}_{k}"
            used[hint] = k + 1

    def walk(region: Region, used: dict[str, int]) -> None:
        for block in region.blocks:
            for a in block.args:
                give(a, used)
            for o in block.ops:
                for r in o.results:
                    give(r, used)
                for inner in o.regions:
                    walk(inner, dict(used))

    for region in op.regions:
        walk(region, {})
    return names


__all__ = [  # the xDSL dialects re-exported: the lowering builds through this module only
    "DYNAMIC_INDEX", "EMIT_C", "INDEX", "IR", "FillOp", "ForallOp", "InParallelOp", "IndexOp", "KernelVerifyError",
    "VectorCmpfOp", "VectorCmpiOp", "VectorFPToSIOp", "VectorSelectOp", "YieldOp", "affine_map", "arith",
    "bufferization", "elem", "f32_value", "fastmath", "finish", "func", "generic", "kernel_func", "math", "memref",
    "memref_t", "module_text", "name", "scf", "tensor", "tensor_t", "vector", "vector_t",
]
