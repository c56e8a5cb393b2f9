"""The ops issue #17 asked to cover run as generated code or a library call, never as an eager fallback, and
match eager: pad, slice/select scatter, scatter and index_put (on fresh buffers and written into inputs),
nearest and linear upsampling, group norm, transposed convolution, pooling with ceil_mode, uncounted padding
and adaptive sizes, cumsum, argmax, round, trunc and reductions over long rows. Each model runs compiled for
the cpu target, the reference backend and the h100 target (its Triton kernels under TRITON_INTERPRET=1 on CPU
tensors), three calls in a row on twin inputs, and its outputs and written inputs must equal eager's."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import solder  # noqa: E402
from solder.backends.routes import Route  # noqa: E402

INTERPRET = os.environ["TRITON_INTERPRET"] not in ("", "0")
TARGETS = ["cpu", "reference", pytest.param("h100", marks=pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(), reason="TRITON_INTERPRET=0 and no GPU"))]


class Pads(nn.Module):
    """Constant pads (negative counts crop, -inf and int fills), reflect, replicate and circular."""

    def forward(self, x, i):
        return (F.pad(x, (1, 2, -1, 3)), F.pad(x, (0, 0, 2, 0), value=float("-inf")),
                F.pad(x, (2, 1, 1, 2), mode="reflect"), F.pad(x[None], (1, 3, 0, 2, 1, 1), mode="replicate"),
                F.pad(x, (3, 2), mode="circular"), F.pad(i, (1, 1), value=7))


class SliceWrites(nn.Module):
    """Strided and negative slice assignment and a select assignment, into the input itself."""

    def forward(self, x, v):
        x[:, 1:6:2] = v[:, :3]
        x[..., -2:] = 0.5
        x[:, -1] = v[:, 0] * 2
        return x.sum(1), x * 1.5


class ScatterFresh(nn.Module):
    """scatter_add_ into a fresh buffer along a negative dim, scatter of a value, scatter_reduce amax."""

    def forward(self, src, idx):
        buf = torch.zeros(src.shape[0], 6)
        buf.scatter_add_(-1, idx, src)
        marked = torch.zeros(src.shape[0], 6).scatter(1, idx, 1.0)
        top = torch.full((src.shape[0], 6), -1.0).scatter_reduce(1, idx, src, "amax", include_self=False)
        return buf, marked, top


class ScatterInput(nn.Module):
    """scatter_ and scatter_add_ written into the model's input."""

    def forward(self, x, idx, src):
        x.scatter_add_(1, idx, src)
        x.scatter_(0, idx[:1], src[:1] * 0.5)
        return x + 1


class IndexPuts(nn.Module):
    """x[idx] = v with negative indices, x[:, idx] += v (accumulate), a boolean mask fill, index_copy and
    index_add, on the input and on a fresh buffer."""

    def forward(self, x, idx, v):
        x[idx] = v[: idx.shape[0]]
        x[:, idx] += 1.0
        x[x > 1.5] = 0.0
        buf = torch.zeros(6, x.shape[1]).index_copy(0, idx + 1, v[: idx.shape[0]])
        acc = torch.ones(6, x.shape[1]).index_add(0, idx + 1, v[: idx.shape[0]])
        return x * 2, buf, acc


class Upsamples(nn.Module):
    def forward(self, x):
        return (F.interpolate(x, scale_factor=2, mode="nearest"), F.interpolate(x, size=(7, 9), mode="nearest"),
                F.interpolate(x, size=(5, 11), mode="nearest-exact"),
                F.interpolate(x, scale_factor=1.7, mode="nearest"),
                F.interpolate(x, size=(7, 9), mode="bilinear"),
                F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
                F.interpolate(x[:, :, 0], scale_factor=3, mode="nearest"),
                F.interpolate(x[:, :, None], size=(2, 6, 8), mode="nearest"),
                F.interpolate(x, size=(1, 4), mode="bilinear"), F.interpolate(x[:, :, 0], size=11, mode="linear"),
                F.interpolate(x[:, :, None], scale_factor=(3, 1.5, 0.5), mode="trilinear"))


class Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.gn = nn.GroupNorm(3, 6)
        self.gn2 = nn.GroupNorm(2, 6, affine=False)
        with torch.no_grad():
            self.gn.weight.uniform_(0.5, 1.5)
            self.gn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.gn(x), self.gn2(x[:, :, 0])


class ConvTransposes(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.up1 = nn.ConvTranspose1d(6, 3, 4, stride=3, bias=False)

    def forward(self, x):
        return self.up(x), self.up1(x[:, :, 0])


class Pools(nn.Module):
    def forward(self, x):
        return (F.max_pool2d(x, 3, 2, ceil_mode=True), F.max_pool2d(x, 2, 2, padding=1, ceil_mode=True),
                F.max_pool2d(x, 3, 1, 1), F.avg_pool2d(x, 2), F.adaptive_avg_pool2d(x[..., :4, :6], (2, 3)),
                F.adaptive_avg_pool2d(x, 1), F.avg_pool2d(x, 2, 2, 0, True, False),
                F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), F.avg_pool2d(x, 3, 2, 1, ceil_mode=True))


class Scans(nn.Module):
    def forward(self, x):
        return (torch.cumsum(x, -1), torch.cumsum(x, 0), x.argmax(-1), x.argmin(1, keepdim=True),
                torch.round(x * 2.5), torch.trunc(x * 2.5))


class Hardswish(nn.Module):
    """An importer entry (x * relu6(x + 3) / 6), not a capture-time decomposition."""

    def forward(self, x):
        return F.hardswish(x), F.hardswish(x * 3) * 2


class LongRows(nn.Module):
    """Rows longer than a generated GPU row kernel holds (codegen.MAX_ROW): library calls there."""

    def forward(self, x):
        return x.sum(-1), x.amax(-1, keepdim=True), torch.softmax(x, -1), torch.log_softmax(x, -1), x.cumsum(-1)


def _inputs(model, call: int) -> tuple:
    gen = torch.Generator().manual_seed(call)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    if isinstance(model, Pads):
        return randn(3, 5, 7), torch.randint(-5, 5, (3, 4), generator=gen)
    if isinstance(model, SliceWrites):
        return randn(4, 7), randn(4, 3)
    if isinstance(model, ScatterFresh):
        return randn(3, 5), torch.randint(0, 6, (3, 5), generator=gen)
    if isinstance(model, ScatterInput):
        return randn(4, 6), torch.randint(0, 4, (4, 6), generator=gen), randn(4, 6)
    if isinstance(model, IndexPuts):
        return randn(6, 5), torch.tensor([-1, 2, 0]) + call % 2, randn(4, 5)
    if isinstance(model, LongRows):
        return (randn(2, 20000),)
    if isinstance(model, (Upsamples, Norms, ConvTransposes, Pools)):
        return (randn(2, 6, 5, 7),)
    return (randn(5, 7) + torch.tensor([0.5, -0.5, 1.5, -2.5, 0.0, 1e30, float("nan")]),)


def _leaves(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_like_eager(model: nn.Module, target: str, calls: int = 3):
    """Eager and compiled on twin inputs: outputs and every input equal after each call."""
    model = model.eval()
    compiled = solder.compile(copy.deepcopy(model), target=target)
    for call in range(calls):
        xs = _inputs(model, call)
        ys = tuple(x.clone() for x in xs)
        with torch.no_grad():
            want, got = model(*xs), compiled(*ys)
        for i, (a, b) in enumerate(zip(_leaves(got), _leaves(want), strict=True)):
            assert a.dtype == b.dtype and a.shape == b.shape, (i, a.dtype, a.shape, b.dtype, b.shape)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, equal_nan=True,
                                       msg=lambda m: f"call {call} output {i}: {m}")
        for i, (a, b) in enumerate(zip(ys, xs)):
            torch.testing.assert_close(a, b, equal_nan=True,
                                       msg=lambda m: f"call {call}: input {i} after the call: {m}")
    return next(iter(compiled.specializations.values())).program


MODELS = [Pads, SliceWrites, ScatterFresh, ScatterInput, IndexPuts, Upsamples, Norms, ConvTransposes, Pools, Scans,
          Hardswish, LongRows]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on masked lanes and nan
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("make", MODELS, ids=[m.__name__ for m in MODELS])
def test_matches_eager_with_no_eager_fallback(make, target):
    program = check_like_eager(make(), target)
    if target != "reference":
        assert program.fallbacks == [], program.fallbacks


# index-mapping ops and linear upsampling become generated Triton code; the rest are library calls
GENERATED_ON_H100 = {Pads: ("pad",), SliceWrites: ("slice_scatter",),
                     Upsamples: ("upsample_nearest", "upsample_linear")}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.skipif(not INTERPRET and not torch.cuda.is_available(), reason="TRITON_INTERPRET=0 and no GPU")
@pytest.mark.parametrize("make", list(GENERATED_ON_H100), ids=[m.__name__ for m in GENERATED_ON_H100])
def test_index_mapping_ops_are_generated_triton_kernels(make):
    program = check_like_eager(make(), "h100", calls=1)
    for name in (f"graph.{n}" for n in GENERATED_ON_H100[make]):
        routes = {k["kind"].route for k in program.kernels if name in [getattr(o, "name", o) for o in k["ops"]]}
        assert routes == {Route.GENERATED}, (name, program.kernels)


class NativeGroupNorm(nn.Module):
    """The ATen op on a strided input made contiguous: lowered when only the output is read (export keeps the
    unread mean/rstd getitems), an extern when the mean is read, which must get a contiguous tensor (the graph
    drops `.contiguous()`; the ATen op refuses a strided input)."""

    def __init__(self, read_mean: bool):
        super().__init__()
        self.read_mean = read_mean

    def forward(self, x):
        out, mean, _ = torch.ops.aten.native_group_norm(x.contiguous(), None, None, 2, 4, 6, 2, 1e-5)
        return (out, mean) if self.read_mean else (out * 2,)


@pytest.mark.filterwarnings("ignore::solder.compiler.import_context.UnsupportedOpWarning")
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("read_mean", [False, True])
def test_native_group_norm_on_a_strided_input(target, read_mean):
    """Found by the fuzzer (tests/fuzz_ops.py _spatial): both forms raised 'Expected X.is_contiguous'."""
    model = NativeGroupNorm(read_mean).eval()
    x = torch.randn(2, 4, 12)[..., ::2]
    compiled = solder.compile(model, target=target)
    with torch.no_grad():
        got, want = compiled(x), model(x.clone())
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    externs = next(iter(compiled.specializations.values())).imported.externs
    assert externs == (["aten.native_group_norm.default"] if read_mean else []), externs
