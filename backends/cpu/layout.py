"""Which 4-d values the CPU plan keeps channels-last (NHWC in memory).

Convolutions run on NHWC data (oneDNN's fast layout on the CPU) and write NHWC. Everything between two
convolutions should stay NHWC too: a generated kernel iterates its output in memory order and reads each
input through an indexing map, so an NHWC input read by a kernel writing NCHW (or the reverse) is a
transpose, several times slower than the elementwise stream it replaces; a library op given an NHWC tensor
it does not keep NHWC makes the next kernel's input a copy.

The choice is a hint, never a correctness matter: the runner passes a value flagged NHWC as
`permute(0, 2, 3, 1).contiguous()` (free when it is NHWC, a copy otherwise) and an unflagged one as
`.contiguous()`. So a wrong guess costs a copy, not a wrong answer.
"""

from __future__ import annotations

import torch
from xdsl.ir import Operation, SSAValue

from solder.backends.cpu.plan import _is_conv2d
from solder.backends.cpu.runner import _library_fn
from solder.compiler.dialects.types import dims_of, torch_dtype


def writes_channels_last(out: SSAValue, shape: tuple, ins: list[SSAValue], nhwc_in: list[bool],
                         conv_inputs: set[SSAValue], results: set[SSAValue]) -> bool:
    """Whether a generated kernel writes its output `out` (computed in `shape`) NHWC.

    Only a 4-d value computed in its own shape (not a pre-reshape one). A convolution's input: yes. A
    result of the program: no (the caller gets eager's contiguous layout). Otherwise the kernel follows
    its inputs of the output's shape, the larger share of their elements deciding: an elementwise chain
    between convolutions streams NHWC from end to end, and one fed by NCHW data stays NCHW."""
    dims = tuple(dims_of(out.type))
    if len(shape) != 4 or tuple(shape) != dims:
        return False
    if out in conv_inputs:
        return True
    if out in results:
        return False
    votes = [cl for v, cl in zip(ins, nhwc_in) if tuple(dims_of(v.type)) == dims]
    return sum(votes) * 2 > len(votes)


def keeps_channels_last(op: Operation, operands: list[SSAValue], nhwc: set[SSAValue]) -> bool:
    """Whether the library call of `op` returns an NHWC tensor when its `operands` (resolved) in `nhwc` come NHWC:
    asked of torch itself, by running the call on meta tensors of the operands' shapes and strides (pooling,
    padding, resizing and concatenation of NHWC tensors keep NHWC; most other ops do not)."""
    if _is_conv2d(op):
        return True
    out = op.results[0] if len(op.results) == 1 else None
    if out is None or len(dims_of(out.type)) != 4 or not any(v in nhwc for v in operands):
        return False
    try:
        args = [_meta(v, v in nhwc) for v in operands]
        with torch.no_grad():
            got = _library_fn(op)(*args)
    except Exception:  # noqa: BLE001 - no meta kernel, a `?` dim: assume torch's default layout
        return False
    if not isinstance(got, torch.Tensor) or got.dim() != 4:
        return False
    return got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()


def _meta(v: SSAValue, channels_last: bool) -> torch.Tensor:
    shape = tuple(dims_of(v.type))
    if any(not isinstance(d, int) for d in shape):
        raise ValueError("a `?` dim")
    t = torch.empty(shape, dtype=torch_dtype(v.type.element_type), device="meta")
    return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t
