"""The op coverage table: every `graph` op on every backend target, with the route that runs it.

Read off the backends' own tables (`CpuBackend.op_route`, `TritonBackend.op_route`: their lowering and
emit tables, library routes and the reference backend's), so it cannot drift from what they do;
`solder-opt --list-ops` prints it and tests/test_coverage.py fails when an op has no route.
"""

from __future__ import annotations

from xdsl.ir import Operation

from solder.backends.registry import get_backend
from solder.backends.routes import Route
from solder.compiler.dialects import graph as g
from solder.compiler.targets import get_target

TARGETS = ("cpu", "h100")
STRUCTURE = (g.KernelOp, g.YieldOp)
"""Ops that only group others (a kernel region and its terminator): the ops inside are what is routed."""


def routed_ops() -> list[type[Operation]]:
    """The dialect's op classes that a backend routes (all but the structure ops), sorted by name."""
    return sorted((c for c in g.Graph.operations if not issubclass(c, STRUCTURE)), key=lambda c: c.name)


def coverage(targets: tuple[str, ...] = TARGETS) -> dict[type[Operation], dict[str, Route | None]]:
    """op class -> target -> the route that runs it there (None: nothing does)."""
    backends = {t: get_backend(get_target(t).backend) for t in targets}
    return {c: {t: b.op_route(c) for t, b in backends.items()} for c in routed_ops()}


def coverage_table(targets: tuple[str, ...] = TARGETS) -> str:
    """The coverage as aligned text, one op per line: `op  cpu-route  h100-route`."""
    rows = coverage(targets)
    width = max(len(c.name) for c in rows) + 2
    lines = ["op".ljust(width) + "".join(t.ljust(12) for t in targets).rstrip()]
    for c, routes in rows.items():
        cells = [(r.value if r is not None else "NONE").ljust(12) for r in routes.values()]
        lines.append((c.name.ljust(width) + "".join(cells)).rstrip())
    return "\n".join(lines) + "\n"
