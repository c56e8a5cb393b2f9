"""Symbolic dims in the CPU lowering: size-generic kernels for dynamic modules.

A dynamic module's types carry a size expression per `?` dim (`"s0"`, `"2*s0"`, `"s0 + 1"`; see
compiler/dialects/types.py). lower.py keeps such a dim as that string wherever it keeps a shape;
the MLIR it prints has `?` there (`memref<?x16xf32>`), and every size the IR needs as a value
(`tensor.empty`, a slice size, an `expand_shape` output) is computed from the kernel's symbol
arguments: one trailing `index` argument per shape symbol the kernel uses (`%sym_s0: index`), which
the runner fills from the call's binding. This module holds what that needs and nothing static
code uses: emitting a size expression as `arith` on `index`, checking an index range over sampled
bindings, and compiling size expressions into Python for the runner.
"""

from __future__ import annotations

import ast
from typing import Callable

from solder.compiler.dialects import symbolic
from solder.compiler.errors import SolderError


class SymbolicUnsupported(SolderError):
    """A size expression the generic lowering cannot compute (the kernel then runs per size or eagerly)."""


def is_static(dims) -> bool:
    return all(isinstance(d, int) for d in dims)


def product(dims) -> int | str:
    """The product of `dims`: an int when all are static, else an expression string."""
    const, syms = 1, []
    for d in dims:
        if isinstance(d, int):
            const *= d
        else:
            syms.append(f"({d})")
    if not syms:
        return const
    return "*".join(([str(const)] if const != 1 else []) + syms)


def evaluate(d, env: dict[str, int]) -> int:
    return d if isinstance(d, int) else int(symbolic.evaluate(d, env))


_ARITH = {ast.Add: "addi", ast.Sub: "subi", ast.Mult: "muli", ast.FloorDiv: "floordivsi", ast.Mod: "remsi"}
_CALLS = {"FloorDiv": "floordivsi", "Mod": "remsi", "PythonMod": "remsi", "CleanDiv": "floordivsi",
          "CeilDiv": "ceildivsi", "Max": "maxsi", "Min": "minsi", "max": "maxsi", "min": "minsi"}


class IndexExprs:
    """Emits size expressions as `arith` ops on `index`, once each, through `emit(rhs) -> ssa`."""

    def __init__(self, emit: Callable[[str], str], symbol: Callable[[str], str]) -> None:
        self._emit, self._symbol = emit, symbol
        self._memo: dict[object, str] = {}

    def value(self, d: int | str) -> str:
        if d not in self._memo:
            if isinstance(d, int):
                self._memo[d] = self._emit(f"arith.constant {d} : index")
            elif d == "?":
                raise SymbolicUnsupported("a `?` dim without a size expression")
            else:
                try:
                    tree = ast.parse(d, mode="eval").body
                except SyntaxError as e:
                    raise SymbolicUnsupported(f"size expression {d!r} does not parse: {e}") from None
                self._memo[d] = self._node(tree, d)
        return self._memo[d]

    def _node(self, n: ast.AST, src: str) -> str:
        if isinstance(n, ast.Constant) and type(n.value) is int:
            return self.value(n.value)
        if isinstance(n, ast.Name):
            return self._symbol(n.id)
        if isinstance(n, ast.BinOp) and type(n.op) in _ARITH:
            a, b = self._node(n.left, src), self._node(n.right, src)
            return self._emit(f"arith.{_ARITH[type(n.op)]} {a}, {b} : index")
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return self._emit(f"arith.subi {self.value(0)}, {self._node(n.operand, src)} : index")
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _CALLS and len(n.args) >= 2:
            acc = self._node(n.args[0], src)
            for a in n.args[1:]:
                acc = self._emit(f"arith.{_CALLS[n.func.id]} {acc}, {self._node(a, src)} : index")
            return acc
        raise SymbolicUnsupported(f"size expression {src!r}: cannot compute {ast.dump(n)[:60]} as index arithmetic")


def in_bounds(const: int, k: int, n, size, samples: list[dict[str, int]]) -> bool:
    """Whether reading `const + k*i` for i in [0, n) stays inside a dim of `size`.

    Static sizes are checked exactly; with a symbolic one, a read of the whole dim is accepted, anything
    else only if it holds at every sampled binding (the function's example, smallest and a large size)."""
    if isinstance(n, int) and isinstance(size, int):
        return k > 0 and const >= 0 and const + (n - 1) * k < size
    if k == 1 and const == 0 and n == size:
        return True
    if k <= 0 or const < 0 or not samples:
        return False
    try:
        return all(const + (evaluate(n, env) - 1) * k < evaluate(size, env) for env in samples)
    except symbolic.ShapeBindError:
        return False


def sample_bindings(syms: dict[str, symbolic.Symbol]) -> list[dict[str, int]]:
    """A few bindings of the function's symbols to check symbolic index ranges against."""
    def clip(s, n):
        return n if s.hi is None else min(n, s.hi)
    envs = [{s.name: s.hint for s in syms.values()}, {s.name: max(s.lo, 2) for s in syms.values()},
            {s.name: clip(s, 4 * s.hint + 7) for s in syms.values()}]
    return [e for e in envs if e]


def split_sub(src: tuple, dst: tuple):
    """If `dst` only splits dims of `src` ([B*T, C] -> [B, T, C]): each src dim as an affine expression of dst
    dims, or None. A dim may be symbolic (a string): it must reappear as one dst dim."""
    from solder.backends.cpu.lower import Aff

    sub, j = [], 0
    for n in src:
        group, p = [], 1
        if isinstance(n, str):
            if j < len(dst) and dst[j] == n:
                group, j = [j], j + 1
            while j < len(dst) and dst[j] == 1 and (j + 1 == len(dst) or dst[j + 1] != n):
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
    """How a reshape between `src` and `dst` regroups dims, when every group's product agrees at every
    sampled binding: ("expand", groups of dst dims per src dim) or ("collapse", groups of src dims per
    dst dim); None otherwise (or with nothing to sample)."""
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
    """A fast `env -> concrete shape` for `dims` (the runner calls it per launch)."""
    if is_static(dims):
        shape = tuple(dims)
        return lambda env: shape
    parts = []
    for d in dims:
        if isinstance(d, int):
            parts.append(str(d))
            continue
        tree = ast.parse(d, mode="eval").body
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(symbolic._FUNCS)
        body = d
        for nm in names:
            body = _sub_name(body, nm, f"env[{nm!r}]")
        parts.append(f"int({body})")
    src = f"lambda env: ({', '.join(parts)},)"
    try:
        return eval(src, dict(symbolic._FUNCS))  # noqa: S307 - our own expressions, names replaced above
    except SyntaxError:
        return lambda env: tuple(evaluate(d, env) for d in dims)


def _sub_name(expr: str, name: str, repl: str) -> str:
    import re

    return re.sub(rf"\b{re.escape(name)}\b", repl, expr)
