"""compile() options do what they say or are refused at compile(): cost_model (a path, "roofline" or a
loaded model) reaches every pass that asks the cost model and explain() names it; a pass's
cost-model=PATH works from the pipeline string; bad dynamic= and passes= raise before the first call.
And compiling works with every warning an error."""

import warnings

import pytest
import torch
from torch import nn

import solder
from solder import costmodel
from solder.compiler.errors import OptionError, PipelineError

SHIPPED_CPU = costmodel.SHIPPED / "cpu"


class Mlp(nn.Module):
    """Two sibling projections (merge-linears asks the cost model) and an epilogue chain (fuse-ops asks)."""

    def __init__(self, d=16):
        super().__init__()
        self.a, self.b = nn.Linear(d, d), nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        h = torch.relu(self.a(x)) * torch.sigmoid(self.b(x))
        return torch.nn.functional.gelu(self.out(h) + x)


class Counting:
    """A loaded cost model stand-in: every kernel of n ops costs n² seconds, so no fusion ever pays."""

    target = "cpu"

    def __init__(self):
        self.ops_calls = 0
        self.op_calls = 0

    def predict_op(self, op, target):
        self.op_calls += 1
        return 1.0

    def predict_ops(self, ops, target):
        self.ops_calls += 1
        return float(len(ops) ** 2)


def _run(cm, x):
    with torch.no_grad():
        return cm(x)


def _explain_line(cm, prefix):
    return next(line for line in cm.explain().splitlines() if line.startswith(prefix))


@pytest.mark.parametrize("spec, match", [
    ("/no/such/model", r"cost_model='/no/such/model'\): no such file or folder"),
    (3, r"cost_model=\.\.\.\) got a int"),
])
def test_bad_cost_model_is_refused_at_compile(spec, match):
    with pytest.raises(OptionError, match=match):
        solder.compile(Mlp().eval(), cost_model=spec)


def test_cost_model_file_that_does_not_load_is_refused(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a model")
    with pytest.raises(OptionError, match="does not load"):
        solder.compile(Mlp().eval(), cost_model=str(bad))


def test_loaded_cost_model_reaches_every_pass_that_asks():
    """merge-linears asks it per linear, fuse-ops per candidate group; with fusion priced out, every op
    stays a kernel of its own, and explain() names the model."""
    model, x = Mlp().eval(), torch.randn(4, 16)
    fake = Counting()
    cm = solder.compile(model, cost_model=fake)
    torch.testing.assert_close(_run(cm, x), model(x), atol=1e-5, rtol=1e-5)
    assert fake.op_calls > 0 and fake.ops_calls > 0
    sp = next(iter(cm.specializations.values()))
    layout = {"graph.slice", "graph.reshape", "graph.permute", "graph.expand", "graph.concat", "graph.yield"}
    kernels = [[o.name for o in op.regions[0].block.ops if o.name not in layout]
               for op in sp.imported.module.walk() if op.name == "graph.kernel"]
    assert kernels and all(len(k) <= 1 for k in kernels), kernels  # priced out: no two computed ops together
    assert "merge-linears: est 1000000.00 us vs 2000000.00 us apart" in cm.explain()  # its predict_op answers
    assert _explain_line(cm, "cost model:") == "cost model: loaded Counting (fitted for cpu)"


def test_roofline_and_path_are_named_by_explain():
    x = torch.randn(4, 16)
    roof = solder.compile(Mlp().eval(), cost_model="roofline")
    _run(roof, x)
    assert "roofline" in _explain_line(roof, "cost model:")
    learned = solder.compile(Mlp().eval(), cost_model=SHIPPED_CPU)
    _run(learned, x)
    assert str(SHIPPED_CPU) in _explain_line(learned, "cost model:")
    assert f'cost_model="{SHIPPED_CPU}"' in _explain_line(learned, "pipeline:")


def test_pass_cost_model_path_from_the_pipeline_string():
    model, x = Mlp().eval(), torch.randn(4, 16)
    cm = solder.compile(model, passes=f"canonicalize,cse,fuse-ops{{cost-model={SHIPPED_CPU} max-ops=8}},dce")
    torch.testing.assert_close(_run(cm, x), model(x), atol=1e-5, rtol=1e-5)
    assert _explain_line(cm, "cost model:") == f"cost model: learned model from {SHIPPED_CPU.resolve()}"


def test_pass_cost_model_that_is_missing_is_refused_at_compile():
    with pytest.raises(PipelineError, match=r"fuse-ops: cost-model='/no/such/model': no such file"):
        solder.compile(Mlp().eval(), passes="fuse-ops{cost-model=/no/such/model}")


@pytest.mark.parametrize("dynamic", ["yes", 1.0, "True"])
def test_bad_dynamic_is_refused_at_compile(dynamic):
    with pytest.raises(OptionError, match=r"compile\(dynamic=.*expected None .*True .*False"):
        solder.compile(Mlp().eval(), dynamic=dynamic)


@pytest.mark.parametrize("passes, match", [
    ("canonicalize,no-such-pass", "unknown pass 'no-such-pass'"),
    ("fuse-ops{max-ops=many}", "bad options for pass 'fuse-ops'"),
    ("fuse-ops{", "malformed pipeline"),
])
def test_bad_passes_are_refused_at_compile(passes, match):
    with pytest.raises(PipelineError, match=match):
        solder.compile(Mlp().eval(), passes=passes)


def test_options_are_checked_for_the_decorator_too():
    with pytest.raises(OptionError, match="dynamic='no'"):
        solder.compile(target="cpu", dynamic="no")


class Block(nn.Module):
    """A pre-norm transformer block with tuple outputs, a decomposed op (addcmul) and a reshape chain."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.ln, self.heads = nn.LayerNorm(d), heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln(x).reshape(b * t, d).reshape(b, t, d)  # canonicalize merges the two (an xDSL rewrite)
        q, k, v = (p(h).view(b, t, self.heads, d // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        return torch.addcmul(x, x, self.mlp(x), value=0.5), (a, {"h": h})


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.bn, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.c(x))).mean((2, 3)))


@pytest.mark.parametrize("make, shape", [(Block, (2, 8, 32)), (ConvNet, (2, 3, 8, 8))])
def test_compiles_with_every_warning_an_error(make, shape):
    """No library warning escapes a compile: xDSL's deprecations are not called, torch's own (a
    FutureWarning when run_decompositions deep-copies its tree specs) stay inside capture."""
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cm = solder.compile(model, target="cpu")
        got = _run(cm, x)
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(model(x))):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
