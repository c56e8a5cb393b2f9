"""Concurrency: one compiled model called from several threads at once, compiled from several threads
at once, and compiled from two processes into one cache directory at once.

The CPU backend's launch list reuses its intermediate buffers and each JIT kernel's memref
descriptors across calls; without the lock in `backends/cpu/runner.py` two threads calling the same
program interleave on them (a kernel reads the other thread's intermediate, or runs on the other
thread's pointers) and `test_two_threads_call_one_compiled_model` fails within a few hundred calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def block(x, w):
    """Pointwise kernel -> GEMM -> pointwise kernel: the first kernel's output is an internal buffer."""
    h = torch.tanh(x * 0.5 + 1.0)
    return torch.sigmoid(h @ w) * 2.0 - x.sum(-1, keepdim=True)


def _run_threads(fns) -> list:
    errors: list = []

    def wrap(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001  reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def _two_callers(fast, xs, w, wants, iters: int) -> None:
    """Check `fast` alone on each input, then call it from two threads at once, `iters` calls each."""
    for x, want in zip(xs, wants):  # compile, and check the single-thread answer first
        torch.testing.assert_close(fast(x, w), want, atol=1e-4, rtol=1e-4)
    start = threading.Barrier(2)
    bad: list[int] = []

    def worker(i):
        def go():
            start.wait()
            for it in range(iters):
                if not torch.allclose(fast(xs[i], w), wants[i], atol=1e-4, rtol=1e-4):
                    bad.append(it)
        return go

    errors = _run_threads([worker(0), worker(1)])
    assert not errors, errors
    assert not bad, f"{len(bad)} of {2 * iters} concurrent calls returned another call's data (first at {bad[0]})"


def test_two_threads_call_one_compiled_model():
    torch.manual_seed(0)
    w = torch.randn(256, 256) / 16
    xs = [torch.randn(128, 256), torch.randn(128, 256) * 3]
    _two_callers(compile(block, target="cpu"), xs, w, [block(x, w) for x in xs], iters=400)


def test_two_threads_compile_the_same_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SOLDER_CACHE_DIR", str(tmp_path))  # an empty cache: both threads run MLIR
    torch.manual_seed(1)
    x, w = torch.randn(16, 32), torch.randn(32, 8)
    want = block(x, w)
    start = threading.Barrier(2)
    results: list = [None, None]

    def shared_wrapper():  # one compiled callable, first called from two threads
        fast = compile(block, target="cpu")

        def go(i):
            start.wait()
            results[i] = fast(x, w)
        return fast, go

    fast, go = shared_wrapper()
    errors = _run_threads([lambda: go(0), lambda: go(1)])
    assert not errors, errors
    for r in results:
        torch.testing.assert_close(r, want, atol=1e-5, rtol=1e-5)
    assert len(fast.specializations) == 1, "both threads compiled: the specialization lock let both through"

    start2 = threading.Barrier(2)

    def separate(i):  # two compiled callables of the same function, compiled at the same time
        start2.wait()
        results[i] = compile(block, target="cpu")(x, w)

    errors = _run_threads([lambda: separate(0), lambda: separate(1)])
    assert not errors, errors
    for r in results:
        torch.testing.assert_close(r, want, atol=1e-5, rtol=1e-5)


_CHILD = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    from tests.test_threads import block
    from solder import compile
    torch.manual_seed(2)
    x, w = torch.randn(24, 40), torch.randn(40, 12)
    fast = compile(block, target="cpu")
    torch.testing.assert_close(fast(x, w), block(x, w), atol=1e-5, rtol=1e-5)
    hits = [k["cache_hit"] for sp in fast.specializations.values() for k in sp.program.kernels
            if k["route"] == "mlir"]
    print("HITS", sum(map(bool, hits)), "OF", len(hits))
""")


def _child(cache_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, SOLDER_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", _CHILD.format(root=str(ROOT))], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_compile_into_one_cache_dir(tmp_path):
    """A whole model (several MLIR kernels, the runtime, the backend), not just one kernel: the
    jit-level race is tests/test_cpu_jit.py::test_concurrent_writers_both_succeed."""
    procs = [_child(tmp_path), _child(tmp_path)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(out.split())
    entries = list((tmp_path / "jit").rglob("*.bin"))
    assert entries, "nothing was written to the cache"
    assert not [p for p in (tmp_path / "jit").rglob("*") if p.name.startswith(".")], "temporary files left over"
    n = int(outs[0][3])
    assert n >= 1, "the model compiled no MLIR kernel: the test would not exercise the cache"
    out, err = _child(tmp_path).communicate(timeout=300)
    assert out.split()[1] == out.split()[3], f"a third process missed the cache: {out} {err[-2000:]}"


def test_two_threads_call_one_triton_program():
    """The Triton launch list pools its intermediates too (and Triton's interpreter, which runs it here,
    is not re-entrant either): backends/triton/codegen.py `LaunchList` takes one call at a time."""
    if os.environ["TRITON_INTERPRET"] in ("", "0") and not torch.cuda.is_available():
        pytest.skip("triton runs neither on a GPU nor in its interpreter here")
    pytest.importorskip("triton")
    torch.manual_seed(3)
    w = torch.randn(32, 32) / 6
    xs = [torch.randn(16, 32), torch.randn(16, 32) * 3]
    wants = [block(x, w) for x in xs]
    _two_callers(compile(block, target="h100"), xs, w, wants, iters=30)
