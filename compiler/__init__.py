"""solder's front door: `compile(model, target=...)`, `load(path)`, and the IR pipeline beneath them."""

from __future__ import annotations


def __getattr__(name):  # keep `import compiler.dialects` light: the API pulls in torch
    if name == "load":
        from compiler.artifact import load

        return load
    if name in ("compile", "SparseAttention"):
        from compiler import api

        return getattr(api, name)
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")


__all__ = ["compile", "load"]
