"""Size expressions as sympy expressions: parse, print, compile for evaluation, and prove equalities.

The IR keeps a `?` dim's size as text (`"2*s0"`, `"(s0//2)"`, `"FloorDiv(s0, 2)"`, export's
`"Eq(Mod(s0, 2), 0)"` assertions); everything that computes with a size reads it through `expr`, which
parses that text once into a sympy expression over integer, nonnegative symbols. torch's function names
map to sympy with integer semantics: FloorDiv and `//` are `FloorDiv` (integer floor division, a sympy
Function), Mod/PythonMod are `PythonMod` (the sign of the divisor, as Python's `%`), CeilDiv is
`FloorDiv(a + b - 1, b)`. `to_str` prints an expression back in the
form torch itself prints (`(s0//2)`, `Mod(s0, 2)`, `2*s0`), which `expr` reads again.

`compile_expr` turns an expression into a Python function of a binding (`env -> value`) with integer
operators, built once per expression; `symbolic.evaluate` caches it per string, so a call costs one
dictionary lookup and a few integer operations. `prove` decides an equality or inequality of sizes
symbolically, using the symbols' bounds and export's assertions; where sympy cannot decide it says so
(None) and the caller falls back to sampled sizes.

Parsing walks Python's `ast` and admits only numbers, names, arithmetic, comparisons and the known
functions: a loaded artifact's expressions are never handed to `eval` or to sympy's own parser.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from itertools import count

import sympy
from sympy.printing.str import StrPrinter

from solder.compiler.errors import SolderError


class SizeExprError(SolderError, ValueError):
    """A size expression that does not parse, or uses an operation sizes do not have."""


class FloorDiv(sympy.Function):
    """Integer floor division `a // b` of sizes. sympy's `floor(a/b)` means the same but asks its assumption
    system on every construction (milliseconds); this one simplifies only what sizes need: numbers, a divisor
    of 1, a common factor of divisor and every term (`FloorDiv(64*s0, 128)` is `FloorDiv(s0, 2)`, and
    `FloorDiv(2*k, 2)` is `k`), and nested divisions by numbers."""

    is_integer = True

    @classmethod
    def eval(cls, a, b):
        if b == 1:
            return a
        if a.is_Integer and b.is_Integer and b != 0:
            return sympy.Integer(int(a) // int(b))
        if a == 0:
            return sympy.Integer(0)
        if isinstance(a, FloorDiv) and b.is_Integer and b > 0 and a.args[1].is_Integer and a.args[1] > 0:
            return FloorDiv(a.args[0], a.args[1] * b)
        if not b.is_Integer or b <= 0:
            return None
        g = int(b)
        for term in sympy.Add.make_args(a):
            coef, _ = term.as_coeff_Mul()
            if not coef.is_Integer:
                return None
            g = sympy.igcd(g, int(coef))
            if g == 1:
                return None
        if g == int(b):
            return sympy.expand(a / g)
        return FloorDiv(sympy.expand(a / g), sympy.Integer(int(b) // g))

    def _eval_is_nonnegative(self):
        a, b = self.args
        if a.is_nonnegative and b.is_positive:
            return True
        return None


class PythonMod(sympy.Function):
    """Integer `a % b` of sizes, with the sign of the divisor as Python's `%` (torch's PythonMod). Like
    `FloorDiv`, a light stand-in for sympy's Mod, which asks its assumption system on every construction:
    terms that are multiples of a numeric divisor drop out (`PythonMod(2*k + 5, 2)` is 1)."""

    is_integer = True

    @classmethod
    def eval(cls, a, b):
        if b == 1 or a == 0:
            return sympy.Integer(0)
        if a.is_Integer and b.is_Integer and b != 0:
            return sympy.Integer(int(a) % int(b))
        if a == b:
            return sympy.Integer(0)
        if not b.is_Integer or b <= 0:
            return None
        kept = []
        for term in sympy.Add.make_args(a):
            coef, rest = term.as_coeff_Mul()
            if coef.is_Integer and int(coef) % int(b) == 0 and rest.is_integer:
                continue
            kept.append(term)
        rest = sympy.Add(*kept)
        if rest.is_Integer:
            return sympy.Integer(int(rest) % int(b))
        return PythonMod(rest, b) if len(kept) < len(sympy.Add.make_args(a)) else None

    def _eval_is_nonnegative(self):
        return True if self.args[1].is_positive else None


def _floordiv(a, b):
    return FloorDiv(a, b)


def _ceildiv(a, b):
    """`-(-a // b)`, written as torch does, `(a + b - 1) // b` (sizes divide by positive numbers)."""
    return FloorDiv(a + b - 1, b)


def _and(*a):
    return sympy.And(*a)


def _or(*a):
    return sympy.Or(*a)


FUNCS = {
    "Max": sympy.Max, "Min": sympy.Min, "max": sympy.Max, "min": sympy.Min,  # torch 2.11 writes lowercase
    "FloorDiv": _floordiv, "CleanDiv": _floordiv, "floor": sympy.floor, "FloorToInt": sympy.floor,
    "TruncToInt": sympy.floor, "CeilDiv": _ceildiv, "ceiling": sympy.ceiling, "CeilToInt": sympy.ceiling,
    "Mod": PythonMod, "PythonMod": PythonMod, "ModularIndexing": lambda x, d, m: PythonMod(FloorDiv(x, d), m),
    "Identity": lambda x: x, "IntTrueDiv": lambda a, b: a / b, "Abs": sympy.Abs,
    "ToFloat": lambda x: x, "FloatTrueDiv": lambda a, b: a / b,  # interpolate's scale: TruncToInt(1.5*ToFloat(s0))
    "PowByNatural": lambda a, b: _power(a, b, f"PowByNatural({a}, {b})"),
    "Pow": lambda a, b: _power(a, b, f"Pow({a}, {b})"),
    "Eq": sympy.Eq, "Ne": sympy.Ne, "Lt": sympy.Lt, "Le": sympy.Le, "Gt": sympy.Gt, "Ge": sympy.Ge,
    "StrictLessThan": sympy.Lt, "LessThan": sympy.Le, "GreaterThan": sympy.Ge, "StrictGreaterThan": sympy.Gt,
    "And": _and, "Or": _or, "Not": sympy.Not,
}
"""torch's (and sympy's printed) function names in size expressions -> their sympy builders."""

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.FloorDiv: _floordiv, ast.Mod: PythonMod, ast.Div: lambda a, b: a / b,
           ast.BitAnd: _and, ast.BitOr: _or}
_CONSTANTS = {"True": sympy.true, "False": sympy.false}
_CMPOPS = {ast.Eq: sympy.Eq, ast.NotEq: sympy.Ne, ast.Lt: sympy.Lt, ast.LtE: sympy.Le, ast.Gt: sympy.Gt,
           ast.GtE: sympy.Ge}


MAX_TEXT = 4096
MAX_POWER = 64


@lru_cache(maxsize=None)
def symbol(name: str) -> sympy.Symbol:
    """The shape symbol `name`: an integer >= 0 (a size)."""
    return sympy.Symbol(name, integer=True, nonnegative=True)


@lru_cache(maxsize=8192)
def parse(text: str) -> sympy.Expr:
    """The sympy expression of a size expression's text; SizeExprError if it is not one."""
    if len(text) > MAX_TEXT:
        raise SizeExprError(f"size expression of {len(text)} characters; at most {MAX_TEXT} are read")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
        return _node(tree, text)
    except (SyntaxError, ValueError, RecursionError) as e:
        if isinstance(e, SizeExprError):
            raise
        raise SizeExprError(f"size expression {text!r} does not parse: {getattr(e, 'msg', e)}; expected integer "
                            "arithmetic over shape symbols (2*s0, FloorDiv(s0, 2), Eq(Mod(s0, 2), 0))") from None


def _node(n: ast.AST, text: str):
    if isinstance(n, ast.Constant) and type(n.value) in (int, bool, float):
        v = n.value
        return sympy.true if v is True else sympy.false if v is False else sympy.sympify(v)
    if isinstance(n, ast.Name):
        return _CONSTANTS[n.id] if n.id in _CONSTANTS else symbol(n.id)
    if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow):
        return _power(_node(n.left, text), _node(n.right, text), text)
    if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
        return _BINOPS[type(n.op)](_node(n.left, text), _node(n.right, text))
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
        return -_node(n.operand, text)
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.Not, ast.Invert)):
        return sympy.Not(_node(n.operand, text))
    if isinstance(n, ast.Compare):
        sides = [_node(x, text) for x in (n.left, *n.comparators)]
        return sympy.And(*[_CMPOPS[type(op)](a, b) for op, a, b in zip(n.ops, sides, sides[1:])])
    if isinstance(n, ast.BoolOp):
        return (sympy.And if isinstance(n.op, ast.And) else sympy.Or)(*[_node(v, text) for v in n.values])
    if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in FUNCS and not n.keywords:
        return FUNCS[n.func.id](*[_node(a, text) for a in n.args])
    raise SizeExprError(f"size expression {text!r}: {ast.unparse(n)!r} is not size arithmetic; known functions: "
                        f"{', '.join(sorted(FUNCS))}")


def _power(base, exp, text: str):
    """`base**exp` for a small integer exponent (sizes have no other powers; a huge one would not finish)."""
    if not (exp.is_Integer and 0 <= exp <= MAX_POWER):
        raise SizeExprError(f"size expression {text!r}: exponent {exp} is not an integer in [0, {MAX_POWER}]")
    return sympy.Pow(base, exp)


def as_expr(e) -> sympy.Expr:
    """`e` (an int, a string of the IR or a sympy expression) as a sympy expression."""
    if isinstance(e, sympy.Basic):
        return e
    if isinstance(e, (bool, int)):
        return sympy.Integer(e)
    if isinstance(e, str):
        return parse(e)
    raise TypeError(f"a size expression is an int, a string or a sympy expression; got {type(e).__name__}")


def _division(e) -> tuple | None:
    """(numerator, denominator) of `e` if it is a quotient with an integer denominator other than 1."""
    num, den = sympy.fraction(sympy.together(e))
    return (num, den) if den != 1 else None


class _Printer(StrPrinter):
    """sympy's printing, with integer division and modulo in the form torch prints them."""

    def _operand(self, e) -> str:
        s = self._print(e)
        return s if e.is_Atom else f"({s})"

    def _print_FloorDiv(self, e):
        return f"({self._operand(e.args[0])}//{self._operand(e.args[1])})"

    def _print_floor(self, e):
        q = _division(e.args[0])
        return f"({self._operand(q[0])}//{self._operand(q[1])})" if q else f"floor({self._print(e.args[0])})"

    def _print_ceiling(self, e):
        q = _division(e.args[0])
        return f"CeilDiv({self._print(q[0])}, {self._print(q[1])})" if q else f"ceiling({self._print(e.args[0])})"

    def _print_PythonMod(self, e):
        return f"Mod({self._print(e.args[0])}, {self._print(e.args[1])})"


_PRINTER = _Printer()


def to_str(e) -> str:
    """The canonical text of a size expression (an int prints as its digits)."""
    return _PRINTER.doprint(as_expr(e))


class _PyPrinter:
    """Python source for an expression of `env`, with integer `//` and `%` (a binding's values are ints)."""

    def __call__(self, e) -> str:
        method = getattr(self, "_" + type(e).__name__, None)
        if method is not None:
            return method(e)
        for cls in type(e).__mro__:  # Max/Min/Eq/... by their sympy class
            method = getattr(self, "_" + cls.__name__, None)
            if method is not None:
                return method(e)
        raise SizeExprError(f"size expression {to_str(e)!r}: cannot compute {type(e).__name__} from integer sizes")

    def _Symbol(self, e):
        return f"env[{e.name!r}]"

    def _Integer(self, e):
        return str(int(e))

    def _Rational(self, e):
        return f"({e.p}/{e.q})"

    def _Float(self, e):
        return repr(float(e))

    def _BooleanTrue(self, e):
        return "True"

    def _BooleanFalse(self, e):
        return "False"

    def _Add(self, e):
        return "(" + " + ".join(self(a) for a in e.args) + ")"

    def _Mul(self, e):
        q = _division(e)
        if q is not None:
            return f"({self(q[0])} / {self(q[1])})"
        return "(" + " * ".join(self(a) for a in e.args) + ")"

    def _Pow(self, e):
        base, exp = e.args
        if exp.is_Integer and exp < 0:
            return f"(1 / {self(base ** -exp)})"
        return f"({self(base)} ** {self(exp)})"

    def _FloorDiv(self, e):
        return f"({self(e.args[0])} // {self(e.args[1])})"

    def _floor(self, e):
        q = _division(e.args[0])
        return f"({self(q[0])} // {self(q[1])})" if q else f"_floor({self(e.args[0])})"

    def _ceiling(self, e):
        q = _division(e.args[0])
        return f"(-((-{self(q[0])}) // {self(q[1])}))" if q else f"_ceil({self(e.args[0])})"

    def _PythonMod(self, e):
        return f"({self(e.args[0])} % {self(e.args[1])})"

    def _Max(self, e):
        return "max(" + ", ".join(self(a) for a in e.args) + ")"

    def _Min(self, e):
        return "min(" + ", ".join(self(a) for a in e.args) + ")"

    def _Abs(self, e):
        return f"abs({self(e.args[0])})"

    def _Relational(self, e):
        return f"({self(e.lhs)} {e.rel_op} {self(e.rhs)})"

    def _And(self, e):
        return "(" + " and ".join(self(a) for a in e.args) + ")"

    def _Or(self, e):
        return "(" + " or ".join(self(a) for a in e.args) + ")"

    def _Not(self, e):
        return f"(not {self(e.args[0])})"


def _floor_any(x):
    return x // 1 if isinstance(x, int) else int(x // 1)


def _ceil_any(x):
    return -_floor_any(-x)


_PY = _PyPrinter()
_GLOBALS = {"__builtins__": {"max": max, "min": min, "abs": abs}, "_floor": _floor_any, "_ceil": _ceil_any}


def python_source(e) -> str:
    """Python source computing `e` from a binding named `env` (integer operators)."""
    return _PY(as_expr(e))


def compile_expr(e):
    """A Python function `env -> value` computing the size expression `e` with integer arithmetic."""
    src = f"lambda env: {python_source(e)}"
    return eval(compile(src, "<size expression>", "eval"), dict(_GLOBALS))  # noqa: S307 - source built above


def compile_shape(dims: tuple):
    """A function `env -> tuple of ints` for dims that are ints and size expressions, built once."""
    parts = [str(d) if isinstance(d, int) else python_source(d) for d in dims]
    src = f"lambda env: ({''.join(p + ', ' for p in parts)})"
    return eval(compile(src, "<shape>", "eval"), dict(_GLOBALS))  # noqa: S307 - source built above


def free_names(e) -> set[str]:
    """The shape symbols `e` reads."""
    return {s.name for s in as_expr(e).free_symbols}


@lru_cache(maxsize=4096)
def simplify(e) -> sympy.Expr:
    """`e` simplified (sympy's simplify, cached: size expressions are small and repeat)."""
    return sympy.simplify(as_expr(e))


_fresh = count()


@lru_cache(maxsize=256)
def _facts(bounds: tuple, assumes: tuple, shift: bool = False) -> dict:
    """Substitutions that build export's assertions and the symbols' bounds into an expression:
    `Eq(Mod(s, m), 0)` makes `s` `m*k` for a fresh integer `k`, `Eq(s, e)` makes `s` `e`; then a symbol
    fixed by its bounds becomes a number, and one with lower bound `lo` >= 1 becomes positive (or, with
    `shift`, for inequalities, `lo + t` with `t` >= 0)."""
    lows = {name: lo for name, lo, _ in bounds}
    sub: dict = {}
    for a in assumes:
        _assume(as_expr(a), sub, lows)
    for name, lo, hi in bounds:
        s = symbol(name)
        if s in sub:
            continue
        if hi is not None and lo == hi:
            sub[s] = sympy.Integer(lo)
        elif shift and lo >= 1:
            sub[s] = lo + sympy.Symbol(f"_t{next(_fresh)}", integer=True, nonnegative=True)
        elif lo >= 1:
            sub[s] = sympy.Symbol(name, integer=True, positive=True)
    return sub


def with_facts(e, bounds: tuple = (), assumes: tuple = ()) -> sympy.Expr:
    """`e` with the symbols' bounds and export's assertions built in (`_facts`, the same fresh symbols for the
    same facts): where export asserts `Eq(Mod(s0, 2), 0)`, `(s0//2)` is `k` and `s0` is `2*k`, so products of
    sizes compare and divide as sympy expressions."""
    e = as_expr(e)
    sub = _facts(tuple(bounds), tuple(assumes))
    return e.xreplace(sub) if sub else e


def _assume(a, sub: dict, lows: dict) -> None:
    if isinstance(a, sympy.And):
        for x in a.args:
            _assume(x, sub, lows)
        return
    if not isinstance(a, sympy.Eq):
        return
    for x, y in ((a.lhs, a.rhs), (a.rhs, a.lhs)):
        if isinstance(x, PythonMod) and y == 0 and x.args[0].is_Symbol and x.args[1].is_Integer \
                and x.args[0] not in sub:
            s, m = x.args
            k = sympy.Symbol(f"_k{next(_fresh)}", integer=True, nonnegative=True,
                             positive=True if lows.get(s.name, 0) >= 1 else None)
            sub[s] = m * k
            return
        if x.is_Symbol and x not in sub and x not in y.free_symbols:
            sub[x] = y
            return


def prove(claim, bounds: tuple = (), assumes: tuple = ()) -> bool | None:
    """Whether `claim` (an `Eq`/`Ne`/`Lt`/... of sizes, text or sympy) holds for every binding within `bounds`
    ((name, lo, hi or None), ...) that meets `assumes` (export's assertions): True or False when sympy decides
    it, None when it cannot."""
    return _prove(as_expr(claim), tuple(bounds), tuple(assumes))


@lru_cache(maxsize=4096)
def _prove(claim, bounds: tuple, assumes: tuple) -> bool | None:
    relation = isinstance(claim, sympy.core.relational.Relational) and not isinstance(claim, (sympy.Eq, sympy.Ne))
    sub = _facts(bounds, assumes, shift=relation)
    c = claim.xreplace(sub) if sub else claim
    if isinstance(c, sympy.logic.boolalg.BooleanAtom):
        return bool(c)
    if isinstance(c, (sympy.Eq, sympy.Ne)):
        zero = _is_zero(c.lhs - c.rhs)
        if zero is None:
            return None
        return zero if isinstance(c, sympy.Eq) else not zero
    if isinstance(c, sympy.core.relational.Relational):
        r = simplify(c)
        return bool(r) if isinstance(r, sympy.logic.boolalg.BooleanAtom) else None
    return None


_OPAQUE = (FloorDiv, PythonMod, sympy.floor, sympy.ceiling, sympy.Mod, sympy.Max, sympy.Min, sympy.Abs)


def _is_zero(d) -> bool | None:
    """Whether size difference `d` is zero: expanded first (polynomials of sizes settle there), sympy's
    simplify only where divisions, modulo or max/min are left."""
    d = sympy.expand(d)
    if d == 0 or d.is_zero is not None:
        return d == 0 or bool(d.is_zero)
    if not d.has(*_OPAQUE):
        return None
    d = simplify(d)
    return True if d == 0 else d.is_zero


def equal(a, b, bounds: tuple = (), assumes: tuple = ()) -> bool:
    """Whether sizes `a` and `b` are proved equal (False: different, or sympy cannot tell)."""
    ea, eb = as_expr(a), as_expr(b)
    return ea == eb or prove(sympy.Eq(ea, eb, evaluate=False), bounds, assumes) is True
