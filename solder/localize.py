"""Finding the first kernel whose output is wrong, for `compile(..., verify=True)`.

The function is run once with the reference backend (eager PyTorch), keeping every intermediate value.
Then each top-level op of `@forward` — a `graph.kernel` or a lone op — is cut out into a module of its
own, lowered by the target's backend, fed the reference values of its inputs, and compared with the
reference values of its outputs. The first op that differs is the culprit: its IR goes in the message.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

from solder.backends.reference import OPS
from solder.compiler.ir import forward_func
from solder.compiler import ir


@dataclass
class Culprit:
    """The first top-level op whose backend output differs from the reference backend's."""

    index: int
    name: str
    max_error: float
    ir_text: str


def _reference_values(fn: func.FuncOp, inputs: list[torch.Tensor]) -> dict:
    block = fn.body.block
    values = dict(zip(block.args, inputs))
    for op in block.ops:
        if isinstance(op, func.ReturnOp):
            break
        out = OPS[op.name](op)(*[values[v] for v in op.operands])
        outs = out if isinstance(out, (list, tuple)) else [out]
        values.update(zip(op.results, outs))
    return values


def _isolate(op) -> ModuleOp:
    """A module whose @forward takes `op`'s operands as arguments and returns its results."""
    block = Block(arg_types=[v.type for v in op.operands])
    clone = op.clone()
    clone.operands = block.args
    block.add_op(clone)
    block.add_op(func.ReturnOp(*clone.results))
    fn = func.FuncOp("forward", ([v.type for v in op.operands], [r.type for r in op.results]), Region(block))
    return ModuleOp([fn])


def first_bad_kernel(module: ModuleOp, inputs: list[torch.Tensor], backend, target, atol: float,
                     rtol: float) -> Culprit | None:
    """The first top-level op whose lowering by `backend` disagrees with eager on the reference inputs."""
    fn = forward_func(module)
    values = _reference_values(fn, inputs)
    for index, op in enumerate(fn.body.block.ops):
        if isinstance(op, func.ReturnOp):
            break
        single = _isolate(op)
        got = backend.lower(single, target)([values[v] for v in op.operands])
        for r, g in zip(op.results, got):
            want = values[r]
            if g.shape != want.shape or not torch.allclose(g.float(), want.float(), atol=atol, rtol=rtol,
                                                           equal_nan=True):
                err = (g.float() - want.float()).abs().max().item() if g.shape == want.shape else float("inf")
                return Culprit(index, op.name, err, ir.print_ir(single))
    return None
