"""solder: a compiler that makes PyTorch models fast.

    import solder
    fast = solder.compile(model, target="cpu")      # or "h100"; also a decorator
    fast = torch.compile(model, backend="solder")   # the same compiler behind dynamo
    loaded = solder.load("m.solder")                # a saved compiled module

This folder is the top of the stack: `compile()` (api.py), the compiled callable (runtime.py), saved artifacts
(artifact.py), `solder-opt` (cli.py) and the dynamo backend (dynamo.py). The layers beneath are the subpackages
`solder.compiler` (the IR, capture and import), `solder.passes`, `solder.costmodel` and `solder.backends` (see the
README's "How it is built"). Installed, they live inside this package; in a source checkout they are the
top-level folders beside this one, which `__path__` below makes importable under the same names.
"""

from __future__ import annotations

import os as _os

_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "compiler")) and _os.path.isfile(_os.path.join(_root, "compiler", "__init__.py")):
    __path__.append(_root)  # a source checkout: solder.compiler is <root>/compiler

__version__ = "0.1.0"
__all__ = ["compile", "load", "SparseAttention", "__version__"]


def __getattr__(name):  # `import solder` stays light: the API pulls in torch on first use
    if name == "compile":
        from solder.api import compile

        return compile
    if name == "load":
        from solder.artifact import load

        return load
    if name == "SparseAttention":
        from solder.compiler.sparse_attention import SparseAttention

        return SparseAttention
    raise AttributeError(f"module 'solder' has no attribute {name!r}")
