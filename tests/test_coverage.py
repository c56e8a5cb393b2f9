"""Every `graph` op has a route on every target (`solder-opt --list-ops`, read off the backends' own tables),
and expm1, log1p and sign run as generated code on both targets, matching torch at the edges.

The h100 target runs its generated kernels under TRITON_INTERPRET=1 on CPU tensors, as the other Triton
tests do (set before triton is imported)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import solder  # noqa: E402
from solder.backends.coverage import TARGETS, coverage, coverage_table, routed_ops  # noqa: E402
from solder.backends.cpu.lower_ops import LOWERINGS  # noqa: E402
from solder.backends.reference import OPS, ReferenceBackend  # noqa: E402
from solder.backends.registry import get_backend  # noqa: E402
from solder.backends.routes import Route  # noqa: E402
from solder.compiler import ir  # noqa: E402
from solder.cli import main  # noqa: E402
from solder.compiler.dialects import graph as g  # noqa: E402
from solder.passes.pipeline import run_pipeline  # noqa: E402
from solder.compiler.targets import get_target  # noqa: E402
from solder.passes import registry  # noqa: E402

INTERPRET = os.environ["TRITON_INTERPRET"] not in ("", "0")


def test_list_ops_prints_every_op_with_a_route_per_target(capsys):
    assert main(["--list-ops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["op", *TARGETS]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert set(rows) == {c.name for c in routed_ops()}
    assert rows["graph.linear"] == ["library", "library"] and rows["graph.pool"] == ["library", "library"]
    assert rows["graph.expm1"] == rows["graph.log1p"] == rows["graph.sign"] == ["generated", "generated"]


def test_the_ops_the_corpus_uses_most_have_no_eager_route():
    """Issue #17 item 5: index-mapping ops and linear upsampling are generated Triton code (library calls on
    the CPU, whose MLIR lowering has none yet); data-dependent writes, pooling, convolutions, cumsum and
    arg_reduce are library calls."""
    routes = {c.name.removeprefix(g.PREFIX): [r.value for r in by_target.values()]
              for c, by_target in coverage().items()}
    for op in ("pad", "slice_scatter", "upsample_nearest", "upsample_linear", "gather", "gather_elements", "index"):
        assert routes[op] == ["library", "generated"], op
    for op in ("pool", "conv", "conv_transpose", "scatter", "index_put", "arg_reduce"):
        assert routes[op] == ["library", "library"], op
    assert routes["cumsum"] == ["library", "generated"]
    assert routes["round"] == routes["trunc"] == routes["concat"] == routes["batch_norm"] == ["generated", "generated"]
    assert routes["where"] == routes["reduce"] == routes["layer_norm"] == ["generated", "generated"]


def test_every_op_has_a_route_on_every_target():
    missing = [f"{c.name} on {t}" for c, routes in coverage().items() for t, r in routes.items() if r is None]
    assert not missing, "ops nothing runs: " + ", ".join(missing)
    assert {g.KernelOp, g.YieldOp}.isdisjoint(routed_ops()) and len(routed_ops()) == len(list(g.Graph.operations)) - 2


def test_the_table_is_read_off_the_backends_tables(monkeypatch):
    monkeypatch.delitem(LOWERINGS, g.Expm1Op)
    assert coverage()[g.Expm1Op]["cpu"] is Route.EAGER
    monkeypatch.delitem(OPS, g.Expm1Op)
    assert coverage()[g.Expm1Op]["cpu"] is None
    assert "graph.expm1                   NONE        generated" in coverage_table()


# ---------------------------------------------------------------------------------------------
# expm1, log1p, sign: generated on both targets
# ---------------------------------------------------------------------------------------------

EDGES = [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-7, 1e-3, -1e-3, 0.5, -0.5, 1.0, -0.9, 20.0, -20.0, 88.0, -88.0,
         100.0, -100.0, 1e30, -1.0, -1.5, float("inf"), float("-inf"), float("nan")]


class Unary(nn.Module):
    def forward(self, x, i):
        return torch.expm1(x), torch.log1p(x), torch.sign(x), torch.sign(i)


def _check_generated(target: str):
    x = torch.tensor(EDGES)
    i = torch.tensor([-7, -1, 0, 1, 9] * 2)
    compiled = solder.compile(Unary().eval(), target=target)
    got = compiled(x, i)
    program = next(iter(compiled.specializations.values())).program
    assert program.fallbacks == [], program.fallbacks
    for a, b in zip(got, Unary()(x, i)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=2e-6, atol=0, equal_nan=True)


def test_expm1_log1p_sign_are_generated_on_cpu_and_match_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("SOLDER_CACHE_DIR", str(tmp_path))
    _check_generated("cpu")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on inf and nan
@pytest.mark.skipif(not INTERPRET and not torch.cuda.is_available(), reason="h100 target needs a GPU or TRITON_INTERPRET=1")
def test_expm1_log1p_sign_are_generated_on_h100_and_match_torch():
    _check_generated("h100")


# ---------------------------------------------------------------------------------------------
# Block-sparse attention is a fusion anchor (its Anchor trait): its epilogue runs on both targets
# ---------------------------------------------------------------------------------------------

SPARSE_ADD = """builtin.module {
func.func @forward(%q: tensor<1x2x64x16xf32>, %r: tensor<1x2x64x16xf32>) -> tensor<1x2x64x16xf32> {
  %o = graph.block_sparse_attention %q, %q, %q {block = 16 : i64, scale = 0.25 : f64, causal, policy = "window", heads = "[{\\"pattern\\": \\"window\\", \\"window\\": 32, \\"sinks\\": 16}]", density = 0.5 : f64} : tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32> -> tensor<1x2x64x16xf32>
  %a = graph.add %o, %r : (tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32>) -> tensor<1x2x64x16xf32>
  func.return %a : tensor<1x2x64x16xf32>
}
}"""


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on masked lanes
@pytest.mark.parametrize("target", TARGETS)
def test_block_sparse_attention_fuses_with_its_epilogue_and_runs(target, tmp_path, monkeypatch):
    """fuse-ops puts the add into the attention's kernel; the Triton planner must not read that kernel as
    a GEMM with an epilogue (it did: the matmul template got q and k)."""
    if target == "h100" and not INTERPRET and not torch.cuda.is_available():
        pytest.skip("h100 target needs a GPU or TRITON_INTERPRET=1")
    monkeypatch.setenv("SOLDER_CACHE_DIR", str(tmp_path))
    module = ir.parse(SPARSE_ADD)
    run_pipeline(module, registry.parse("fuse-ops"), target=get_target(target))
    (kernel,) = [op for op in module.walk() if isinstance(op, g.KernelOp)]
    assert {type(op) for op in kernel.body.block.ops} == {g.BlockSparseAttentionOp, g.AddOp, g.YieldOp}
    program = get_backend(get_target(target).backend).lower(module, get_target(target))
    q, r = torch.randn(1, 2, 64, 16), torch.randn(1, 2, 64, 16)
    (got,) = program([q, r])
    (want,) = ReferenceBackend().lower(ir.parse(SPARSE_ADD))([q, r])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
