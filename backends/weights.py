"""Weights held once: a tensor stacked from parameters is the storage of those parameters.

merge-linears turns Q/K/V (or gate/up) projections into one GEMM over `graph.concat %wq, %wk, %wv {dim = 0}`
of function arguments. Stacking per call copies every weight every call; caching the stack per version of
its inputs misses writes that bump no version counter (`p.data.add_(1)`, `p.data.copy_(t)`: `.data` has a
counter of its own). So the stack is made once and each source tensor's `.data` becomes its slice of it:
the parameters stay the same Python objects (optimizers, `state_dict`, `named_parameters` keep working),
and a write through any path lands in the stacked tensor that the GEMM reads. A source that moves
(`p.data = t`, a replaced parameter) is seen by its data pointer and restacked.

Every backend lowers an argument-only concatenation with `Stack` (backends/cpu/runner.py, backends/triton).
Where sources cannot be rebound soundly (one tensor twice, a tensor that is a view into memory it does not
own alone, a concatenation along another dim), `Stack` concatenates on every call: correct, not cached.
"""

from __future__ import annotations

import threading
import weakref

import torch

_RESTACK = threading.Lock()  # two programs over the same parameters restack one at a time


class Stack:
    """`torch.cat(ts, dim)` of parameter tensors, computed once and kept current by being their storage."""

    def __init__(self, dim: int = 0):
        self.dim = dim
        self._key: tuple = ()  # per source: (weakref, data pointer) when the result was made
        self._out: torch.Tensor | None = None

    def __call__(self, *ts: torch.Tensor) -> torch.Tensor:
        out = self._out
        if out is not None and len(self._key) == len(ts) and all(
                r() is t and t.data_ptr() == p for (r, p), t in zip(self._key, ts)):
            return out
        if not _stackable(ts, self.dim):
            return torch.cat(ts, self.dim)
        with _RESTACK:
            out = adjacent(ts)
            out = _restack(ts) if out is None else out
        if out is None:  # a source refused its new storage: no caching
            return torch.cat(ts, self.dim)
        self._key, self._out = tuple((weakref.ref(t), t.data_ptr()) for t in ts), out
        return out


def adjacent(ts) -> torch.Tensor | None:
    """The stack of `ts` as a view, when they already lie one after another in one storage; else None."""
    first = ts[0]
    storage = first.untyped_storage().data_ptr()
    end = first.storage_offset()
    for t in ts:
        if t.untyped_storage().data_ptr() != storage or t.storage_offset() != end or not t.is_contiguous():
            return None
        end += t.numel()
    shape = (sum(t.shape[0] for t in ts),) + tuple(first.shape[1:])
    stride = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        stride[d] = stride[d + 1] * shape[d + 1]
    return first.detach().as_strided(shape, stride, first.storage_offset())


def _restack(ts) -> torch.Tensor | None:
    """A fresh stack of `ts`, each source's `.data` rebound to its slice; None when a source refuses."""
    with torch.no_grad(), torch.inference_mode(False):  # a normal tensor: the sources stay writable
        out = torch.cat([t.detach() for t in ts], 0)
        start = 0
        try:
            for t in ts:
                n = t.shape[0]
                t.data = out[start:start + n]
                start += n
        except RuntimeError:
            return None
    _STACKS.add(out)
    return out


def _stackable(ts, dim: int) -> bool:
    """Whether the sources can become slices of one stack along dim 0: distinct tensors of one dtype and
    device, same trailing sizes, each the only tensor over its memory (not a view into a larger buffer)
    unless that buffer is a stack made here."""
    if dim != 0 or len({id(t) for t in ts}) != len(ts) or any(t.dim() == 0 for t in ts):
        return False
    first = ts[0]
    if any(t.dtype != first.dtype or t.device != first.device or t.shape[1:] != first.shape[1:] for t in ts):
        return False
    return adjacent(ts) is not None or all(_owns_memory(t) for t in ts)


def _owns_memory(t: torch.Tensor) -> bool:
    """`t` covers its whole storage, or its storage is a stack made here (a restack after one source moved)."""
    s = t.untyped_storage()
    if t.storage_offset() == 0 and s.nbytes() == t.numel() * t.element_size():
        return True
    return s.data_ptr() in _STACKS


class _Stacks:
    """Data pointers of the stacks alive that `_restack` made (weakly held: a dropped stack is forgotten)."""

    def __init__(self):
        self._refs: dict[int, weakref.ref] = {}

    def add(self, t: torch.Tensor) -> None:
        ptr = t.untyped_storage().data_ptr()
        self._refs = {p: r for p, r in self._refs.items() if r() is not None}
        self._refs[ptr] = weakref.ref(t)

    def __contains__(self, ptr: int) -> bool:
        r = self._refs.get(ptr)
        return r is not None and r() is not None


_STACKS = _Stacks()
