"""Random small PyTorch programs for differential testing of solder against eager PyTorch.

A `Program` is Python source text (so a failure prints as a ready-to-paste regression test) plus the
specs of its inputs. `programs()` is a hypothesis strategy that builds one step at a time from the ops
the importer supports (compiler/aten_table.py, compiler/aten_layout.py): elementwise unary/binary ops
with broadcasting and Python scalars (including inf/nan), activations and clamps, comparisons with
`where`/`masked_fill`, logical/bitwise ops, casts, tensor factories (full/zeros/arange, *_like,
new_*), tril/triu, reductions (with and without dims, keepdim, arg-reductions, cumsum, diff),
softmax/log_softmax, layer/RMS/batch norm, matmul/mm/bmm/addmm/linear, conv1d/conv2d and pooling,
scaled_dot_product_attention (masks, causal, GQA), views and copies (reshape, permute, slice, select,
narrow, split/chunk/unbind, cat/stack, expand, repeat, ...), gathers (embedding, index_select,
indexing with tensors, gather); inputs contiguous, transposed, strided or broadcast (stride 0), and
outputs that alias an input or a view of one. `IMPORTER_OPS_NOT_GENERATED` lists the importer
entries the generator leaves out, each with the reason; tests/test_fuzz.py checks the rest are hit.

Every candidate step is first evaluated on meta tensors; a step PyTorch itself rejects (bad broadcast,
an op without an integer kernel, ...) is dropped, so each program runs eagerly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st

from tests.fuzz_ops import (
    DTYPES,
    FLOATS,
    SCALARS,
    STEP_KINDS,
    _broadcastable,
    _is_float,
)


@dataclass
class InputSpec:
    """One input: its logical shape, dtype, and how its memory is laid out."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    layout: str = "contiguous"  # contiguous | transposed | strided | broadcast
    # "any", "positive" (floats), an integer range (lo, hi), or (0, hi, dim): indices in [0, hi) that are
    # distinct along `dim` (writes of scatter / index_put without a reduction are undefined on duplicates)
    values: tuple[int, ...] | str = "any"

    def make(self, gen: torch.Generator) -> torch.Tensor:
        shape = list(self.shape)
        if self.layout == "transposed" and len(shape) >= 2:
            base = self._values(shape[:-2] + [shape[-1], shape[-2]], gen)
            return base.transpose(-1, -2)
        if self.layout == "strided" and shape:
            return self._values(shape[:-1] + [2 * shape[-1]], gen)[..., ::2]
        if self.layout == "broadcast" and shape:
            return self._values([1] + shape[1:], gen).expand(shape)
        return self._values(shape, gen)

    def _values(self, shape, gen) -> torch.Tensor:
        dtype = self.dtype
        if isinstance(self.values, tuple) and len(self.values) == 3:  # distinct along a dim: a prefix of a permutation
            _, high, dim = self.values
            wide = list(shape)
            wide[dim] = high
            return torch.rand(wide, generator=gen).argsort(dim=dim).narrow(dim, 0, shape[dim]).to(dtype)
        if isinstance(self.values, tuple):  # indices
            return torch.randint(*self.values, shape, generator=gen, dtype=dtype)
        if dtype == torch.bool:
            return torch.rand(shape, generator=gen) > 0.5
        if not dtype.is_floating_point:
            return torch.randint(-4, 5, shape, generator=gen, dtype=dtype)
        if self.values == "positive":
            return (torch.rand(shape, generator=gen) + 0.25).to(dtype)
        return (torch.randn(shape, generator=gen) * 2).to(dtype)


@dataclass
class Program:
    """A generated function: source text, input specs, and `make_inputs(seed)` to run it."""

    inputs: list[InputSpec] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    dtypes: set[torch.dtype] = field(default_factory=set)  # of every input and intermediate value

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
        specs = ", ".join(f"InputSpec({s.shape}, {s.dtype}, {s.layout!r}, {s.values!r})" for s in self.inputs)
        return f"{self.source}# inputs: [{specs}]"


class _Builder:
    """Grows a program step by step, tracking each value's meta tensor."""

    def __init__(self, draw):
        self.draw = draw
        self.rng = draw(st.randoms(use_true_random=False))  # hypothesis-driven, so failures replay and shrink
        self.prog = Program()
        self.pool: list[tuple[str, torch.Tensor]] = []

    def choice(self, options):
        """One of `options`, uniformly: `st.sampled_from` favours the first ones heavily, which left the
        ops late in a list (and families late in STEP_KINDS) nearly untested."""
        return self.rng.choice(list(options))

    # ---- values ----------------------------------------------------------------------------------
    def new_input(self, shape=None, dtype=None, values="any") -> str:
        d = self.draw
        if shape is None:
            rank = d(st.integers(0, 3))
            shape = tuple(d(st.integers(1, 4)) for _ in range(rank))
        if dtype is None:
            dtype = self.choice(DTYPES) if d(st.integers(0, 3)) == 0 else torch.float32
        layout = self.choice(("contiguous",) * 4 + ("transposed", "strided", "broadcast"))
        if isinstance(values, tuple) and (layout == "broadcast" or len(values) == 3):
            layout = "contiguous"  # keep the index values random (or distinct) along every dim
        self.prog.inputs.append(InputSpec(tuple(shape), dtype, layout, values))
        name = f"x{len(self.prog.inputs) - 1}"
        self.pool.append((name, torch.empty(shape, dtype=dtype, device="meta")))
        return name

    def pick(self, pred=lambda m: True, empty: bool = False) -> tuple[str, torch.Tensor] | None:
        """A recent pool value satisfying `pred`; one with no elements (x[4:] of 4 rows) only if `empty`."""
        cands = [p for p in self.pool if pred(p[1]) and (empty or p[1].numel() > 0)]
        if not cands:
            return None
        return self.choice(cands[-6:])  # recent values: deeper chains

    def scalar(self):
        return self.choice(SCALARS)

    def index(self, shape, high: int, negative: bool = False, distinct_dim: int | None = None) -> str:
        """A fresh int64 input of indices in [0, high) (or [-high, high) where negatives are legal), or
        distinct along `distinct_dim` (whose size must then be at most `high`)."""
        if distinct_dim is not None:
            return self.new_input(tuple(shape), torch.int64, (0, high, distinct_dim))
        return self.new_input(tuple(shape), torch.int64, (-high if negative else 0, high))

    def float_value(self, rank: int | None = None, fresh_shape=None) -> tuple[str, torch.Tensor]:
        """A floating-point pool value (of `rank`, if given), else a fresh input of `fresh_shape`."""
        got = self.pick(lambda m: _is_float(m) and (rank is None or m.dim() == rank))
        if got is not None and self.draw(st.booleans()):
            return got
        shape = fresh_shape if fresh_shape is not None else tuple(self.draw(st.integers(1, 4)) for _ in range(rank))
        name = self.new_input(tuple(shape), self.choice(FLOATS) if self.draw(st.integers(0, 3)) == 0
                              else torch.float32)
        return name, self.pool[-1][1]

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
        kind = self.choice(STEP_KINDS)
        expr = kind(self)
        if expr is None:
            return
        env = {"torch": torch, "math": math, **{n: m for n, m in self.pool}}
        try:
            with torch.device("meta"):  # factories (zeros, arange, ...) make meta tensors too
                meta = eval(expr, env)  # noqa: S307  (generated from our own op list)
        except Exception:  # noqa: BLE001  PyTorch rejects this combination: drop the step
            return
        if not isinstance(meta, torch.Tensor) or meta.numel() > 4096:
            return
        name = f"v{len(self.prog.lines)}"
        self.prog.lines.append(f"{name} = {expr}")
        self.pool.append((name, meta))


@st.composite
def programs(draw, max_steps: int = 7) -> Program:
    """A random small program with 1–3 outputs, some of which may alias inputs or views of them."""
    b = _Builder(draw)
    b.new_input()
    for _ in range(b.rng.randint(1, max_steps)):
        b.step()
    computed = [n for n, _ in b.pool if n.startswith("v")]
    outs = [computed[-1]] if computed else [b.pool[0][0]]
    # values no later step reads are outputs too (up to 3 more): otherwise export drops them as dead code
    unread = [n for i, n in enumerate(computed[:-1]) if not any(re.search(rf"\b{n}\b", line)
                                                              for line in b.prog.lines[i + 1:])]
    outs += unread[-3:]
    extra = draw(st.sampled_from(("none", "none", "input", "view", "value")))
    if extra == "input":
        outs.append(draw(st.sampled_from([n for n, _ in b.pool if n.startswith("x")])))
    elif extra == "view":
        x = draw(st.sampled_from([(n, m) for n, m in b.pool if n.startswith("x")]))
        outs.append(f"{x[0]}[..., :1]" if x[1].dim() else f"{x[0]}.view(1)")
    elif extra == "value" and len(computed) > 1:
        outs.append(draw(st.sampled_from(computed[:-1])))  # maybe a second time: one value as two outputs
    b.prog.outputs = outs
    b.prog.dtypes = {m.dtype for _, m in b.pool}
    return b.prog
