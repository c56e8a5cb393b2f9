"""The shape policy: a second distinct shape compiles the differing dims dynamic (`?` in the IR), once.

Compile counts are `CompiledModule.compile_count` (captures); without the policy every new shape
is one more compile, so these tests fail on a runtime that specializes per shape.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.utils._pytree as pytree
from torch import nn

from solder.backends.reference import ReferenceBackend
from solder import compile
from solder.compiler import ir
from solder.compiler.dialects import symbolic
from solder.compiler.dialects.types import dims_of
from solder.compiler.errors import SolderError
from solder.runtime import DynamicShapeWarning

ROOT = Path(__file__).resolve().parent.parent


class Block(nn.Module):
    """Layer norm, a linear layer, GELU, a reshape into heads and a softmax over the sequence."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = torch.nn.functional.gelu(self.fc(self.norm(x)))
        h = h.reshape(b, t, 4, d // 4).transpose(1, 2)
        return torch.softmax(h, dim=2).sum(-1) + x.mean(-1, keepdim=True).transpose(1, 2)


def _model():
    torch.manual_seed(0)
    return Block().eval()


def _run_shapes(c, model, shapes):
    for s in shapes:
        x = torch.randn(*s)
        with torch.no_grad():
            torch.testing.assert_close(c(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("target", ["reference", "cpu"])
def test_a_second_shape_compiles_dynamic_once_and_later_shapes_reuse_it(target):
    model = _model()
    c = compile(model, target=target)
    _run_shapes(c, model, [(2, 8, 16)])
    assert c.compile_count == 1
    _run_shapes(c, model, [(2, 12, 16), (2, 5, 16), (2, 33, 16), (2, 12, 16)])
    assert c.compile_count == 2  # static first, then one dynamic specialization over the seq dim
    dyn = list(c.specializations.values())[-1]
    assert dyn.dynamic_dims == {(0, 1)}
    assert "?" in ir.print_ir(dyn.imported.module)
    # a change in another dim widens the dynamic set: one more compile, then it covers both
    _run_shapes(c, model, [(3, 7, 16), (5, 9, 16), (4, 3, 16)])
    assert c.compile_count == 3
    assert list(c.specializations.values())[-1].dynamic_dims == {(0, 0), (0, 1)}


def test_dynamic_false_compiles_per_shape_and_true_compiles_once():
    model = _model()
    per_shape = compile(model, target="reference", dynamic=False)
    _run_shapes(per_shape, model, [(2, 8, 16), (2, 9, 16), (2, 10, 16)])
    assert per_shape.compile_count == 3
    assert all(sp.binding is None for sp in per_shape.specializations.values())
    once = compile(model, target="reference", dynamic=True)
    _run_shapes(once, model, [(2, 8, 16), (3, 9, 16), (4, 10, 16), (2, 11, 16)])
    assert once.compile_count == 1
    (sp,) = once.specializations.values()
    # every dim is dynamic except the feature dim, which the layer norm and the linear layer fix
    assert dims_of(sp.imported.func.body.block.args[-1].type) == ("s0", "s1", 16)


def test_the_fast_path_runs_the_dynamic_specialization():
    model = _model()
    c = compile(model, target="reference")
    _run_shapes(c, model, [(2, 8, 16), (2, 9, 16), (2, 10, 16)])
    dyn = list(c.specializations.values())[-1]
    x = torch.randn(2, 10, 16)
    assert c._fast[((x.shape, x.dtype, x.device),)][1] is dyn
    with torch.no_grad():
        torch.testing.assert_close(c._fast_path((x,), {}), model(x), atol=1e-5, rtol=1e-4)


def test_printed_dynamic_ir_shows_symbols_and_parses_back_through_solder_opt(tmp_path):
    model = _model()
    c = compile(model, target="cpu", explain=False)
    _run_shapes(c, model, [(2, 8, 16), (2, 9, 16)])
    text = c.explain()
    assert "dynamic: s0 in [2, inf] (example 9)" in text and 'tensor<2x?x16xf32, ["s0"]>' in text
    dyn = list(c.specializations.values())[-1]
    printed = ir.print_ir(dyn.imported.module)
    assert 'tensor<2x?x16xf32, ["s0"]>' in printed and "graph.symbols = {s0 = array<i64: 2, -1, 9>}" in printed
    path = tmp_path / "dyn.mlir"
    path.write_text(printed)
    out = subprocess.run([str(Path(sys.executable).parent / "solder-opt"), str(path), "-p", "canonicalize,cse,dce"],
                         check=False, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    again = ir.parse(out.stdout)
    assert ir.print_ir(again) == ir.print_ir(ir.parse(ir.print_ir(again)))
    fn = next(iter(again.ops))
    assert symbolic.symbols(fn)["s0"] == symbolic.Symbol("s0", 2, None, 9)
    # the reference backend runs the re-parsed dynamic IR at a size never compiled
    prog = ReferenceBackend().lower(again)
    x = torch.randn(2, 21, 16)
    with torch.no_grad():
        got = prog(dyn.state + [x])[0]
        torch.testing.assert_close(got, model(x), atol=1e-5, rtol=1e-4)


def test_reference_backend_checks_bounds_at_call_time():
    text = """builtin.module {
  func.func @forward(%x: tensor<?x4xf32, ["s0"]>, %y: tensor<?x4xf32, ["s0"]>) -> tensor<?x4xf32, ["s0"]>
      attributes {graph.symbols = {s0 = array<i64: 2, 8, 4>}} {
    %z = graph.add %x, %y : (tensor<?x4xf32, ["s0"]>, tensor<?x4xf32, ["s0"]>) -> tensor<?x4xf32, ["s0"]>
    func.return %z : tensor<?x4xf32, ["s0"]>
  }
}"""
    prog = ReferenceBackend().lower(ir.parse(text))
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(prog([a, b])[0], a + b)
    with pytest.raises(symbolic.ShapeBindError, match=r"outside the compiled range s0 in \[2, 8\]"):
        prog([torch.randn(9, 4), torch.randn(9, 4)])
    with pytest.raises(symbolic.ShapeBindError, match="needs s0 = 5"):
        prog([a, torch.randn(6, 4)])
    with pytest.raises(symbolic.ShapeBindError, match="compiled static at 4"):
        prog([torch.randn(5, 3), torch.randn(5, 3)])


def test_sizes_outside_the_bounds_compile_static_and_stay_correct():
    model = _model()
    c = compile(model, target="reference")
    _run_shapes(c, model, [(2, 8, 16), (2, 9, 16)])
    dyn = list(c.specializations.values())[-1]
    assert dyn.binding.symbols["s0"].lo == 2
    _run_shapes(c, model, [(2, 1, 16)])  # size 1 is outside export's range [2, inf]: a static compile
    assert c.compile_count == 3 and list(c.specializations.values())[-1].binding is None
    _run_shapes(c, model, [(2, 17, 16)])  # back inside: the dynamic specialization, no compile
    assert c.compile_count == 3


class Even(nn.Module):
    """Splits the sequence into halves: export constrains the size to be even."""

    def forward(self, x):
        t = x.shape[1]
        return x.reshape(x.shape[0], 2, t // 2).sum(1)


def test_constraints_recorded_at_export_are_checked_at_call_time():
    model = Even().eval()
    c = compile(model, target="cpu")
    _run_shapes(c, model, [(2, 8), (2, 12), (2, 20), (2, 6)])
    assert c.compile_count == 2
    dyn = list(c.specializations.values())[-1]
    assert "Eq(Mod(s0, 2), 0)" in dyn.binding.assumes  # export's guard, over the symbol, canonical, in the IR
    with pytest.raises(symbolic.ShapeBindError, match="break the constraint"):
        dyn.binding([torch.randn(2, 7)])
    # an odd size is not run on the dynamic code: it goes to a static compile, which fails as eager does
    with pytest.raises(SolderError, match="invalid for input of size 14"):
        c(torch.randn(2, 7))
    with pytest.raises(RuntimeError, match="invalid for input of size 14"):
        model(torch.randn(2, 7))
    assert c.compile_count == 3


def test_a_dim_export_keeps_static_is_said_and_still_correct():
    class Fixed(nn.Module):
        def forward(self, x):
            return x.reshape(2, 8) * 2  # the reshape fixes both dims

    model = Fixed().eval()
    c = compile(model, target="reference", dynamic=True)
    with pytest.warns(DynamicShapeWarning, match="specialized dims"):
        c(torch.randn(2, 8))
    _run_shapes(c, model, [(2, 8)])
    assert c.compile_count == 1


def test_a_failed_dynamic_compile_falls_back_to_static_per_shape(monkeypatch):
    from solder.compiler import importer

    def broken(*a, **k):
        raise importer.ImportError_("no dynamic import today")

    model = _model()
    c = compile(model, target="reference")
    _run_shapes(c, model, [(2, 8, 16)])
    real = importer.import_program
    monkeypatch.setattr("solder.runtime.import_program",
                        lambda ep, **k: broken() if k.get("strip_prefix") else real(ep, **k))
    with pytest.warns(DynamicShapeWarning, match="no dynamic import today"):
        _run_shapes(c, model, [(2, 9, 16)])
    _run_shapes(c, model, [(2, 10, 16)])
    assert c.compile_count == 4  # 8, the failed dynamic attempt, then 9 and 10 static
    assert all(sp.binding is None for sp in c.specializations.values())


def test_specialization_cache_overflow_still_warns(monkeypatch):
    monkeypatch.setenv("SOLDER_MAX_SPECIALIZATIONS", "2")
    c = compile(nn.Linear(4, 4).eval(), target="reference", dynamic=False)
    c(torch.randn(1, 4))
    c(torch.randn(2, 4))
    with pytest.warns(UserWarning, match="more than 2 input signatures"):
        c(torch.randn(3, 4))
    assert len(c.specializations) == 2
    # the dynamic policy keeps the cache small: four shapes, two specializations, no warning
    d = compile(nn.Linear(4, 4).eval(), target="reference")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for n in (2, 3, 4, 5):
            d(torch.randn(n, 4))
    assert len(d.specializations) == 2


def _sliced(args, kwargs, t):
    return pytree.tree_map(lambda x: x[:, :t] if isinstance(x, torch.Tensor) else x, (args, kwargs))


@pytest.mark.parametrize("name", ["mlp", "gpt2", "bert", "llama", "attn_masked_fill"])
def test_zoo_models_with_a_dynamic_sequence_length_on_cpu(name):
    from examples.models import get

    entry = get(name)
    model, args, kwargs = entry.build()
    c = compile(model, target="cpu")
    for t in (5, 9, 12, 16) if name == "mlp" else (9, 12, 16, 24):  # the mlp's example has 16 rows
        a, k = _sliced(args, kwargs, t)
        with torch.no_grad():
            torch.testing.assert_close(c(*a, **k), model(*a, **k), atol=max(entry.atol, 1e-5),
                                       rtol=max(entry.rtol, 1e-4))
    assert c.compile_count == 2
    dyn = list(c.specializations.values())[-1]
    assert dyn.binding is not None and "s0" in dyn.binding.symbols
    # size-generic kernels: no per-size lowering, `?` dims in the MLIR the backend compiled
    assert dyn.program.sizes is None and "size-generic" in dyn.program.dynamic, dyn.program.dynamic
    assert "x?x" in dyn.program.source or "<?x" in dyn.program.source
    if name == "gpt2":
        assert "graph.attention" in ir.print_ir(dyn.imported.module)  # recognized on the dynamic IR


def test_triton_backend_runs_a_dynamic_module_with_one_lowering():
    """Under TRITON_INTERPRET=1, in a subprocess (the interpreter flag must precede the triton import): the
    second size compiles the dynamic module, whose one lowering serves the third size too."""
    code = """
import torch
from solder import compile
from examples.models import get
entry = get("mlp")
model, args, kwargs = entry.build()
c = compile(model, target="h100")
for t in (4, 6, 9):
    x = args[0][:, :t]
    with torch.no_grad():
        torch.testing.assert_close(c(x), model(x), atol=max(entry.atol, 1e-5), rtol=max(entry.rtol, 1e-4))
assert c.compile_count == 2, c.compile_count
dyn = list(c.specializations.values())[-1]
assert dyn.binding is not None and dyn.program.sizes is None, dyn.program.sizes
assert "one lowering serves every size" in dyn.program.dynamic, dyn.program.dynamic
print("ok")
"""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_a_saved_dynamic_specialization_loads_and_runs_new_sizes(tmp_path):
    from solder import artifact

    model = _model()
    c = compile(model, target="cpu")
    _run_shapes(c, model, [(2, 8, 16), (2, 9, 16)])
    loaded = artifact.load(artifact.save(c, tmp_path / "block.solder"))
    for t in (5, 13):
        x = torch.randn(2, t, 16)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(SolderError, match="no saved specialization"):
        loaded(torch.randn(2, 1, 16))  # size 1 is outside the saved bounds and was never compiled static


def test_dim_export_specializes_late_is_static_not_an_unbound_symbol():
    """With dynamic=True export first names SDPA's head dim (s27) and specializes it to 32 while tracing, after some
    types were made: those dims must become static 32, not a symbol no argument binds (which made every call
    miss the dynamic specialization and compile static, one per length)."""
    class M(torch.nn.Module):
        def forward(self, q, k, v):
            return nn.functional.scaled_dot_product_attention(q, k, v)

    model = M().eval()
    c = compile(model, target="cpu", dynamic=True)
    for t in (17, 40, 9):
        q, k, v = (torch.randn(2, 2, t, 32) for _ in range(3))
        with torch.no_grad():
            torch.testing.assert_close(c(q, k, v), model(q, k, v), atol=2e-5, rtol=2e-5)
    assert len(c.specializations) == 1
    (spec,) = c.specializations.values()
    assert spec.binding is not None and all(n == 32 for _, d, n in spec.binding.static if d == 3)


def test_interpolate_by_a_scale_factor_over_a_dynamic_size():
    """The output size is `TruncToInt(1.5*ToFloat(s0))` in export's size expressions (a fuzzer find)."""
    def f(x):
        return torch.nn.functional.interpolate(x, scale_factor=1.5, recompute_scale_factor=True, mode="nearest")

    c = compile(f, target="cpu", dynamic=True)
    for n in (2, 3, 7):
        x = torch.randn(1, 2, n)
        torch.testing.assert_close(c(x), f(x))
