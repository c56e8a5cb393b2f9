"""The import direction of solder's layers, and no import cycles.

Every module of the installed package is parsed (function-level imports included) and each import of another
solder module is checked against LAYERS: a module may import its own layer and the layers below it, never one
above, and the module graph has no cycle. A new module must match some row, so where it sits is a decision.
"""

from __future__ import annotations

import ast
import pathlib

import networkx as nx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"solder": "solder", "solder.compiler": "compiler", "solder.passes": "passes",
            "solder.costmodel": "costmodel", "solder.backends": "backends"}

# Bottom to top; the first row whose prefix matches a module decides its layer (a prefix matches the
# module itself and everything under it).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ir", ("solder.compiler.errors", "solder.compiler.log", "solder.compiler.knobs", "solder.compiler.targets",
            "solder.compiler.ir", "solder.compiler.dialects", "solder.compiler.interpret",
            "solder.compiler.sparse_attention", "solder.compiler.externs")),
    ("frontend", ("solder.compiler",)),  # the rest of compiler/: capture, the importer and its ATen tables
    # the cost model's collection and training scripts drive backends and the pipeline: tools, at the top
    ("tools", ("solder.costmodel.cli", "solder.costmodel.collect", "solder.costmodel.evaluate",
               "solder.costmodel.generate", "solder.costmodel.harvest", "solder.costmodel.retime")),
    ("costmodel", ("solder.costmodel",)),
    ("passes", ("solder.passes",)),
    ("lowering", ("solder.backends.base", "solder.backends.registry", "solder.backends.routes",
                  "solder.backends.weights", "solder.backends.cache_files", "solder.backends.coverage",
                  "solder.backends.lowering")),
    ("backends", ("solder.backends",)),
    ("api", ("solder",)),  # solder/: compile(), the runtime, artifacts, the CLI, the dynamo backend
]
RANK = {"ir": 0, "frontend": 1, "costmodel": 2, "passes": 3, "lowering": 4, "backends": 5, "api": 6, "tools": 6}


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for pkg, folder in PACKAGES.items():
        base = ROOT / folder
        files = base.glob("*.py") if pkg == "solder" else base.rglob("*.py")
        for p in files:
            parts = list(p.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg, *parts])] = p
    return mods


def layer_of(module: str) -> str:
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    raise AssertionError(f"{module} matches no row of LAYERS")


def _imports(path: pathlib.Path, mods: dict) -> set[str]:
    """The solder modules `path` imports anywhere in its body (`from pkg import name` counts as
    `pkg.name` when that is a module, else as `pkg`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if s in mods]
            if len(names) < len(subs):
                names.append(node.module)
        else:
            continue
        for n in names:
            while n and n not in mods:
                n = n.rpartition(".")[0]
            if n and n.startswith("solder"):
                found.add(n)
    return found


@pytest.fixture(scope="module")
def graph():
    mods = _modules()
    g = nx.DiGraph()
    for m, p in mods.items():
        g.add_node(m)
        for t in _imports(p, mods) - {m}:
            g.add_edge(m, t)
    return g


def test_every_module_has_a_layer(graph):
    missing = [m for m in graph if not any(m == p or m.startswith(p + ".") for _, ps in LAYERS for p in ps)]
    assert not missing, f"add these modules to a row of LAYERS: {missing}"


def test_imports_go_down(graph):
    up = [f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})" for a, b in graph.edges
          if RANK[layer_of(b)] > RANK[layer_of(a)]]
    assert not up, "imports that go up a layer:\n  " + "\n  ".join(sorted(up))


def test_no_import_cycles(graph):
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, f"import cycles (each is a set of modules that import each other): {cycles}"


def test_the_checker_sees_function_level_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from solder.backends.cpu import jit\n")
    assert _imports(src, {"solder.backends.cpu.jit": src}) == {"solder.backends.cpu.jit"}
    assert RANK[layer_of("solder.passes.cse")] < RANK[layer_of("solder.backends.cpu.jit")]
