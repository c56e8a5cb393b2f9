"""Shape symbols of a dynamic function: their bounds, how call arguments bind them, and instantiation.

A function with `?` dims carries

    func.func @forward(%x: tensor<?x64xf32, ["s0"]>) ... attributes {
        graph.symbols = {s0 = array<i64: 2, 512, 8>},      // min, max (-1: unbounded), example size
        graph.assumes = ["Eq(Mod(s0, 2), 0)"]}            // export's extra run-time assertions, if any

A size expression is text in the IR and a sympy expression in memory (`expr`, parsed once; size_expr.py
has the algebra): `evaluate` computes one under a binding (compiled to Python once per expression),
`prove`/`equal` decide equalities of sizes from the symbols' bounds and export's assertions (`facts`).
`Binding` reads the symbols' values off the argument tensors' sizes and checks bounds, repeated
symbols and assertions (`ShapeBindError` says which); `instantiate` turns a dynamic module into the static module for one binding (what a backend that
needs static sizes compiles, once per binding).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

import sympy
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DictionaryAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    i64,
)

from solder.compiler.dialects import size_expr
from solder.compiler.dialects.types import DYNAMIC, dims_of, is_dynamic, with_dims

SYMBOLS = "graph.symbols"
ASSUMES = "graph.assumes"
UNBOUNDED = -1


class ShapeBindError(ValueError):
    """Call arguments whose sizes a dynamic function does not accept (out of bounds, inconsistent)."""


@dataclass(frozen=True)
class Symbol:
    """One shape symbol: inclusive bounds (`hi` None: unbounded) and the example size passes use."""

    name: str
    lo: int
    hi: int | None
    hint: int


def expr(e) -> sympy.Expr:
    """The sympy expression of a size: an int, the IR's text (`"2*s0"`, `"FloorDiv(s0, 2)"`, parsed once and
    cached) or a sympy expression; ShapeBindError if the text is not a size expression."""
    try:
        return size_expr.as_expr(e)
    except size_expr.SizeExprError as err:
        raise ShapeBindError(str(err)) from None


def to_str(e) -> str:
    """The canonical text of a size expression, as the IR stores it (`(s0//2)`, `2*s0`, `Mod(s0, 2)`)."""
    return size_expr.to_str(expr(e))


def evaluate(e, env: dict[str, int]):
    """The value of a size expression (`2*s0`, `FloorDiv(s0, 2)`, `Eq(Mod(s0, 2), 0)`) under `env`; an int is
    itself. Each expression is compiled to Python once (integer `//`, `%`), so a call is a dict lookup and a
    few integer operations."""
    if type(e) is int:
        return e
    try:
        return _compiled(e)(env)
    except (KeyError, TypeError, ZeroDivisionError) as err:
        raise ShapeBindError(f"cannot evaluate the size expression {e!r} with {env}: {type(err).__name__}: {err}") \
            from None


@lru_cache(maxsize=8192)
def _compiled(e):
    try:
        return size_expr.compile_expr(size_expr.as_expr(e))
    except size_expr.SizeExprError as err:
        raise ShapeBindError(str(err)) from None


def simplify(e) -> sympy.Expr:
    """`e` simplified by sympy (cached)."""
    return size_expr.simplify(expr(e))


def facts(fn: func.FuncOp | None) -> tuple[tuple, tuple]:
    """(bounds, assumes) of `fn`'s symbols, in the form `prove` and `equal` take."""
    if fn is None:
        return (), ()
    return tuple((s.name, s.lo, s.hi) for s in symbols(fn).values()), tuple(assumes(fn))


def prove(claim, bounds: tuple = (), assumes: tuple = ()) -> bool | None:
    """Whether `claim` (an `Eq`/`Lt`/... of sizes) holds at every binding within `bounds` ((name, lo, hi), ...,
    `facts`) that meets `assumes` (export's assertions): True/False where sympy decides it, else None."""
    return size_expr.prove(expr(claim), tuple(bounds), tuple(assumes))


def with_facts(e, bounds: tuple = (), assumes: tuple = ()) -> sympy.Expr:
    """Size `e` with `bounds` and `assumes` (`facts`) substituted in, for comparing products of sizes."""
    return size_expr.with_facts(expr(e), tuple(bounds), tuple(assumes))


def equal(a, b, bounds: tuple = (), assumes: tuple = ()) -> bool:
    """Whether sizes `a` and `b` (ints, text, sympy) are proved equal under `bounds` and `assumes`."""
    return size_expr.equal(expr(a), expr(b), tuple(bounds), tuple(assumes))


def symbols(fn: func.FuncOp) -> dict[str, Symbol]:
    """The function's shape symbols by name (empty for a static function)."""
    attr = fn.attributes.get(SYMBOLS)
    if not isinstance(attr, DictionaryAttr):
        return {}
    out = {}
    for name, v in attr.data.items():
        lo, hi, hint = v.get_values()
        out[name] = Symbol(name, lo, None if hi == UNBOUNDED else hi, hint)
    return out


def set_symbols(fn: func.FuncOp, syms: list[Symbol], assumes: list[str] = ()) -> None:
    """Record `syms` (and export's extra assertions) on `fn`."""
    if not syms:
        return
    fn.attributes[SYMBOLS] = DictionaryAttr({
        s.name: DenseArrayBase.from_list(i64, [s.lo, UNBOUNDED if s.hi is None else s.hi, s.hint]) for s in syms})
    if assumes:
        fn.attributes[ASSUMES] = ArrayAttr([StringAttr(a) for a in assumes])


def assumes(fn: func.FuncOp) -> list[str]:
    attr = fn.attributes.get(ASSUMES)
    return [a.data for a in attr.data] if isinstance(attr, ArrayAttr) else []


def hints(fn: func.FuncOp | None) -> dict[str, int]:
    return {s.name: s.hint for s in symbols(fn).values()} if fn is not None else {}


def enclosing_func(op) -> func.FuncOp | None:
    while op is not None and not isinstance(op, func.FuncOp):
        op = op.parent_op()
    return op


_EXAMPLE_SIZES: ContextVar[dict[str, int] | None] = ContextVar("solder_example_sizes", default=None)


@contextmanager
def example_sizes(module: ModuleOp):
    """While passes run on `module`: `hint_shape` without an anchor uses its symbols' example sizes."""
    env = {}
    for op in module.ops:
        if isinstance(op, func.FuncOp):
            env.update(hints(op))
    token = _EXAMPLE_SIZES.set(env)
    try:
        yield env
    finally:
        _EXAMPLE_SIZES.reset(token)


def hint_shape(t, anchor=None, default: int = 64) -> tuple[int, ...]:
    """A concrete shape for cost estimates: `?` dims at the example sizes of the function around `anchor`
    (or of the module passes are running on, `example_sizes`); `default` where neither knows."""
    if not is_dynamic(t):
        return tuple(t.get_shape())
    env = hints(enclosing_func(anchor)) if anchor is not None else (_EXAMPLE_SIZES.get() or {})
    out = []
    for d in dims_of(t):
        if isinstance(d, int):
            out.append(d)
            continue
        try:
            out.append(int(evaluate(d, env)))
        except ShapeBindError:
            out.append(default)
    return tuple(out)


@dataclass
class Binding:
    """Where each symbol is read (argument index, dim) and the checks a call must pass."""

    symbols: dict[str, Symbol]
    reads: dict[str, tuple[int, int]]
    checks: list[tuple[int, int, str]]  # (arg, dim, expression) that must equal the argument's size
    static: list[tuple[int, int, int]]  # (arg, dim, size) of static dims
    assumes: list[str]

    @staticmethod
    def of(fn: func.FuncOp) -> Binding:
        reads: dict[str, tuple[int, int]] = {}
        checks, static = [], []
        syms = symbols(fn)
        for i, t in enumerate(fn.function_type.inputs.data):
            if not isinstance(t, TensorType):
                continue
            for d, e in enumerate(dims_of(t)):
                if isinstance(e, int):
                    static.append((i, d, e))
                elif e in syms and e not in reads:
                    reads[e] = (i, d)
                elif e != "?":
                    checks.append((i, d, e))
        missing = sorted(set(syms) - set(reads))
        if missing:
            raise ShapeBindError(f"symbols {missing} appear in no argument dim; cannot bind them at call time")
        return Binding(syms, reads, checks, static, assumes(fn))

    def __call__(self, tensors: list) -> dict[str, int]:
        """The symbols' values for argument `tensors`; ShapeBindError if a size breaks a bound or constraint."""
        env = {}
        for name, (i, d) in self.reads.items():
            n = int(tensors[i].shape[d])
            s = self.symbols[name]
            if n < s.lo or (s.hi is not None and n > s.hi):
                hi = "inf" if s.hi is None else s.hi
                raise ShapeBindError(f"dim {d} of argument {i} is {n}, outside the compiled range "
                                     f"{name} in [{s.lo}, {hi}]")
            env[name] = n
        for i, d, e in self.checks:
            want = evaluate(e, env)
            if int(tensors[i].shape[d]) != want:
                raise ShapeBindError(f"dim {d} of argument {i} is {tensors[i].shape[d]}; the compiled code needs "
                                     f"{e} = {want}")
        for i, d, n in self.static:
            if tensors[i].shape[d] != n:
                raise ShapeBindError(f"dim {d} of argument {i} is {tensors[i].shape[d]}; it was compiled static at {n}")
        for a in self.assumes:
            if not evaluate(a, env):
                raise ShapeBindError(f"the sizes {env} break the constraint {a} recorded at export")
        return env


def map_types(module: ModuleOp, fn) -> None:
    """Replace, in place, every value type and function signature type `t` of `module` by `fn(t)`."""
    for op in module.walk():
        if isinstance(op, func.FuncOp):
            ft = op.function_type
            op.function_type = type(ft).from_lists([fn(t) for t in ft.inputs.data], [fn(t) for t in ft.outputs.data])
        for region in op.regions:
            for block in region.blocks:
                for a in block.args:
                    a._type = fn(a.type)
        for r in op.results:
            r._type = fn(r.type)


def instantiate(module: ModuleOp, env: dict[str, int]) -> ModuleOp:
    """A static copy of `module` with every `?` dim evaluated under `env` (symbol attributes dropped)."""
    out = module.clone()
    for op in out.walk():
        if isinstance(op, func.FuncOp):
            op.attributes.pop(SYMBOLS, None)
            op.attributes.pop(ASSUMES, None)
        elif op.name == "graph.slice" and op.properties.get("end_expr") is not None:
            end = int(evaluate(op.properties.pop("end_expr").data, env))
            size = _static(op.operands[0].type, env).get_shape()[op.properties["dim"].value.data]
            op.properties["end"] = IntegerAttr(max(0, min(end, size)), i64)
    map_types(out, lambda t: _static(t, env))
    return out


def rename(module: ModuleOp, names: dict[str, str]) -> None:
    """Rename shape symbols in every size expression of `module` (`{"s70": "s0"}`, all at once) and print the
    results canonically (`to_str`); a symbol mapped to a number (`{"s27": "32"}`, one export specialized)
    makes the dims it alone determines static."""
    if not names:
        return
    table = {size_expr.symbol(old): expr(new) for old, new in names.items()}
    memo: dict[str, str | int] = {}

    def sub(text: str) -> str | int:
        if text not in memo:
            memo[text] = _substitute(text, table, names)
        return memo[text]

    def fix(t):
        if not is_dynamic(t):
            return t
        return with_dims(t, tuple(sub(d) if isinstance(d, str) and d != "?" else d for d in dims_of(t)))

    map_types(module, fix)
    for op in module.walk():
        if op.properties.get("end_expr") is not None:
            op.properties["end_expr"] = StringAttr(str(sub(op.properties["end_expr"].data)))
    for op in module.ops:
        if isinstance(op, func.FuncOp) and ASSUMES in op.attributes:
            op.attributes[ASSUMES] = ArrayAttr([StringAttr(str(sub(a))) for a in assumes(op)])


def _substitute(text: str, table: dict, names: dict[str, str]) -> str | int:
    """`text` with its symbols replaced by `table`: an int where nothing symbolic is left, else canonical text.
    Text that is not a size expression (a guard export wrote in a form sizes do not have) is renamed word by
    word and left to fail where it is evaluated."""
    try:
        e = expr(text).xreplace(table)
    except ShapeBindError:
        return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: names[m.group(1)], text)
    return int(e) if e.is_Integer else to_str(e)


def _static(t, env: dict[str, int]):
    if not is_dynamic(t):
        return t
    dims = []
    for d in dims_of(t):
        if isinstance(d, str):
            if d == "?":
                raise ShapeBindError(f"a `?` dim of {t} has no size expression; it cannot be made static")
            d = int(evaluate(d, env))
        dims.append(d)
    return TensorType(t.element_type, dims)


def is_dynamic_module(module: ModuleOp) -> bool:
    return any(isinstance(op, func.FuncOp) and SYMBOLS in op.attributes for op in module.ops)


__all__ = [
    "DYNAMIC",
    "Binding",
    "ShapeBindError",
    "Symbol",
    "equal",
    "evaluate",
    "expr",
    "facts",
    "hint_shape",
    "instantiate",
    "is_dynamic_module",
    "prove",
    "set_symbols",
    "simplify",
    "symbols",
    "to_str",
    "with_facts",
]
