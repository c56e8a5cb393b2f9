"""The `torch.compile` backend: `torch.compile(model, backend="solder")`.

TorchDynamo captures each straight-line piece of the Python program as an FX `GraphModule` (a graph
break — `print()`, a branch on a tensor value — ends one graph and starts the next) and hands each to
its backend with example inputs. solder's backend wraps the graph module as an `nn.Module` and
compiles it with `compiler.compile()`, so every captured graph goes through the same
export → import → passes → backend path as a directly compiled model, and is specialized on the
shapes it is called with.

The backend is registered through the `torch_dynamo_backends` entry point in pyproject.toml
(`solder = "compiler.dynamo:solder_backend"`); Dynamo finds it by name with no import needed.
Options reach it as `torch.compile(m, backend="solder", options={"target": "cpu", "passes": ...})`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from compiler import log
from compiler.errors import SolderError

_log = log.get("runtime")

_COMPILE_OPTIONS = ("target", "passes", "sparse_attention", "cost_model", "cache_dir", "verify", "explain")


class _GraphModuleWrapper(torch.nn.Module):
    """One Dynamo graph as an inference module: `training` is False so the compiled path is taken.

    The wrapped graph's own training flags are left alone: Dynamo already traced the model in the
    mode it was in, and the graph's call_module nodes (if any) must keep meaning what they meant.
    """

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__()
        self.gm = gm
        self.training = False

    def forward(self, *args):
        return self.gm(*args)


@dataclass(eq=False)  # hashable by identity: Dynamo keeps backends in a dict
class SolderBackend:
    """A Dynamo backend that compiles every captured graph with `compiler.compile()`.

    `graphs` holds the compiled callable of each graph Dynamo handed over (one per graph break
    segment and per Dynamo recompilation), so tests and users can count them.
    """

    options: dict = field(default_factory=dict)
    graphs: list = field(default_factory=list)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs, options: dict | None = None, mode=None):
        from compiler.api import compile as solder_compile

        merged = {**self.options, **(options or {})}
        unknown = sorted(set(merged) - set(_COMPILE_OPTIONS))
        if unknown:
            raise SolderError(f"torch.compile(backend='solder'): unknown option(s) {', '.join(unknown)}; "
                              f"expected some of {', '.join(_COMPILE_OPTIONS)}")
        if mode not in (None, "default"):
            _log.info("dynamo: mode=%r has no meaning for solder; ignored", mode)
        merged.setdefault("target", "cpu")
        compiled = solder_compile(_GraphModuleWrapper(gm), **merged)
        compiled.name = f"dynamo_graph_{len(self.graphs)}"
        self.graphs.append(compiled)
        _log.info("dynamo: graph %d with %d nodes handed to solder", len(self.graphs) - 1, len(gm.graph.nodes))
        return _runner(compiled)

    def reset(self) -> None:
        """Forget the compiled graphs (`torch._dynamo.reset()` calls this)."""
        self.graphs.clear()


def _runner(compiled):
    """Dynamo calls the compiled graph with a flat list of inputs and expects a tuple/list back."""

    def run(*args):
        return compiled(*args)

    run._solder_compiled = compiled  # type: ignore[attr-defined]
    return run


def make_backend(**options) -> SolderBackend:
    """A fresh backend with its own compile options and graph count: `torch.compile(m, backend=make_backend())`."""
    return SolderBackend(dict(options))


solder_backend = SolderBackend()
"""The backend that `backend="solder"` names (through the `torch_dynamo_backends` entry point)."""
