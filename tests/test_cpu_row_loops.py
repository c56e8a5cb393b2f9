"""The row-loop rewrites (backends/cpu/row_loops.py): row temporaries computed in the output row and reductions
fused into the loop that writes what they read; where they apply, where they must not, and numerics of the
kernels they change (softmax, masked softmax, add + layer norm, residual + norm) against eager at odd sizes, one
row, fewer rows than threads, rank 3, with 1 and 2 threads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_mlir import ir, passmanager

from solder import compile
from solder.backends.cpu import jit, kernels, row_loops


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SOLDER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _rewritten(text: str, schedule: bool = True, rewrite=row_loops.temps_into_outputs) -> tuple[int, str]:
    """How many loops `rewrite` changes in `text` (after its transform schedule), and the module after it."""
    with ir.Context() as ctx, ir.Location.unknown(ctx):
        m = ir.Module.parse(text)
        if schedule:
            passmanager.PassManager.parse("builtin.module(transform-interpreter)").run(m.operation)
            jit._drop_transform_ops(m)
        n = rewrite(m)
        assert m.operation.verify()
        return n, str(m)


def _both(m) -> int:
    """The rewrites in jit.py's order; how many temporaries went into outputs."""
    row_loops.fuse_reductions(m)
    return row_loops.temps_into_outputs(m)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("name,hits", [("softmax", 1), ("add_layer_norm", 0), ("layer_norm", 0),
                                       ("add_gelu_tanh", 0)])
def test_temporary_goes_into_the_output_where_only_the_root_reads_it(name, hits, parallel):
    # add + layer norm: the variance loop reads the sum's row too, and it stays a stack temporary
    text, _ = kernels.KERNELS[name](64, 256, parallel=parallel)
    n, out = _rewritten(text, rewrite=_both)
    assert n == hits
    if hits:
        assert "tensor.empty() : tensor<1x256xf32>" not in out  # the row temporary is gone


@pytest.mark.parametrize("name,hits,loops", [("softmax", 1, 3), ("add_layer_norm", 1, 3), ("layer_norm", 0, 3),
                                             ("rms_norm", 0, 2)])
def test_reductions_fuse_into_the_loop_writing_their_input(name, hits, loops):
    text, _ = kernels.KERNELS[name](64, 256, parallel=True)
    n, out = _rewritten(text, rewrite=row_loops.fuse_reductions)
    assert n == hits
    assert out.count("scf.for %") == loops  # softmax: max, exp+sum, normalize; add+norm: add+sum, var, normalize


_ROOT_LOOP = """
func.func @f(%x: tensor<4x64xf32>, %out: tensor<4x64xf32>, %row: index) -> ({results}) {{
  %c0 = arith.constant 0 : index
  %c32 = arith.constant 32 : index
  %c64 = arith.constant 64 : index
  %pad = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<1x64xf32>
  %t = scf.for %i = %c0 to %c64 step %c32 iter_args(%a = %e) -> (tensor<1x64xf32>) {{
    %v = vector.transfer_read %x[%row, %i], %pad {{in_bounds = [true]}} : tensor<4x64xf32>, vector<32xf32>
    %s = tensor.extract_slice %a[0, %i] [1, 32] [1, 1] : tensor<1x64xf32> to tensor<1x32xf32>
    %w = vector.transfer_write %v, %s[%c0, %c0] {{in_bounds = [true]}} : vector<32xf32>, tensor<1x32xf32>
    %n = tensor.insert_slice %w into %a[0, %i] [1, 32] [1, 1] : tensor<1x32xf32> into tensor<1x64xf32>
    scf.yield %n : tensor<1x64xf32>
  }}
  %o = tensor.extract_slice %out[%row, 0] [1, 64] [1, 1] : tensor<4x64xf32> to tensor<1x64xf32>
  %r = scf.for %i = %c0 to %c64 step {step} iter_args(%b = %o) -> (tensor<1x64xf32>) {{
    %v = vector.transfer_read %t[%c0, {read_at}], %pad {{in_bounds = [true]}} : tensor<1x64xf32>, vector<32xf32>
    %y = arith.mulf %v, %v : vector<32xf32>
    %s = tensor.extract_slice %b[0, %i] [1, 32] [1, 1] : tensor<1x64xf32> to tensor<1x32xf32>
    %w = vector.transfer_write %y, %s[%c0, %c0] {{in_bounds = [true]}} : vector<32xf32>, tensor<1x32xf32>
    %n = tensor.insert_slice %w into %b[0, %i] [1, 32] [1, 1] : tensor<1x32xf32> into tensor<1x64xf32>
    scf.yield %n : tensor<1x64xf32>
  }}
  %res = tensor.insert_slice %r into %out[%row, 0] [1, 64] [1, 1] : tensor<1x64xf32> into tensor<4x64xf32>
  return {returns}
}}
"""


_SUM_LOOP = """
func.func @f(%x: tensor<4x64xf32>, %row: index, %z: vector<32xf32>) -> (tensor<1x64xf32>, vector<32xf32>) {{
  %c0 = arith.constant 0 : index
  %c32 = arith.constant 32 : index
  %c64 = arith.constant 64 : index
  %pad = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<1x64xf32>
  %t = scf.for %i = %c0 to %c64 step {write_step} iter_args(%a = %e) -> (tensor<1x64xf32>) {{
    %v = vector.transfer_read %x[%row, %i], %pad {{in_bounds = [true]}} : tensor<4x64xf32>, vector<32xf32>
    %s = tensor.extract_slice %a[0, %i] [1, 32] [1, 1] : tensor<1x64xf32> to tensor<1x32xf32>
    %w = vector.transfer_write %v, %s[%c0, %c0] {{in_bounds = [true]}} : vector<32xf32>, tensor<1x32xf32>
    %n = tensor.insert_slice %w into %a[0, %i] [1, 32] [1, 1] : tensor<1x32xf32> into tensor<1x64xf32>
    scf.yield %n : tensor<1x64xf32>
  }}
  %late = arith.addf %z, %z : vector<32xf32>
  %r = scf.for %i = %c0 to %c64 step %c32 iter_args(%acc = %z) -> (vector<32xf32>) {{
    %v = vector.transfer_read %t[%c0, {read_at}], %pad {{in_bounds = [true]}} : tensor<1x64xf32>, vector<32xf32>
    %y = arith.addf %v, {addend} : vector<32xf32>
    scf.yield %y : vector<32xf32>
  }}
  return %t, %r : tensor<1x64xf32>, vector<32xf32>
}}
"""


@pytest.mark.parametrize("write_step,read_at,addend,hits", [
    ("%c32", "%i", "%acc", 1),
    ("%c32", "%c32", "%acc", 0),  # reads another tile than the producer writes in that iteration
    ("%c32", "%i", "%late", 0),  # uses a value computed after the producer loop
    ("%c64", "%i", "%acc", 0),  # producer tiles do not match the iteration space
], ids=["match", "other-tile", "late-value", "other-step"])
def test_reduction_fusion_matches_only_same_iteration_reads(write_step, read_at, addend, hits):
    text = _SUM_LOOP.format(write_step=write_step, read_at=read_at, addend=addend)
    n, out = _rewritten(text, schedule=False, rewrite=row_loops.fuse_reductions)
    assert n == hits
    assert out.count("scf.for %") == 2 - hits


def _root_loop(step="%c32", read_at="%i", also_return_temp=False) -> str:
    results = "tensor<4x64xf32>, tensor<1x64xf32>" if also_return_temp else "tensor<4x64xf32>"
    returns = ("%res, %t : tensor<4x64xf32>, tensor<1x64xf32>" if also_return_temp
               else "%res : tensor<4x64xf32>")
    return _ROOT_LOOP.format(step=step, read_at=read_at, results=results, returns=returns)


@pytest.mark.parametrize("text,hits", [
    (_root_loop(), 1),
    (_root_loop(read_at="%c32"), 0),  # reads another tile than it writes
    (_root_loop(step="%c64"), 0),  # tiles that do not cover the row once
    (_root_loop(also_return_temp=True), 0),  # the temporary is used after the root loop
], ids=["match", "other-tile", "step", "used-after"])
def test_rewrite_matches_only_same_tile_reads(text, hits):
    n, out = _rewritten(text, schedule=False)
    assert n == hits
    if hits:
        assert "tensor.empty" not in out and "vector.transfer_read %arg" in out


class Softmax(nn.Module):
    def forward(self, x):
        return torch.softmax(x, -1)


class MaskedScaledSoftmax(nn.Module):
    def forward(self, x, m):
        return torch.softmax((x * 0.125).masked_fill(m, float("-inf")), -1)


class AddNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln = nn.LayerNorm(c)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-1, 1)

    def forward(self, x, r):
        return self.ln(x + r), F.log_softmax(x + r, -1)


class ResidualAndNorm(nn.Module):
    """A pre-norm block's residual stream and its norm: two outputs of one row kernel."""

    def __init__(self, c):
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x, r):
        h = x + r
        return h, self.ln(h)


SHAPES = [(1, 100), (3, 37), (1, 1024), (5, 1000), (37, 100), (600, 256), (2, 3, 64), (3, 130, 96)]


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_softmax_and_add_norm_match_eager(shape, torch_threads):
    torch.manual_seed(0)
    x, r = torch.randn(*shape) * 4, torch.randn(*shape)
    mask = torch.rand(*shape) < 0.2
    mask[..., 0] = False
    cases = [(Softmax().eval(), (x,)), (MaskedScaledSoftmax().eval(), (x, mask)), (AddNorm(shape[-1]).eval(), (x, r)),
             (ResidualAndNorm(shape[-1]).eval(), (x, r))]
    for n in (2, 1):
        torch_threads(n)
        for model, args in cases:
            c = compile(model, target="cpu", speed_guard=False)
            with torch.no_grad():
                got, ref = c(*args), model(*args)
            assert next(iter(c.specializations.values())).program.fallbacks == []
            for a, b in zip(got if isinstance(got, tuple) else (got,), ref if isinstance(ref, tuple) else (ref,)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("error")
def test_fully_masked_rows_stay_nan_like_eager():
    x = torch.randn(6, 64)
    mask = torch.zeros(6, 64, dtype=torch.bool)
    mask[2] = True
    model = MaskedScaledSoftmax().eval()
    c = compile(model, target="cpu", speed_guard=False)
    with torch.no_grad():
        got, ref = c(x, mask), model(x, mask)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, equal_nan=True)
