"""Symbolic dims in the CPU lowering: size-generic kernels for dynamic modules.

A dynamic module's types carry a size expression per `?` dim (`"s0"`, `"2*s0"`, `"s0 + 1"`; see
compiler/dialects/types.py). lower.py keeps such a dim as that string wherever it keeps a shape;
the MLIR it prints has `?` there (`memref<?x16xf32>`), and every size the IR needs as a value
(`tensor.empty`, a slice size, an `expand_shape` output) is computed from the kernel's symbol
arguments: one trailing `index` argument per shape symbol the kernel uses (`%sym_s0: index`), which
the runner fills from the call's binding. This module holds what that needs and nothing static
code uses: building a size expression as `arith` ops on `index`, proving an index range or a reshape's
regrouping from the size expressions (symbolic.prove, with the symbols' bounds and export's assertions;
sampled bindings only where sympy cannot decide), and compiling size expressions into Python for the
runner.
"""

from __future__ import annotations

from typing import Callable

import sympy

from solder.backends.cpu.lower_values import Aff
from solder.compiler.dialects import size_expr, symbolic
from solder.compiler.errors import SolderError


class SymbolicUnsupported(SolderError):
    """A size expression the generic lowering cannot compute (the kernel then runs per size or eagerly)."""


def is_static(dims) -> bool:
    return all(isinstance(d, int) for d in dims)


def product(dims) -> int | str:
    """The product of `dims`: an int when all are static, else its expression's canonical text."""
    if is_static(dims):
        p = 1
        for d in dims:
            p *= d
        return p
    return symbolic.to_str(sympy.Mul(*[symbolic.expr(d) for d in dims]))


def evaluate(d, env: dict[str, int]) -> int:
    return d if isinstance(d, int) else int(symbolic.evaluate(d, env))


class IndexExprs:
    """Emits size expressions as `arith` ops on `index`, once each: `const(n)` and `binop(kind, a, b)` build the
    ops (mlir_builder.IR), `symbol(name)` gives a shape symbol's value."""

    def __init__(self, const: Callable[[int], object], binop: Callable[[str, object, object], object],
                 symbol: Callable[[str], object]) -> None:
        self._const, self._binop, self._symbol = const, binop, symbol
        self._memo: dict[object, object] = {}

    def value(self, d):
        if d == "?":
            raise SymbolicUnsupported("a `?` dim without a size expression")
        try:
            e = symbolic.expr(d)
        except symbolic.ShapeBindError as err:
            raise SymbolicUnsupported(str(err)) from None
        return self._value(e, d)

    def _value(self, e, src):
        if e not in self._memo:
            self._memo[e] = self._node(e, src)
        return self._memo[e]

    def _chain(self, op: str, args, src):
        acc = self._value(args[0], src)
        for a in args[1:]:
            acc = self._binop(op, acc, self._value(a, src))
        return acc

    def _node(self, e, src):
        if e.is_Integer:
            return self._const(int(e))
        if e.is_Symbol:
            return self._symbol(e.name)
        if isinstance(e, size_expr.FloorDiv):
            return self._chain("floordivsi", e.args, src)
        if isinstance(e, (sympy.floor, sympy.ceiling)):
            num, den = sympy.fraction(sympy.together(e.args[0]))
            if den != 1:
                op = "floordivsi" if isinstance(e, sympy.floor) else "ceildivsi"
                return self._binop(op, self._value(num, src), self._value(den, src))
        elif isinstance(e, (size_expr.PythonMod, sympy.Mod)):
            return self._chain("remsi", e.args, src)
        elif isinstance(e, (sympy.Max, sympy.Min)):
            return self._chain("maxsi" if isinstance(e, sympy.Max) else "minsi", e.args, src)
        elif isinstance(e, sympy.Add):
            return self._chain("addi", e.args, src)
        elif isinstance(e, sympy.Mul) and all(a.is_Integer or not a.is_Rational for a in e.args):
            return self._chain("muli", e.args, src)
        elif isinstance(e, sympy.Pow) and e.exp.is_Integer and e.exp > 0:
            return self._chain("muli", [e.base] * int(e.exp), src)
        raise SymbolicUnsupported(f"size expression {src!r}: cannot compute {symbolic.to_str(e)!r} as index "
                                  "arithmetic")


class Samples(list):
    """Sampled bindings of a function's symbols (a list of dicts), with the facts that prove sizes symbolically:
    `bounds` ((name, lo, hi), ...) and export's `assumes`."""

    bounds: tuple = ()
    assumes: tuple = ()


def _facts(samples) -> tuple[tuple, tuple]:
    return getattr(samples, "bounds", ()), getattr(samples, "assumes", ())


def in_bounds(const: int, k: int, n, size, samples: list[dict[str, int]]) -> bool:
    """Whether reading `const + k*i` for i in [0, n) stays inside a dim of `size`.

    Static sizes are checked exactly; with a symbolic one, a read of the whole dim is accepted, anything
    else where the size expressions prove it, or (sympy cannot decide) where it holds at every sampled binding
    (the function's example, smallest and a large size)."""
    if isinstance(n, int) and isinstance(size, int):
        return k > 0 and const >= 0 and const + (n - 1) * k < size
    if k == 1 and const == 0 and n == size:
        return True
    if k <= 0 or const < 0:
        return False
    try:
        n_e, size_e = symbolic.expr(n), symbolic.expr(size)
        proof = symbolic.prove(sympy.Lt(const + (n_e - 1) * k, size_e), *_facts(samples))
    except (symbolic.ShapeBindError, TypeError):
        proof = None
    if proof is not None or not samples:
        return bool(proof)
    try:
        return all(const + (evaluate(n, env) - 1) * k < evaluate(size, env) for env in samples)
    except symbolic.ShapeBindError:
        return False


def sample_bindings(syms: dict[str, symbolic.Symbol], assumes=()) -> Samples:
    """A few bindings of the function's symbols to check symbolic index ranges against (the example sizes, the
    smallest and a large one, each moved up to the next binding that meets export's `assumes`), carrying the
    bounds and assumptions that prove sizes without them."""
    def clip(s, n):
        return n if s.hi is None else min(n, s.hi)
    out = Samples()
    out.bounds = tuple((s.name, s.lo, s.hi) for s in syms.values())
    out.assumes = tuple(assumes)
    if not syms:
        return out
    for pick in (lambda s: s.hint, lambda s: max(s.lo, 2), lambda s: clip(s, 4 * s.hint + 7)):
        env = _meeting(syms, {s.name: pick(s) for s in syms.values()}, out.assumes)
        if env is not None:
            out.append(env)
    return out


def _meeting(syms, env: dict[str, int], assumes: tuple, tries: int = 16) -> dict[str, int] | None:
    """`env`, or the first of `env + i` (every symbol moved up by i < tries, within bounds) that meets `assumes`."""
    for i in range(tries):
        cand = {n: v + i for n, v in env.items()}
        if any(syms[n].hi is not None and v > syms[n].hi for n, v in cand.items()):
            return None
        try:
            if all(symbolic.evaluate(a, cand) for a in assumes):
                return cand
        except symbolic.ShapeBindError:
            return env
    return None


def _same(a, b) -> bool:
    """Whether two dims are the same size expression (the same text, or texts sympy reads as one)."""
    if a == b:
        return True
    if isinstance(a, int) or isinstance(b, int):
        return False
    try:
        return symbolic.expr(a) == symbolic.expr(b)
    except symbolic.ShapeBindError:
        return False


def split_sub(src: tuple, dst: tuple):
    """If `dst` only splits dims of `src` ([B*T, C] -> [B, T, C]): each src dim as an affine expression of dst
    dims, or None. A dim may be symbolic (a string): it must reappear as one dst dim."""
    sub, j = [], 0
    for n in src:
        group, p = [], 1
        if isinstance(n, str):
            if j < len(dst) and _same(dst[j], n):
                group, j = [j], j + 1
            while j < len(dst) and dst[j] == 1 and (j + 1 == len(dst) or not _same(dst[j + 1], n)):
                j += 1  # unit dims after it belong to it (no stride)
            if not group:
                return None
            sub.append(Aff.dim(group[0]))
            continue
        while j < len(dst) and isinstance(dst[j], int) and (p < n or (not group and n == 1)) and p * dst[j] <= n:
            group.append(j)
            p *= dst[j]
            j += 1
        if p != n or not group:
            return None
        coefs, c = [], 1
        for kk in reversed(group):
            coefs.append((kk, c))
            c *= dst[kk]
        sub.append(Aff(0, tuple(sorted((kk, c) for kk, c in coefs if dst[kk] != 1))))
    return sub if j == len(dst) else None


def regroup(src: tuple, dst: tuple, samples: list[dict[str, int]]):
    """How a reshape between `src` and `dst` regroups dims: ("expand", groups of dst dims per src dim) or
    ("collapse", groups of src dims per dst dim), where every group's product equals its dim. Proved from the
    size expressions first (with `samples`' bounds and assumptions); where sympy cannot decide, accepted if it
    holds at every sampled binding. None otherwise."""
    bounds, assumes = _facts(samples)
    for kind, few, many in (("expand", src, dst), ("collapse", dst, src)):
        groups = _proved_groups(few, many, bounds, assumes)
        if groups is not None:
            return kind, groups
    if not samples:
        return None
    try:
        src_v = [[evaluate(d, e) for d in src] for e in samples]
        dst_v = [[evaluate(d, e) for d in dst] for e in samples]
    except symbolic.ShapeBindError:
        return None
    for kind, a, b in (("expand", src_v, dst_v), ("collapse", dst_v, src_v)):
        groups = _groups(a, b)
        if groups is not None:
            return kind, groups
    return None


def _proved_groups(few: tuple, many: tuple, bounds: tuple, assumes: tuple):
    """Consecutive groups of `many`'s dims whose products are proved equal to `few`'s dims (trailing unit dims
    join the last group), or None."""
    try:
        few_e = [symbolic.expr(d) for d in few]
        many_e = [symbolic.expr(d) for d in many]
    except symbolic.ShapeBindError:
        return None
    groups, j = [], 0
    for i, f in enumerate(few_e):
        group, p = [], sympy.Integer(1)
        while j < len(many_e):
            group.append(j)
            p, j = p * many_e[j], j + 1
            if symbolic.equal(p, f, bounds, assumes):
                break
        else:
            return None
        if i == len(few_e) - 1:
            while j < len(many_e) and many_e[j] == 1:
                group.append(j)
                j += 1
        groups.append(group)
    return groups if j == len(many_e) and all(groups) else None


def _groups(few: list[list[int]], many: list[list[int]]):
    """Consecutive groups of `many`'s dims whose products are `few`'s dims, identical at every sample."""
    groups, j = [], 0
    n_many = len(many[0])
    for i in range(len(few[0])):
        group = []
        while j < n_many:
            group.append(j)
            j += 1
            prods = [_product_at(m, group) for m in many]
            if all(p == f[i] for p, f in zip(prods, few)) and not (j < n_many and all(m[j] == 1 for m in many)
                                                                   and i == len(few[0]) - 1):
                break
            if any(p > f[i] for p, f in zip(prods, few)):
                return None
        else:
            if not group or any(_product_at(m, group) != f[i] for m, f in zip(many, few)):
                return None
        groups.append(group)
    return groups if j == n_many and all(groups) else None


def _product_at(vals: list[int], idx: list[int]) -> int:
    p = 1
    for k in idx:
        p *= vals[k]
    return p


def shape_fn(dims: tuple) -> Callable[[dict[str, int]], tuple[int, ...]]:
    """A fast `env -> concrete shape` for `dims` (the runner calls it per launch), compiled once."""
    if is_static(dims):
        shape = tuple(dims)
        return lambda env: shape
    try:
        return size_expr.compile_shape(tuple(d if isinstance(d, int) else symbolic.expr(d) for d in dims))
    except (symbolic.ShapeBindError, size_expr.SizeExprError):
        return lambda env: tuple(evaluate(d, env) for d in dims)
