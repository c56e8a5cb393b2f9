"""Which importer entries the fuzzer's programs reach: `python -m tests.fuzz_coverage [N] [SEED]`.

Draws N programs (default 1000) from tests/fuzz_graphs.py, exports each with torch.export as
`compile()` would, and counts the ATen overloads in the graphs against the importer's table
(compiler/aten_table.py, compiler/aten_layout.py). Prints the entries never reached, except those
`IMPORTER_OPS_NOT_GENERATED` explains and overloads that do not exist in this PyTorch; exits 1 when
some remain. `make fuzz` runs it after the differential run.
"""

from __future__ import annotations

import collections
import sys
import warnings

import torch
from hypothesis import HealthCheck, given, seed, settings

from solder.compiler.aten_table import TABLE
from tests.fuzz_graphs import programs
from tests.fuzz_ops import IMPORTER_OPS_NOT_GENERATED


def _exists(name: str) -> bool:
    _, op, overload = name.split(".")
    return hasattr(getattr(torch.ops.aten, op, None), overload)


def reached(n: int, hypothesis_seed: int = 0) -> collections.Counter:
    """ATen overload -> how many times it appears in the exported graphs of `n` programs."""
    seen: collections.Counter = collections.Counter()

    @seed(hypothesis_seed)
    @settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(programs())
    def one(prog):
        fn, inputs = prog.function(), prog.make_inputs(0)

        class Program(torch.nn.Module):
            def forward(self, *xs):
                return fn(*xs)

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                fn(*[x.clone() for x in inputs])
                ep = torch.export.export(Program(), tuple(inputs), strict=False)
            except Exception:  # noqa: BLE001  eager rejects it (tests/test_fuzz.py skips these too)
                return
        seen.update(str(nd.target) for nd in ep.graph.nodes if nd.op == "call_function")

    one()
    return seen


def missing(seen: collections.Counter) -> list[str]:
    """Importer entries that exist in this PyTorch, are not excused, and were never reached."""
    return sorted(k for k in TABLE if k not in seen and k not in IMPORTER_OPS_NOT_GENERATED and _exists(k))


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 1000
    seen = reached(n, int(argv[1]) if len(argv) > 1 else 0)
    gone = missing(seen)
    dead = sorted(k for k in TABLE if not _exists(k))
    print(f"{n} programs reach {sum(1 for k in TABLE if k in seen)} of {len(TABLE)} importer entries")
    print(f"excused ({len(IMPORTER_OPS_NOT_GENERATED)}): see tests/fuzz_ops.py IMPORTER_OPS_NOT_GENERATED")
    print(f"entries naming overloads this PyTorch does not have ({len(dead)}): {', '.join(dead)}")
    print(f"ops outside the importer's table (graph.extern): "
          f"{', '.join(sorted(k for k in seen if k not in TABLE and k.startswith('aten.'))) or 'none'}")
    print(f"never reached ({len(gone)}): {', '.join(gone) or 'none'}")
    return 1 if gone else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
