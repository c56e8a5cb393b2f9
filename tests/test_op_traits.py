"""Op facts live on the `graph` op classes (compiler/dialects/traits.py): every op is classified there, the
per-op tables are keyed by class, no code outside the dialect compares op-name strings, and steps carry a
typed kind that the CPU runner branches on instead of the route text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from solder.backends.cpu.backend import plan_module
from solder.backends.cpu.runner import build_runner, compile_plan
from solder.backends.reference import OPS
from solder.backends.lowering.steps import StepKind
from solder.backends.routes import Route
from solder.compiler import ir
from solder.compiler.dialects import graph as g
from solder.compiler.dialects import traits as T
from solder.compiler.dialects.optable import OpTable, op_class
from solder.passes.fusion_plan import op_kind

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("compiler", "passes", "backends", "costmodel")
OP_NAME = re.compile(r"graph\.\w*")  # a whole literal: an op name or the bare prefix (messages have more words)
ALLOWED = {
    # discardable attributes in the `graph.` namespace, not op names
    "graph.name": "argument-name attribute of @forward's arguments (importers)",
    "graph.origin": "recognize-attention's record of the matched pattern",
    "graph.sparse": "rewrite-sparse-attention's record of the chosen layout",
    "graph.assumes": "the artifact's recorded size assumptions",
    "graph.from_buffer": "buffer facts: an argument that holds a module buffer",
    "graph.writes": "write-back: the in-place writes an argument receives",
    "graph.buffers": "plan-memory: the pooled buffer of each result of a launch",
    "graph.buffer_bytes": "plan-memory: the size of each pooled buffer",
}
FACTS = (T.Elementwise, T.Layout, T.Source, T.Reduction, T.Anchor, T.Attention, T.Activation, T.Transcendental)


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, kinds) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            out.add(id(body[0].value))
    for parent in ast.walk(tree):  # attribute docstrings: a string statement right after an assignment
        stmts = getattr(parent, "body", None)
        if not isinstance(stmts, list):
            continue
        for prev, cur in zip(stmts, stmts[1:]):
            if isinstance(prev, (ast.Assign, ast.AnnAssign)) and isinstance(cur, ast.Expr) \
                    and isinstance(cur.value, ast.Constant):
                out.add(id(cur.value))
    return out


def _op_name_literals(text: str) -> list[tuple[int, str]]:
    """(line, literal) for each string literal in code that is a graph op name or the bare prefix."""
    tree = ast.parse(text)
    docs = _docstrings(tree)
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                  and OP_NAME.fullmatch(node.value) and node.value not in ALLOWED)


def test_no_op_name_strings_outside_the_dialect():
    files = [p for d in SCANNED for p in sorted((ROOT / d).rglob("*.py")) if "dialects" not in p.parts]
    assert len(files) > 50
    hits = [f"{p.relative_to(ROOT)}:{line}: {lit!r}" for p in files for line, lit in _op_name_literals(p.read_text())]
    assert not hits, "op-name strings in code; ask the op (a trait, isinstance, an OpTable):\n" + "\n".join(hits)


def test_the_scan_sees_comparisons_and_prefixes_but_not_docstrings_or_messages():
    src = ('"""Mentions "graph.add" in prose."""\n'
           'def f(op):\n    """graph.mul"""\n    return op.name == "graph.add" or op.name.startswith("graph.")\n'
           'MSG = f"graph.extern callee {1}"\n'
           'A = {"graph.origin": 1, f"graph.{2}": 2}\n')
    assert _op_name_literals(src) == [(4, "graph."), (4, "graph.add"), (6, "graph.")]


def test_every_op_is_classified_or_known_opaque():
    unclassified = {c.name for c in g.Graph.operations if not any(c.has_trait(t) for t in FACTS)}
    assert unclassified == {"graph.conv", "graph.pool", "graph.gather", "graph.index", "graph.gather_elements",
                            "graph.kernel", "graph.yield", "graph.extern", "graph.conv_transpose",
                            "graph.upsample_linear", "graph.scatter", "graph.index_put"}


def test_trait_hierarchy_and_the_decisions_it_records():
    assert g.ConcatOp.has_trait(T.Layout) and not g.ConcatOp.has_trait(T.ViewLike)
    assert all(c.has_trait(T.ViewLike) and c.has_trait(T.Layout)
               for c in (g.ReshapeOp, g.PermuteOp, g.ExpandOp, g.SliceOp))
    assert g.BlockSparseAttentionOp.has_trait(T.Anchor) and g.BlockSparseAttentionOp.has_trait(T.Attention)
    assert g.ReduceOp.has_trait(T.RowReduction) and not g.ReduceOp.has_trait(T.RowWise)
    assert g.ArgReduceOp.has_trait(T.Reduction) and not g.ArgReduceOp.has_trait(T.RowReduction)
    assert {c.name for c in g.Graph.operations if c.has_trait(T.Activation)} == {
        "graph.gelu", "graph.relu", "graph.silu", "graph.sigmoid", "graph.tanh"}
    assert not any(c.has_trait(T.Elementwise) and c.has_trait(T.Layout) for c in g.Graph.operations)


def test_fusion_kinds_come_from_the_traits():
    m = ir.parse("""
func.func @forward(%q: tensor<1x2x64x16xf32>, %x: tensor<4x8xf32>, %y: tensor<4x8xf32>) -> (tensor<1x2x64x16xf32>, tensor<8x8xf32>) {
  %o = graph.block_sparse_attention %q, %q, %q {block = 16 : i64, scale = 0.25 : f64, causal, policy = "window", heads = "[{\\"pattern\\": \\"window\\", \\"window\\": 32, \\"sinks\\": 16}]", density = 0.5 : f64} : tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32> -> tensor<1x2x64x16xf32>
  %c = graph.concat %x, %y {dim = 0 : i64} : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<8x8xf32>
  %s = graph.softmax %c {dim = 1 : i64} : tensor<8x8xf32> -> tensor<8x8xf32>
  func.return %o, %s : tensor<1x2x64x16xf32>, tensor<8x8xf32>
}""")
    kinds = [op_kind(op) for op in m.walk() if op.dialect_name() == "graph"]
    assert kinds == ["anchor", "layout", "reduction"]


def test_op_tables_are_keyed_by_class_and_refuse_unknown_names():
    table = OpTable("probe")

    @table.register(g.AddOp)
    def _add():
        return "add"

    assert table[g.AddOp] is _add and table["graph.add"] is _add and g.AddOp in table
    assert table.get("graph.sub") is None
    with pytest.raises(KeyError, match="no graph op named 'graph.ad'"):
        table["graph.ad"] = _add
    with pytest.raises(TypeError, match="probe table: key 3 is not an op class"):
        table[3] = _add
    assert op_class("graph.expm1") is g.Expm1Op


MLP = """
func.func @forward(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>, %b: tensor<16xf32>) -> tensor<16x4xf32> {
  %h = graph.linear %x, %w bias %b : tensor<16xf32> : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %a = graph.gelu %h {approximate = "none"} : tensor<4x16xf32> -> tensor<4x16xf32>
  %p = graph.permute %a {perm = array<i64: 1, 0>} : tensor<4x16xf32> -> tensor<16x4xf32>
  %r = graph.cumsum %p {dim = 1 : i64} : tensor<16x4xf32> -> tensor<16x4xf32>
  func.return %r : tensor<16x4xf32>
}"""


def test_cpu_steps_carry_a_kind_and_the_runner_ignores_the_route_text(tmp_path, monkeypatch):
    monkeypatch.setenv("SOLDER_CACHE_DIR", str(tmp_path))
    plan = plan_module(ir.parse(MLP))
    assert [s.kind.route for s in plan.steps] == [Route.LIBRARY, Route.GENERATED, Route.VIEW, Route.LIBRARY]
    assert [s.route.split(":")[0] for s in plan.steps] == ["library", "mlir", "view", "library"]
    for s in plan.steps:
        s.route = "whatever explain() says"

    def eager_would_be_wrong(op):
        raise AssertionError(f"{op.name} ran eagerly; its step's kind says otherwise")

    monkeypatch.setitem(OPS, g.LinearOp, eager_would_be_wrong)
    monkeypatch.setitem(OPS, g.GeluOp, eager_would_be_wrong)
    monkeypatch.setitem(OPS, g.CumsumOp, eager_would_be_wrong)  # a library call (backends/lowering/library.py)
    kernels = compile_plan(plan)
    assert list(kernels) == [plan.steps[1].func]
    run = build_runner(plan, kernels)
    x, w, b = torch.randn(4, 8), torch.randn(16, 8), torch.randn(16)
    (got,) = run([x, w, b])
    want = torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b)).t().cumsum(1)
    torch.testing.assert_close(got, want)


def test_triton_step_kinds_print_their_word_and_know_their_route():
    assert f"{StepKind.TEMPLATE:<10}|" == "template  |"
    assert StepKind.POINTWISE.generated and not StepKind.TEMPLATE.generated
    assert StepKind.FALLBACK.route is Route.EAGER and StepKind.EXTERN.aliasing
