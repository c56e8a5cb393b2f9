"""Every environment knob of solder, in one place, with its type and default."""

from __future__ import annotations

import os
from pathlib import Path


def _flag(name: str, default: bool = False) -> bool:
    v = os.environ.get(name)
    return default if v is None else v.strip().lower() not in ("", "0", "false", "no", "off")


def cache_dir() -> Path:
    """SOLDER_CACHE_DIR, else $XDG_CACHE_HOME/solder, else ~/.cache/solder: compiled kernels by content hash."""
    env = os.environ.get("SOLDER_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "solder"


def log_channels() -> set[str]:
    """SOLDER_LOG=fusion,costmodel,backend,capture,runtime (or "all"): channels that log at INFO."""
    return {c.strip() for c in os.environ.get("SOLDER_LOG", "").split(",") if c.strip()}


def verify_ir() -> bool:
    """SOLDER_VERIFY_IR=1: verify the IR after every pass (slower compiles; on in tests)."""
    return _flag("SOLDER_VERIFY_IR")


def max_specializations() -> int:
    """SOLDER_MAX_SPECIALIZATIONS: compiled shape specializations kept per compiled callable."""
    return int(os.environ.get("SOLDER_MAX_SPECIALIZATIONS", "8"))
