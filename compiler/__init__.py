"""solder's front door: `compile(model, target=...)`, `load(path)`, and the IR pipeline beneath them."""

from __future__ import annotations


def __getattr__(name):  # keep `import compiler.dialects` light: the API pulls in torch
    if name == "load":
        from compiler.artifact import load

        return load
    if name == "compile":
        from compiler import api

        return api.compile
    if name == "SparseAttention":
        from compiler.sparse_attention import SparseAttention

        return SparseAttention
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")


__all__ = ["compile", "load", "SparseAttention"]
