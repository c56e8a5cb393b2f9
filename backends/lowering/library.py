"""Library calls that every backend can make: graph ops run by one torch call (oneDNN/MKL on the CPU,
cuDNN/cuBLAS or torch's own CUDA kernels on the GPU) where no generated kernel exists for them.

An entry turns an op into a callable over its operand tensors. It is a *library* route, not an eager
fallback: the op is one call into an optimized kernel, chosen on purpose, and the coverage table says so.
Backends consult this table after their own generated lowerings and before the reference backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xdsl.ir import Operation

from solder.compiler.dialects import graph as g
from solder.compiler.interpret import OPS


@dataclass(frozen=True)
class LibraryCall:
    """How one op class runs as a library call: the route text `explain()` prints and a factory."""

    route: str
    make: Callable[[Operation], Callable]
    """op -> fn(*operand tensors) -> result tensor (or a list of them)."""
    targets: tuple[str, ...] = ("cpu", "h100", "h200", "a100")


LIBRARY_CALLS: dict[type[Operation], LibraryCall] = {}
"""op class -> its library call; filled by `register` below."""


def register(cls: type[Operation], route: str, targets: tuple[str, ...] | None = None):
    """Decorator: `make(op) -> fn` runs ops of class `cls` as the library call `route`."""

    def deco(make: Callable[[Operation], Callable]):
        LIBRARY_CALLS[cls] = LibraryCall(route, make, targets or LibraryCall.targets)
        return make

    return deco


def library_call(op: Operation, target: str) -> LibraryCall | None:
    """The library call for `op` on `target`, or None."""
    call = LIBRARY_CALLS.get(type(op))
    return call if call is not None and target in call.targets else None


# ---------------------------------------------------------------------------------------------
# The entries: each runs the reference interpreter's torch call for the op (compiler/interpret.py), which
# is one call into torch's optimized kernel; a backend with a generated lowering for an op reaches its
# entry only for the cases its generator refuses (a row too long for a row kernel, an element type).
# ---------------------------------------------------------------------------------------------

GPUS = ("h100", "h200", "a100")


def _torch_call(route: str, *classes: type[Operation], targets: tuple[str, ...] | None = None) -> None:
    """Register `classes` as library calls that run the reference interpreter's torch call."""
    for cls in classes:
        register(cls, route, targets)(OPS[cls])


_torch_call("library: torch max/avg pool (oneDNN, cuDNN)", g.PoolOp)
_torch_call("library: torch conv (cuDNN)", g.ConvOp, targets=GPUS)  # the CPU plans its own (channels-last)
_torch_call("library: torch conv_transpose (oneDNN, cuDNN)", g.ConvTransposeOp)
_torch_call("library: torch.index_select", g.GatherOp)
_torch_call("library: torch advanced indexing", g.IndexOp)
_torch_call("library: torch.gather", g.GatherElementsOp)
_torch_call("library: torch.scatter / scatter_add / scatter_reduce", g.ScatterOp)
_torch_call("library: torch.index_put", g.IndexPutOp)
_torch_call("library: torch.slice_scatter", g.SliceScatterOp)
_torch_call("library: torch pad", g.PadOp)
_torch_call("library: torch upsample_nearest", g.UpsampleNearestOp)
_torch_call("library: torch upsample_linear", g.UpsampleLinearOp)
_torch_call("library: torch.cumsum", g.CumsumOp)
_torch_call("library: torch.cumprod", g.CumprodOp)
_torch_call("library: torch.fmod", g.FmodOp)  # floats on the GPU, whose frem is not exact
_torch_call("library: torch.argmax / argmin", g.ArgReduceOp)
# row ops whose rows a generated GPU row kernel cannot hold (codegen.MAX_ROW), and concatenations it refuses
# (on the CPU: rows longer than lower_ops.LONG_ROW, which torch sums in cascade for fp32 accuracy)
_torch_call("library: torch reduction", g.ReduceOp)
_torch_call("library: torch.softmax / log_softmax", g.SoftmaxOp, g.LogSoftmaxOp)
_torch_call("library: torch layer_norm / rms_norm", g.LayerNormOp, g.RmsNormOp)
_torch_call("library: torch.cat", g.ConcatOp)  # where no generated kernel takes it (stacked weights: HOISTED)
