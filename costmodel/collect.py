"""Measure generated kernels on the real backend of a target and append them to a JSON-lines dataset.

Each row is timed in this process: `backends.registry.get_backend(target.backend).lower(module, target)`,
warm-up calls, then the median of repeated timed calls (synchronized on a GPU). Rows are appended one by
one and flushed, so an interrupted run loses at most one row; a rerun skips the ids already in the file.

This module imports torch and the backend registry; nothing else in costmodel/ does at import time.
torch-mlir is never imported here (the GPU machine that runs `collect --target h100` does not have it).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from compiler import ir, log
from compiler.dialects.types import shape_of, torch_dtype
from compiler.errors import SolderError
from compiler.targets import Target, get_target
from costmodel import features, generate

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

    gen = torch.Generator().manual_seed(seed)
    fn = next(iter(module.ops))
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


def _sync(device: str) -> Callable[[], None]:
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def measure_row(row: generate.Row, target: Target, backend) -> dict:
    """Lower, run and time one generated row; returns its dataset record."""
    text = ir.print_ir(row.module)
    program = backend.lower(row.module, target)
    args = make_inputs(row.module, target.device)
    seconds, reps = time_program(program, args, target.device)
    kernel = features.the_kernel(row.module)
    return {
        "id": row.id, "family": row.family, "shape": row.shape_sig, "role": row.role, "pair": row.pair,
        "target": target.name, "backend": backend.name, "hardware": hardware_name(target.device), "ir": text,
        "features": summary(features.kernel_features(kernel, target)),
        "seconds": float(f"{seconds:.5g}"), "reps": reps,
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


def collect(target: str | Target, n: int, out: Path, seed: int = 0, progress: bool = True,
            backend: str | None = None) -> int:
    """Grow the dataset at `out` to the first `n` rows of the stream `seed`; returns the rows added.

    `backend` overrides the target's own backend (e.g. "reference" to time eager PyTorch on the GPU).
    """
    import torch

    target = get_target(target)
    threads = torch.get_num_threads()
    try:
        _setup_device(target)
        return _collect(target, load_backend(backend or target.backend, target), n, out, seed, progress)
    finally:
        torch.set_num_threads(threads)


def load_backend(name: str, target: Target):
    """The backend instance, or a SolderError that says which module is missing and what else to run."""
    from backends.registry import get_backend

    try:
        return get_backend(name)
    except ImportError as e:
        raise SolderError(f"costmodel collect: backend {name!r} of target {target.name!r} does not import here "
                          f"({e}); expected an installed backend; pass --backend reference to time eager PyTorch "
                          "instead") from None


def _collect(target: Target, backend, n: int, out: Path, seed: int, progress: bool) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(out)
    have = read_ids(out)
    todo = sum(1 for i in _first_ids(seed, n) if i not in have)
    bar = _bar(todo, progress, f"collect {target.name}")
    added = 0
    with out.open("a") as f:
        for row in _first_rows(seed, n):
            if row.id in have:
                continue
            try:
                record = measure_row(row, target, backend)
            except SolderError as e:
                _LOG.warning("costmodel collect: skipping row %s (%s): %s", row.id, row.family, e)
                continue
            f.write(json.dumps(record) + "\n")
            f.flush()
            added += 1
            bar.update(1)
    bar.close()
    return added


def _first_rows(seed: int, n: int):
    for i, row in enumerate(generate.rows(seed)):
        if i >= n:
            return
        yield row


def _first_ids(seed: int, n: int):
    return (r.id for r in _first_rows(seed, n))


def _setup_device(target: Target) -> None:
    import torch

    torch.manual_seed(0)
    if target.device == "cpu":
        torch.set_num_threads(1)  # one core: stable timings on a shared 2-core machine
    elif not torch.cuda.is_available():
        raise SolderError(f"costmodel collect: target {target.name!r} runs on {target.device}, "
                          "but torch.cuda.is_available() is False here; run it on a machine with the GPU")


def _bar(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="kernel")
