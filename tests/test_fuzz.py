"""Differential fuzzing: random small programs (tests/fuzz_graphs.py) compiled by solder for the CPU
target must agree with eager PyTorch: same output count, shapes and dtypes, values within a
per-dtype tolerance, NaN in the same places.

SOLDER_FUZZ_EXAMPLES sets the number of programs (100 by default, the CI budget; `make fuzz` runs
1000). A failure prints the program's source: paste it into tests/regressions/.
"""

from __future__ import annotations

import os
import warnings

import torch
from hypothesis import HealthCheck, given, reject, settings

from compiler import compile
from tests.fuzz_graphs import Program, programs

EXAMPLES = int(os.environ.get("SOLDER_FUZZ_EXAMPLES", "100"))
TOLERANCE = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (2e-2, 2e-2), torch.float32: (1e-5, 1e-4),
             torch.float64: (1e-9, 1e-7)}


def assert_same(got, want, where: str = "") -> None:
    """Compiled vs eager, output by output: shape, dtype, values (per-dtype tolerance), NaN positions."""
    assert isinstance(got, tuple) and len(got) == len(want), f"{where}: {len(got)} outputs, eager has {len(want)}"
    for i, (a, b) in enumerate(zip(got, want)):
        assert isinstance(a, torch.Tensor), f"{where}: output {i} is {type(a).__name__}, eager gives a tensor"
        assert a.shape == b.shape, f"{where}: output {i} shape {tuple(a.shape)}, eager {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"{where}: output {i} dtype {a.dtype}, eager {b.dtype}"
        if b.dtype.is_floating_point:
            nan_a, nan_b = torch.isnan(a), torch.isnan(b)
            assert torch.equal(nan_a, nan_b), f"{where}: output {i} NaN positions differ"
            atol, rtol = TOLERANCE[b.dtype]
            torch.testing.assert_close(a, b, atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{where}: output {i}: {m}")
        else:
            assert torch.equal(a, b), f"{where}: output {i} differs: {a} vs {b}"


class EagerRejects(Exception):
    """Eager PyTorch itself raises on the program (a combination meta tensors let through): not a test."""


def check_program(prog: Program, seed: int = 0) -> None:
    fn = prog.function()
    inputs = prog.make_inputs(seed)
    with torch.no_grad():
        try:
            want = fn(*[x.clone() for x in inputs])
        except Exception as e:  # noqa: BLE001
            raise EagerRejects(str(e)) from e
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # graph.extern fallbacks are allowed; wrong answers are not
            got = compile(fn, target="cpu")(*inputs)
    assert_same(got, want, where="\n" + prog.source)


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 100,
          suppress_health_check=list(HealthCheck), print_blob=True)
@given(programs())
def test_compiled_matches_eager(prog):
    try:
        check_program(prog)
    except EagerRejects:
        reject()


def test_generator_covers_the_op_families():
    """The strategy really produces each family (a silent generator bug would make the fuzzer vacuous)."""
    sources: list[str] = []

    @settings(max_examples=300, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(programs())
    def collect(prog):
        sources.append(prog.source)

    collect()
    text = "\n".join(sources)
    for needle in ("softmax", "layer_norm", "matmul", "linear", "torch.where", "masked_fill", ".to(", "torch.cat",
                   "keepdim=True", "permute", "expand", "float('nan')", "x0[..., :1]"):
        assert needle in text, f"the generator never produced {needle!r} in 300 programs"
