"""Measure generated kernels on the real backend of a target and append them to a JSON-lines dataset.

Each row is timed in this process: `solder.backends.registry.get_backend(target.backend).lower(module, target)`,
then, on a CPU, warm-up calls and the median of repeated wall-clock calls (`time_program`) in each thread
configuration (`measure_cpu_row`, below); on CUDA,
GPU time measured with CUDA events (`time_cuda`): warm-up calls, then N back-to-back calls captured in
one CUDA graph (the backend's own graph capture is off) and replayed between two events, the median of
several replays divided by N (the row's `spread` is (max - min) / median of those replays). Without
the graph, per-call host overhead (~30 us of Python and Triton
launch code) hides every kernel shorter than that. Rows are appended one by one and flushed, so an
interrupted run loses at most one row; a rerun skips the ids already in the file.

GPU targets draw the "gpu" size profile of `generate` (kernels up to ~270 MB). `jobs > 1` starts that
many helper processes that lower and run each row once ahead of the timing loop, so that Triton's disk
cache is warm when the row is timed (compilation, not timing, bounds the rows per minute).

On a CPU each generated row becomes one record per configuration, id `<row>@t<threads><s|p>`: the kernel
compiled serial (`threads.forced(False)`) and, where it has a parallel schedule (its program forks), compiled
with its outer loop across threads (`forced(True)`), each run on 1 thread and on torch's thread count (the
`threads` argument). The configurations are timed interleaved, in `ROUNDS` rounds, and each keeps the lowest
of its rounds' medians, so that a round in which another process held a core does not count (more rounds
where a team still looks stalled: `_time_configs`). A record's
`threads` is the team size it ran on and `parallel` whether its program forked a team (a kernel that goes
parallel by its own rule, attention, counts as parallel in both compilations).

This module imports torch and the backend registry; nothing else in costmodel/ does at import time.
torch-mlir is never imported here (the GPU machine that runs `collect --target h100` does not have it).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from solder.compiler import ir, log
from solder.compiler.dialects.types import shape_of, torch_dtype
from solder.compiler.errors import SolderError
from solder.compiler.targets import Target, get_target
from solder.costmodel import features, generate

_LOG = log.get("costmodel")


def read_ids(path: Path) -> set[str]:
    """Row ids already in the dataset; a torn last line (an interrupted write) is ignored."""
    if not path.exists():
        return set()
    ids = set()
    for line in path.read_text().splitlines():
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def drop_torn_tail(path: Path) -> None:
    """Cut a last line that an interrupted run left without its newline, so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    _LOG.warning("costmodel collect: dropping a torn last line of %s (%d bytes)", path, len(data) - keep)
    with path.open("r+b") as f:
        f.truncate(keep)


def make_inputs(module, device: str, seed: int = 0) -> list:
    """Random tensors for the arguments of `@forward` (normal floats, positive where logs/roots may read them)."""
    import torch

    fn = next(iter(module.ops))
    if device == "cuda":
        return _cuda_inputs(fn, seed)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in fn.function_type.inputs.data:
        dt = torch_dtype(t.element_type)
        x = torch.rand(shape_of(t), generator=gen) + 0.5 if dt.is_floating_point else torch.randint(0, 2, shape_of(t), generator=gen)
        out.append(x.to(dtype=dt, device=device))
    return out


def time_program(program, args: list, device: str, budget_s: float = 0.08, min_reps: int = 10,
                 max_reps: int = 100) -> tuple[float, int]:
    """(median seconds of one call, repetitions): 2 warm-up calls, then repeated timed calls."""
    sync = _sync(device)
    for _ in range(2):
        program(args)
    sync()
    t0 = time.perf_counter()
    program(args)
    sync()
    first = time.perf_counter() - t0
    reps = max(min_reps, min(max_reps, int(budget_s / max(first, 1e-7))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        program(args)
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), reps


def _cuda_inputs(fn, seed: int) -> list:
    """`make_inputs` on the GPU: drawn there (hundreds of MB per tensor would be slow to draw on the host)."""
    import torch

    gen = torch.Generator(device="cuda").manual_seed(seed)
    out = []
    for t in fn.function_type.inputs.data:
        dt, shape = torch_dtype(t.element_type), shape_of(t)
        if dt.is_floating_point:
            x = (torch.rand(shape, generator=gen, device="cuda") + 0.5).to(dt)
        else:
            x = torch.randint(0, 2, shape, generator=gen, device="cuda").to(dt)
        out.append(x)
    return out


def time_cuda(program, args: list, batch_s: float = 3e-3, samples: int = 5, max_calls: int = 200,
              stats: dict | None = None) -> tuple[float, int, str]:
    """(median GPU seconds of one call, calls timed, method) with CUDA events, like triton.testing.do_bench.

    Two warm-up calls (compile, pick autotuned variants), one call timed to size the batch, then `calls`
    back-to-back calls (enough for ~`batch_s` of host time, 3..`max_calls`) captured in one CUDA graph;
    the graph is replayed once to warm up and `samples` times between two events. Method "graph". When
    the capture fails (an eager fallback that synchronizes, ...), the same batch is launched plainly
    between the events instead: method "events", which still includes host launch overhead.
    """
    import torch

    for _ in range(2):
        program(args)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    program(args)
    end.record()
    end.synchronize()
    first = start.elapsed_time(end) * 1e-3
    calls = max(3, min(max_calls, int(batch_s / max(first, 1e-6))))
    graph = _capture(program, args, calls)
    if graph is not None:
        run, method = graph.replay, "graph"
    else:
        def run():
            for _ in range(calls):
                program(args)
        method = "events"
    run()
    times = []
    for _ in range(samples):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3 / calls)
    del graph
    med = statistics.median(times)
    if stats is not None:  # the replays' spread: what one row's measurement noise looks like
        stats["spread"] = float(f"{(max(times) - min(times)) / med:.4g}") if med > 0 else 0.0
    return med, calls * samples, method


def _capture(program, args: list, calls: int):
    """A CUDA graph of `calls` back-to-back calls of `program`, or None when capturing fails."""
    import torch

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            program(args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                program(args)
        return graph
    except Exception as e:  # noqa: BLE001 - any capture failure: time plain launches instead
        _LOG.warning("costmodel collect: CUDA graph capture failed (%s: %s); timing plain launches",
                     type(e).__name__, str(e)[:200])
        torch.cuda.synchronize()
        return None


def _sync(device: str) -> Callable[[], None]:
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def measure_cpu_row(row: generate.Row, target: Target, backend, counts: tuple[int, ...]) -> list[dict]:
    """Records of one row on a CPU: compiled serial and (where it forks) parallel, each timed on every
    thread count of `counts`, interleaved (see the module docstring)."""
    import torch

    from solder.backends.cpu import threads

    torch.set_num_threads(max(counts))  # a parallel schedule splits the work for this many threads
    programs = {}
    for mode in (False, True) if max(counts) > 1 else (False,):
        with threads.forced(mode):
            programs["p" if mode else "s"] = backend.lower(row.module, target)
    args = make_inputs(row.module, target.device)
    forked = {}
    for key, program in programs.items():
        before = threads.forks()
        program(args)
        forked[key] = threads.forks() > before
    if not forked.get("p") or (forked["s"] and "p" in programs):
        programs.pop("p", None)  # no parallel schedule: the same program twice; or parallel either way
    best = _time_configs(programs, args, counts, target.device)
    text, hw = ir.print_ir(row.module), hardware_name(target.device)
    kernel = features.the_kernel(row.module)
    out = []
    for (n, key), (seconds, reps) in best.items():
        par = forked[key]
        out.append({
            "id": f"{row.id}@t{n}{key}", "family": row.family, "shape": row.shape_sig, "role": row.role,
            "pair": f"{row.pair}@t{n}s" if row.pair is not None and key == "s" else None,
            "target": target.name, "backend": backend.name, "hardware": hw, "ir": text,
            "threads": n, "parallel": par,
            "features": summary(features.kernel_features(kernel, target, threads=n, parallel=par)),
            "seconds": float(f"{seconds:.5g}"), "reps": reps,
        })
    return out


def _time_configs(programs: dict, args: list, counts: tuple[int, ...], device: str) -> dict:
    """{(threads, program key): (seconds, calls)}: every program on every thread count, interleaved, `ROUNDS`
    rounds, the lowest round median kept. A team waits for its second thread while another process holds
    that core (a time slice, milliseconds); where a program on several threads is still far slower than on
    one after the rounds, up to `MAX_ROUNDS` rounds are timed, and a row that stays so is refused."""
    import torch

    best: dict = {}
    for r in range(MAX_ROUNDS):
        for n in counts:
            torch.set_num_threads(n)
            for key, program in programs.items():
                seconds, reps = time_program(program, args, device, budget_s=0.03, min_reps=5)
                old = best.get((n, key), (math.inf, 0))
                best[(n, key)] = (min(old[0], seconds), old[1] + reps)
        if r + 1 >= ROUNDS and not _stalled(best, counts):
            return best
        time.sleep(0.05 * (r + 1))
    raise SolderError(f"costmodel collect: a program on {max(counts)} threads stayed more than {STALL}x slower "
                      f"than on one after {MAX_ROUNDS} rounds ({_stalled(best, counts)}); another process holds "
                      "the cores: rerun when the machine is quiet")


ROUNDS, MAX_ROUNDS, STALL = 3, 12, 4.0


def _stalled(best: dict, counts: tuple[int, ...]) -> str:
    """The configurations whose time on several threads is > STALL x and > 100 us above their time on one."""
    bad = []
    for (n, key), (seconds, _) in best.items():
        one = best.get((min(counts), key), (seconds, 0))[0]
        if n > min(counts) and seconds > STALL * one and seconds - one > 1e-4:
            bad.append(f"{key} {one * 1e6:.0f} us -> {seconds * 1e6:.0f} us")
    return ", ".join(bad)


def cpu_done_id(row_id: str, counts: tuple[int, ...]) -> str:
    """The record id whose presence says a row was measured on a CPU (its records are written together)."""
    return f"{row_id}@t{min(counts)}s"


def measure_row(row: generate.Row, target: Target, backend) -> dict:
    """Lower, run and time one generated row; returns its dataset record."""
    text = ir.print_ir(row.module)
    program = backend.lower(row.module, target)
    args = make_inputs(row.module, target.device)
    extra = {}
    if target.device == "cuda":
        seconds, reps, extra["timing"] = time_cuda(program, args, stats=extra)
    else:
        seconds, reps = time_program(program, args, target.device)
    kernel = features.the_kernel(row.module)
    return {
        "id": row.id, "family": row.family, "shape": row.shape_sig, "role": row.role, "pair": row.pair,
        "target": target.name, "backend": backend.name, "hardware": hardware_name(target.device), "ir": text,
        "features": summary(features.kernel_features(kernel, target)),
        "seconds": float(f"{seconds:.5g}"), "reps": reps, **extra,
    }


SUMMARY = ("log_flops", "log_bytes_read", "log_bytes_written", "log_roofline", "n_ops", "n_inputs", "n_outputs")


def summary(f: dict[str, float]) -> dict[str, float]:
    """The analytic features a person reads in a dataset row; training recomputes the full vector from the IR."""
    return {k: float(f"{f[k]:.5g}") for k in SUMMARY if k in f}


def hardware_name(device: str) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo (platform.processor() elsewhere)."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def profile_of(target: Target) -> str:
    """The `generate` size profile a target is measured with: "gpu" on CUDA, "small" elsewhere."""
    return "gpu" if target.device == "cuda" else "small"


def collect(target: str | Target, n: int, out: Path, seed: int = 0, progress: bool = True,
            backend: str | None = None, jobs: int = 1, time_budget: float | None = None,
            threads: tuple[int, ...] | None = None, families: tuple[str, ...] | None = None) -> int:
    """Grow the dataset at `out` to the first `n` rows of the stream `seed`; returns the rows added.

    `backend` overrides the target's own backend (e.g. "reference" to time eager PyTorch on the GPU).
    `jobs > 1` (CUDA only) warms Triton's cache in `jobs` helper processes; `time_budget` (seconds)
    stops adding rows once spent, so a run bounded from outside ends cleanly with what it has.
    `threads` (the cpu backend): the thread counts each row is timed on (default 1 and torch's count;
    `measure_cpu_row`); other backends time one record per row on one CPU thread, or on the GPU;
    `families`: only rows of these kernel families are measured (the others of the first `n` are skipped).
    """
    import torch

    target = get_target(target)
    before = torch.get_num_threads()
    counts = tuple(sorted(set(threads or (1, before))))
    deadline = time.monotonic() + time_budget if time_budget else None
    name = backend or target.backend
    workers = []
    try:
        _setup_device(target)
        be = load_backend(name, target)
        if target.device == "cuda":
            _no_backend_graphs(be)
            workers = _start_warmers(target, name, n, out, seed, jobs, time_budget)
        if name != "cpu":  # one record per row, as measured before the thread configurations
            counts = ()
            torch.set_num_threads(1)
        return _collect(target, be, n, out, seed, progress, deadline, counts, families)
    finally:
        for w in workers:
            w.terminate()
        torch.set_num_threads(before)


def load_backend(name: str, target: Target):
    """The backend instance, or a SolderError that says which module is missing and what else to run."""
    from solder.backends.registry import get_backend

    try:
        return get_backend(name)
    except ImportError as e:
        raise SolderError(f"costmodel collect: backend {name!r} of target {target.name!r} does not import here "
                          f"({e}); expected an installed backend; pass --backend reference to time eager PyTorch "
                          "instead") from None


def _no_backend_graphs(backend) -> None:
    """Turn off the backend's own CUDA graph (`time_cuda` captures its own around many calls)."""
    if hasattr(backend, "cuda_graphs"):
        backend.cuda_graphs = False


def _collect(target: Target, backend, n: int, out: Path, seed: int, progress: bool,
             deadline: float | None = None, counts: tuple[int, ...] = (), families=None) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(out)
    have = read_ids(out)
    profile = profile_of(target)
    done = (lambda i: cpu_done_id(i, counts)) if counts else (lambda i: i)  # noqa: E731
    rows = [r for r in _first_rows(seed, n, profile) if families is None or r.family in families]
    todo = sum(1 for r in rows if done(r.id) not in have)
    bar = _bar(todo, progress, f"collect {target.name}")
    # On a GPU anything a kernel raises (a compile error, out of memory) skips the row; on a CPU only
    # SolderError does, as before. Many failures in a row (a broken CUDA context) stop the run.
    skip = Exception if target.device == "cuda" else SolderError
    added = failed = 0
    with out.open("a") as f:
        for row in rows:
            if deadline is not None and time.monotonic() > deadline:
                _LOG.warning("costmodel collect: time budget spent after %d new rows", added)
                break
            if done(row.id) in have:
                continue
            try:
                records = measure_cpu_row(row, target, backend, counts) if counts else \
                    [measure_row(row, target, backend)]
            except skip as e:
                _LOG.warning("costmodel collect: skipping row %s (%s): %s: %s", row.id, row.family,
                             type(e).__name__, str(e)[:300])
                failed += 1
                if failed >= 25:
                    _LOG.warning("costmodel collect: %d rows failed in a row; stopping", failed)
                    break
                continue
            failed = 0
            f.write("".join(json.dumps(record) + "\n" for record in records))
            f.flush()
            added += 1
            bar.update(1)
    bar.close()
    return added


def _first_rows(seed: int, n: int, profile: str = "small"):
    for i, row in enumerate(generate.rows(seed, profile)):
        if i >= n:
            return
        yield row


def _first_ids(seed: int, n: int, profile: str = "small"):
    return (r.id for r in _first_rows(seed, n, profile))


# ---------------------------------------------------------------------------------------------
# Cache warmers: helper processes that compile rows ahead of the timing loop (CUDA only)
# ---------------------------------------------------------------------------------------------


def _start_warmers(target: Target, backend: str, n: int, out: Path, seed: int, jobs: int,
                   time_budget: float | None) -> list:
    """`jobs` processes, each lowering and running every `jobs`-th row once; [] when jobs <= 1."""
    if jobs <= 1:
        return []
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold a CUDA context
    have = frozenset(read_ids(out))
    budget = time_budget or 24 * 3600.0
    procs = []
    for shard in range(jobs):
        p = ctx.Process(target=_warm, args=(target.name, backend, n, seed, shard, jobs, have, budget), daemon=True)
        p.start()
        procs.append(p)
    return procs


def _warm(target_name: str, backend_name: str, n: int, seed: int, shard: int, jobs: int, have: frozenset,
          budget: float) -> None:
    """Worker: lower and run rows `shard`, `shard + jobs`, ... once each; errors are the timing loop's."""
    import torch

    deadline = time.monotonic() + budget
    parent = os.getppid()
    target = get_target(target_name)
    backend = load_backend(backend_name, target)
    _no_backend_graphs(backend)
    for i, row in enumerate(_first_rows(seed, n, profile_of(target))):
        if time.monotonic() > deadline or os.getppid() != parent:
            return
        if i % jobs != shard or row.id in have:
            continue
        try:
            program = backend.lower(row.module, target)
            program(make_inputs(row.module, target.device))
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001 - the timing loop meets and reports the same error
            torch.cuda.empty_cache()
        program = None


def _setup_device(target: Target) -> None:
    import torch

    torch.manual_seed(0)
    if target.device != "cpu" and not torch.cuda.is_available():
        raise SolderError(f"costmodel collect: target {target.name!r} runs on {target.device}, "
                          "but torch.cuda.is_available() is False here; run it on a machine with the GPU")


def _bar(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="kernel")
