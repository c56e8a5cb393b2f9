"""merge-linears on the CPU backend: sibling projections run as one GEMM over weights stacked once per
weight version — numerics, the plan, and weights updated in place between calls."""

import torch
from torch import nn

from solder.backends.cpu.backend import HOISTED, plan_module
from solder import compile as solder_compile


class Projections(nn.Module):
    """LLaMA-style q/k/v (GQA widths) and a gated MLP's gate/up, all reading one normalized input."""

    def __init__(self, d=32):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d, bias=False), nn.Linear(d, d // 2, bias=False), nn.Linear(d, d // 2, bias=False)
        self.gate, self.up = nn.Linear(d, 3 * d), nn.Linear(d, 3 * d)

    def forward(self, x):
        h = torch.nn.functional.layer_norm(x, x.shape[-1:])
        q, k, v = self.q(h), self.k(h), self.v(h)
        mlp = torch.nn.functional.silu(self.gate(x)) * self.up(x)
        return q * 2 + torch.cat([k, v], -1), mlp


def _plan(cm):
    return plan_module(next(iter(cm.specializations.values())).imported.module)


def test_sibling_linears_run_as_one_gemm_each():
    torch.manual_seed(0)
    model, x = Projections().eval(), torch.randn(2, 8, 32)
    cm = solder_compile(model, target="cpu")
    for got, want in zip(cm(x), model(x)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    routes = [s.route for s in _plan(cm).steps]
    assert routes.count(HOISTED) == 3, routes  # q/k/v weights; gate/up weights; gate/up biases
    assert sum(r.startswith("library: torch.") and "cat" not in r for r in routes) == 2, routes  # two GEMMs


def test_stacked_weights_follow_in_place_updates():
    """The stack is cached by the weights' identity, version and storage: an optimizer-style in-place
    update and load_state_dict both show in the next call."""
    torch.manual_seed(1)
    model, x = Projections().eval(), torch.randn(2, 8, 32)
    cm = solder_compile(model, target="cpu")
    cm(x)
    with torch.no_grad():
        model.k.weight.mul_(-3.0)  # in place: version bump
    for got, want in zip(cm(x), model(x)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    for got, want in zip(cm(x), model(x)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_explain_names_the_merge():
    torch.manual_seed(2)
    model, x = Projections().eval(), torch.randn(2, 8, 32)
    cm = solder_compile(model, target="cpu", explain=True)
    cm(x)
    text = cm.explain()
    assert "3 linears on one input merged (merge-linears: est" in text, text
    assert "2 linears on one input merged" in text, text


def test_cost_mode_keeps_linears_apart_when_the_model_says_so(monkeypatch):
    """mode=cost: a stacked GEMM estimated slower than its parts is not built, and nothing is left behind
    (the detached concats and linear are erased: the weights have no stray uses)."""
    from solder import costmodel
    from solder.compiler import ir
    from solder.compiler.pipeline import run_pipeline

    real = costmodel.estimate

    def slower_when_stacked(op, target, model=None):
        stacked = op.name == "graph.linear" and getattr(op.weight.owner, "name", "") == "graph.concat"
        return 1.0 if stacked else real(op, target, model)

    monkeypatch.setattr(costmodel, "estimate", slower_when_stacked)
    m = ir.parse("""func.func @forward(%w1: tensor<16x8xf32>, %w2: tensor<16x8xf32>, %x: tensor<4x8xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>) {
  %a = graph.linear %x, %w1 : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %b = graph.linear %x, %w2 : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  func.return %a, %b : tensor<4x16xf32>, tensor<4x16xf32>
}""")
    run_pipeline(m, "merge-linears{mode=cost target=cpu}")
    names = [op.name for op in m.walk()]
    assert names.count("graph.linear") == 2 and "graph.concat" not in names and "graph.slice" not in names
    fn = next(op for op in m.walk() if op.name == "func.func")
    assert [len(list(a.uses)) for a in fn.body.block.args[:2]] == [1, 1]
