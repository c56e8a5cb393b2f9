"""One compiled input signature of a `CompiledModule`, and the keys that find it: its program, the state it
runs on, and the checks that tell whether it still holds (state replaced or written, values read with `.item()`,
sizes that fit a dynamic binding)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from solder.backends.base import Program
from solder.compiler import write_back
from solder.compiler.importer import Imported
from solder.passes.pipeline import PipelineRun
from solder.speed_guard import SpeedGuard


@dataclass
class Specialization:
    """One compiled input signature."""

    key: tuple
    imported: Imported
    program: Program
    in_spec: object
    out_spec: object
    state: list[torch.Tensor]
    pipeline: PipelineRun
    seconds: dict[str, float] = field(default_factory=dict)
    ir_text: str = ""
    decomposed: tuple[str, ...] = ()
    guards: dict[int, tuple[int, int]] = field(default_factory=dict)
    """State tensors whose values were compiled in: index -> (version counter, data pointer) at compile time."""
    flat: bool = False
    """Captured over the flat pytree leaves of (args, kwargs) (a dynamic capture)."""
    binding: object = None
    """For `?` dims: the `symbolic.Binding` whose check decides whether a call's sizes fit."""
    dynamic_dims: frozenset = frozenset()
    """(flat leaf, dim) pairs that were asked to be dynamic."""
    writes: list = field(init=False)
    """(result, argument) pairs: results copied into the mutated inputs and buffers after each call."""
    speed: SpeedGuard | None = None
    """Times the first calls against eager and keeps the faster; None when compile(speed_guard=False)."""
    proven: bool = False
    """Whether the compiled program has run once without an error (until then a failure falls back to eager)."""
    values: dict = field(default_factory=dict)
    """Flat leaf index -> value of each one-element tensor input whose value the model read into Python
    (`eps.item()`): compiled in as a constant, so the program holds while calls pass these values."""

    _check: tuple | None = None  # (the sources it was generated for, the generated check)
    sources: list = field(default_factory=list)
    """Per state tensor: (the module's `_parameters`/`_buffers` dict, attribute name, the tensor found there),
    or None for export's lifted constants. `state_current` compares them per call."""

    def __post_init__(self):
        self.writes = write_back.write_backs(self.imported.func)

    def still_valid(self) -> bool:
        return all((self.state[i]._version, self.state[i].data_ptr()) == g for i, g in self.guards.items())

    def values_hold(self, leaves) -> bool:
        """Whether this call passes the values compiled in for the inputs the model reads into Python."""
        if not self.values:
            return True
        ts = [leaves[i] for i in self.values]
        if not all(isinstance(t, torch.Tensor) and t.numel() == 1 for t in ts):
            return False
        if len(ts) > 2 and any(t.device.type != "cpu" for t in ts):  # one device sync, not one per value
            got = torch.stack([t.reshape(()).to(torch.float64) for t in ts]).tolist()
        else:
            got = [t.item() for t in ts]
        return all(x == v or (x != x and v != v) for x, v in zip(got, self.values.values()))  # NaN == NaN here

    def state_current(self) -> bool:
        """Whether every parameter and buffer is still the tensor it was when `state` was taken
        (`module.weight = nn.Parameter(...)`, `load_state_dict(..., assign=True)` replace it; `p.data = t`
        needs no check: `state` holds `p` itself, run under no_grad). One generated expression over all of
        them (~1 us for GPT-2's 29 tensors)."""
        if self._check is None or self._check[0] is not self.sources:
            self._check = (self.sources, state_check(self.sources))
        return self._check[1]()


def state_check(sources: list):
    """`() -> bool`: every source's dict still holds its tensor."""
    env, terms = {}, []
    for i, src in enumerate(sources):
        if src is not None:
            env[f"d{i}"], env[f"t{i}"] = src[0], src[2]
            terms.append(f"d{i}.get({src[1]!r}) is t{i}")
    exec(f"def check():\n    return {' and '.join(terms) or 'True'}\n", env)  # noqa: S102 - generated above
    return env["check"]


def leaf_key(x) -> tuple:
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), x.dtype, x.device.type)
    return ("V", type(x).__name__, repr(x))


def family_key(spec, leaves) -> tuple:
    """What a dynamic specialization can cover: structure, ranks, dtypes, devices and non-tensor values."""
    return (str(spec), tuple(("T", x.dim(), x.dtype, x.device.type) if isinstance(x, torch.Tensor) else leaf_key(x)
                             for x in leaves))


def input_binding(imported: Imported):
    """The symbol binding of a dynamically captured function, checking only the user inputs (state sizes
    never change)."""
    from solder.compiler.dialects import symbolic

    b = symbolic.Binding.of(imported.func)  # a static function (export specialized every dim): static checks
    n_state = len(imported.args) - len(imported.input_positions)
    shift = lambda rows: [(i - n_state,) + tuple(r) for i, *r in rows if i >= n_state]
    reads = {k: (i - n_state, d) for k, (i, d) in b.reads.items()}
    if any(i < 0 for i, _ in reads.values()):
        return None  # a symbol only a state tensor binds: cannot happen for export's input symbols
    return symbolic.Binding(b.symbols, reads, shift(b.checks), shift(b.static), b.assumes)
