"""The `torch.compile` backend: `torch.compile(model, backend="solder")`.

TorchDynamo captures each straight-line piece of the Python program as an FX `GraphModule` (a graph
break — `print()`, a branch on a tensor value — ends one graph and starts the next) and hands each to
its backend with example inputs. solder's backend wraps the graph module as an `nn.Module` and
compiles it with `solder.compile()`, so every captured graph goes through the same
export → import → passes → backend path as a directly compiled model.

Shapes: a graph Dynamo traced with symbolic sizes (`torch.compile(dynamic=True)`, or the graph Dynamo
retraces after "automatic dynamic shapes" saw a second size) has `SymInt` placeholders (`s77`) beside its
tensors, and tensors whose example sizes are symbols. Each SymInt placeholder that is a dim of a tensor
input is replaced inside the graph by `sym_size(tensor, dim)` and dropped from the inputs, and the dims
Dynamo marked symbolic are compiled dynamic from the first call (solder's dynamic shape policy: `?` dims,
bounds checked per call): one compile serves every size Dynamo sends to that graph. A SymInt that is no
tensor's dim (a Python int argument Dynamo made dynamic) stays an input, and solder compiles once per
value of it. A graph with static sizes follows solder's default policy.

The backend is registered through the `torch_dynamo_backends` entry point in pyproject.toml
(`solder = "solder.dynamo:solder_backend"`); Dynamo finds it by name with no import needed.
Options reach it as `torch.compile(m, backend="solder", options={"target": "cpu", "passes": ...})`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from solder.compiler import log
from solder.compiler.errors import SolderError
from solder.compiler.targets import get_target
from solder.runtime import CompiledModule, Options

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
    """A Dynamo backend that compiles every captured graph with `solder.compile()`.

    `graphs` holds the compiled callable of each graph Dynamo handed over (one per graph break
    segment and per Dynamo recompilation), so tests and users can count them.
    """

    options: dict = field(default_factory=dict)
    graphs: list = field(default_factory=list)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs, options: dict | None = None, mode=None):
        merged = {**self.options, **(options or {})}
        unknown = sorted(set(merged) - set(_COMPILE_OPTIONS))
        if unknown:
            raise SolderError(f"torch.compile(backend='solder'): unknown option(s) {', '.join(unknown)}; "
                              f"expected some of {', '.join(_COMPILE_OPTIONS)}")
        if mode not in (None, "default"):
            _log.info("dynamo: mode=%r has no meaning for solder; ignored", mode)
        merged.setdefault("target", "cpu")
        gm, dropped, dims = _symbolic_inputs(gm)
        # no Dynamo route for the pieces (CompiledModule.dynamo_route stays None): a graph Dynamo captured that
        # export cannot take runs eagerly
        options = Options(**{**merged, "target": get_target(merged["target"])})
        compiled = CompiledModule(_GraphModuleWrapper(gm), options)
        if dims:
            compiled.options.dynamic_dims = frozenset(dims)
        compiled.name = f"dynamo_graph_{len(self.graphs)}"
        self.graphs.append(compiled)
        _log.info("dynamo: graph %d with %d nodes handed to solder%s", len(self.graphs) - 1, len(gm.graph.nodes),
                  f"; dynamic (input, dim): {sorted(dims)}" if dims else "")
        return _runner(compiled, dropped)

    def reset(self) -> None:
        """Forget the compiled graphs (`torch._dynamo.reset()` calls this)."""
        self.graphs.clear()


def _runner(compiled, dropped: frozenset = frozenset()):
    """Dynamo calls the compiled graph with a flat list of inputs and expects a tuple/list back; the SymInt
    inputs in `dropped` are read off the tensors inside the graph instead."""

    if not dropped:
        def run(*args):
            return compiled(*args)
    else:
        def run(*args):
            return compiled(*[a for i, a in enumerate(args) if i not in dropped])

    run._solder_compiled = compiled  # type: ignore[attr-defined]
    return run


def _is_symbolic(x) -> bool:
    return isinstance(x, torch.SymInt) and bool(x.node.expr.free_symbols)


def _symbolic_inputs(gm: torch.fx.GraphModule):
    """(graph module, dropped input positions, dynamic (input, dim) pairs after the drop) for a Dynamo graph.

    Each SymInt placeholder equal to a symbolic dim of a tensor placeholder becomes `sym_size(tensor, dim)`
    in the graph (its input position is dropped); a tensor dim whose example size is symbolic is dynamic."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    values = [n.meta.get("example_value") for n in placeholders]
    if not any(_is_symbolic(v) for v in values) and not any(
            isinstance(v, torch.Tensor) and any(_is_symbolic(d) for d in v.shape) for v in values):
        return gm, frozenset(), set()
    where: dict[str, tuple] = {}  # symbol expression -> (tensor placeholder, dim)
    for n, v in zip(placeholders, values):
        if isinstance(v, torch.Tensor):
            for d, size in enumerate(v.shape):
                if _is_symbolic(size):
                    where.setdefault(str(size.node.expr), (n, d))
    # rewrite a copy: Dynamo reads the graph module it handed over to decide what it passes at run time
    graph, env = torch.fx.Graph(), {}
    graph.output(graph.graph_copy(gm.graph, env))
    gm = torch.fx.GraphModule(gm, graph)
    placeholders = [env[n] for n in placeholders]
    dropped = set()
    last = placeholders[-1]
    for i, (n, v) in enumerate(zip(placeholders, values)):
        if not _is_symbolic(v) or str(v.node.expr) not in where:
            continue
        src, d = where[str(v.node.expr)]
        src = env[src]
        with gm.graph.inserting_after(last):
            size = gm.graph.call_function(torch.ops.aten.sym_size.int, (src, d))
        size.meta["example_value"] = v
        n.replace_all_uses_with(size)
        gm.graph.erase_node(n)
        dropped.add(i)
    if dropped:
        gm.graph.lint()
        gm.recompile()
    kept = [(n, v) for i, (n, v) in enumerate(zip(placeholders, values)) if i not in dropped]
    dims = {(j, d) for j, (n, v) in enumerate(kept) if isinstance(v, torch.Tensor)
            for d, size in enumerate(v.shape) if _is_symbolic(size)}
    return gm, frozenset(dropped), dims


def make_backend(**options) -> SolderBackend:
    """A fresh backend with its own compile options and graph count: `torch.compile(m, backend=make_backend())`."""
    return SolderBackend(dict(options))


solder_backend = SolderBackend()
"""The backend that `backend="solder"` names (through the `torch_dynamo_backends` entry point)."""
