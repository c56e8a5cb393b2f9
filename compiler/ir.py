"""Reading, printing and checking IR text: the xDSL context with solder's dialects loaded."""

from __future__ import annotations

import io

from xdsl.context import Context
from xdsl.dialects.arith import Arith
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func, FuncOp
from xdsl.ir import Operation
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

from solder.compiler.dialects.graph import Graph
from solder.compiler.errors import IRParseError, SolderError, VerifyError


def context() -> Context:
    """A context that knows builtin, func, arith and graph (unregistered ops are errors)."""
    ctx = Context()
    for d in (Builtin, Func, Arith, Graph):
        ctx.load_dialect(d)
    return ctx


def parse(text: str, filename: str = "<input>") -> ModuleOp:
    """Parse MLIR text; malformed text raises IRParseError with `file:line:column` and the message."""
    if not text.strip():
        raise IRParseError(f"{filename}: the input is empty; expected a module in the graph dialect")
    try:
        module = Parser(context(), text, filename).parse_module()
    except ParseError as e:
        raise IRParseError(f"{filename}: cannot parse IR:\n{e}") from None
    verify(module)
    return module


def print_ir(op: Operation) -> str:
    out = io.StringIO()
    Printer(stream=out).print_op(op)
    return out.getvalue() + "\n"


def verify(module: ModuleOp) -> None:
    """xDSL's verifier plus the check it lacks: every operand is defined before its use."""
    try:
        module.verify()
    except VerifyException as e:
        raise VerifyError(f"invalid IR: {e}") from None
    for op in module.walk():
        for region in op.regions:
            for block in region.blocks:
                seen = set(block.args)
                for inner in block.ops:
                    for v in inner.operands:
                        if v not in seen and _defined_in(v, block):
                            raise VerifyError(f"invalid IR: {inner.name} uses %{v.name_hint or '?'} before its definition")
                    seen.update(inner.results)


def _defined_in(value, block) -> bool:
    owner = value.owner
    return getattr(owner, "parent", None) is block


def forward_func(module: ModuleOp) -> FuncOp:
    """The module's `func.func @forward`: the function every stage after import works on."""
    for op in module.ops:
        if isinstance(op, FuncOp) and op.sym_name.data == "forward":
            return op
    raise SolderError("expected a func.func @forward in the module")
