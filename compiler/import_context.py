"""What every ATen importer entry works with: the import context of one FX graph, value types, constants,
and `graph.extern` calls (the eager fallback) with their argument encoding.

compiler/importer.py walks the exported graph; compiler/aten_table.py and compiler/aten_layout.py hold one entry
per ATen op. Both sit on this module, so neither imports the other's module to reach these helpers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import DenseArrayBase, FloatAttr, IntegerAttr, ModuleOp, StringAttr, TensorType, f64, i1, i64
from xdsl.ir import Block, Operation, SSAValue

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import dims_of, tensor_type, torch_dtype
from solder.compiler.errors import ImportError_
from solder.compiler.externs import decode_args as decode_extern_args  # noqa: F401  (re-exported)
from solder.compiler.externs import encode_arg as _encode

class UnsupportedOpWarning(UserWarning):
    """An op the compiler does not lower: it runs through eager PyTorch instead."""


@dataclass
class ArgInfo:
    """One function argument: a state tensor (`kind` = "param"/"buffer"/"constant") or a user input."""

    name: str
    kind: str


@dataclass
class OutputInfo:
    """One flat output: the index of a function result, or a constant that export folded."""

    result: int | None
    constant: object = None


@dataclass
class Imported:
    """The module, and how its function arguments and results map to the model's state and pytree."""

    module: ModuleOp
    args: list[ArgInfo]
    outputs: list[OutputInfo]
    externs: list[str] = field(default_factory=list)
    input_positions: list[int] = field(default_factory=list)
    """For each user-input argument, its index among the model's flattened inputs (non-tensors are baked in)."""

    @property
    def func(self) -> func.FuncOp:
        return next(op for op in self.module.ops if isinstance(op, func.FuncOp))


def torch_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def type_of_meta(val) -> object:
    """The tensor type of an FX value; symbolic sizes (SymInts) become `?` dims with their expression."""
    if not isinstance(val, torch.Tensor):
        raise ImportError_(f"expected a tensor value, got {type(val).__name__}")
    return tensor_type(tuple(val.shape), torch_dtype_name(val.dtype))


def is_symbolic_scalar(val) -> bool:
    """A SymInt/SymBool/SymFloat (a size computation export recorded), or a plain number standing for one."""
    return isinstance(val, (torch.SymInt, torch.SymBool, torch.SymFloat, int, float, bool))


def scalar_attr(v: float | bool):
    """The `graph.constant` value attribute of a Python scalar (non-finite floats as strings)."""
    if isinstance(v, bool):
        return IntegerAttr(int(v), i64)
    if isinstance(v, int):
        return IntegerAttr(v, i64)
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        return StringAttr(str(v))
    return FloatAttr(v, f64)


class ImportContext:
    """What a table entry sees: the builder, value lookup, and helpers to make constants and casts."""

    def __init__(self, block: Block):
        self.block = block
        self.values: dict[torch.fx.Node, SSAValue | list[SSAValue]] = {}
        self.node: torch.fx.Node | None = None
        self.assumes: list[str] = []  # export's run-time assertions on sizes, as expressions
        self.unbacked: dict[str, SSAValue] = {}  # `x.item()`'s symbol -> the 0-d tensor x it was read from

    def emit(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0] if len(op.results) == 1 else op.results  # type: ignore[return-value]

    def value(self, arg) -> SSAValue:
        if isinstance(arg, torch.fx.Node):
            v = self.values.get(arg)
            if v is None:
                raise ImportError_(f"{self.where()}: operand {arg.name} ({arg.target}) is a size or scalar "
                                   "computation, not a tensor; it cannot be an operand here")
            assert isinstance(v, SSAValue), f"{arg} has several results; expected one"
            return v
        raise ImportError_(f"{self.where()}: expected a tensor operand, got {arg!r}")

    def meta(self, arg=None) -> torch.Tensor:
        node = self.node if arg is None else arg
        return node.meta["val"]

    def out_type(self):
        return type_of_meta(self.meta())

    def where(self) -> str:
        return f"node {self.node.name} ({self.node.target})" if self.node is not None else "importer"

    def constant(self, value, dtype: torch.dtype, shape: tuple[int, ...] = ()) -> SSAValue:
        if dtype != torch.bool and not dtype.is_floating_point and isinstance(value, float) and not math.isfinite(value):
            raise ImportError_(f"{self.where()}: {value} does not fit {dtype}")
        if dtype == torch.bool:
            value = bool(value)
        elif not dtype.is_floating_point:
            value = int(value)
        else:
            value = float(value)
        return self.emit(g.ConstantOp(scalar_attr(value), tensor_type(shape, torch_dtype_name(dtype))))

    def cast(self, v: SSAValue, dtype: torch.dtype) -> SSAValue:
        t = tensor_type(dims_of(v.type), torch_dtype_name(dtype))
        return v if v.type == t else self.emit(g.CastOp(v, t))

    def operand(self, arg, dtype: torch.dtype) -> SSAValue:
        """A tensor operand cast to `dtype`, or a scalar made into a 0-d constant of `dtype`."""
        if isinstance(arg, torch.fx.Node):
            return self.cast(self.value(arg), dtype)
        return self.constant(arg, dtype)


def extern(ctx: ImportContext, node: torch.fx.Node) -> SSAValue | list[SSAValue]:
    """Lower `node` to a `graph.extern` that calls its ATen overload eagerly."""
    operands: list[torch.fx.Node] = []
    spec = json.dumps([_encode(list(node.args), operands), _encode(dict(node.kwargs), operands)["$dict"]])
    writes = _written_operands(node)
    val = node.meta["val"]
    vals = list(val) if isinstance(val, (tuple, list)) else [val]
    if not all(isinstance(v, torch.Tensor) for v in vals):
        raise ImportError_(f"{ctx.where()}: extern call returns non-tensor values {vals!r}; cannot import")
    op = g.ExternOp(
        operands=[[ctx.value(o) for o in operands]],
        result_types=[[type_of_meta(v) for v in vals]],
        properties={"callee": StringAttr(op_name(node.target)), "args": StringAttr(spec),
                    **({"writes": DenseArrayBase.from_list(i64, writes)} if writes else {})},
    )
    ctx.block.add_op(op)
    return list(op.results) if isinstance(val, (tuple, list)) else op.results[0]


_RELATIONS = {"<=": "le", "<": "lt", ">=": "ge", ">": "gt", "==": "eq", "!=": "ne"}


def check_on_data(ctx: ImportContext, cond, message: str) -> None:
    """Export's run-time assertion on a value read off a tensor (`x.item() <= 17`) as graph ops: the 0-d
    tensor compared with the constant, then `aten._assert_async.msg`, an extern with an effect (kept by dce,
    run in order), which raises as eager does when the data breaks it. Only `symbol REL integer` forms."""
    import sympy

    expr = cond.node.expr
    rel = getattr(expr, "rel_op", None)
    if rel not in _RELATIONS:
        raise ImportError_(f"{ctx.where()}: run-time assertion {expr} on data is not a comparison")
    lhs, rhs, op = expr.lhs, expr.rhs, _RELATIONS[rel]
    if isinstance(lhs, sympy.Integer) and isinstance(rhs, sympy.Symbol):  # 0 <= u0 -> u0 >= 0
        lhs, rhs, op = rhs, lhs, {"le": "ge", "lt": "gt", "ge": "le", "gt": "lt"}.get(op, op)
    if not (isinstance(lhs, sympy.Symbol) and str(lhs) in ctx.unbacked and isinstance(rhs, sympy.Integer)):
        raise ImportError_(f"{ctx.where()}: run-time assertion {expr} on data: only `value REL integer` is compiled")
    x = ctx.unbacked[str(lhs)]
    flag = ctx.emit(g.BINARY_OPS[op](x, ctx.constant(int(rhs), torch_dtype(x.type.element_type)),
                                     TensorType(i1, [])))
    ctx.block.add_op(g.ExternOp(operands=[[flag]], result_types=[[]],
                              properties={"callee": StringAttr(g.ASSERT_ON_DATA),
                                          "args": StringAttr(json.dumps([[{"$t": 0}, message], {}]))}))


def _written_operands(node: torch.fx.Node) -> list[int]:
    """The operand indices (in `_encode` order: args, then kwargs) that `node`'s op writes in place: the
    tensors passed to its schema's `Tensor(a!)` arguments."""
    schema = node.target._schema.arguments
    by_name = {a.name: a for a in schema}
    given = [(schema[i] if i < len(schema) else None, x) for i, x in enumerate(node.args)]
    given += [(by_name.get(k), x) for k, x in node.kwargs.items()]
    out: list[int] = []
    count = 0
    for arg, x in given:
        n = len(_encode_operands(x))
        if arg is not None and arg.alias_info is not None and arg.alias_info.is_write:
            out.extend(range(count, count + n))
        count += n
    return out


def _encode_operands(x) -> list[torch.fx.Node]:
    """The operands `_encode(x, ...)` adds, in order."""
    operands: list[torch.fx.Node] = []
    _encode(x, operands)
    return operands


def op_name(target) -> str:
    """The ATen overload's name as the importer's table keys it ("aten.add.Tensor")."""
    return str(target)


# The table of ATen entries (filled by compiler/aten_table.py and compiler/aten_layout.py) and helpers they share.

TABLE: dict[str, object] = {}


def lower(*names: str):
    """Register the decorated function as the entry for each ATen overload in `names`."""

    def deco(fn):
        for n in names:
            assert n not in TABLE, f"duplicate importer entry for {n}"
            TABLE[n] = fn
        return fn

    return deco


def _rank(ctx: ImportContext, x) -> int:
    return ctx.meta(x).dim()


def _dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _reshape_to(ctx, v, shape):
    t = tensor_type(tuple(shape), torch_dtype_name(_elem_dtype(v)))
    return v if v.type == t else ctx.emit(g.ReshapeOp(v, t))


def _elem_dtype(v):
    return torch_dtype(v.type.element_type)
