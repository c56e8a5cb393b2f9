"""explain()'s backend table names each step's route and, for autotuned GEMMs, the winner and its timings."""

from __future__ import annotations

from solder.report import backend_table


class _Tuned:
    def __init__(self, choice, timings):
        self.choice, self.timings = choice, timings


def test_backend_table_shows_routes_and_autotune_results():
    text = backend_table([
        {"id": 0, "route": "mlir", "ops": ["graph.layer_norm"]},
        {"id": 1, "kind": "template", "name": "matmul[gelu+bias]",
         "autotune": _Tuned("cublas+eager epilogue", {"template": 3.4e-3, "cublas+eager epilogue": 3.3e-3})},
        {"id": 2, "kind": "template", "name": "matmul[none]", "autotune": _Tuned(None, {})},
    ])
    lines = text.splitlines()
    assert lines[0] == "backend steps: 3"
    assert "mlir" in lines[1] and "layer_norm" in lines[1]
    assert "[autotuned: cublas+eager epilogue; template 3400.0 us, cublas+eager epilogue 3300.0 us]" in lines[2]
    assert "decided on the first CUDA call" in lines[3]
