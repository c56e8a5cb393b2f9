"""Saving a compiled model and loading it back without re-exporting: identical outputs, and every
kind of bad file (other format version, other target, truncated, bad checksum) refused clearly."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
import torch

from solder import compile

from solder import artifact
from solder.artifact import ArtifactError
from solder.compiler.errors import CallError, SolderError
from examples.models import get


class Structured(torch.nn.Module):
    """Dict in, dict-of-tuple out, a buffer, and an output that is a Python constant."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x, extra):
        y = self.lin(x["a"]) * self.scale + extra
        return {"y": (y, y.softmax(-1)), "n": 3}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = Structured().eval()
    compiled = compile(model, target="cpu")
    calls = [({"a": torch.randn(2, 8)}, torch.randn(4)), ({"a": torch.randn(5, 8)}, torch.randn(4))]
    with torch.no_grad():
        outs = [compiled(*c) for c in calls]
    path = artifact.save(compiled, tmp_path_factory.mktemp("art") / "structured.solder")
    return path, calls, outs


def test_roundtrip_gives_identical_outputs(saved):
    path, calls, outs = saved
    loaded = artifact.load(path)
    assert len(loaded.specializations) == 2
    for c, want in zip(calls, outs):
        got = loaded(*c)
        assert got["n"] == 3
        for a, b in zip(got["y"], want["y"]):
            assert torch.equal(a, b)


def test_zoo_mlp_roundtrip(tmp_path):
    entry = get("mlp")
    model, args, kwargs = entry.build()
    compiled = compile(model.eval(), target="cpu")
    with torch.no_grad():
        want = compiled(*args, **kwargs)
    loaded = artifact.load(artifact.save(compiled, tmp_path / "mlp.solder"))
    assert torch.equal(loaded(*args, **kwargs), want)
    assert [p.name for p in tmp_path.iterdir()] == ["mlp.solder"]  # no temporary file left behind


def test_manifest_contents(saved):
    path, _, _ = saved
    with zipfile.ZipFile(path) as z:
        m = json.loads(z.read("manifest.json"))
        names = set(z.namelist())
    assert m["format_version"] == artifact.FORMAT_VERSION and m["target"] == "cpu"
    assert m["torch_version"] == torch.__version__ and m["solder_version"]
    assert set(m["sha256"]) == names - {"manifest.json"}
    assert {"spec0/graph.mlir", "spec1/graph.mlir", "state.pt"} <= names
    assert "graph.linear" in zipfile.ZipFile(path).read("spec0/graph.mlir").decode()


def test_load_does_not_export(saved, monkeypatch):
    from solder.compiler import capture as capture_mod

    def boom(*a, **k):
        raise AssertionError("load re-exported the model")

    monkeypatch.setattr(torch.export, "export", boom)
    monkeypatch.setattr(capture_mod, "capture", boom)
    path, calls, outs = saved
    assert torch.equal(artifact.load(path)(*calls[0])["y"][0], outs[0]["y"][0])


def test_unsaved_shape_is_a_clear_error(saved):
    loaded = artifact.load(saved[0])
    with pytest.raises(CallError, match=r"no saved specialization for inputs \(\(3, 8\):float64"):
        loaded({"a": torch.randn(3, 8, dtype=torch.float64)}, torch.randn(4))
    # two saved batch sizes made the batch dim dynamic: a third size runs on the saved dynamic specialization
    assert [y.shape[0] for y in loaded({"a": torch.randn(3, 8)}, torch.randn(4))["y"]] == [3, 3]


def _rewrite(src, dst, edit_manifest=None, edit_member=None):
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    if edit_manifest:
        m = json.loads(members["manifest.json"])
        edit_manifest(m)
        members["manifest.json"] = json.dumps(m).encode()
    if edit_member:
        name, fn = edit_member
        members[name] = fn(members[name])
    with zipfile.ZipFile(dst, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    return dst


def test_other_format_version_refused(saved, tmp_path):
    bad = _rewrite(saved[0], tmp_path / "v99.solder", edit_manifest=lambda m: m.update(format_version=99))
    with pytest.raises(ArtifactError, match=r"format version 99 .*reads version 1 only.*Recompile"):
        artifact.load(bad)


def test_other_target_refused(saved, tmp_path):
    with pytest.raises(ArtifactError, match=r"compiled for target 'cpu', not 'h100'"):
        artifact.load(saved[0], target="h100")
    bad = _rewrite(saved[0], tmp_path / "t.solder", edit_manifest=lambda m: m.update(target="tpu9"))
    with pytest.raises(ArtifactError, match=r"target 'tpu9', which this solder does not know"):
        artifact.load(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_gpu_target_refused_without_gpu(saved, tmp_path):
    bad = _rewrite(saved[0], tmp_path / "g.solder", edit_manifest=lambda m: m.update(target="h100", backend="triton"))
    with pytest.raises(ArtifactError, match="needs a CUDA GPU"):
        artifact.load(bad)


def test_truncated_file_refused(saved, tmp_path):
    data = saved[0].read_bytes()
    bad = tmp_path / "trunc.solder"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="damaged or not a solder artifact.*Save the model again"):
        artifact.load(bad)


def test_bad_checksum_refused(saved, tmp_path):
    bad = _rewrite(saved[0], tmp_path / "sum.solder", edit_member=("spec0/graph.mlir", lambda d: d + b"\n// x"))
    with pytest.raises(ArtifactError, match=r"damaged: spec0/graph.mlir has sha256 .* the manifest says"):
        artifact.load(bad)


def test_missing_member_and_missing_file(saved, tmp_path):
    bad = _rewrite(saved[0], tmp_path / "m.solder",
                   edit_manifest=lambda m: m["sha256"].update({"spec9/graph.mlir": "0" * 64}))
    with pytest.raises(ArtifactError, match="member spec9/graph.mlir is missing"):
        artifact.load(bad)
    with pytest.raises(ArtifactError, match="does not exist"):
        artifact.load(tmp_path / "nope.solder")
    assert issubclass(ArtifactError, SolderError)


def test_save_before_compiling_is_a_clear_error(tmp_path):
    compiled = compile(torch.nn.Linear(2, 2).eval(), target="cpu")
    with pytest.raises(ArtifactError, match="has not been compiled yet"):
        artifact.save(compiled, tmp_path / "x.solder")
    assert not (tmp_path / "x.solder").exists()


# ---- an artifact is data: forged members are refused before anything runs ----------------------------------


class WithExtern(torch.nn.Module):
    """logcumsumexp has no lowering: it becomes a `graph.extern "aten.logcumsumexp.default"` in the saved IR."""

    def forward(self, x):
        return torch.logcumsumexp(x, 1) + 1


@pytest.fixture(scope="module")
def extern_saved(tmp_path_factory):
    compiled = compile(WithExtern().eval(), target="cpu")
    with pytest.warns(Warning), torch.no_grad():
        compiled(torch.randn(2, 3))
    return artifact.save(compiled, tmp_path_factory.mktemp("ext") / "ext.solder")


def _forge(src, dst, edit_ir=None, edit_manifest=None):
    """What an attacker can write: members edited and their sha256 recomputed, so the damage check passes."""
    import hashlib

    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    m = json.loads(members.pop("manifest.json"))
    for name in [n for n in members if n.endswith("/graph.mlir")] if edit_ir else []:
        members[name] = edit_ir(members[name].decode()).encode()
    if edit_manifest:
        edit_manifest(m)
    m["sha256"] = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("manifest.json", json.dumps(m))
        for n, d in members.items():
            z.writestr(n, d)
    return dst


def test_extern_artifact_roundtrip(extern_saved):
    x = torch.ones(2, 3)
    torch.testing.assert_close(artifact.load(extern_saved)(x), torch.logcumsumexp(x, 1) + 1)


@pytest.mark.parametrize("callee", ["import_module", "load_library", "torch.ops.import_module", "ops.load_library.x",
                                    "debugprims.load_tensor.default", "aten.from_file.default"])
def test_forged_extern_callee_refused_and_nothing_runs(extern_saved, tmp_path, monkeypatch, callee):
    sentinel = tmp_path / "solder_sentinel_mod.py"
    sentinel.write_text("import builtins\nbuiltins.SOLDER_SENTINEL_RAN = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calls = []
    monkeypatch.setattr(torch.ops, "load_library", lambda *a: calls.append(a))
    monkeypatch.setattr(torch.ops, "import_module", lambda *a: calls.append(a))
    forged = _forge(extern_saved, tmp_path / "f.solder",
                    edit_ir=lambda t: t.replace('"aten.logcumsumexp.default"', f'"{callee}"')
                    .replace(r"[[{\22$t\22: 0}, 1], {}]", r"[[\22solder_sentinel_mod\22], {}]"),
                    edit_manifest=lambda m: m["specializations"][0].update(externs=[callee]))
    with pytest.raises(ArtifactError, match=rf"spec0/graph.mlir: graph.extern callee '{callee}': .*refusing"):
        artifact.load(forged)
    import builtins
    assert calls == [] and not hasattr(builtins, "SOLDER_SENTINEL_RAN")


def test_forged_extern_args_refused(extern_saved, tmp_path):
    forged = _forge(extern_saved, tmp_path / "a.solder",
                    edit_ir=lambda t: t.replace(r"[[{\22$t\22: 0}, 1], {}]", r"[[{\22$t\22: 0}, {\22$dtype\22: \22onnx\22}], {}]"))
    with pytest.raises(ArtifactError, match=r"graph.extern args: '\$dtype' with 'onnx' is not .*refusing"):
        artifact.load(forged)


def test_forged_size_expression_refused(saved, tmp_path):
    evil = "().__class__.__base__.__subclasses__()"  # what symdims would eval to build a shape function
    forged = _forge(saved[0], tmp_path / "e.solder", edit_ir=lambda t: re.sub(r'\["(s\d+)"\]', f'["{evil}"]', t))
    with pytest.raises(ArtifactError, match=r"holds the expression .*__subclasses__.*not arithmetic"):
        artifact.load(forged)


def test_forged_dtype_in_manifest_refused(saved, tmp_path):
    def edit(m):
        m["specializations"][0]["key"][1][1][2] = "onnx"  # a lazily imported torch submodule, not a dtype

    forged = _forge(saved[0], tmp_path / "d.solder", edit_manifest=edit)
    with pytest.raises(ArtifactError, match="names dtype 'onnx', which is not a torch dtype"):
        artifact.load(forged)


@pytest.mark.parametrize("manifest, match", [
    ([], "manifest.json holds a JSON list, expected an object"),
    ({"format": "solder-artifact", "format_version": 1}, "manifest field 'name' is missing or malformed"),
])
def test_malformed_manifest_refused(tmp_path, manifest, match):
    bad = tmp_path / "m.solder"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
    with pytest.raises(ArtifactError, match=match):
        artifact.load(bad)


def test_malformed_specialization_refused(saved, tmp_path):
    forged = _forge(saved[0], tmp_path / "s.solder",
                    edit_manifest=lambda m: m["specializations"][0].update(graph="elsewhere.mlir"))
    with pytest.raises(ArtifactError, match=r"specializations\[0\] field 'graph' .*a member listed in sha256"):
        artifact.load(forged)


def test_save_onto_a_directory_is_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")  # a file where save() would need a directory
    compiled = compile(torch.nn.Linear(2, 2).eval(), target="cpu")
    with torch.no_grad():
        compiled(torch.randn(1, 2))
    with pytest.raises(ArtifactError, match=r"that is a directory; give a file path such as .*model.solder"):
        compiled.save(tmp_path)
    with pytest.raises(ArtifactError, match=r"cannot write into .*; choose a writable location"):
        compiled.save(tmp_path / "a-file" / "m.solder")


@pytest.fixture(scope="module")
def library_op():
    """An operator the user's own code defines through torch.library: externs may call it."""
    @torch.library.custom_op("soldertest::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @twice.register_fake
    def _(x):
        return torch.empty_like(x)

    return torch.ops.soldertest.twice


def test_library_op_extern_compiles_saves_and_loads(library_op, tmp_path):
    class UsesLibraryOp(torch.nn.Module):
        def forward(self, x):
            return library_op(x) + 1

    compiled = compile(UsesLibraryOp().eval(), target="cpu")
    with pytest.warns(Warning, match="soldertest.twice.default is not lowered"), torch.no_grad():
        assert torch.equal(compiled(torch.ones(2, 3)), torch.full((2, 3), 3.0))
    loaded = artifact.load(artifact.save(compiled, tmp_path / "lib.solder"))
    assert torch.equal(loaded(torch.ones(2, 3)), torch.full((2, 3), 3.0))
