"""Bad input gets a clear error that says what was wrong and what to do; nothing silently wrong."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from solder import compile
from solder.compiler.errors import CallError, CaptureError, IRParseError, PipelineError, TargetError
from solder.compiler.importer import UnsupportedOpWarning


def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError, match=r"unknown target 'tpu'; known targets: .*cpu.*h100"):
        compile(nn.Linear(2, 2), target="tpu")


def test_unknown_pass_lists_known_ones():
    with pytest.raises(PipelineError, match=r"unknown pass 'fuse-everything'; known passes: canonicalize, cse"):
        compile(nn.Linear(2, 2).eval(), target="cpu", passes="canonicalize,fuse-everything")  # at compile()


@pytest.mark.parametrize("pipeline", ["cse{", "cse,,dce", "canonicalize{bogus=1}"])
def test_malformed_pipeline(pipeline):
    from solder.passes.registry import parse

    with pytest.raises(PipelineError, match="malformed pipeline|bad options for pass"):
        parse(pipeline)


def test_malformed_mlir_reports_line_and_column():
    from solder.compiler.ir import parse

    text = "func.func @forward(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = graph.exp %x : tensor<2xf32>\n}\n"
    with pytest.raises(IRParseError, match=r"(?s)bad.mlir:3:1.*Expected '->'"):
        parse(text, "bad.mlir")


def test_ill_typed_mlir_is_rejected_with_expected_and_got():
    from solder.compiler.ir import parse
    from solder.compiler.errors import VerifyError

    text = ("func.func @forward(%x: tensor<2x3xf32>) -> tensor<3x3xf32> {\n"
            "  %0 = graph.exp %x : tensor<2x3xf32> -> tensor<3x3xf32>\n  func.return %0 : tensor<3x3xf32>\n}\n")
    with pytest.raises(VerifyError, match=r"graph.exp: result shape: expected \(2, 3\), got \(3, 3\)"):
        parse(text)


def test_wrong_number_of_arguments():
    c = compile(nn.Linear(2, 2).eval(), target="cpu")
    with pytest.raises(CallError, match="does not match forward"):
        c(torch.randn(1, 2), torch.randn(1, 2))


class UsesLogcumsumexp(nn.Module):
    def forward(self, x):
        return torch.logcumsumexp(x, 1) + 1


def test_unsupported_op_falls_back_and_warns_once():
    c = compile(UsesLogcumsumexp().eval(), target="cpu")
    x = torch.rand(3, 4)
    with pytest.warns(UnsupportedOpWarning, match=r"aten.logcumsumexp.default is not lowered.*eager"):
        out = c(x)
    torch.testing.assert_close(out, torch.logcumsumexp(x, 1) + 1)
    assert "aten.logcumsumexp.default" in c.explain()


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum().item() > 0:
            return x * 2
        return x


def test_uncapturable_model_quotes_export_and_says_what_to_change():
    c = compile(DataDependent().eval(), target="cpu")
    with pytest.raises(CaptureError, match=r"(?s)torch.export could not capture DataDependent.*What to change"):
        c(torch.randn(3))


def test_compile_rejects_non_callables():
    with pytest.raises(TypeError, match="expects an nn.Module"):
        compile(42)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "solder.cli", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)


def test_cli_errors_are_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "bad.mlir"
    bad.write_text("func.func @forward() {\n  %0 = graph.nope\n}\n")
    p = _cli(str(bad))
    assert p.returncode == 1 and "solder-opt: error:" in p.stderr and "bad.mlir:" in p.stderr and "graph.nope is not registered" in p.stderr
    assert "Traceback" not in p.stderr
    p = _cli(str(bad), "-p", "cse{")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    p = _cli("--from-torch", "examples/models.py:nope")
    assert p.returncode == 1 and "zoo entries:" in p.stderr


class NeedsDecomposition(torch.nn.Module):
    """Ops without an importer entry that PyTorch can decompose into ones with entries."""

    def forward(self, x):
        return F.hardswish(x) + F.mish(x) + F.softplus(x) + F.elu(x) + F.leaky_relu(x, 0.1) + torch.addcmul(x, x, x)


def test_capture_decomposes_only_what_the_importer_lacks():
    m = NeedsDecomposition().eval()
    c = compile(m, target="cpu")
    x = torch.randn(4, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)
        torch.testing.assert_close(c(x), m(x))
    sp = next(iter(c.specializations.values()))
    assert not sp.imported.externs
    assert "aten.softplus.default" in sp.decomposed and "aten.mish.default" in sp.decomposed
    assert "aten.hardswish.default" not in sp.decomposed  # the importer takes it whole
    assert "decomposed at capture" in c.explain()


class Proj(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x, scale=1.0):
        return torch.relu(self.lin(x)) * scale


@pytest.mark.parametrize("dynamic", [None, False, True])
def test_later_call_with_another_feature_size_names_argument_and_dim(dynamic, capfd):
    """The size the model cannot take is named in one line, without torch's fake-tensor log tracebacks."""
    c = compile(Proj().eval(), target="cpu", dynamic=dynamic)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamic=True: export keeps the feature dim static, as it says
        c(torch.randn(4, 8))
        capfd.readouterr()
        with pytest.raises(CallError, match=r"Proj: argument x dim 1 is 16 here but 8 in the call compiled before, "
                                            r"and the model does not trace with it \(.*\)\. Pass x with dim 1 = 8") as e:
            c(torch.randn(4, 16))
    assert "\n" not in str(e.value)
    assert "fake_tensor" not in capfd.readouterr().err


def test_meta_device_input_is_refused_with_its_own_message():
    c = compile(Proj().eval(), target="cpu")
    with torch.no_grad(), pytest.raises(CallError, match=r"argument x is on the meta device, which holds no data; "
                                                         r"compiled code runs on real tensors: pass x as a cpu tensor"):
        c(torch.randn(4, 8, device="meta"))


def test_cpu_low_precision_fallback_warns_once():
    from solder.compiler.errors import PrecisionFallbackWarning

    model = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.LayerNorm(8)).eval().to(torch.bfloat16)
    c = compile(model, target="cpu", dynamic=False)
    with torch.no_grad(), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for rows in (4, 5, 4):
            c(torch.randn(rows, 8, dtype=torch.bfloat16))
    slow = [w for w in seen if issubclass(w.category, PrecisionFallbackWarning)]
    assert len(slow) == 1, [str(w.message) for w in seen]
    assert "generates no code for bf16" in str(slow[0].message) and "graph.gelu" in str(slow[0].message)
    assert len(c.specializations) == 2


@pytest.mark.parametrize("case, match", [
    ("binary", r"binary.mlir is not UTF-8 text \(byte 0xff at offset 1\); expected a .mlir file"),
    ("directory", r"is a directory; expected a .mlir file"),
    ("missing", r"no such file: .*missing.mlir"),
    ("unwritable -o", r"cannot write -o .*no-such-dir/out.mlir: No such file or directory"),
    ("directory -o", r"cannot write -o .*: Is a directory"),
])
def test_cli_bad_files_are_one_line_errors(tmp_path, capsys, case, match):
    import re

    from solder import cli

    (tmp_path / "binary.mlir").write_bytes(b"\x00\xff\xfe")
    good = tmp_path / "good.mlir"
    good.write_text("func.func @forward(%x: tensor<2xf32>) -> tensor<2xf32> {\n"
                    "  %0 = graph.exp %x : tensor<2xf32> -> tensor<2xf32>\n  func.return %0 : tensor<2xf32>\n}\n")
    argv = {"binary": [str(tmp_path / "binary.mlir")], "directory": [str(tmp_path)],
            "missing": [str(tmp_path / "missing.mlir")],
            "unwritable -o": [str(good), "-o", str(tmp_path / "no-such-dir" / "out.mlir")],
            "directory -o": [str(good), "-o", str(tmp_path)]}[case]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("solder-opt: error: ") and err.count("\n") == 1 and re.search(match, err), err


def test_cli_binary_stdin_is_a_one_line_error(capsys, monkeypatch):
    import io

    from solder import cli

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe")))
    assert cli.main(["-"]) == 1
    assert capsys.readouterr().err == ("solder-opt: error: <stdin> is not UTF-8 text (byte 0xff at offset 0); "
                                       "expected a .mlir file in the graph dialect\n")
