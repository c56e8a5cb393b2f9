"""The CPU backend's MLIR JIT layer: kernel numerics, polynomial math, disk cache, errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from solder.backends.cpu import jit, kernels
from solder.compiler.errors import CallError, SolderError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shape", [(64, 256), (37, 100)])
@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_kernel_matches_torch(name, shape, tmp_path):
    text, entry = kernels.KERNELS[name](*shape)
    k = jit.compile_mlir(text, entry, opt_level=kernels.OPT_LEVEL.get(name, 3), cache_dir=tmp_path)
    args = kernels.example_args(name, *shape)
    k(*args)
    torch.testing.assert_close(args[-1], kernels.reference(name, *args[:-1]),
                               rtol=1e-5, atol=1e-5)


def _uniform(lo, hi, n=64 * 1024, log=False):
    g = torch.Generator().manual_seed(1)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    if log:
        return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


# (function, input sample, torch reference in float64, max relative error, absolute floor per
# unit of |x|: GELU and SiLU cancel in 0.5x(1 + tanh) for very negative x, in torch as well)
APPROX = [
    ("exp", _uniform(-87.0, 88.0), torch.exp, 2e-6, 0.0),
    ("tanh", _uniform(-10.0, 10.0), torch.tanh, 2e-6, 0.0),
    ("erf", _uniform(-5.0, 5.0), torch.erf, 2e-6, 0.0),
    ("log", _uniform(1e-30, 1e30, log=True), torch.log, 2e-6, 0.0),
    ("rsqrt", _uniform(1e-20, 1e20, log=True), torch.rsqrt, 2e-6, 0.0),
    ("sigmoid", _uniform(-80.0, 80.0), torch.sigmoid, 2e-6, 0.0),
    ("silu", _uniform(-20.0, 20.0), torch.nn.functional.silu, 2e-6, 1e-6),
    ("gelu_tanh", _uniform(-10.0, 10.0),
     lambda x: torch.nn.functional.gelu(x, approximate="tanh"), 2e-6, 1e-6),
    ("gelu_erf", _uniform(-10.0, 10.0), torch.nn.functional.gelu, 2e-6, 1e-6),
]


@pytest.mark.parametrize("fn,x,ref,rtol,atol", APPROX, ids=[a[0] for a in APPROX])
def test_polynomial_math_accuracy(fn, x, ref, rtol, atol, tmp_path):
    rows, cols = 64, x.numel() // 64
    text, entry = kernels.unary(fn, rows, cols)
    k = jit.compile_mlir(text, entry, cache_dir=tmp_path)
    x32 = x.to(torch.float32).reshape(rows, cols)
    out = torch.empty_like(x32)
    k(x32, out)
    want = ref(x32.double())
    floor = atol * x32.double().abs()
    err = ((out.double() - want).abs() - floor).clamp(min=0) / want.abs().clamp(min=1e-300)
    assert err.max().item() < rtol, f"{fn}: max relative error {err.max().item():.3g}"


def test_polynomial_math_special_values(tmp_path):
    special = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), -1.0, 1e-3, 100.0]
    x = torch.tensor(special * 2, dtype=torch.float32).reshape(1, 16)
    for fn, ref in [("exp", torch.exp), ("log", torch.log), ("tanh", torch.tanh),
                    ("sigmoid", torch.sigmoid)]:
        text, entry = kernels.unary(fn, 1, 16)
        out = torch.empty_like(x)
        jit.compile_mlir(text, entry, cache_dir=tmp_path)(x, out)
        want = ref(x)
        torch.testing.assert_close(out, want, equal_nan=True, rtol=2e-6, atol=0,
                                   msg=lambda m, fn=fn: f"{fn}: {m}")


def _compile_in_subprocess(cache_dir: Path, name: str = "softmax") -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import torch
        from solder.backends.cpu import jit, kernels
        text, entry = kernels.{name}(37, 100)
        k = jit.compile_mlir(text, entry, cache_dir={str(cache_dir)!r})
        args = kernels.example_args({name!r}, 37, 100)
        k(*args)
        torch.testing.assert_close(args[-1], kernels.reference({name!r}, *args[:-1]))
        print("HIT" if k.cache_hit else "MISS", k.cache_kind)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.strip()


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in (cache_dir / "jit").rglob("*.bin"))


def test_cache_hit_in_second_process(tmp_path):
    assert _run(_compile_in_subprocess(tmp_path)).startswith("MISS")
    assert len(_entries(tmp_path)) == 1
    assert _run(_compile_in_subprocess(tmp_path)).startswith("HIT")


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
    text, entry = kernels.softmax(37, 100)
    first = jit.compile_mlir(text, entry, cache_dir=tmp_path)
    assert not first.cache_hit
    (path,) = _entries(tmp_path)
    good = path.read_bytes()
    for bad in (b"garbage", good[:-10], good[:-1] + bytes([good[-1] ^ 1]),
                good.replace(b'"kind": "', b'"kind": "x', 1)):
        path.write_bytes(bad)
        k = jit.compile_mlir(text, entry, cache_dir=tmp_path)
        assert not k.cache_hit
        args = kernels.example_args("softmax", 37, 100)
        k(*args)
        torch.testing.assert_close(args[-1], kernels.reference("softmax", *args[:-1]))
        assert path.read_bytes()[:11] == good[:11]
    assert jit.compile_mlir(text, entry, cache_dir=tmp_path).cache_hit


def test_entry_compiled_on_another_host_is_not_loaded(tmp_path, monkeypatch):
    """Code is compiled for the host's instruction set: a cache directory shared with a machine of another CPU
    (or MLIR build) keeps one entry per host and never loads the other's."""
    text, entry = kernels.softmax(37, 100)
    assert not jit.compile_mlir(text, entry, cache_dir=tmp_path).cache_hit
    monkeypatch.setattr(jit, "host_fingerprint", lambda: "another-cpu")
    assert not jit.compile_mlir(text, entry, cache_dir=tmp_path).cache_hit
    assert len(_entries(tmp_path)) == 2
    assert jit.compile_mlir(text, entry, cache_dir=tmp_path).cache_hit


def test_concurrent_writers_both_succeed(tmp_path):
    procs = [_compile_in_subprocess(tmp_path, "layer_norm") for _ in range(2)]
    outs = [_run(p) for p in procs]
    assert all(o.split()[0] in ("HIT", "MISS") for o in outs)
    assert len(_entries(tmp_path)) == 1
    assert not [p for p in (tmp_path / "jit").rglob("*") if p.name.startswith(".")]
    assert _run(_compile_in_subprocess(tmp_path, "layer_norm")).startswith("HIT")


def test_lowered_mlir_cache_when_no_c_compiler(tmp_path, monkeypatch):
    monkeypatch.setattr(jit.shutil, "which", lambda name: None)
    text, entry = kernels.rms_norm(37, 100)
    assert jit.compile_mlir(text, entry, cache_dir=tmp_path).cache_kind == "mlir"
    k = jit.compile_mlir(text, entry, cache_dir=tmp_path)
    assert k.cache_hit and k.cache_kind == "mlir"
    args = kernels.example_args("rms_norm", 37, 100)
    k(*args)
    torch.testing.assert_close(args[-1], kernels.reference("rms_norm", *args[:-1]))


@pytest.fixture(scope="module")
def softmax_kernel(tmp_path_factory):
    text, entry = kernels.softmax(8, 32)
    return jit.compile_mlir(text, entry, cache_dir=tmp_path_factory.mktemp("cache"))


def test_call_checks_dtype(softmax_kernel):
    with pytest.raises(CallError, match=r"softmax: argument 0: expected a contiguous "
                                        r"torch.float32 tensor of shape \[8, 32\], got "
                                        r"torch.float64 \[8, 32\]"):
        softmax_kernel(torch.randn(8, 32, dtype=torch.float64), torch.empty(8, 32))


def test_call_checks_shape_contiguity_and_count(softmax_kernel):
    with pytest.raises(CallError, match=r"argument 1: .* got torch.float32 \[8, 31\]"):
        softmax_kernel(torch.randn(8, 32), torch.empty(8, 31))
    with pytest.raises(CallError, match=r"argument 0: .*non-contiguous"):
        softmax_kernel(torch.randn(32, 8).t(), torch.empty(8, 32))
    with pytest.raises(CallError, match=r"expected 2 tensors \(inputs then outputs\), got 1"):
        softmax_kernel(torch.randn(8, 32))
    with pytest.raises(CallError, match=r"argument 0: .* got list"):
        softmax_kernel([1.0], torch.empty(8, 32))


def test_bad_mlir_and_missing_entry_are_clear_errors(tmp_path):
    with pytest.raises(SolderError, match=r"compile_mlir\(f\): MLIR text does not parse"):
        jit.compile_mlir("func.func @f( {", "f", cache_dir=tmp_path)
    text, _ = kernels.softmax(8, 32)
    with pytest.raises(SolderError, match=r"no func.func @nope"):
        jit.compile_mlir(text, "nope", cache_dir=tmp_path)
    plain = text.replace(" attributes {llvm.emit_c_interface}", "")
    with pytest.raises(SolderError, match=r"give @softmax the llvm.emit_c_interface attribute"):
        jit.compile_mlir(plain, "softmax", cache_dir=tmp_path)


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SOLDER_CACHE_DIR", str(tmp_path))
    text, entry = kernels.add_gelu_tanh(4, 16)
    jit.compile_mlir(text, entry)
    assert len(_entries(tmp_path)) == 1


@pytest.mark.skipif(jit.find_openmp() is None, reason="no OpenMP runtime (libomp5 / intel-openmp)")
@pytest.mark.parametrize("name", ["softmax", "add_gelu_tanh", "add_layer_norm"])
def test_parallel_kernel_matches_torch(name, tmp_path):
    text, entry = kernels.KERNELS[name](37, 100, parallel=True)
    k = jit.compile_mlir(text, entry, cache_dir=tmp_path)
    args = kernels.example_args(name, 37, 100)
    for _ in range(3):
        k(*args)
    torch.testing.assert_close(args[-1], kernels.reference(name, *args[:-1]),
                               rtol=1e-5, atol=1e-5)
    again = jit.compile_mlir(text, entry, cache_dir=tmp_path)  # the .so links libomp too
    assert again.cache_hit
    out = torch.empty_like(args[-1])
    again(*args[:-1], out)
    assert torch.equal(out, args[-1])


# -- trust: entries are loaded only where this user's process wrote them (cache_files.py) ---------------------

def _make_foreign(path: Path, how: str) -> None:
    """Make `path` look written by someone else: another owner, or writable by the group."""
    if how == "group-writable":
        path.chmod(path.stat().st_mode | 0o020)
    else:
        os.chown(path, 4242, -1)


@pytest.fixture
def no_load(monkeypatch):
    """Every shared library the cache dlopens, recorded; a fresh private directory (no kernels of other tests)."""
    from solder.backends import cache_files

    monkeypatch.setattr(cache_files, "_private", None)
    loaded = []
    real = cache_files.load_library
    monkeypatch.setattr(cache_files, "load_library", lambda payload: loaded.append(payload) or real(payload))
    return loaded


@pytest.mark.parametrize("where", ["entry", "directory"])
@pytest.mark.parametrize("how", [
    pytest.param("other owner", marks=pytest.mark.skipif(os.getuid() != 0, reason="giving a file away needs root")),
    "group-writable"])
def test_foreign_entry_is_refused_and_not_loaded(tmp_path, caplog, no_load, where, how):
    text, entry = kernels.softmax(19, 40)
    jit.compile_mlir(text, entry, cache_dir=tmp_path)
    (path,) = _entries(tmp_path)
    _make_foreign(path if where == "entry" else path.parent, how)
    with caplog.at_level("WARNING", logger="solder.backend"):
        k = jit.compile_mlir(text, entry, cache_dir=tmp_path)
    assert not k.cache_hit and no_load == []
    assert caplog.text.count("refusing entries this user did not write") == 1
    args = kernels.example_args("softmax", 19, 40)
    k(*args)
    torch.testing.assert_close(args[-1], kernels.reference("softmax", *args[:-1]))
    if where == "entry":  # trusted directories: our kernel replaced the refused entry
        st = path.stat()
        assert st.st_uid == os.getuid() and not st.st_mode & 0o022 and "in its place" in caplog.text
    assert jit.compile_mlir(text, entry, cache_dir=tmp_path).cache_hit and len(no_load) == 1


def _snapshot(root: Path) -> dict:
    """Every file and directory under `root` with its mtime: creating and removing a temporary file changes it."""
    return {str(p): p.stat().st_mtime_ns for p in [root, *root.rglob("*")]}


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A populated cache directory made read-only (for root, which may write anyway, the cache is told so)."""
    from solder.backends import cache_files

    monkeypatch.setattr(cache_files, "_private", None)
    text, entry = kernels.softmax(37, 100)
    jit.compile_mlir(text, entry, cache_dir=tmp_path)
    for p in [tmp_path, *tmp_path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    if os.getuid() == 0:
        monkeypatch.setattr(cache_files, "_writable", lambda d: False)
    yield tmp_path
    for p in [tmp_path, *tmp_path.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)


def test_read_only_cache_is_read_and_never_written(read_only, caplog):
    before = _snapshot(read_only)
    text, entry = kernels.softmax(37, 100)
    assert jit.compile_mlir(text, entry, cache_dir=read_only).cache_hit
    other, entry2 = kernels.rms_norm(37, 100)
    with caplog.at_level("WARNING", logger="solder.backend"):
        assert not jit.compile_mlir(other, entry2, cache_dir=read_only).cache_hit
        assert jit.compile_mlir(other, entry2, cache_dir=read_only).cache_hit  # kept for this process
    assert caplog.text.count("cannot take new kernels") == 1
    assert _snapshot(read_only) == before


def test_read_only_cache_hits_in_another_process(read_only):
    before = _snapshot(read_only)
    assert _run(_compile_in_subprocess(read_only)).startswith("HIT")
    assert _snapshot(read_only) == before


def test_prebuilt_attention_library_trust_and_read_only(tmp_path, monkeypatch):
    from solder.backends.cpu import attention_lib as L
    from solder.backends.cpu.attention import AttentionSpec

    spec = AttentionSpec(b=1, hq=2, t=40, d=32, hkv=2, s=40, dv=32, scale=0.2, causal=True)
    assert L.build(tmp_path, [v for v in L.PREBUILT if v.variant() == spec.variant()], quiet=True) == 1
    monkeypatch.setattr(L, "library_dir", lambda: tmp_path)
    L._load.cache_clear()
    for p in [tmp_path, *tmp_path.rglob("*")]:  # a read-only install
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        assert L.prebuilt(spec) is not None
        L._load.cache_clear()
        (path,) = _entries(tmp_path)
        path.chmod(0o464)  # writable by the group: refused, the per-shape kernel is generated instead
        assert L.prebuilt(spec) is None
    finally:
        L._load.cache_clear()
        for p in [tmp_path, *tmp_path.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
