"""The graph ops added for issue #17 item 5 (pad, slice_scatter, scatter, index_put, upsample_nearest,
upsample_linear, conv_transpose) at the IR level: they print and parse back, their verifiers say what they
expected, the importer builds them (or leaves the forms it cannot express to eager PyTorch, never computing
something else), the library table routes them, and the nearest-upsample source index that generated code
computes is torch's. Numerics on every target: tests/test_triton_coverage_ops.py."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import solder
from solder.backends.lowering.library import GPUS, library_call
from solder.backends.triton.emit_index import nearest_source
from solder.compiler import ir
from solder.compiler.aten_table import TABLE
from solder.compiler.capture import capture
from solder.compiler.dialects import graph as g
from solder.compiler.errors import VerifyError
from solder.compiler.import_context import UnsupportedOpWarning
from solder.compiler.importer import import_program

NEW_OPS = """builtin.module {
func.func @forward(%x: tensor<4x6xf32>, %v: tensor<4x2xf32>, %i: tensor<4x6xi64>, %j: tensor<3xi64>,
                   %m: tensor<4x6xf32>, %w: tensor<6x2x3x3xf32>, %img: tensor<1x6x5x5xf32>) -> (tensor<4x6xf32>, tensor<4x6xf32>, tensor<4x6xf32>, tensor<5x9xf32>, tensor<4x8xf32>, tensor<1x6x10x10xf32>, tensor<1x6x7x9xf32>, tensor<1x4x11x11xf32>) {
  %a = graph.slice_scatter %x, %v {dim = 1 : i64, start = 1 : i64, end = 5 : i64, step = 2 : i64} : (tensor<4x6xf32>, tensor<4x2xf32>) -> tensor<4x6xf32>
  %b = graph.scatter "sum" %x, %i, %m {dim = 1 : i64, exclude_self} : (tensor<4x6xf32>, tensor<4x6xi64>, tensor<4x6xf32>) -> tensor<4x6xf32>
  %c = graph.index_put %x[%j] = %v {positions = array<i64: 1>, accumulate} : (tensor<4x6xf32>, tensor<3xi64>, tensor<4x2xf32>) -> tensor<4x6xf32>
  %d = graph.pad "constant" %x {low = array<i64: 1, 0>, high = array<i64: 0, 3>, value = "-inf"} : tensor<4x6xf32> -> tensor<5x9xf32>
  %e = graph.pad "reflect" %x {low = array<i64: 0, 1>, high = array<i64: 0, 1>} : tensor<4x6xf32> -> tensor<4x8xf32>
  %f = graph.upsample_nearest %img {scales = array<f64: 2.0, 2.0>} : tensor<1x6x5x5xf32> -> tensor<1x6x10x10xf32>
  %h = graph.upsample_linear %img {align_corners} : tensor<1x6x5x5xf32> -> tensor<1x6x7x9xf32>
  %k = graph.conv_transpose %img, %w {stride = array<i64: 2, 2>, padding = array<i64: 1, 1>, output_padding = array<i64: 0, 0>, dilation = array<i64: 1, 1>, groups = 2 : i64} : tensor<1x6x5x5xf32>, tensor<6x2x3x3xf32> -> tensor<1x4x11x11xf32>
  func.return %a, %b, %c, %d, %e, %f, %h, %k : tensor<4x6xf32>, tensor<4x6xf32>, tensor<4x6xf32>, tensor<5x9xf32>, tensor<4x8xf32>, tensor<1x6x10x10xf32>, tensor<1x6x7x9xf32>, tensor<1x4x11x11xf32>
}
}"""


def test_new_ops_print_and_parse_back():
    module = ir.parse(NEW_OPS)
    module.verify()
    text = str(module)
    assert str(ir.parse(text)) == text
    names = {op.name for op in module.walk()}
    assert {"graph.slice_scatter", "graph.scatter", "graph.index_put", "graph.pad", "graph.upsample_nearest",
            "graph.upsample_linear", "graph.conv_transpose"} <= names


@pytest.mark.parametrize("old, new, message", [
    ("start = 1 : i64, end = 5 : i64, step = 2", "start = 1 : i64, end = 5 : i64, step = 1",
     r"graph.slice_scatter: src shape \(the slice's\): expected \(4, 4\), got \(4, 2\)"),
    ('graph.scatter "sum"', 'graph.scatter "add"', "graph.scatter: reduce: expected one of none, sum, prod"),
    ("positions = array<i64: 1>", "positions = array<i64: 2>", r"graph.index_put: positions within rank: expected 2"),
    ('"reflect" %x {low = array<i64: 0, 1>', '"reflect" %x {low = array<i64: 0, 6>',
     "graph.pad: reflect padding: expected counts >= 0 < the dim, got 6, 1 on a dim of 6"),
    (', value = "-inf"', "",
     "graph.pad: a fill value exactly for mode constant: expected value"),
    ("groups = 2 : i64", "groups = 1 : i64", r"graph.conv_transpose: channels .*expected \(6, 2\), got \(6, 4\)"),
    ("scales = array<f64: 2.0, 2.0>", "scales = array<f64: 2.0>", "graph.upsample_nearest: one scale per spatial dim"),
])
def test_verifiers_say_what_they_expected(old, new, message):
    assert old in NEW_OPS
    with pytest.raises(VerifyError, match=message):
        ir.parse(NEW_OPS.replace(old, new))


def _imported(model, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imp = import_program(capture(model.eval(), args, {}, set(TABLE)).program)
    ops = [op.name for op in imp.module.walk() if op.name.startswith("graph.")]
    return ops, imp.externs, [str(w.message) for w in caught if issubclass(w.category, UnsupportedOpWarning)]


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


@pytest.mark.parametrize("fn, expect", [
    (lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True), ["graph.pad", "graph.pool"]),
    (lambda x: F.adaptive_avg_pool2d(x, (2, 3)), ["graph.pool"]),
    (lambda x: F.avg_pool2d(x, 2, count_include_pad=False, padding=1), ["graph.pad", "graph.pool", "graph.div"]),
    (lambda x: F.group_norm(x, 2), ["graph.layer_norm"]),
    (lambda x: F.pad(x, (1, 1, 2, 0), mode="replicate"), ["graph.pad"]),
    (lambda x: F.conv_transpose2d(x, torch.ones(4, 2, 3, 3)), ["graph.conv_transpose"]),
])
def test_importer_builds_graph_ops(fn, expect):
    ops, externs, _ = _imported(Fn(fn), torch.randn(1, 4, 6, 9))
    assert externs == [] and all(e in ops for e in expect), ops


@pytest.mark.filterwarnings("ignore::solder.compiler.import_context.UnsupportedOpWarning")
@pytest.mark.parametrize("fn, extern", [
    (lambda x: F.adaptive_avg_pool2d(x, (4, 4)), "aten.adaptive_avg_pool2d.default"),  # 6 and 9 are not multiples of 4
    (lambda x: F.avg_pool2d(x, 2, divisor_override=1), "aten.avg_pool2d.default"),  # was imported as a mean
    (lambda x: F.max_pool2d(x, 2, dilation=2), "aten.max_pool2d.default"),
])
def test_forms_without_a_graph_op_run_eagerly_and_match(fn, extern):
    model, x = Fn(fn), torch.randn(1, 4, 6, 9)
    _, externs, warned = _imported(model, x)
    assert externs == [extern] and any(extern in w for w in warned)
    torch.testing.assert_close(solder.compile(model.eval(), target="cpu")(x), fn(x))


def test_a_boolean_mask_fill_is_a_where():
    def fill(x):
        x = x.clone()
        x[x > 0.5] = -1.0
        return x

    ops, externs, _ = _imported(Fn(fill), torch.randn(3, 4))
    assert externs == [] and "graph.where" in ops and "graph.index_put" not in ops


def test_library_routes():
    module = ir.parse(NEW_OPS)
    ops = {op.name: op for op in module.walk() if op.name.startswith("graph.")}
    for name, op in ops.items():
        assert library_call(op, "cpu") is not None and library_call(op, "h100") is not None, name
    conv = ir.parse("""func.func @forward(%x: tensor<1x2x5x5xf32>, %w: tensor<3x2x3x3xf32>) -> tensor<1x3x3x3xf32> {
  %y = graph.conv %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64} : tensor<1x2x5x5xf32>, tensor<3x2x3x3xf32> -> tensor<1x3x3x3xf32>
  func.return %y : tensor<1x3x3x3xf32>
}""")
    (op,) = [o for o in conv.walk() if isinstance(o, g.ConvOp)]
    assert library_call(op, "cpu") is None  # the CPU plans its own (channels-last) convolution
    assert all(library_call(op, t).route == "library: torch conv (cuDNN)" for t in GPUS)


@pytest.mark.parametrize("exact", [False, True])
def test_nearest_source_index_is_torchs(exact):
    """The index formula the Triton emitter generates, against torch's own upsampling of an arange."""
    mode = "nearest-exact" if exact else "nearest"
    for n_in in (1, 2, 3, 5, 7, 13, 30):
        cases = [(n_out, None) for n_out in (1, 2, 4, 5, 9, 14, 26, 61)]
        cases += [(int(n_in * s), s) for s in (0.5, 1.5, 1.7, 2.0, 2.5, 3.0, 1 / 3) if int(n_in * s) > 0]
        for n_out, scale in cases:
            src = torch.arange(n_in, dtype=torch.float32)[None, None]
            kw = {"size": n_out} if scale is None else {"scale_factor": scale}
            want = F.interpolate(src, mode=mode, **kw)[0, 0].long().tolist()
            got = [nearest_source(i, n_in, n_out, scale, exact) for i in range(len(want))]
            assert got == want, (n_in, n_out, scale)
