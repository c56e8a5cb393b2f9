"""The ATen ops that public-corpus models still ran as eager externs are compiled, and match eager: vector
norms (convnextv2, CLIP, SwinV2, TripletMarginLoss), advanced indexing with index tensors after a slice
(crossvit), 1-d and 3-d pooling, instance norm and batch norm without running statistics, SELU, clamp with
tensor bounds, cumprod, division rounded toward zero and fmod.

Each model runs compiled for the cpu target, the reference backend and the h100 target (its Triton kernels
under TRITON_INTERPRET=1 on CPU tensors, as the other Triton tests), at atol = rtol = 1e-5 against eager
(fmod and integer division exactly), with no `graph.extern` left in its program."""

from __future__ import annotations

import math
import os
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import solder  # noqa: E402
from solder.backends.coverage import coverage  # noqa: E402
from solder.backends.routes import Route  # noqa: E402
from solder.compiler import ir  # noqa: E402
from solder.compiler.dialects import graph as g  # noqa: E402
from solder.compiler.import_context import UnsupportedOpWarning  # noqa: E402

INTERPRET = os.environ["TRITON_INTERPRET"] not in ("", "0")
TARGETS = ["cpu", "reference", pytest.param("h100", marks=pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(), reason="TRITON_INTERPRET=0 and no GPU"))]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def compile_like_eager(model: nn.Module, inputs: tuple, target: str, exact: bool = False):
    """Compile `model` for `target`, compare every output with eager's (bit for bit where `exact`), and
    return the program; fails on any op left to eager PyTorch."""
    model = model.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = solder.compile(model, target=target, speed_guard=False)
        with torch.no_grad():
            got, want = compiled(*inputs), model(*inputs)
    unsupported = [str(w.message) for w in caught if issubclass(w.category, UnsupportedOpWarning)]
    assert not unsupported, unsupported
    got, want = (list(o) if isinstance(o, (tuple, list)) else [o] for o in (got, want))
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.dtype == b.dtype and a.shape == b.shape, (i, a.dtype, a.shape, b.dtype, b.shape)
        tol = 0 if exact or not b.dtype.is_floating_point else 1e-5
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, equal_nan=True, msg=lambda m: f"output {i}: {m}")
    sp = next(iter(compiled.specializations.values()))
    assert not sp.imported.externs and "graph.extern" not in sp.program.fallbacks, sp.imported.externs
    return sp


# ------------------------------------------------------------------------------------------------
# Vector norms
# ------------------------------------------------------------------------------------------------

NORMS = [(p, dim, keep) for p in (2, 1, math.inf, 3) for dim, keep in
         ((None, False), (-1, True), ((0, 2), False), ((-3, -1), True), (1, False))]
NORMS += [(-math.inf, -2, False), (0, (1, 2), True), (0.5, None, False), (2.0, [], False)]


class VectorNorms(nn.Module):
    def forward(self, x):
        outs = [torch.linalg.vector_norm(x, p, dim=d, keepdim=k) for p, d, k in NORMS]
        outs += [torch.norm(x), F.normalize(x, dim=-1), F.normalize(x, p=1.0, dim=1),
                 torch.linalg.vector_norm(x.half(), 2, dim=-1).float(),
                 torch.linalg.vector_norm(x, dtype=torch.float64)]
        return tuple(outs)


@pytest.mark.parametrize("target", TARGETS)
def test_vector_norms(target):
    """p in {2, 1, inf, 3} (and -inf, 0, 0.5) over all dims, one, several and negative dims, with and without
    keepdim; fp16 accumulates in fp32 as eager does."""
    compile_like_eager(VectorNorms(), (_randn(3, 5, 7),), target)


class TripletLoss(nn.Module):
    """TripletMarginLoss (pairwise_distance: a norm of a difference plus eps) and a Frobenius norm."""

    def forward(self, a, p, n):
        return F.triplet_margin_loss(a, p, n, margin=0.5), a / torch.norm(a, p="fro")


@pytest.mark.parametrize("target", TARGETS)
def test_norms_inside_losses(target):
    compile_like_eager(TripletLoss(), tuple(_randn(9, 13, seed=s) for s in range(3)), target)


# ------------------------------------------------------------------------------------------------
# Advanced indexing
# ------------------------------------------------------------------------------------------------

class Indexing(nn.Module):
    """Index tensors after a slice (adjacent: their dims stay in place, as crossvit's resize), separated by
    a slice (their dims go first), in the middle, and negative indices."""

    def forward(self, x, i, j):
        return (x[:, :, i[:, None], j], x[i[:, None], :, j], x[:, i[:, None], j], x[..., i[:, None], j],
                x[:, i[:, None], :, j], x[i[:, None], j, :, i[:, None]])


@pytest.mark.parametrize("target", TARGETS)
def test_index_tensors_after_slices(target):
    i, j = torch.tensor([0, 2, -1, 1]), torch.tensor([1, 2, -2])
    compile_like_eager(Indexing(), (_randn(3, 5, 7, 9), i, j), target, exact=True)


# ------------------------------------------------------------------------------------------------
# Pooling over 1 and 3 spatial dims
# ------------------------------------------------------------------------------------------------

class Pools1d(nn.Module):
    def forward(self, x):
        return (F.max_pool1d(x, 3), F.max_pool1d(x, 4, 2, 1, ceil_mode=True), F.avg_pool1d(x, 3, 2, 1),
                F.avg_pool1d(x, 4, 3, 1, ceil_mode=True, count_include_pad=False),
                torch.ops.aten.max_pool2d_with_indices(x[:, :, None], [1, 3], [1, 2])[0].squeeze(2))


class Pools3d(nn.Module):
    def forward(self, x):
        return (F.max_pool3d(x, 3, 2, 1), F.max_pool3d(x, 2, ceil_mode=True), F.avg_pool3d(x, 3, 2),
                F.avg_pool3d(x, (3, 2, 3), 2, 1, count_include_pad=False), F.avg_pool3d(x, 2, ceil_mode=True),
                torch.ops.aten.max_pool3d_with_indices(x, [2, 3, 2], [2, 1, 2])[0], F.max_pool3d(x[0], 2))


@pytest.mark.parametrize("target", TARGETS)
def test_pooling_over_one_and_three_dims(target):
    compile_like_eager(Pools1d(), (_randn(2, 3, 11),), target)
    compile_like_eager(Pools3d(), (_randn(2, 3, 7, 5, 9),), target)


class PoolIndices(nn.Module):
    def forward(self, x):
        return F.max_pool3d(x, 2, return_indices=True)


def test_read_pool_indices_stay_eager():
    """The argmax indices are no graph op: a model that reads them keeps the ATen op (with a warning)."""
    model, x = PoolIndices().eval(), _randn(1, 2, 4, 4, 4)
    with pytest.warns(UnsupportedOpWarning, match="max_pool3d_with_indices"):
        compiled = solder.compile(model, target="reference", speed_guard=False)
        got = compiled(x)
    for a, b in zip(got, model(x), strict=True):
        torch.testing.assert_close(a, b)


def test_pool_verifier_says_what_it_expected():
    text = """builtin.module {
    func.func @f(%x: tensor<1x2x5x5xf32>) -> tensor<1x2x2x2xf32> {
      %y = graph.pool "max" %x {kernel = array<i64: 2, 2>, stride = array<i64: 2>, padding = array<i64: 0, 0>}
             : tensor<1x2x5x5xf32> -> tensor<1x2x2x2xf32>
      func.return %y : tensor<1x2x2x2xf32>
    }
    }"""
    with pytest.raises(Exception, match="stride entries .one per spatial dim.*2.*1"):
        ir.parse(text).verify()


# ------------------------------------------------------------------------------------------------
# Normalizations with the batch's own statistics
# ------------------------------------------------------------------------------------------------

class InstanceNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.n1, self.n3 = nn.InstanceNorm1d(3, affine=True), nn.InstanceNorm3d(3)
        self.n2 = nn.InstanceNorm2d(3, affine=True, eps=1e-3)
        self.bn = nn.BatchNorm2d(3, track_running_stats=False)
        for p in (*self.n1.parameters(), *self.n2.parameters(), *self.bn.parameters()):
            nn.init.normal_(p)

    def forward(self, x):
        w, b = self.n2.weight.repeat(2), self.n2.bias.repeat(2)
        folded = torch.ops.aten._native_batch_norm_legit.no_stats(x.reshape(1, 6, 5, 7), w, b, True, 0.1, 1e-5)[0]
        return (self.n1(x.flatten(2)), self.n2(x), self.n3(x[:, :, None].expand(2, 3, 3, 5, 7) * 2), self.bn(x),
                F.instance_norm(x), folded.reshape(x.shape),
                torch.ops.aten._native_batch_norm_legit.no_stats(x, None, None, True, 0.1, 1e-5)[0])


@pytest.mark.parametrize("target", TARGETS)
def test_instance_norm_and_batch_statistics(target):
    compile_like_eager(InstanceNorms(), (_randn(2, 3, 5, 7) * 3 + 1,), target)


# ------------------------------------------------------------------------------------------------
# SELU, cumprod
# ------------------------------------------------------------------------------------------------

class Activations(nn.Module):
    """SELU, ELU with scales, and clamp with tensor bounds (SwinV2's logit scale), one broadcasting x."""

    def forward(self, x):
        return (F.selu(x), nn.SELU()(x * 4), torch.ops.aten.elu(x, 0.5, 2.0, 1.5), F.elu(x, 1.2), F.celu(x, 0.7),
                torch.clamp(x, max=torch.log(torch.tensor(1.0 / 0.5))), torch.clamp(x[:1], x[1:3], x[3:] + 1))


@pytest.mark.parametrize("target", TARGETS)
def test_selu_scaled_elu_and_tensor_clamp(target):
    x = _randn(5, 9)
    x[0, :3] = torch.tensor([0.0, -0.0, float("nan")])
    compile_like_eager(Activations(), (x,), target)


class Cumprods(nn.Module):
    def forward(self, x, i):
        return torch.cumprod(x, 1), torch.cumprod(x, -1), torch.cumprod(x, 0) * 2, torch.cumprod(i, -1)


@pytest.mark.parametrize("target", TARGETS)
def test_cumprod(target):
    x = 1 + _randn(3, 7, 5) * 0.3
    x[1, 2, 3] = 0.0
    compile_like_eager(Cumprods(), (x, torch.tensor([[1, -2, 3, 0, 5], [2, 2, -1, 3, 1]])), target)


# ------------------------------------------------------------------------------------------------
# Division rounded toward zero, fmod
# ------------------------------------------------------------------------------------------------

class DivModes(nn.Module):
    def forward(self, a, b, i, j):
        return (torch.div(a, b, rounding_mode="trunc"), torch.div(a, 0.7, rounding_mode="trunc"),
                torch.div(i, j, rounding_mode="trunc"), torch.div(i, -3, rounding_mode="trunc"),
                torch.div(i.int(), j.int(), rounding_mode="floor"), torch.div(i, j, rounding_mode="floor"),
                torch.div(a.half(), b.half(), rounding_mode="trunc"))


class Fmods(nn.Module):
    def forward(self, a, b, i, j):
        return torch.fmod(a, b), torch.fmod(a, 1.5) * 2, torch.fmod(i, j), torch.fmod(i.int(), -4), torch.fmod(a, i)


def _division_inputs():
    a = _randn(37, 13) * 1e4
    a[0, :4] = torch.tensor([float("inf"), float("nan"), -0.0, 1e30])
    b = _randn(13, seed=1)
    b[:3] = torch.tensor([0.0, float("inf"), 1e-3])
    i = torch.randint(-1000, 1000, (37, 13), generator=torch.Generator().manual_seed(2))
    i[0, :2] = torch.tensor([torch.iinfo(torch.int64).max, torch.iinfo(torch.int64).min + 1])
    j = torch.tensor([1, -1, 2, -2, 3, -3, 7, -7, 1000, -999, 5, 11, -13])
    return a, b, i, j


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on inf and nan
@pytest.mark.parametrize("target", TARGETS)
def test_trunc_division_and_fmod_are_exact(target):
    """Bit for bit: integer quotients and remainders (also by -1 and across signs), float fmod (libm's
    exact fmod: frem on the CPU, torch.fmod on the GPU, whose frem is not exact) and trunc(a / b)."""
    compile_like_eager(DivModes(), _division_inputs(), target, exact=True)
    compile_like_eager(Fmods(), _division_inputs(), target, exact=True)


NEW_OPS = """builtin.module {
func.func @f(%x: tensor<2x3x5x7x9xf32>, %i: tensor<4x6xi64>, %j: tensor<6xi64>) -> (tensor<2x3x2x3x4xf32>, tensor<4x6xi64>, tensor<2x3x5x7x9xf32>) {
  %p = graph.pool "avg" %x {kernel = array<i64: 2, 3, 2>, stride = array<i64: 2, 2, 2>, padding = array<i64: 0, 1, 0>} : tensor<2x3x5x7x9xf32> -> tensor<2x3x2x3x4xf32>
  %m = graph.fmod %i, %j : (tensor<4x6xi64>, tensor<6xi64>) -> tensor<4x6xi64>
  %c = graph.cumprod %x {dim = 4 : i64} : tensor<2x3x5x7x9xf32> -> tensor<2x3x5x7x9xf32>
  func.return %p, %m, %c : tensor<2x3x2x3x4xf32>, tensor<4x6xi64>, tensor<2x3x5x7x9xf32>
}
}"""


def test_new_ops_print_and_parse_back():
    module = ir.parse(NEW_OPS)
    module.verify()
    assert str(ir.parse(str(module))) == str(module)


def test_fmod_and_cumprod_have_routes_on_every_target():
    routes = coverage()
    assert routes[g.FmodOp] == {"cpu": Route.GENERATED, "h100": Route.GENERATED}
    assert routes[g.CumprodOp] == {"cpu": Route.LIBRARY, "h100": Route.GENERATED}
    assert routes[g.FloorDivideOp]["cpu"] == Route.GENERATED
