"""Write-backs: the in-place updates a model makes to its inputs and buffers, done once per call by the runtime.

Capture functionalizes a model that mutates (compiler/capture.py), so the compiled function is pure and
returns the new value of each mutated input or buffer as an extra result, marked in the IR with the
argument it is written into:

    func.func @forward(%buf {graph.name = "buf"}, %x {graph.name = "x"})
        -> (tensor<3xf32> {graph.writes = 0 : i64}, tensor<3xf32>)

Every backend runs the same pure function; after it returns, `apply` copies each such result into its
argument's tensor, in export's order. The copies are done by the runtime, not by generated code, so the
CPU, Triton and reference backends and a loaded artifact write back alike.
"""

from __future__ import annotations

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, i64

WRITES = "graph.writes"
"""The result attribute naming the function argument (by index) that the result is written into."""


def writes_attr(arg: int) -> DictionaryAttr:
    """The result attributes of a result written into argument `arg` after each call."""
    return DictionaryAttr({WRITES: IntegerAttr(arg, i64)})


def write_backs(fn: func.FuncOp) -> list[tuple[int, int]]:
    """`fn`'s (result, argument) pairs from its `graph.writes` result attributes, in result order."""
    if fn.res_attrs is None:
        return []
    return [(r, d.data[WRITES].value.data) for r, d in enumerate(fn.res_attrs.data) if WRITES in d.data]


def apply(writes: list[tuple[int, int]], tensors: list, results: list) -> list:
    """Copy each written result into its argument's tensor; return the results with each written one
    replaced by that tensor itself (a model that returns the input it mutated returns that very tensor).

    A result that shares memory with a tensor about to be written (a program may return an input as it
    was, e.g. for `y = x.clone()` before `x.mul_(2)`) is copied first, so the writes cannot change it.
    """
    if not writes:
        return results
    results = list(results)
    target_of = dict(writes)
    storages = {_storage(tensors[a]) for _, a in writes}
    for i, t in enumerate(results):
        if isinstance(t, torch.Tensor) and t.numel() and _storage(t) in storages \
                and not (i in target_of and t is tensors[target_of[i]]):
            results[i] = t.clone()
    for r, a in writes:
        if results[r] is not tensors[a]:
            tensors[a].copy_(results[r])
        results[r] = tensors[a]
    return results


def aliased(writes: list[tuple[int, int]], tensors: list) -> bool:
    """Whether a tensor about to be written shares memory with another argument (`f(x, x)`, a buffer passed
    as an input too): eager would see the write through the other one, the pure compiled function does not."""
    written = {_storage(tensors[a]) for _, a in writes if tensors[a].numel()}
    seen: set[int] = set()
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel():
            s = _storage(t)
            if s in written and s in seen:
                return True
            seen.add(s)
    return False


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()
