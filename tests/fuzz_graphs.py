"""Random small PyTorch programs for differential testing of solder against eager PyTorch.

A `Program` is Python source text (so a failure prints as a ready-to-paste regression test) plus the
specs of its inputs. `programs()` is a hypothesis strategy that builds one step at a time from the ops
the importer supports: elementwise unary/binary ops with broadcasting and Python scalars (including
inf/nan), comparisons with `where`/`masked_fill`, casts, reductions with keepdim, softmax/log_softmax,
layer_norm, matmul/linear, reshape/permute/transpose/slice/cat/expand/squeeze, non-contiguous and
broadcast (stride-0) inputs, and outputs that alias an input or a view of one.

Every candidate step is first evaluated on meta tensors; a step PyTorch itself rejects (bad broadcast,
an op without an integer kernel, ...) is dropped, so each program runs eagerly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st

FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
DTYPES = FLOATS + (torch.int64, torch.int32, torch.bool)
UNARY = ("neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "erf", "sin", "cos",
         "reciprocal", "floor", "ceil")
UNARY_F = ("nn.functional.silu", "nn.functional.gelu")
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "pow", "remainder")
COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
SCALARS = (0.0, 1.0, -1.5, 2, 3, -1, 0.5, 1e-3, "float('inf')", "float('-inf')", "float('nan')", True)


@dataclass
class InputSpec:
    """One input: its logical shape, dtype, and how its memory is laid out."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    layout: str = "contiguous"  # contiguous | transposed | strided | broadcast

    def make(self, gen: torch.Generator) -> torch.Tensor:
        shape = list(self.shape)
        if self.layout == "transposed" and len(shape) >= 2:
            base = _values(shape[:-2] + [shape[-1], shape[-2]], self.dtype, gen)
            return base.transpose(-1, -2)
        if self.layout == "strided" and shape:
            return _values(shape[:-1] + [2 * shape[-1]], self.dtype, gen)[..., ::2]
        if self.layout == "broadcast" and shape:
            return _values([1] + shape[1:], self.dtype, gen).expand(shape)
        return _values(shape, self.dtype, gen)


def _values(shape, dtype, gen) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if not dtype.is_floating_point:
        return torch.randint(-4, 5, shape, generator=gen, dtype=dtype)
    return (torch.randn(shape, generator=gen) * 2).to(dtype)


@dataclass
class Program:
    """A generated function: source text, input specs, and `make_inputs(seed)` to run it."""

    inputs: list[InputSpec] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        args = ", ".join(f"x{i}" for i in range(len(self.inputs)))
        body = "".join(f"    {line}\n" for line in self.lines)
        return f"def f({args}):\n{body}    return ({', '.join(self.outputs)},)\n"

    def function(self):
        env = {"torch": torch, "math": math}
        exec(compile(self.source, "<fuzz>", "exec"), env)  # noqa: S102  (our own generated source)
        return env["f"]

    def make_inputs(self, seed: int = 0) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return [s.make(gen) for s in self.inputs]

    def __repr__(self) -> str:
        specs = ", ".join(f"InputSpec({s.shape}, {s.dtype}, {s.layout!r})" for s in self.inputs)
        return f"{self.source}# inputs: [{specs}]"


class _Builder:
    """Grows a program step by step, tracking each value's meta tensor."""

    def __init__(self, draw):
        self.draw = draw
        self.prog = Program()
        self.pool: list[tuple[str, torch.Tensor]] = []

    # ---- values ----------------------------------------------------------------------------------
    def new_input(self, shape=None, dtype=None) -> str:
        d = self.draw
        if shape is None:
            rank = d(st.integers(0, 3))
            shape = tuple(d(st.integers(1, 4)) for _ in range(rank))
        if dtype is None:
            dtype = d(st.sampled_from(DTYPES)) if d(st.integers(0, 3)) == 0 else torch.float32
        layout = d(st.sampled_from(("contiguous",) * 4 + ("transposed", "strided", "broadcast")))
        self.prog.inputs.append(InputSpec(tuple(shape), dtype, layout))
        name = f"x{len(self.prog.inputs) - 1}"
        self.pool.append((name, torch.empty(shape, dtype=dtype, device="meta")))
        return name

    def pick(self, pred=lambda m: True) -> tuple[str, torch.Tensor] | None:
        cands = [p for p in self.pool if pred(p[1])]
        if not cands:
            return None
        return self.draw(st.sampled_from(cands[-6:]))  # recent values: deeper chains

    def scalar(self):
        return self.draw(st.sampled_from(SCALARS))

    def other(self, meta: torch.Tensor) -> str:
        """A second operand: a pool value, a fresh broadcastable input, or a Python scalar."""
        kind = self.draw(st.integers(0, 3))
        if kind == 0:
            s = self.scalar()
            return s if isinstance(s, str) else repr(s)
        if kind == 1:
            shape = list(meta.shape)
            drop = self.draw(st.integers(0, len(shape)))
            shape = [1 if self.draw(st.booleans()) else s for s in shape[drop:]]
            return self.new_input(shape, meta.dtype if self.draw(st.integers(0, 3)) else None)
        got = self.pick(lambda m: _broadcastable(m.shape, meta.shape))
        return got[0] if got else self.new_input(tuple(meta.shape))

    # ---- steps -----------------------------------------------------------------------------------
    def step(self) -> None:
        kind = self.draw(st.sampled_from(STEP_KINDS))
        expr = kind(self)
        if expr is None:
            return
        env = {"torch": torch, "math": math, **{n: m for n, m in self.pool}}
        try:
            meta = eval(expr, env)  # noqa: S307  (generated from our own op list)
        except Exception:  # noqa: BLE001  PyTorch rejects this combination: drop the step
            return
        if not isinstance(meta, torch.Tensor) or meta.numel() > 4096:
            return
        name = f"v{len(self.prog.lines)}"
        self.prog.lines.append(f"{name} = {expr}")
        self.pool.append((name, meta))


def _broadcastable(a, b) -> bool:
    try:
        torch.broadcast_shapes(tuple(a), tuple(b))
        return True
    except RuntimeError:
        return False


def _is_float(m) -> bool:
    return m.dtype.is_floating_point


def _unary(b: _Builder):
    x = b.pick()
    op = b.draw(st.sampled_from(UNARY + UNARY_F))
    return f"torch.{op}({x[0]})"


def _binary(b: _Builder):
    x = b.pick()
    op = b.draw(st.sampled_from(BINARY))
    y = b.other(x[1])
    if not y.startswith(("x", "v")) and op in _SYMBOLS and b.draw(st.booleans()):
        return f"({y} {_SYMBOLS[op]} {x[0]})"  # scalar on the left: rsub, rdiv, rpow, ...
    return f"torch.{op}({x[0]}, {y})"


_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "remainder": "%"}


def _compare(b: _Builder):
    x = b.pick()
    cmp = b.draw(st.sampled_from(COMPARE))
    cond = f"torch.{cmp}({x[0]}, {b.other(x[1])})"
    form = b.draw(st.integers(0, 2))
    if form == 0:
        return cond
    y = b.pick()
    if form == 1:
        return f"torch.where({cond}, {y[0]}, {b.other(y[1])})"
    return f"{y[0]}.masked_fill({cond}, {b.scalar()})"


def _cast(b: _Builder):
    x = b.pick()
    return f"{x[0]}.to({b.draw(st.sampled_from(DTYPES))})"


def _reduce(b: _Builder):
    x = b.pick(lambda m: m.dim() >= 1)
    if x is None:
        return None
    d = b.draw(st.integers(-x[1].dim(), x[1].dim() - 1))
    keep = b.draw(st.booleans())
    op = b.draw(st.sampled_from(("sum", "mean", "amax", "amin", "max_dim", "argmax", "prod", "all_dims")))
    if op == "max_dim":
        return f"torch.max({x[0]}, dim={d}, keepdim={keep})[{b.draw(st.integers(0, 1))}]"
    if op == "argmax":
        return f"torch.argmax({x[0]}, dim={d}, keepdim={keep})"
    if op == "all_dims":
        return f"torch.sum({x[0]})"
    dims = sorted({d % x[1].dim(), b.draw(st.integers(0, x[1].dim() - 1))})
    if op == "prod":
        return f"torch.prod({x[0]}, {d}, keepdim={keep})"
    return f"torch.{op}({x[0]}, dim={dims}, keepdim={keep})"


def _normalize(b: _Builder):
    x = b.pick(lambda m: m.dim() >= 1 and _is_float(m))
    if x is None:
        return None
    d = b.draw(st.integers(-x[1].dim(), x[1].dim() - 1))
    op = b.draw(st.sampled_from(("softmax", "log_softmax", "layer_norm", "layer_norm_affine")))
    if op.startswith("layer_norm"):
        n = x[1].shape[-1]
        if op == "layer_norm":
            return f"torch.nn.functional.layer_norm({x[0]}, ({n},))"
        w = b.new_input((n,), x[1].dtype)
        return f"torch.nn.functional.layer_norm({x[0]}, ({n},), {w}, {b.new_input((n,), x[1].dtype)}, eps=1e-3)"
    return f"torch.{op}({x[0]}, {d})"


def _contract(b: _Builder):
    x = b.pick(lambda m: m.dim() >= 1 and _is_float(m))
    if x is None:
        return None
    k, n = x[1].shape[-1], b.draw(st.integers(1, 4))
    if b.draw(st.booleans()):
        w = b.new_input((n, k), x[1].dtype)
        bias = b.new_input((n,), x[1].dtype) if b.draw(st.booleans()) else "None"
        return f"torch.nn.functional.linear({x[0]}, {w}, {bias})"
    lead = list(x[1].shape[:-2]) if x[1].dim() > 2 and b.draw(st.booleans()) else []
    w = b.new_input(tuple(lead + [k, n]) if x[1].dim() > 1 else (k,) if b.draw(st.booleans()) else (k, n),
                    x[1].dtype)
    return f"torch.matmul({x[0]}, {w})"


def _layout(b: _Builder):
    x = b.pick()
    shape, r = list(x[1].shape), x[1].dim()
    op = b.draw(st.sampled_from(("reshape", "flatten", "unsqueeze", "squeeze", "permute", "transpose", "slice",
                                 "cat", "expand", "view", "t", "contiguous", "select")))
    if op == "reshape":
        return f"{x[0]}.reshape(-1)" if b.draw(st.booleans()) else f"{x[0]}.reshape({[1] + shape})"
    if op == "flatten":
        return f"{x[0]}.flatten({b.draw(st.integers(0, max(r - 1, 0)))})"
    if op == "unsqueeze":
        return f"{x[0]}.unsqueeze({b.draw(st.integers(-r - 1, r))})"
    if op == "squeeze":
        return f"{x[0]}.squeeze()" if r == 0 or b.draw(st.booleans()) else \
            f"{x[0]}.squeeze({b.draw(st.integers(-r, r - 1))})"
    if r == 0:
        return None
    if op == "permute":
        perm = b.draw(st.permutations(list(range(r))))
        return f"{x[0]}.permute({list(perm)})"
    if op == "transpose":
        return f"{x[0]}.transpose({b.draw(st.integers(-r, r - 1))}, {b.draw(st.integers(-r, r - 1))})"
    d = b.draw(st.integers(0, r - 1))
    if op == "slice":
        start, stop = b.draw(st.integers(-4, 4)), b.draw(st.sampled_from((None, -1, 1, 2, 3, 10)))
        step = b.draw(st.integers(1, 2))
        return f"{x[0]}[{':, ' * d}{start}:{stop}:{step}]"
    if op == "select":
        return f"{x[0]}[{':, ' * d}{b.draw(st.integers(-shape[d], shape[d] - 1))}]"
    if op == "cat":
        other = list(shape)
        other[d] = b.draw(st.integers(1, 3))
        return f"torch.cat([{x[0]}, {b.new_input(tuple(other), x[1].dtype)}, {x[0]}], {d})"
    if op == "expand":
        return f"{x[0]}.unsqueeze(0).expand({[b.draw(st.integers(1, 3))] + [-1] * r})"
    if op == "view":
        return f"{x[0]}.view({list(shape[:-1]) + [shape[-1]]})" if x[1].is_contiguous() else None
    if op == "t":
        return f"{x[0]}.t()" if r <= 2 else f"{x[0]}.mT"
    return f"{x[0]}.contiguous()"


STEP_KINDS = (_unary, _binary, _binary, _compare, _cast, _reduce, _normalize, _contract, _layout, _layout)


@st.composite
def programs(draw, max_steps: int = 6) -> Program:
    """A random small program with 1–3 outputs, some of which may alias inputs or views of them."""
    b = _Builder(draw)
    b.new_input()
    for _ in range(draw(st.integers(1, max_steps))):
        b.step()
    computed = [n for n, _ in b.pool if n.startswith("v")]
    outs = [computed[-1]] if computed else [b.pool[0][0]]
    extra = draw(st.sampled_from(("none", "none", "input", "view", "value")))
    if extra == "input":
        outs.append(draw(st.sampled_from([n for n, _ in b.pool if n.startswith("x")])))
    elif extra == "view":
        x = draw(st.sampled_from([(n, m) for n, m in b.pool if n.startswith("x")]))
        outs.append(f"{x[0]}[..., :1]" if x[1].dim() else f"{x[0]}.view(1)")
    elif extra == "value" and len(computed) > 1:
        outs.append(draw(st.sampled_from(computed[:-1])))
    b.prog.outputs = outs
    return b.prog
