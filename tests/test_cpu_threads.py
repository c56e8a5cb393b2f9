"""Generated CPU kernels on torch's own OpenMP pool (backends/cpu/threads.py, omp_shim.c).

The shim implements the `__kmpc_*` entry points of MLIR's OpenMP lowering on the libgomp torch loaded, so the
process keeps one pool: these tests check the partition the shim hands out, that its team is torch's thread
count, that parallel kernels equal eager torch at sizes that split unevenly (one row, fewer rows than threads)
with 1 and 2 threads, and that a compiled model and eager torch ops side by side start no threads beyond what
torch alone uses.
"""

from __future__ import annotations

import ctypes
import os

import pytest
import torch

from solder import compile
from solder.backends.cpu import attention_lib, jit, kernels, threads
from solder.backends.cpu.attention import AttentionSpec

pytestmark = pytest.mark.skipif(threads.runtime() is None,
                                reason="no GNU OpenMP runtime in torch or no C compiler (threads.py)")


def _gomp() -> ctypes.CDLL:
    return ctypes.CDLL(threads.torch_libgomp())


def _shim() -> ctypes.CDLL:
    return threads._state["lib"]


def _fork_and_split(n_threads: int, trip: int) -> list[tuple[int, int, int, int]]:
    """Fork a team through the shim; each member asks `__kmpc_for_static_init_8u` for its share of `trip`
    iterations: (thread, team size, first, last) per member (last = first - 1 for an empty share)."""
    shim, gomp = _shim(), _gomp()
    got: list = []
    i64 = ctypes.c_uint64

    @ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32), ctypes.c_void_p)
    def micro(gtid, btid, _arg):
        lo, hi, stride, last = i64(0), i64(trip - 1), ctypes.c_int64(1), ctypes.c_int32(0)
        shim.__kmpc_for_static_init_8u(None, gtid[0], 34, ctypes.byref(last), ctypes.byref(lo), ctypes.byref(hi),
                                       ctypes.byref(stride), ctypes.c_int64(1), ctypes.c_int64(1))
        got.append((btid[0], gomp.omp_get_num_threads(), lo.value, ctypes.c_int64(hi.value).value))

    shim.solder_omp_set_threads(n_threads)
    try:
        shim.__kmpc_fork_call(None, 1, micro, None)
    finally:
        threads._state["threads"] = None  # the next sync() sets torch's count again
    return sorted(got)


@pytest.mark.parametrize("trip", [1, 2, 7, 1000])
def test_shim_team_is_the_set_size_and_shares_cover_the_loop(trip):
    for n in (1, 2, 3):
        parts = _fork_and_split(n, trip)
        assert [p[0] for p in parts] == list(range(n)) and {p[1] for p in parts} == {n}
        covered = [i for _, _, lo, hi in parts for i in range(lo, hi + 1)]
        assert covered == list(range(trip)), parts  # contiguous blocks, in thread order, each once
        assert max(hi - lo + 1 for _, _, lo, hi in parts) - min(hi - lo + 1 for _, _, lo, hi in parts) <= 1


def test_one_openmp_runtime_in_the_process():
    """The shim runs on the libgomp torch loaded (one copy of torch's mapped), and no LLVM/Intel OpenMP runtime is
    loaded. Other packages may map their own vendored libgomp (scikit-learn's wheel does, once the test suite has
    imported it); those are not torch's pool and not the shim's."""
    assert threads.runtime() is not None
    with open("/proc/self/maps") as f:
        libs = {ln.split()[-1] for ln in f if ".so" in ln}
    torch_lib = os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib"))
    gomp = {os.path.realpath(p) for p in libs if "libgomp" in os.path.basename(p)}
    assert len({p for p in gomp if p.startswith(torch_lib)}) == 1, gomp
    assert threads.torch_libgomp() and os.path.realpath(threads.torch_libgomp()).startswith(torch_lib)
    assert not [p for p in libs if os.path.basename(p).startswith(("libomp", "libiomp"))]


def test_sync_follows_torch_thread_count(torch_threads):
    for n in (1, 2, 3):
        torch_threads(n)
        threads.sync()
        assert threads.team_size() == n


# -- numerics: parallel schedules against eager, uneven splits, 1 and 2 threads -----------------------------------
@pytest.mark.parametrize("name", ["softmax", "layer_norm", "rms_norm", "add_layer_norm", "add_gelu_tanh"])
def test_parallel_row_and_elementwise_kernels_match_eager(name, tmp_path, torch_threads):
    for rows, cols in ((1, 100), (3, 37), (37, 100)):  # one row, fewer rows than 4 threads, odd sizes
        text, entry = kernels.KERNELS[name](rows, cols, parallel=True)
        assert "use_forall" in text
        par = jit.compile_mlir(text, entry, cache_dir=tmp_path)
        ser_text, _ = kernels.KERNELS[name](rows, cols)
        ser = jit.compile_mlir(ser_text, entry, cache_dir=tmp_path)
        args = kernels.example_args(name, rows, cols, seed=rows)
        ref = kernels.reference(name, *args[:-1])
        ser(*args)
        serial = args[-1].clone()
        for n in (1, 2, 4):
            torch_threads(n)
            threads.sync()
            out = torch.full_like(args[-1], float("nan"))
            forks = threads.forks()
            par(*args[:-1], out)
            assert threads.forks() == forks + (rows > 1)  # a one-row forall folds away
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
            assert torch.equal(out, serial), (name, rows, cols, n)  # each row's code is the serial one


class _Block(torch.nn.Module):
    """GELU(x + b) -> residual add -> layer norm -> softmax, and a separate elementwise output."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln, self.b = torch.nn.LayerNorm(c), torch.nn.Parameter(torch.randn(c))

    def forward(self, x, y):
        h = torch.nn.functional.gelu(x + self.b, approximate="tanh")
        return self.ln(h + y).softmax(-1), torch.relu(x) * 2.0


class _Pointwise(torch.nn.Module):
    """An elementwise kernel only (no reduction): GELU(x + y) * 3."""

    def __init__(self, c: int) -> None:
        super().__init__()

    def forward(self, x, y):
        return (torch.nn.functional.gelu(x + y, approximate="tanh") * 3.0,)


def _threaded(compiled) -> bool:
    """Whether the compiled module's schedule runs some kernel's rows across threads."""
    source = next(iter(compiled.specializations.values())).program.source
    return "use_forall" in source or "tile_using_forall" in source


@pytest.mark.parametrize("cls,shape,parallel", [(_Block, (2, 67, 513), True), (_Block, (300, 257), True),
                                                (_Block, (4, 33), False), (_Pointwise, (3, 70, 513), True),
                                                (_Pointwise, (2, 70000), True), (_Pointwise, (200000,), True),
                                                (_Pointwise, (1, 2, 7), False)])
def test_compiled_model_parallel_above_threshold_and_equal_to_eager(cls, shape, parallel, torch_threads):
    torch_threads(2)
    model = cls(shape[-1]).eval()
    x, y = torch.randn(*shape), torch.randn(*shape)
    c = compile(model, target="cpu")
    with torch.no_grad():
        first = c(x, y)
        assert _threaded(c) == parallel
        for n in (1, 2):
            torch_threads(n)
            forks = threads.forks()
            got = c(x, y)
            assert (threads.forks() > forks) == parallel  # the foralls ran as OpenMP regions
            ref = model(x, y)
            for a, b, f in zip(got, ref, first):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
                assert torch.equal(a, f)
            assert threads.team_size() == n


def test_prebuilt_generic_attention_runs_its_parallel_variant(tmp_path, monkeypatch, torch_threads):
    """A dynamic module's attention call big enough for threads binds the library's parallel variant."""
    torch_threads(2)
    monkeypatch.setenv("SOLDER_CPU_LIB", str(tmp_path))
    attention_lib._load.cache_clear()
    base = AttentionSpec(b=1, hq=1, t=1, d=32, hkv=1, s=1, dv=32, scale=1.0, causal=True, generic=True)
    par = AttentionSpec(**{**base.__dict__, "parallel": True})
    assert attention_lib.build(variants=[base, par], quiet=True) == 2
    try:
        scale = 32 ** -0.5
        call = attention_lib.dynamic(base.variant(), scale, fallback=None)
        q, k, v = (torch.randn(1, 2, 512, 32) for _ in range(3))  # 4*B*H*T*S*D = 2**26 flops: parallel
        for n in (2, 1):
            torch_threads(n)
            threads.sync()
            out = call(q, k, v)
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
            torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)
        bound = next(iter(call.bound.values()))
        assert bound.keepalive[0] is attention_lib._load(par.variant(), str(attention_lib.library_dir()))
        small = call(q[:, :, :64], k[:, :, :64], v[:, :, :64])  # below the threshold: the serial variant
        assert small.shape == (1, 2, 64, 32)
        serial = [b for key, b in call.bound.items() if key[0][0][2] == 64][0]
        assert serial.keepalive[0] is attention_lib._load(base.variant(), str(attention_lib.library_dir()))
    finally:
        attention_lib._load.cache_clear()


# -- no oversubscription -----------------------------------------------------------------------------------------
def _tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def test_compiled_model_and_eager_ops_share_torchs_pool(torch_threads):
    """Alternating a compiled model (parallel kernels) with eager torch ops starts no threads beyond those of
    the eager ops alone: one pool (a second OpenMP runtime would add its own workers)."""
    torch_threads(2)
    x = torch.randn(512, 1024)
    eager = lambda: (torch.softmax(x, -1) + x.exp()).sum()  # noqa: E731  (torch's OpenMP-parallel kernels)
    for _ in range(3):
        eager()
    alone = _tasks()
    model = _Block(1024).eval()
    c = compile(model, target="cpu")
    with torch.no_grad():
        c(x, x)
        assert _threaded(c)
        for _ in range(20):
            c(x, x)
            eager()
    assert _tasks() <= alone, (alone, _tasks())
