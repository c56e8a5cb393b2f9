"""Fusion asks the backend: every `graph.kernel` that fuse-ops/fuse-blocks form is exactly one launch on the
target's backend, so the cost model priced what runs (passes/fusion_rules.py, `Backend.can_fuse`)."""

from __future__ import annotations

import functools
from collections import Counter

import pytest

from examples.models import ZOO
from solder.backends.lowering.steps import StepKind
from solder.backends.registry import get_backend
from solder.compiler.dialects import graph as g
from solder.compiler.targets import get_target
from solder.passes.pipeline import run_pipeline

MODELS = ["mlp", "gpt_block", "llama", "resnet"]
NOT_LAUNCHES = (StepKind.VIEW, StepKind.HOISTED)


@functools.lru_cache(maxsize=None)
def _imported(name: str):
    from solder.compiler.aten_table import TABLE
    from solder.compiler.capture import capture
    from solder.compiler.importer import import_program

    model, args, kwargs = ZOO[name].build()
    return import_program(capture(model, args, kwargs, set(TABLE)).program).module


def _planned(name: str, target: str, ask: bool):
    t = get_target(target)
    backend = get_backend(t.backend)
    module = _imported(name).clone()
    run_pipeline(module, t.pipeline.replace("fuse-ops", "fuse-ops{mode=always}").replace(
        "fuse-blocks", "fuse-blocks{mode=always}"), target=t, can_fuse=backend.can_fuse if ask else None)
    if t.backend == "cpu":
        from solder.backends.cpu.backend import plan_module

        steps = plan_module(module).steps
    else:
        from solder.backends.triton.backend import plan_module

        steps = plan_module(module, t).steps
    kernels = {k.attributes["kernel_id"].value.data: k for k in module.walk() if isinstance(k, g.KernelOp)}
    launches = Counter(s.kernel_id for s in steps if s.kind not in NOT_LAUNCHES and s.kernel_id is not None)
    return kernels, launches


@pytest.mark.parametrize("target", ["cpu", "h100"])
@pytest.mark.parametrize("name", MODELS)
def test_every_kernel_is_one_launch(name, target):
    kernels, launches = _planned(name, target, ask=True)
    split = {kid: n for kid, n in launches.items() if n > 1}
    assert not split, f"{name} on {target}: kernels split into several launches: " + "; ".join(
        f"{kid} ({kernels[kid].attributes['reason'].data}): {n}" for kid, n in split.items())


def test_without_the_backend_some_kernel_is_split():
    """The check can fail: fused without asking the CPU backend, a GEMM epilogue kernel launches twice."""
    _, launches = _planned("mlp", "cpu", ask=False)
    assert any(n > 1 for n in launches.values()), launches


def test_the_backend_says_why_it_refuses():
    from solder.compiler import ir

    m = ir.parse("""func.func @forward(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>) -> tensor<4x16xf32> {
  %h = graph.linear %x, %w : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %a = graph.relu %h : tensor<4x16xf32> -> tensor<4x16xf32>
  func.return %a : tensor<4x16xf32>
}""")
    ops = [op for op in m.walk() if isinstance(op, (g.LinearOp, g.ReluOp))]
    ok, why = get_backend("cpu").can_fuse(ops)
    assert not ok and "graph.linear runs as a library call" in why
    from solder.backends.triton.backend import TritonBackend

    ok, why = TritonBackend(gemm="cublas").can_fuse(ops)  # a GEMM on cuBLAS: the relu is its own kernel
    assert not ok and "cuBLAS" in why
    assert get_backend("cpu").can_fuse(ops[1:]) == (True, "")
