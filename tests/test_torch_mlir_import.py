"""torch-mlir interop: torch-dialect MLIR from torch-mlir's FX importer → the same `graph` IR as
solder's own importer, and the same numbers."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from solder.backends.reference import ReferenceBackend
from solder.compiler import ir
from solder.compiler.aten_table import TABLE
from solder.compiler.capture import capture
from solder.compiler.errors import ImportError_, IRParseError
from solder.compiler.importer import import_program
from solder.passes.pipeline import run_pipeline
from solder.compiler.torch_mlir_import import import_torch_mlir, import_torch_mlir_with_state
from examples.models import get

fx = pytest.importorskip("torch_mlir.fx")
CLEANUP = "canonicalize,cse,dce"


def _persistent(model: torch.nn.Module) -> torch.nn.Module:
    """torch-mlir's frozen import reads weights from the state_dict only: it fails ("Could not find state
    mapping for buffer") on non-persistent buffers such as attn_masked_fill's `tril`."""
    for name, buf in list(model.named_buffers()):
        owner, _, leaf = name.rpartition(".")
        (model.get_submodule(owner) if owner else model).register_buffer(leaf, buf, persistent=True)
    return model


def _torch_mlir_text(model, args, **kw) -> str:
    return str(fx.export_and_import(model, *args, func_name="forward", **kw))


def _normalized(module) -> tuple[list[str], list[str]]:
    """(sorted argument types, body lines) with every SSA name renamed by first appearance in the body:
    argument names and order differ (state_dict keys vs. resource names), the computation must not."""
    lines = [line.strip() for line in ir.print_ir(module).splitlines()]
    header = next(line for line in lines if line.startswith("func.func"))
    body = "\n".join(lines[lines.index(header) + 1:])
    types = sorted(re.findall(r"%[\w.$-]+: (tensor<[^>]*>)", header))
    names: dict[str, str] = {}

    def rename(m):
        return names.setdefault(m.group(0), f"%v{len(names)}")

    return types, [re.sub(r"%[\w.$#-]+", rename, line.strip()) for line in body.splitlines() if line.strip()]


def _both(name: str):
    model, args, kwargs = get(name).build()
    model = _persistent(model.eval())
    via_torch_mlir = import_torch_mlir_with_state(_torch_mlir_text(model, args, decomposition_table={}))
    run_pipeline(via_torch_mlir.module, CLEANUP)
    ours = import_program(capture(model, args, kwargs, set(TABLE)).program)
    run_pipeline(ours.module, CLEANUP)
    return model, args, via_torch_mlir, ours


@pytest.mark.parametrize("name", ["mlp", "attn_masked_fill"])
def test_same_ir_as_solder_importer(name):
    model, args, via_torch_mlir, ours = _both(name)
    assert _normalized(via_torch_mlir.module) == _normalized(ours.module)
    # and the same numbers, weights taken from the torch-mlir file's resource blobs
    imp = via_torch_mlir.imported
    state = [via_torch_mlir.state[a.name] for a in imp.args if a.kind != "input"]
    out = ReferenceBackend().lower(via_torch_mlir.module)(state + list(args))
    with torch.no_grad():
        torch.testing.assert_close(out[0], model(*args), rtol=0, atol=0)


def test_torch_mlir_default_decompositions_still_import():
    """With torch-mlir's default decomposition table layer_norm/linear arrive decomposed (var_mean, mm,
    permute, ...): it still imports and computes the same, only the IR is not the whole-op form."""
    model, args, _ = get("mlp").build()
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = import_torch_mlir_with_state(_torch_mlir_text(model, args))
    ops = {op.name for op in r.module.walk()}
    assert "graph.layer_norm" not in ops and "graph.matmul" in ops
    state = [r.state[a.name] for a in r.imported.args if a.kind != "input"]
    out = ReferenceBackend().lower(r.module)(state + list(args))
    with torch.no_grad():
        torch.testing.assert_close(out[0], model(*args))


class Mixed(torch.nn.Module):
    """Dtype enums, multi-result ops, tensor lists in and out, keyword-only ATen arguments."""

    def forward(self, x, y):
        a, b = x.split(2, dim=1)
        vals, idx = torch.max(a * 2 + b, dim=-1)
        h = torch.cat([x, y.to(torch.float16).float()], dim=0)
        return vals, idx, h.sum(0, keepdim=True), x.sum(dim=0, dtype=torch.float64)


def test_enums_multiple_results_and_lists():
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    r = import_torch_mlir_with_state(_torch_mlir_text(Mixed(), (x, y), decomposition_table={}))
    ir.verify(r.module)
    out = ReferenceBackend().lower(r.module)(list((x, y)))
    want = Mixed()(x, y)
    assert len(out) == len(want)
    for a, b in zip(out, want):
        torch.testing.assert_close(a, b)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(IRParseError, match="empty"):
        import_torch_mlir("  ")
    with pytest.raises(IRParseError, match="cannot parse torch-dialect MLIR"):
        import_torch_mlir("func.func @f( {")
    text = ("func.func @forward(%a: !torch.vtensor<[2],f32>) -> !torch.vtensor<[2],f32> {\n"
            "  %0 = torch.aten.not_an_op %a : !torch.vtensor<[2],f32> -> !torch.vtensor<[2],f32>\n"
            "  return %0 : !torch.vtensor<[2],f32>\n}\n")
    with pytest.raises((ImportError_, IRParseError), match="not_an_op"):
        import_torch_mlir(text)
    dyn = ("func.func @forward(%a: !torch.vtensor<[?],f32>) -> !torch.vtensor<[?],f32> {\n"
           "  return %a : !torch.vtensor<[?],f32>\n}\n")
    with pytest.raises(ImportError_, match="dynamic dimension"):
        import_torch_mlir(dyn)
