"""Shape symbols of a dynamic function: their bounds, how call arguments bind them, and instantiation.

A function with `?` dims carries

    func.func @forward(%x: tensor<?x64xf32, ["s0"]>) ... attributes {
        graph.symbols = {s0 = array<i64: 2, 512, 8>},      // min, max (-1: unbounded), example size
        graph.assumes = ["Eq(Mod(s0, 2), 0)"]}            // export's extra run-time assertions, if any

`bind` reads the symbols' values off the argument tensors' sizes and checks bounds, repeated
symbols and assertions (`ShapeBindError` says which); `evaluate` computes a size expression;
`instantiate` turns a dynamic module into the static module for one binding (what a backend that
needs static sizes compiles, once per binding).
"""

from __future__ import annotations

import ast
import operator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

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


def _max(*a):
    return max(a)


def _min(*a):
    return min(a)


_FUNCS = {
    "Max": _max, "Min": _min, "max": _max, "min": _min,  # torch 2.11's export writes lowercase max/min
    "FloorDiv": operator.floordiv, "Mod": operator.mod, "PythonMod": operator.mod,
    "CeilDiv": lambda a, b: -(-a // b), "CleanDiv": operator.floordiv, "IntTrueDiv": operator.truediv,
    "Eq": operator.eq, "Ne": operator.ne, "Lt": operator.lt, "Le": operator.le, "Gt": operator.gt,
    "Ge": operator.ge, "StrictLessThan": operator.lt, "LessThan": operator.le, "GreaterThan": operator.ge,
    "StrictGreaterThan": operator.gt, "And": lambda *a: all(a), "Or": lambda *a: any(a),
    "Not": operator.not_, "TruncToInt": int, "FloorToInt": int, "CeilToInt": lambda a: -int(-a // 1),
    "Abs": abs,
}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod, ast.Pow: operator.pow, ast.Div: operator.truediv, ast.BitAnd: operator.and_,
           ast.BitOr: operator.or_}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge}


def evaluate(expr: str, env: dict[str, int]):
    """The value of a size expression (`2*s0`, `FloorDiv(s0, 2)`, `Eq(Mod(s0, 2), 0)`) under `env`."""
    try:
        return _eval(_parse(expr), env)
    except (SyntaxError, KeyError, TypeError, ZeroDivisionError) as e:
        raise ShapeBindError(f"cannot evaluate the size expression {expr!r} with {env}: {type(e).__name__}: {e}") \
            from None


@lru_cache(maxsize=4096)
def _parse(expr: str) -> ast.AST:
    return ast.parse(expr, mode="eval").body


def _eval(n: ast.AST, env: dict[str, int]):
    if isinstance(n, ast.Constant) and isinstance(n.value, (int, bool, float)):
        return n.value
    if isinstance(n, ast.Name):
        if n.id in ("True", "False"):
            return n.id == "True"
        return env[n.id]
    if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
        return _BINOPS[type(n.op)](_eval(n.left, env), _eval(n.right, env))
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.Not, ast.Invert)):
        v = _eval(n.operand, env)
        return -v if isinstance(n.op, ast.USub) else not v
    if isinstance(n, ast.Compare):
        left, ok = _eval(n.left, env), True
        for op, right in zip(n.ops, n.comparators):
            r = _eval(right, env)
            ok = ok and _CMPOPS[type(op)](left, r)
            left = r
        return ok
    if isinstance(n, ast.BoolOp):
        vals = [_eval(v, env) for v in n.values]
        return all(vals) if isinstance(n.op, ast.And) else any(vals)
    if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _FUNCS and not n.keywords:
        return _FUNCS[n.func.id](*[_eval(a, env) for a in n.args])
    raise TypeError(f"unsupported expression node {ast.dump(n)[:60]}")


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
    """Rename shape symbols in every type expression of `module` (`{"s70": "s0"}`), in one pass; a symbol
    mapped to a number (`{"s27": "32"}`) makes the dims it alone determines static."""
    import re

    if not names:
        return
    pat = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")

    def sub(e: str) -> str:
        return pat.sub(lambda m: names[m.group(1)], e)

    def one(d):
        if not isinstance(d, str):
            return d
        d = sub(d)  # a name mapped to a number (a symbol export specialized) can leave a constant expression
        return d if re.search(r"[A-Za-z_]", d) else int(evaluate(d, {}))

    def fix(t):
        if not is_dynamic(t):
            return t
        return with_dims(t, tuple(one(d) for d in dims_of(t)))

    map_types(module, fix)
    for op in module.walk():
        if op.properties.get("end_expr") is not None:
            op.properties["end_expr"] = StringAttr(sub(op.properties["end_expr"].data))
    for op in module.ops:
        if isinstance(op, func.FuncOp) and ASSUMES in op.attributes:
            op.attributes[ASSUMES] = ArrayAttr([StringAttr(sub(a)) for a in assumes(op)])


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
    "evaluate",
    "hint_shape",
    "instantiate",
    "is_dynamic_module",
    "set_symbols",
    "symbols",
]
