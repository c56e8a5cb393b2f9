"""Finding the first kernel whose output is wrong, for `compile(..., verify=True)`.

The function is run once with the reference backend (eager PyTorch), keeping every intermediate value.
Then each top-level op of `@forward` — a `graph.kernel` or a lone op — is cut out into a module of its
own, lowered by the target's backend, fed the reference values of its inputs, and compared with the
reference values of its outputs. The first op that differs is the culprit: its IR goes in the message.
`verified_run` is the verify=True call itself: compiled and eager on the same starting values, compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

from solder.backends.reference import OPS
from solder.backends.registry import get_backend
from solder.compiler.ir import forward_func
from solder.compiler import ir
from solder.compiler.dialects import symbolic
from solder.compiler.errors import VerifyError


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


def verified_run(compiled, sp, args, kwargs, tolerance):
    """One `verify=True` call of `compiled` on specialization `sp`, compared with eager; raises `VerifyError` naming
    the first kernel that differs. Each in-place update happens once: the compiled run's writes are kept aside and
    undone, eager then runs on the inputs and buffers as they were and makes them, and the compiled ones are
    compared with eager's (as the outputs are). `tolerance(dtype) -> (atol, rtol)`."""
    inputs = compiled._inputs(sp, args, kwargs)
    tensors = sp.state + [inputs[i] for i in sp.imported.input_positions]
    with torch.no_grad():
        before = {a: tensors[a].clone() for _, a in sp.writes}
        out = compiled._execute(sp, inputs)
        after = {a: tensors[a].clone() for a in before}
        for a, t in before.items():
            tensors[a].copy_(t)
        ref = compiled.model(*args, **kwargs)
    written = {f"written {sp.imported.args[a].kind} {sp.imported.args[a].name}": (after[a], tensors[a])
               for a in after}
    pairs = list(zip(pytree.tree_leaves(out), pytree.tree_leaves(ref)))
    for what, (a, b) in [(f"output {i}", p) for i, p in enumerate(pairs)] + list(written.items()):
        if not isinstance(b, torch.Tensor):
            continue
        atol, rtol = tolerance(b.dtype)
        if a.shape != b.shape or not torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol, equal_nan=True):
            err = (a.float() - b.float()).abs().max().item() if a.shape == b.shape else "shape"
            where = _localize(compiled, sp, inputs, atol, rtol, before)
            raise VerifyError(f"{compiled.name}: {what} differs from eager (max abs error {err}, "
                              f"tolerance atol={atol} rtol={rtol}). {where}")
    return out


def _localize(compiled, sp, inputs, atol, rtol, before: dict) -> str:
    """Which kernel is wrong: each top-level op re-run alone against the reference backend (on the mutated
    arguments' values from `before` the call)."""
    tensors = sp.state + [inputs[i] for i in sp.imported.input_positions]
    tensors = [before.get(a, t) for a, t in enumerate(tensors)]
    module = sp.imported.module
    if sp.binding is not None and sp.binding.symbols:  # op by op needs static sizes: this call's
        module = symbolic.instantiate(module, sp.binding([inputs[i] for i in sp.imported.input_positions]))
    target = compiled.options.target
    with torch.no_grad():
        culprit = first_bad_kernel(module, tensors, get_backend(target.backend), target, atol, rtol)
    if culprit is None:
        return "Every kernel matches the reference backend on its own; the error accumulates across kernels."
    return (f"The first kernel that differs is top-level op #{culprit.index} ({culprit.name}, max abs error "
            f"{culprit.max_error:.3g} against the reference backend):\n{culprit.ir_text}")
