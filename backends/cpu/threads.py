"""Threads for generated CPU kernels: torch's own OpenMP pool, and when a kernel is worth running on it.

Route. A parallel kernel's outer loop is an `scf.forall` (schedule.py, lower_schedule.py, attention.py), which
jit.py lowers through `scf-forall-to-parallel` and `convert-scf-to-openmp`; the LLVM OpenMP lowering calls the
runtime entry points of LLVM's libomp (`__kmpc_fork_call`, `__kmpc_for_static_init_8u`, `__kmpc_barrier`,
`__kmpc_global_thread_num`, `__kmpc_for_static_fini`: `nm -u` of a lowered softmax). Torch's CPU wheel runs its
intra-op parallelism on GNU libgomp (torch/lib/libgomp.so.1), and two OpenMP runtimes in one process are two
pools that oversubscribe the cores (why the libomp route was reverted). So those few `__kmpc_*` entry points
are implemented here on libgomp's ABI (omp_shim.c: `GOMP_parallel`, `GOMP_barrier`, `omp_get_thread_num`),
compiled by the system C compiler against the libgomp that torch loaded (same soname: the dynamic linker
reuses the loaded copy, one pool), cached in the kernel cache like a kernel and loaded RTLD_GLOBAL, where the
ExecutionEngine and cached kernel libraries find the symbols. The team size is torch's: `sync()` passes
`torch.get_num_threads()` to the shim (runner.py calls it per call of a program with parallel kernels; it sets
only when the count changed), so `torch.set_num_threads(1)` makes every kernel run on one thread.

The other route, chunks of a kernel's outer loop handed to torch's intra-op pool (`at::parallel_for`), needs a
C++ extension built against torch's headers per torch version (not measured); the shim needs a C compiler and
libgomp's stable C ABI only, and the worksharing stays inside the kernel (no Python per chunk).

Measured on the 2-core development machine while other jobs kept it at load 7-10 (so: interleaved blocks of
back-to-back calls, repeated; ratios, not times). 4096x1024 f32, serial kernel at 1 thread over the parallel one
at torch's 2 threads, in blocks where both threads ran: layer norm 1.7-2.3x, softmax 1.4x, GELU-bias 1.6-2.3x;
the parallel kernel at a team of 1 is within noise of the serial one. In most blocks, though, a 2-thread region
waited 10-30 ms for its second thread to be scheduled, for torch's own 2-thread ops as much as for these kernels
(median 2-thread time 5-25x the 1-thread time for both), and flash attention at T=4096 (120-240 ms a call) gained
nothing (0.9x): under that load the process gets no more CPU from a second thread. `torch.set_num_threads(1)`
turns the kernels' threads off with torch's.

Without torch's libgomp (a torch built without OpenMP) or a C compiler, `runtime()` is None and every kernel is
compiled single-threaded.

When to go parallel: `worth_parallel` is the one decision point. Structural limits first (torch on one thread,
no shim, fewer than MIN_ROWS_PER_THREAD rows per thread: nothing to split evenly); then the CPU cost model
(costmodel/shipped/cpu, trained on kernels timed at one thread and at torch's count, compiled serial and
parallel: `solder-costmodel collect --target cpu`) estimates the kernel's graph ops on torch's team compiled
serial and compiled parallel, and the kernel goes parallel where that saves costmodel.PARALLEL_MIN_GAIN of the
serial estimate: the fork/join and the uneven split are in the measurements it learned from. Without such a
model (or without the ops) a size threshold decides: a kernel below MIN_PARALLEL_ELEMENTS does not pay for
waking the pool. Each decision and its reason goes to the `backend` log
channel (`SOLDER_LOG=backend`). `forced()` overrides the decision where a parallel schedule exists (collection
compiles each kernel both ways).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from solder import costmodel
from solder.backends import cache_files
from solder.compiler import knobs, log

_log = log.get("backend")
_SOURCE = Path(__file__).with_name("omp_shim.c")

SHIM_ABI = 1  # bump when the shim's entry points change meaning (cached parallel kernels are then recompiled)
# Elements a row/elementwise kernel must touch (its largest domain) before its rows are split across threads;
# attention has its own threshold in FLOPs (attention.PARALLEL_MIN_FLOPS).
MIN_PARALLEL_ELEMENTS = 1 << 16
# Outer iterations (rows) per thread below which the split is too uneven or too fine to pay.
MIN_ROWS_PER_THREAD = 2


def torch_threads() -> int:
    """The team size parallel kernels run with: torch's intra-op thread count."""
    return torch.get_num_threads()


def worth_parallel(elements: int, rows: int, ops: list | None = None, kernel: str = "kernel") -> bool:
    """Whether a kernel touching `elements` values over `rows` independent outer iterations (computing the graph
    `ops`, when the caller has them) should be compiled with its outer loop across threads; the reason goes to
    the `backend` log channel under the name `kernel`."""
    go, why = decide(elements, rows, ops)
    _log.info("threads: %s %s: %s", kernel, "parallel" if go else "serial", why)
    return go


def decide(elements: int, rows: int, ops: list | None = None, model=None) -> tuple[bool, str]:
    """(parallel or not, why) for `worth_parallel`; `model` overrides the target's cost model as
    `costmodel.estimate_ops` takes it ("roofline": none, the size threshold decides)."""
    n = torch_threads()
    if n <= 1:
        return False, "torch runs on one thread"
    if rows < MIN_ROWS_PER_THREAD * n:
        return False, f"{rows} outer iteration(s), fewer than {MIN_ROWS_PER_THREAD} per thread of {n}"
    if runtime() is None:
        return False, "no OpenMP runtime shared with torch (threads.py)"
    if _state["forced"] is not None:
        return _state["forced"], "forced (cost-model collection compiles both ways)"
    est = costmodel.estimate_parallel(ops, "cpu", n, model=model) if ops else None
    if est is None:
        big = elements >= MIN_PARALLEL_ELEMENTS
        return big, (f"no cost model with thread features: {elements} elements "
                     f"{'>=' if big else '<'} the threshold {MIN_PARALLEL_ELEMENTS}")
    serial, parallel = est
    go = parallel < serial * (1.0 - costmodel.PARALLEL_MIN_GAIN)
    return go, (f"cost model: {parallel * 1e6:.3g} us on {n} threads vs {serial * 1e6:.3g} us serial "
                f"({'saves' if go else 'does not save'} {costmodel.PARALLEL_MIN_GAIN:.0%}; {elements} elements, "
                f"{rows} outer iterations)")


@contextlib.contextmanager
def forced(parallel: bool | None):
    """Inside, every kernel that can run its outer loop on threads does (True) or does not (False), whatever it
    costs; None restores the decision. Cost-model collection compiles each kernel both ways with it."""
    before = _state["forced"]
    _state["forced"] = parallel
    try:
        yield
    finally:
        _state["forced"] = before


def torch_libgomp() -> str | None:
    """The path of the GNU OpenMP runtime this process has loaded for torch, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split(None, 5)[-1].strip() for ln in f if "libgomp" in ln}
    except OSError:
        return None
    paths = sorted(p for p in paths if p.startswith("/") and ".so" in os.path.basename(p))
    torch_lib = str(Path(torch.__file__).parent / "lib")
    return next((p for p in paths if p.startswith(torch_lib)), paths[0] if paths else None)


@functools.lru_cache(maxsize=None)
def runtime() -> str | None:
    """A name of the loaded shim for cache keys (its ABI, not its build: a parallel kernel needs only the
    `__kmpc_*` entry points, so a rebuilt shim keeps every cached kernel), or None when kernels must stay
    single-threaded."""
    lib = _load()
    return None if lib is None else f"solder-omp-shim-abi{SHIM_ABI}"


def sync(_get=torch.get_num_threads) -> None:
    """Make the kernels' team size torch.get_num_threads() (a few hundred ns when it did not change)."""
    n = _get()
    if n != _state["threads"]:
        lib = _state["lib"]
        if lib is not None:
            lib.solder_omp_set_threads(n)
        _state["threads"] = n


def sync_before_call(_tensors, _get=torch.get_num_threads) -> None:
    """`sync()` as the executor's `before_call` hook (it passes the call's tensors)."""
    n = _get()
    if n != _state["threads"]:
        sync()


def active() -> bool:
    """Whether the shim is loaded (some kernel of this process may run on threads): callers then `sync()`."""
    return _state["lib"] is not None


def team_size() -> int:
    """The team size the shim forks with now (0: libgomp's default; before any sync)."""
    lib = _state["lib"]
    return lib.solder_omp_get_threads() if lib is not None else 1


def forks() -> int:
    """Parallel regions the shim has started in this process (0 before it is loaded)."""
    lib = _state["lib"]
    return lib.solder_omp_forks() if lib is not None else 0


_state: dict = {"lib": None, "threads": None, "forced": None}


def _key() -> str:
    """What the shim's build depends on: its source, the libgomp it links, the instruction set."""
    h = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), (torch_libgomp() or "").encode(), platform.machine().encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


def _load() -> ctypes.CDLL | None:
    gomp = torch_libgomp()
    if gomp is None:
        _log.info("threads: torch has no GNU OpenMP runtime loaded; generated kernels run on one thread")
        return None
    root = knobs.cache_dir()
    path = root / "omp" / f"{_key()}.so"
    data = None
    for r in dict.fromkeys(x for x in (cache_files.private_root(), root) if x is not None):
        data = cache_files.read_trusted(r, r / "omp" / path.name)
        if data is not None:
            break
    if data is None:
        data = _build(gomp)
        if data is None:
            return None
        _store(root, path, data)
    lib = _dlopen_global(data)
    if lib is None:
        return None
    lib.solder_omp_set_threads.argtypes = [ctypes.c_int]
    lib.solder_omp_forks.restype = ctypes.c_int64
    _state["lib"], _state["threads"] = lib, None
    sync()
    return lib


def _build(gomp: str) -> bytes | None:
    """omp_shim.c compiled and linked against torch's libgomp (by its path, recorded by its soname)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        _log.info("threads: no C compiler to build the OpenMP shim; generated kernels run on one thread")
        return None
    with tempfile.TemporaryDirectory(dir=cache_files.private_dir()) as tmp:
        so = os.path.join(tmp, "omp.so")
        cmd = [cc, "-O2", "-shared", "-fPIC", "-o", so, str(_SOURCE), gomp,
               f"-Wl,-rpath,{os.path.dirname(gomp)}", f"-Wl,-soname,libsolder_omp_{_key()[:16]}.so"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode or not os.path.exists(so):
            _log.warning("threads: building the OpenMP shim failed (%s); generated kernels run on one thread",
                         (done.stderr or "").strip().splitlines()[-1:] or done.returncode)
            return None
        return Path(so).read_bytes()


def _store(root: Path, path: Path, data: bytes) -> None:
    place = cache_files.writable_root(root, path)
    target = place / "omp" / path.name
    try:
        cache_files._make_dirs(place, target.parent)
        cache_files.atomic_write(target, data)
    except OSError:
        pass


def _dlopen_global(data: bytes) -> ctypes.CDLL | None:
    """Load verified bytes RTLD_GLOBAL (the JIT and cached kernels resolve `__kmpc_*` from it)."""
    fd, tmp = tempfile.mkstemp(dir=cache_files.private_dir(), prefix="omp-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return ctypes.CDLL(tmp, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        _log.warning("threads: loading the OpenMP shim failed (%s); generated kernels run on one thread", e)
        return None
    finally:
        os.unlink(tmp)
