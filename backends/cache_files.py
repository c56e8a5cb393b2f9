"""Files of the on-disk caches (CPU kernels, the prebuilt attention library, the OpenMP shim, generated Triton
modules): what may be read, where to write. Shared by both backends.

Trust rule: owner and permissions (no signing key to manage). A cache entry holds machine code that is loaded into
this process, so it is read only where nobody but this user (or root) can have written it: the entry file and every
directory from the cache root down to it must be owned by this user or by root and not writable by group or
others. The file is checked on its open descriptor (`fstat`) and its bytes are read from that same descriptor, so
the bytes checked are the bytes used. An entry that fails the rule is refused, never loaded: its kernel is compiled
again, with one warning per cache root on the `backend` log channel, and stored in place of the refused entry where
the directories are trusted (a file of ours replaces it), else kept in this process's private directory.

Read-only caches: entries are read in place (dlopen needs a file: the verified bytes are copied into the private
directory first), and every temporary file (object files, shared libraries being linked or loaded) is written into
the private directory, never into the cache. When the cache root cannot be written (a read-only mount, no
permission) or is not trusted, newly compiled kernels are kept in the private directory for the rest of the
process, and the `backend` channel says so once.

The private directory is created on first use with `tempfile.mkdtemp` (mode 0700, owned by this process's user)
and removed when the process exits.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import stat
import tempfile
from pathlib import Path

from solder.compiler import log

_log = log.get("backend")
_private: Path | None = None
_said: set[tuple[str, str]] = set()


def private_dir() -> Path:
    """This process's own directory (0700): temporary files, and kernels that cannot go into the cache."""
    global _private
    if _private is None or not _private.is_dir():
        _private = Path(tempfile.mkdtemp(prefix="solder-jit-"))
        atexit.register(shutil.rmtree, str(_private), True)
    return _private


def private_root() -> Path | None:
    """The private directory if this process has made one (where its fallback entries are), else None."""
    return _private if _private is not None and _private.is_dir() else None


def say_once(kind: str, root: Path, message: str, *args) -> None:
    """One warning per (kind, cache root) and process."""
    if (kind, str(root)) in _said:
        return
    _said.add((kind, str(root)))
    _log.warning(message, *args)


def distrust(root: Path, path: Path, st: os.stat_result | None = None) -> str | None:
    """Why `path` (under `root`) may have been written by someone else, or None when it is trusted.
    `st`: the entry's stat, taken on its open descriptor; directories from its parent up to `root` are checked."""
    checks = [(path, st)] if st is not None else []
    d = path.parent
    while True:
        checks.append((d, None))
        if d == root or d == d.parent:
            break
        d = d.parent
    for p, s in checks:
        try:
            s = s or os.stat(p)
        except OSError as e:
            return f"{p}: {e.strerror}"
        if s.st_uid not in (os.getuid(), 0):
            return f"{p} is owned by uid {s.st_uid}, not by this user ({os.getuid()})"
        if s.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{p} is writable by {'group' if s.st_mode & stat.S_IWGRP else 'others'} (mode {s.st_mode & 0o777:o})"
    return None


def read_trusted(root: Path, path: Path) -> bytes | None:
    """The bytes of the entry at `path`, or None when it is missing or fails the trust rule (one warning)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        why = "not a regular file" if not stat.S_ISREG(st.st_mode) else distrust(root, path, st)
        if why is not None:
            where = "in its place" if distrust(root, path.parent / "entry") is None else f"into {private_dir()}"
            say_once("distrust", root, "kernel cache %s: refusing entries this user did not write (%s); their "
                     "kernels are compiled again %s. Make the cache owned by you and not writable by others "
                     "(chmod go-w), or use another SOLDER_CACHE_DIR.", root, why, where)
            return None
        return f.read()


def writable_root(root: Path, path: Path) -> Path:
    """Where to store an entry whose place under `root` is `path`: `root` when its directories can be made and
    are trusted, else this process's private directory (said once)."""
    existing = next(d for d in [path.parent, *path.parent.parents] if d.exists())
    why = None if _writable(existing) else f"{existing} is not writable"
    if why is None:
        try:
            _make_dirs(root, path.parent)
            why = distrust(root, path.parent / "entry")
        except OSError as e:
            why = e.strerror or str(e)
    if why is None:
        return root
    say_once("readonly", root, "kernel cache %s cannot take new kernels (%s); kernels compiled by this process are "
             "kept in %s until it exits", root, why, private_dir())
    return private_dir()


def _writable(d: Path) -> bool:
    return os.access(d, os.W_OK)


def _make_dirs(root: Path, d: Path) -> None:
    """Create `d` and its missing parents, up to and including `root`, not writable by group or others (and the
    folders above `root`, such as a new venv's share/solder, where they are missing)."""
    missing = []
    while not d.exists():
        missing.append(d)
        if d == root or d == d.parent:
            break
        d = d.parent
    root.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    for m in reversed(missing):
        try:
            m.mkdir(mode=0o755)
        except FileExistsError:
            pass


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` in one step (a temporary file beside it, then rename), readable by all, writable by us."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_library(payload: bytes) -> ctypes.CDLL:
    """dlopen verified bytes: written to a private file (dlopen needs a path), loaded, then unlinked."""
    fd, tmp = tempfile.mkstemp(dir=private_dir(), prefix="load-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        return ctypes.CDLL(tmp)
    finally:
        os.unlink(tmp)
