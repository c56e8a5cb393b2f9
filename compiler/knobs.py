"""Every environment knob of solder, in one place, with its type and default."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_CACHE_DIR: ContextVar[Path | None] = ContextVar("solder_cache_dir", default=None)


def _flag(name: str, default: bool = False) -> bool:
    v = os.environ.get(name)
    return default if v is None else v.strip().lower() not in ("", "0", "false", "no", "off")


def cache_dir() -> Path:
    """compile(cache_dir=...) while that compile runs, else SOLDER_CACHE_DIR, else $XDG_CACHE_HOME/solder,
    else ~/.cache/solder: compiled kernels by content hash."""
    override = _CACHE_DIR.get()
    if override is not None:
        return override
    env = os.environ.get("SOLDER_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "solder"


def cpu_library_root() -> Path | None:
    """SOLDER_CPU_LIB, else <sys.prefix>/share/solder/cpu-lib: where the CPU backend's prebuilt attention kernels
    live (backends/cpu/attention_lib.py); None when SOLDER_CPU_LIB=off (attention is then generated per shape)."""
    env = os.environ.get("SOLDER_CPU_LIB")
    if env == "off":
        return None
    return Path(env) if env else Path(sys.prefix) / "share" / "solder" / "cpu-lib"


@contextmanager
def cache_dir_override(path: str | os.PathLike | None):
    """Make `cache_dir()` return `path` in this thread (and context) until the block ends; None: no change."""
    if path is None:
        yield
        return
    token = _CACHE_DIR.set(Path(path))
    try:
        yield
    finally:
        _CACHE_DIR.reset(token)


def current_cache_dir_override() -> Path | None:
    return _CACHE_DIR.get()


def log_channels() -> set[str]:
    """SOLDER_LOG=fusion,costmodel,backend,capture,runtime (or "all"): channels that log at INFO."""
    return {c.strip() for c in os.environ.get("SOLDER_LOG", "").split(",") if c.strip()}


def verify_ir() -> bool:
    """SOLDER_VERIFY_IR=1: verify the IR after every pass (slower compiles; on in tests)."""
    return _flag("SOLDER_VERIFY_IR")


def max_specializations() -> int:
    """SOLDER_MAX_SPECIALIZATIONS: compiled shape specializations kept per compiled callable."""
    return int(os.environ.get("SOLDER_MAX_SPECIALIZATIONS", "8"))


def speed_guard() -> bool:
    """SOLDER_SPEED_GUARD (default on): a compiled specialization times its first calls against eager and keeps
    the faster (solder/speed_guard.py); `off` always runs the compiled program."""
    return _flag("SOLDER_SPEED_GUARD", default=True)


def strict() -> bool:
    """SOLDER_STRICT=1: a signature that fails to compile or to run raises (as compile(strict=True)) instead of
    running eagerly with one warning."""
    return _flag("SOLDER_STRICT")
