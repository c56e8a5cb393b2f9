"""`torch.compile(model, backend="solder")`: the entry point is found by name, every graph Dynamo
captures (including the pieces around graph breaks) is compiled by solder, and results match eager."""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points

import pytest
import torch

from solder.dynamo import make_backend, solder_backend
from solder.compiler.errors import SolderError


class Branchy(torch.nn.Module):
    """A data-dependent branch and a print(): Dynamo breaks the graph at both."""

    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(8, 8)
        self.l2 = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = self.l1(x).relu()
        if x.sum() > 0:  # graph break: branch on a tensor value
            y = y * 2
        else:
            y = y - 1
        print("solder dynamo test: graph break")  # graph break: print
        return self.l2(y).softmax(-1)


@pytest.fixture(autouse=True)
def _reset_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_entry_point_is_registered():
    names = {ep.name: ep.value for ep in entry_points(group="torch_dynamo_backends")}
    assert names.get("solder") == "solder.dynamo:solder_backend"
    from torch._dynamo.backends.registry import list_backends, lookup_backend

    assert lookup_backend("solder") is solder_backend
    assert "solder" in list_backends(exclude_tags=())


def test_backend_by_name_matches_eager():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval()
    x = torch.randn(4, 16)
    before = len(solder_backend.graphs)
    compiled = torch.compile(model, backend="solder")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    assert len(solder_backend.graphs) == before + 1


def test_graph_breaks_each_graph_goes_through_solder(capsys):
    model, backend = Branchy().eval(), make_backend()
    compiled = torch.compile(model, backend=backend)
    x = torch.rand(3, 8) + 0.1
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
        torch.testing.assert_close(compiled(-x), model(-x))  # the other branch
    assert "graph break" in capsys.readouterr().out
    # before the branch | the taken branch up to print() | after print(); then the other branch's piece
    assert len(backend.graphs) >= 4
    assert all(g.specializations for g in backend.graphs), "a captured graph did not run through solder"
    ops = {op.name for g in backend.graphs for sp in g.specializations.values() for op in sp.imported.module.walk()}
    assert {"graph.linear", "graph.softmax", "graph.reduce"} <= ops


def test_options_reach_compile():
    backend = make_backend()
    compiled = torch.compile(lambda a: (a * 3).exp(), backend=backend)
    compiled2 = torch.compile(lambda a: (a * 3).exp(), backend="solder", options={"passes": "canonicalize"})
    x = torch.randn(5)
    torch.testing.assert_close(compiled(x), (x * 3).exp())
    torch.testing.assert_close(compiled2(x), (x * 3).exp())
    assert backend.graphs[0].options.target.name == "cpu"
    with pytest.raises(Exception, match="unknown option.*mode_x"):
        torch.compile(lambda a: a + 1, backend="solder", options={"mode_x": 1})(x)


def test_new_shape_recompiles_and_stays_correct():
    backend = make_backend()
    f = torch.compile(lambda a, b: torch.where(a > b, a, b * 2).sum(-1), backend=backend)
    for n in (3, 5, 7):
        a, b = torch.randn(n, 4), torch.randn(n, 4)
        torch.testing.assert_close(f(a, b), torch.where(a > b, a, b * 2).sum(-1))


def test_grad_inputs_run_eagerly_with_a_warning():
    model, backend = torch.nn.Linear(4, 2), make_backend()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = compiled(x)
    assert out.requires_grad  # eager kept autograd working
    assert any("inference only" in str(m.message) for m in w)
    assert issubclass(SolderError, Exception)


class Heads(torch.nn.Module):
    """Reads its input's sizes in Python (`x.shape`): under dynamic shapes Dynamo passes them as SymInts."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x):
        b, t, d = x.shape
        h = torch.nn.functional.gelu(self.fc(x)).reshape(b * t, 4, d // 4)
        return h.softmax(-1).sum(1).reshape(b, t, 4) + x.mean(-1, keepdim=True)


SIZES = [(2, 8), (3, 5), (2, 13), (4, 3), (5, 7), (2, 8)]


def _run(compiled, model, sizes=SIZES):
    with torch.no_grad():
        for b, t in sizes:
            x = torch.randn(b, t, 16)
            torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-4)


def _compiles(backend) -> int:
    return sum(g.compile_count for g in backend.graphs)


def test_dynamic_true_compiles_once_for_every_size():
    """dynamic=True: Dynamo hands one graph with SymInt placeholders; solder reads them off the tensor's
    dims, compiles the dims Dynamo marked symbolic dynamic, once, and serves every size with it."""
    torch.manual_seed(0)
    model, backend = Heads().eval(), make_backend()
    compiled = torch.compile(model, backend=backend, dynamic=True)
    _run(compiled, model)
    assert len(backend.graphs) == 1
    assert _compiles(backend) == 1, [g.compile_count for g in backend.graphs]
    (sp,) = backend.graphs[0].specializations.values()
    assert sp.binding is not None and len(sp.binding.symbols) == 2  # batch and sequence are `?` in the IR
    assert {op.name for op in sp.imported.module.walk()} >= {"graph.linear", "graph.softmax"}


def test_automatic_dynamic_compiles_the_second_graph_once_for_every_later_size():
    """Default torch.compile: the first size gives a static graph; the second makes Dynamo retrace with
    symbolic sizes, which solder compiles dynamic once; no later size compiles again."""
    torch.manual_seed(0)
    model, backend = Heads().eval(), make_backend()
    compiled = torch.compile(model, backend=backend)
    _run(compiled, model)
    assert len(backend.graphs) == 2
    assert [g.compile_count for g in backend.graphs] == [1, 1]
    assert backend.graphs[0].options.dynamic_dims is None  # the static graph keeps solder's default policy
    assert backend.graphs[1].options.dynamic_dims  # the retraced one is dynamic from its first call


def test_a_dynamic_int_argument_that_is_no_tensor_dim_compiles_per_value():
    """An int argument Dynamo made a SymInt that no tensor dim carries stays an input: one compile per
    value (tensor dims stay dynamic across them), and every result matches eager."""
    backend = make_backend()

    def f(x, n):
        return (x * n).softmax(-1) + n

    compiled = torch.compile(f, backend=backend, dynamic=True)
    for n, t in ((2, 4), (3, 4), (2, 9), (3, 6), (2, 5)):
        x = torch.randn(t, 8)
        torch.testing.assert_close(compiled(x, n), f(x, n))
    assert len(backend.graphs) == 1
    assert _compiles(backend) == 2  # n = 2 and n = 3; the sizes of x never compile again
