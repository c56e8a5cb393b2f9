"""Known buffer contents: registered causal-mask buffers become the IR that computes them.

A model that keeps its causal mask in a buffer (`register_buffer("tril", torch.tril(ones))`) hides the
mask's structure behind a function argument, so no pass can prove the attention causal. At compile
time the runtime has the buffer's values: when a buffer is exactly a lower-triangular keep-mask (0/1,
bool, or 0/-inf additive), its uses are replaced by `arange`-comparison IR that computes the same
values, which `recognize-attention` then evaluates and turns into `causal`. The runtime guards the
specialization on the buffer's version counter and storage, so an in-place change recompiles.
"""

from __future__ import annotations

import math

import torch
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Block

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import tensor_type
from solder.compiler.importer import Imported, scalar_attr, torch_dtype_name

MAX_ELEMENTS = 1 << 24


def classify(t: torch.Tensor) -> str | None:
    """"keep" (nonzero/True on and below the diagonal, zero above), "additive" (0 below, -inf above), or None."""
    if t.dim() != 2 or t.numel() > MAX_ELEMENTS or t.device.type == "meta":
        return None
    keep = torch.ones(t.shape, dtype=torch.bool, device=t.device).tril()
    if t.dtype == torch.bool or not t.is_floating_point() or (t.is_floating_point() and bool(((t == 0) | (t == 1)).all())):
        return "keep" if torch.equal(t != 0, keep) else None
    if bool((t[keep] == 0).all()) and bool(torch.isneginf(t[~keep]).all()):
        return "additive"
    return None


def _mask_ir(block: Block, before, shape: tuple[int, int], dtype: torch.dtype, kind: str):
    """Insert ops computing the causal mask of `shape`/`dtype` before `before`; returns its value."""
    n, m = shape
    ops = []

    def add(op):
        ops.append(op)
        return op.results[0]

    i64 = "int64"
    rows = add(g.ArangeOp(properties={"start": scalar_attr(0), "step": scalar_attr(1)},
                          result_types=[tensor_type((n,), i64)]))
    cols = add(g.ArangeOp(properties={"start": scalar_attr(0), "step": scalar_attr(1)},
                          result_types=[tensor_type((m,), i64)]))
    rows = add(g.ReshapeOp(rows, tensor_type((n, 1), i64)))
    cols = add(g.ReshapeOp(cols, tensor_type((1, m), i64)))
    keep = add(g.BINARY_OPS["ge"](rows, cols, tensor_type((n, m), "bool")))
    out_t = tensor_type((n, m), torch_dtype_name(dtype))
    if kind == "keep":
        value = keep if dtype == torch.bool else add(g.CastOp(keep, out_t))
    else:
        zero = add(g.ConstantOp(scalar_attr(0.0), tensor_type((), torch_dtype_name(dtype))))
        ninf = add(g.ConstantOp(scalar_attr(-math.inf), tensor_type((), torch_dtype_name(dtype))))
        value = add(g.WhereOp(keep, zero, ninf, out_t))
    block.insert_ops_before(ops, before)
    return value


def materialize_causal_buffers(imported: Imported, state: list[torch.Tensor]) -> dict[int, tuple[int, int]]:
    """Replace uses of causal-mask buffer arguments by IR; returns {arg index: (version, data_ptr)} guards."""
    block = imported.func.body.block
    guards = {}
    for i, (info, t) in enumerate(zip(imported.args, state)):
        arg = block.args[i]
        if info.kind not in ("buffer", "constant") or not arg.uses:
            continue
        kind = classify(t)
        if kind is None:
            continue
        value = _mask_ir(block, block.first_op, tuple(t.shape), t.dtype, kind)
        value.owner.attributes["graph.from_buffer"] = StringAttr(info.name)
        arg.replace_all_uses_with(value)
        guards[i] = (t._version, t.data_ptr())
    return guards
