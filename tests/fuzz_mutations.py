"""Random small modules that write in place, for differential testing of solder's side effects against eager.

A `MutationProgram` is the source of an `nn.Module` (so a failure prints as a ready-to-paste regression
test): persistent and non-persistent buffers, and a `forward` whose steps write in place into its inputs,
its buffers, fresh tensors (`new_zeros`, `torch.zeros`, `clone()`) or views of any of them (slices,
`select`, transposes, `view(-1)`), with `add_`, `mul_`, `copy_`, `fill_`, `masked_fill_`, `clamp_`,
setitem with a tensor index (`index_put_`), `index_copy_` and `scatter_add_`, and between the writes reads
of the current values (so the order of reads and writes matters). Outputs are those reads, the fresh
tensors, sometimes a view of a written tensor (eager's view sees the later writes) or a mutated input
itself. tests/test_fuzz.py compares outputs, inputs and buffers with eager's after each of two calls.

Every tensor of a program has one 2-d shape (R, C) and dtype float32, so any two broadcast; indices are
literal and distinct where a duplicate would make the result depend on write order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st


@dataclass
class MutationProgram:
    """Source of `class Model(nn.Module)` and its inputs: `n_inputs` float (R, C) tensors plus index tensors."""

    rows: int
    cols: int
    n_inputs: int
    buffers: list[tuple[str, bool]] = field(default_factory=list)  # (name, persistent)
    lines: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        r, c = self.rows, self.cols
        init = "".join(
            f"        self.register_buffer({name!r}, torch.linspace({-1 - k}, {2 + k}, {r * c}).reshape({r}, {c})"
            f"{'' if keep else ', persistent=False'})\n" for k, (name, keep) in enumerate(self.buffers))
        args = ", ".join(f"x{i}" for i in range(self.n_inputs))
        body = "".join(f"        {line}\n" for line in self.lines)
        return (f"class Model(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n{init}\n"
                f"    def forward(self, {args}):\n{body}        return ({', '.join(self.outputs)},)\n")

    def model(self) -> torch.nn.Module:
        env = {"torch": torch}
        exec(compile(self.source, "<fuzz>", "exec"), env)  # noqa: S102  (our own generated source)
        return env["Model"]().eval()

    def make_inputs(self, seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return [torch.randn(self.rows, self.cols, generator=gen) * 2 for _ in range(self.n_inputs)]

    def __repr__(self) -> str:
        return f"{self.source}# inputs: {self.n_inputs} x randn({self.rows}, {self.cols}) * 2"


class _Builder:
    """Grows a forward step by step: a write into a target (or a view of it), then maybe a read."""

    def __init__(self, draw):
        self.draw = draw
        self.rng = draw(st.randoms(use_true_random=False))
        self.p = MutationProgram(draw(st.integers(2, 4)), draw(st.integers(2, 4)), draw(st.integers(1, 3)))
        self.targets = [f"x{i}" for i in range(self.p.n_inputs)]
        self.fresh: list[str] = []

    def choice(self, options):
        return self.rng.choice(list(options))

    def add_buffer(self) -> None:
        name = f"b{len(self.p.buffers)}"
        self.p.buffers.append((name, self.draw(st.booleans())))
        self.targets.append(f"self.{name}")

    def add_fresh(self) -> None:
        name, r, c = f"f{len(self.fresh)}", self.p.rows, self.p.cols
        self.p.lines.append(f"{name} = " + self.choice((f"x0.new_zeros({r}, {c})", f"torch.zeros({r}, {c})",
                                                        f"{self.choice(self.targets)}.clone()")))
        self.fresh.append(name)
        self.targets.append(name)

    def view(self, t: str) -> tuple[str, str]:
        """`t` or a view of it, and the same indexing for a source tensor (`{}` stands for it)."""
        r = self.p.rows
        return self.choice([("{}", "{}"), ("{}[1:]", "{}[1:]"), ("{}[:, :1]", "{}[:, :1]"),
                            (f"{{}}[{r - 1}]", f"{{}}[{r - 1}]"), ("{}.t()", "{}.t()"),
                            ("{}.select(1, 0)", "{}.select(1, 0)"), ("{}.view(-1)", "{}.reshape(-1)")])

    def write(self) -> None:
        t, src = self.choice(self.targets), self.choice(self.targets)
        v, s = self.view(t)
        dst, other = v.format(t), s.format(src)
        r, c = self.p.rows, self.p.cols
        whole = self.choice([
            f"{t}[torch.tensor({self._distinct(r)})] = {src}[:{len(self._last)}] * 0.5",
            f"{t}.index_copy_(0, torch.tensor({self._distinct(r)}), {src}[:{len(self._last)}])",
            f"{t}.scatter_add_(0, torch.tensor({self._rows_index(r, c)}), {src})",
            f"{t}.masked_fill_({src} > 0, {self.choice((0.0, -1.5, 3.0))})",
        ])
        self.p.lines.append(self.choice([
            f"{dst}.add_({other})", f"{dst}.add_({other}, alpha=-0.5)", f"{dst}.mul_({self.choice((2, -0.5, 0))})",
            f"{dst}.copy_({other})", f"{dst}.fill_({self.choice((1.0, -2.0))})", f"{dst}.clamp_(-1, 1)",
            f"{dst}.mul_({other})", whole]))

    def _distinct(self, r: int) -> list[int]:
        k = self.draw(st.integers(1, r))
        self._last = self.rng.sample(range(r), k)
        return self._last

    def _rows_index(self, r: int, c: int) -> list[list[int]]:
        return [[self.rng.randrange(r) for _ in range(c)] for _ in range(r)]

    def read(self) -> None:
        t = self.choice(self.targets)
        name = f"o{len(self.p.outputs)}"
        self.p.lines.append(f"{name} = " + self.choice((f"{t} * 2 + 1", f"{t}.sum(0)", f"torch.relu({t})",
                                                        f"{t}.exp() - {self.choice(self.targets)}")))
        self.p.outputs.append(name)


@st.composite
def mutation_programs(draw, max_steps: int = 6) -> MutationProgram:
    """A module with 0-2 buffers, 0-2 fresh tensors and 1-`max_steps` in-place writes, each maybe read after."""
    b = _Builder(draw)
    for _ in range(draw(st.integers(0, 2))):
        b.add_buffer()
    for _ in range(draw(st.integers(0, 2))):
        b.add_fresh()
    for _ in range(draw(st.integers(1, max_steps))):
        if draw(st.integers(0, 4)) == 0:
            b.add_fresh()
        b.write()
        if draw(st.booleans()):
            b.read()
    b.p.outputs += b.fresh
    extra = draw(st.sampled_from(("none", "input", "view")))
    if extra == "input":
        b.p.outputs.append(b.choice([t for t in b.targets if t.startswith("x")]))
    elif extra == "view":
        b.p.outputs.append(f"{b.choice(b.targets)}[0]")
    if not b.p.outputs:
        b.p.outputs.append(f"{b.targets[0]} * 1")
    return b.p
