"""Convolutional networks on the CPU: data stays channels-last between convolutions, and matches eager."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solder import compile
from solder.backends.cpu.backend import plan_module
from solder.compiler.dialects.types import dims_of

CPU = "cpu"


def _plan(c):
    return plan_module(next(iter(c.specializations.values())).imported.module)


def _run(model, *args):
    c = compile(model, target=CPU, speed_guard=False)
    with torch.no_grad():
        got, want = c(*args), model(*args)
    for g_, w in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]):
        torch.testing.assert_close(g_, w, atol=1e-4, rtol=1e-4)
    return got, _plan(c)


def _randomize(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


class Block(nn.Module):
    """conv -> bn/relu -> pool -> conv -> bn + residual -> relu -> squeeze-excite -> concat -> conv."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = F.max_pool2d(torch.relu(self.b1(self.c1(x))), 2)
        z = torch.relu(self.b2(self.c2(y)) + y)
        s = z.mean((2, 3), keepdim=True)
        z = z * torch.sigmoid(s)
        return self.c3(torch.cat([z, y], 1)) + 1, s.flatten(1)


def test_kernels_between_convolutions_read_and_write_channels_last():
    (out, _), plan = _run(_randomize(Block()), torch.randn(2, 3, 16, 12))
    assert out.is_contiguous(), "a kernel's feature map that the caller gets keeps eager's layout"
    results = set(plan.returns)
    made = {o for s in plan.steps for o in s.outs}
    mlir = [s for s in plan.steps if s.route == "mlir"]
    assert mlir
    for s in mlir:
        # every 4-d feature map a step hands over (convolution, pooling, kernel) arrives NHWC
        for v, cl in zip(s.ins, s.nhwc_in):
            assert cl or len(dims_of(v.type)) != 4 or v not in made, (s.ops, s.nhwc_in)
        for v, cl in zip(s.outs, s.nhwc_out):
            assert cl == (len(dims_of(v.type)) == 4 and v not in results), (s.ops, s.nhwc_out)


def test_a_kernel_fed_nchw_data_stays_nchw():
    # no convolution before it: the kernel reads the argument in place and writes the same layout
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.c(torch.relu(x * 2)) + torch.sigmoid(x)

    _, plan = _run(Net().eval(), torch.randn(1, 4, 6, 5))
    first = next(s for s in plan.steps if s.route == "mlir")
    assert first.nhwc_in == [False]


def test_a_lone_concatenation_of_feature_maps_is_torch_cat():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1), nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return self.c(torch.cat([self.a(x), self.b(x)], 1))

    _, plan = _run(Net().eval(), torch.randn(1, 3, 10, 9))
    cats = [s for s in plan.steps if any(op.name == "graph.concat" for op in s.ops)]
    assert [s.route for s in cats] == ["library: torch.cat"], [(s.route, [o.name for o in s.ops]) for s in cats]


@pytest.mark.parametrize("keepdim", [True, False])
def test_spatial_mean_of_channels_last_data_loops_channels_innermost(keepdim):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 16, 3)

        def forward(self, x):
            return torch.relu(self.c(x)).mean((2, 3), keepdim=keepdim) * 3

    _, plan = _run(Net().eval(), torch.randn(2, 3, 19, 17))
    (k,) = [s for s in plan.steps if s.route.startswith("mlir") and any(op.name == "graph.reduce" for op in s.ops)]
    assert k.nhwc_in == [True]
    # [N, H, W, C] loops: the channels are the contiguous innermost loop, the spatial dims are summed outside it
    assert '["parallel", "reduction", "reduction", "parallel"]' in k.text, k.text


def test_tokens_of_a_channels_last_feature_map_are_read_in_place():
    # conv -> flatten(2).transpose(1, 2) -> gelu (a vision transformer's patch tokens): the NHWC data already
    # is [B, H*W, C] in memory, so the kernel collapses H and W of its input and streams it: one loop nest,
    # no temporary (a transposing copy into NCHW and back cost 4x the kernel)
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(8, 8, 3, padding=1, groups=8)

        def forward(self, x):
            return F.gelu(self.c(x).flatten(2).transpose(1, 2)) * 2

    _, plan = _run(Net().eval(), torch.randn(2, 8, 6, 5))
    (k,) = [s for s in plan.steps if s.route.startswith("mlir")]
    assert k.nhwc_in == [True]
    assert k.text.count("linalg.generic") == 1 and "tensor.empty" not in k.text, k.text
    assert "tensor.collapse_shape" in k.text, k.text
