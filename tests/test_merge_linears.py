"""merge-linears on the CPU backend: sibling projections run as one GEMM over weights stacked once and held
as the parameters' storage — numerics, the plan, and weights changed between calls however they change."""

import pytest
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
    from solder.passes.pipeline import run_pipeline

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


MERGE_ALWAYS = "canonicalize,cse,merge-linears{mode=always},fuse-ops,dce"
"""A pipeline that stacks every sibling group, whatever the cost model says."""


def _assert_matches_eager(cm, model, x):
    for got, want in zip(cm(x), model(x)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _write_q_weight_data(model):
    model.q.weight.data.add_(torch.randn_like(model.q.weight))  # `.data` has a version counter of its own


def _copy_into_gate_bias_data(model):
    model.gate.bias.data.copy_(torch.randn_like(model.gate.bias) * 8)


def _rebind_k_weight_data(model):
    model.k.weight.data = torch.randn_like(model.k.weight)  # new storage, same Parameter object


def _replace_v_weight(model):
    model.v.weight = nn.Parameter(torch.randn_like(model.v.weight))


def _optimizer_step(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    model(torch.randn(2, 8, 32))[1].sum().backward()
    opt.step()
    model.eval()


@pytest.mark.parametrize("change", [_write_q_weight_data, _copy_into_gate_bias_data, _rebind_k_weight_data,
                                    _replace_v_weight, _optimizer_step])
def test_stacked_weights_see_every_kind_of_write(change):
    """Writes through `.data` (no version bump), `.data = t`, a replaced parameter and an optimizer step all
    show in the next call: the stack is the parameters' storage, restacked when one moves."""
    torch.manual_seed(3)
    model, x = Projections().eval(), torch.randn(2, 8, 32)
    cm = solder_compile(model, target="cpu", passes=MERGE_ALWAYS)
    _assert_matches_eager(cm, model, x)
    change(model)
    _assert_matches_eager(cm, model, x)
    change(model)  # twice: the second write lands in the (re)made stack too
    _assert_matches_eager(cm, model, x)


def test_held_weights_keep_parameters_and_state_dict(tmp_path):
    """The parameters stay the same objects, and torch.save/load of the state dict round-trips."""
    torch.manual_seed(4)
    model, x = Projections().eval(), torch.randn(2, 8, 32)
    params = {n: p for n, p in model.named_parameters()}
    cm = solder_compile(model, target="cpu", passes=MERGE_ALWAYS)
    cm(x)
    assert all(p is params[n] for n, p in model.named_parameters())
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    fresh = Projections().eval()
    fresh.load_state_dict(torch.load(tmp_path / "sd.pt"))
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    _assert_matches_eager(cm, fresh, x)  # the same weights: the compiled module still matches


def test_two_specializations_share_one_stack():
    """A second shape's program finds the weights already stacked and reads them in place."""
    torch.manual_seed(5)
    model = Projections().eval()
    cm = solder_compile(model, target="cpu", dynamic=False, passes=MERGE_ALWAYS)
    _assert_matches_eager(cm, model, torch.randn(2, 8, 32))
    _assert_matches_eager(cm, model, torch.randn(3, 5, 32))
    model.q.weight.data.mul_(2.0)
    _assert_matches_eager(cm, model, torch.randn(2, 8, 32))
    _assert_matches_eager(cm, model, torch.randn(3, 5, 32))


def test_conv_weight_data_write_is_seen():
    """The CPU backend runs convolutions channels-last; the weight is read as the module holds it."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    cm = solder_compile(model, target="cpu", passes=MERGE_ALWAYS)
    torch.testing.assert_close(cm(x), model(x), atol=1e-5, rtol=1e-5)
    model[0].weight.data.copy_(torch.randn_like(model[0].weight))
    torch.testing.assert_close(cm(x), model(x), atol=1e-5, rtol=1e-5)


def test_triton_plan_stacks_weights_once():
    """The Triton backend runs an argument-only concatenation as the shared held-once stack, not a kernel."""
    from solder.backends.triton.backend import plan_module as triton_plan
    from solder.compiler import ir
    from solder.passes.pipeline import run_pipeline
    from solder.compiler.targets import get_target

    m = ir.parse("""func.func @forward(%w1: tensor<16x8xf32>, %w2: tensor<16x8xf32>, %x: tensor<4x8xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>) {
  %a = graph.linear %x, %w1 : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %b = graph.linear %x, %w2 : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %c = graph.relu %a : tensor<4x16xf32> -> tensor<4x16xf32>
  func.return %c, %b : tensor<4x16xf32>, tensor<4x16xf32>
}""")
    run_pipeline(m, "merge-linears{mode=always target=h100},fuse-ops{mode=always target=h100}")
    steps = triton_plan(m, get_target("h100")).steps
    stacks = [s for s in steps if s.name == "stacked weights"]
    names = lambda s: [o.name for o in s.ops]  # noqa: E731
    assert len(stacks) == 1 and names(stacks[0]) == ["graph.concat"], [(s.name, names(s)) for s in steps]
    assert not any("graph.concat" in names(s) for s in steps if s is not stacks[0])
    w1, w2 = torch.randn(16, 8), torch.randn(16, 8)
    stacked = stacks[0].fn(w1, w2)
    w2.data.add_(1.0)
    assert torch.equal(stacks[0].fn(w1, w2), torch.cat([w1, w2])) and stacks[0].fn(w1, w2) is stacked


TRITON_DATA_WRITES = """
import torch, warnings
from torch import nn
import solder
warnings.simplefilter("ignore")
torch.manual_seed(7)
class QKV(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(32, 32), nn.Linear(32, 16), nn.Linear(32, 16)
    def forward(self, x):
        h = torch.nn.functional.layer_norm(x, x.shape[-1:])
        return torch.relu(self.q(h)), self.k(h) * self.v(h)
model, x = QKV().eval(), torch.randn(2, 8, 32)
cm = solder.compile(model, target="h100", passes="canonicalize,cse,merge-linears{mode=always},fuse-ops,dce")
def err():
    return max((a - b).abs().max().item() for a, b in zip(cm(x), model(x)))
with torch.no_grad():
    before = err()
    model.q.weight.data.add_(torch.randn_like(model.q.weight))
    model.v.bias.data.copy_(torch.randn_like(model.v.bias) * 8)
    after = err()
names = [k["name"] for k in next(iter(cm.specializations.values())).program.kernels]
print(names.count("stacked weights"), before, after)
"""


def test_triton_backend_sees_data_writes_to_stacked_weights():
    """End to end on the Triton backend, its kernels in Triton's CPU interpreter (a process of its own: the
    interpreter is chosen when triton is imported): the same held-once stack, `.data` writes seen."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(root), SOLDER_SPEED_GUARD="off")
    p = subprocess.run([sys.executable, "-c", TRITON_DATA_WRITES], capture_output=True, text=True, env=env,
                       cwd=root, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    stacks, before, after = p.stdout.split()[-3:]
    assert int(stacks) == 2 and float(before) < 1e-4 and float(after) < 1e-4, p.stdout
