"""Lowering of `graph.block_sparse_attention` to the Triton block-sparse flash-attention template.

The Triton backend calls `lower_block_sparse_attention(op)` once per op, at lowering, and runs the
returned `fn(q, k, v)` per call (or calls `lower_block_sparse_attention(op, q, k, v)` for one result).
Static layouts (window, blocks, dense heads) are computed once per shape and device and cached
(compiler/sparse_attention.py); content-dependent ones (vertical_slash, topk) are computed per call on
the device, one layout per batch element (one launch each).
"""

from __future__ import annotations

from typing import Callable

import torch

from solder.compiler.sparse_attention import OpSpec, call_layouts

HEAD_DIMS = (16, 32, 64, 128, 256)


def supports(op) -> bool:
    """True when the template takes this op (head dim, equal k/v shapes); else use the reference backend."""
    from solder.compiler.dialects.types import dims_of

    q, k, v = (dims_of(x.type) for x in (op.query, op.key, op.value))
    return q[3] in HEAD_DIMS and k == v


def block_sparse_fn(op) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """fn(q, k, v) -> out running `op` with the Triton template; op properties are read here, once."""
    from solder.backends.triton.templates.attention import block_sparse_attention

    spec = OpSpec.of(op)

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        layouts = call_layouts(spec, q, k)
        if len(layouts) == 1:
            return block_sparse_attention(q, k, v, layouts[0], spec.block, causal=spec.causal, scale=spec.scale)
        return torch.cat([block_sparse_attention(q[i:i + 1], k[i:i + 1], v[i:i + 1], lay, spec.block,
                                                 causal=spec.causal, scale=spec.scale)
                          for i, lay in enumerate(layouts)])

    return run


def lower_block_sparse_attention(op, q: torch.Tensor | None = None, k: torch.Tensor | None = None,
                                 v: torch.Tensor | None = None):
    """With tensors: the op's result on them. Without: the callable `fn(q, k, v)` (see block_sparse_fn)."""
    fn = block_sparse_fn(op)
    return fn if q is None else fn(q, k, v)


__all__ = ["block_sparse_fn", "lower_block_sparse_attention", "supports"]
