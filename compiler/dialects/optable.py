"""`OpTable`: a per-op table (lowerings, emitters, eager implementations) keyed by the `graph` op class.

Keying by class makes a misspelt op an import error instead of an entry nothing ever finds:

    LOWERINGS = OpTable("cpu lowering")

    @LOWERINGS.register(g.AddOp, g.SubOp)
    def _binary(fb, op, args): ...

    LOWERINGS.get(op)       # look up by op instance (its class), class, or registered op name

A lookup also accepts an op instance or an op's name ("graph.add"), which stands for its class, so
callers that hold a name (tests overriding one entry, `graph.extern` replay) keep working; a name that no
`graph` op has raises `KeyError` when it is used as a key to store.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from xdsl.ir import Operation

from solder.compiler.dialects.graph import Graph


@cache
def _classes_by_name() -> dict[str, type[Operation]]:
    return {c.name: c for c in Graph.operations}


def op_class(name: str) -> type[Operation]:
    """The `graph` op class named `name` ("graph.add" -> AddOp); KeyError naming the op if there is none."""
    try:
        return _classes_by_name()[name]
    except KeyError:
        raise KeyError(f"no graph op named {name!r}") from None


def _key(k: object) -> object:
    if isinstance(k, str):
        return _classes_by_name().get(k, k)
    if isinstance(k, Operation):
        return type(k)
    return k


class OpTable(dict):
    """op class -> entry; op instances and op names are accepted wherever a key is and mean their class."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, *classes: type[Operation]) -> Callable:
        """Decorator: the function is the entry of every class in `classes`."""

        def deco(fn):
            for c in classes:
                self[c] = fn
            return fn

        return deco

    def __setitem__(self, k, v) -> None:
        key = op_class(k) if isinstance(k, str) else _key(k)
        if not (isinstance(key, type) and issubclass(key, Operation)):
            raise TypeError(f"{self.what} table: key {k!r} is not an op class")
        super().__setitem__(key, v)

    def __getitem__(self, k):
        return super().__getitem__(_key(k))

    def __contains__(self, k) -> bool:
        return super().__contains__(_key(k))

    def get(self, k, default=None):
        return super().get(_key(k), default)
