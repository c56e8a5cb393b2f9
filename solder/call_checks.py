"""What a call of a compiled module did wrong, said in one line: the argument, the dim, what to do.

`CompiledModule` asks these when a call cannot be compiled or run as it is: an input on the meta device,
a size that the model does not trace with where an earlier call of the same structure compiled, and
ops that run op by op on the reference backend because the backend has no code for the model's dtype.
"""

from __future__ import annotations

import inspect

import torch
import torch.utils._pytree as pytree

from solder.compiler.dialects.types import dims_of
from solder.compiler.errors import CallError, CaptureError

LOW_PRECISION = ("bf16", "f16")


def leaf_names(forward, args: tuple, kwargs: dict) -> list[str]:
    """A readable name per flat pytree leaf of (args, kwargs): `x`, `mask`, `inputs[1]`, `cache['k']`."""
    try:
        params = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), "args")
    names = []
    for path, _ in pytree.tree_flatten_with_path((args, kwargs))[0]:
        where, rest = path[0].idx, path[1:]
        if where == 0:
            i = rest[0].idx
            head = positional[i] if i < len(positional) else f"{star}[{i - len(positional)}]"
        else:
            head = str(rest[0].key)
        names.append(head + pytree.keystr(rest[1:]))
    return names


def meta_input_error(model_name: str, leaves: list, names: list[str], device: str) -> CallError | None:
    """A CallError for the first input on the meta device (it has shapes but no data), else None."""
    for x, n in zip(leaves, names):
        if isinstance(x, torch.Tensor) and x.device.type == "meta":
            return CallError(f"{model_name}: argument {n} is on the meta device, which holds no data; compiled code "
                             f"runs on real tensors: pass {n} as a {device} tensor")
    return None


def compiled_shapes(imported) -> dict[int, tuple[int, ...]]:
    """Flat input leaf -> the shape its function argument was compiled for (`-1` for a `?` dim)."""
    block_args = imported.func.body.block.args
    inputs = block_args[len(block_args) - len(imported.input_positions):]
    return {pos: tuple(d if isinstance(d, int) else -1 for d in dims_of(a.type))
            for pos, a in zip(imported.input_positions, inputs)}


def size_error(model_name: str, leaves: list, names: list[str], spec: str, compiled: list[tuple[str, dict]],
               err: CaptureError) -> CallError | None:
    """The one-line CallError for a capture that failed on sizes that differ from an earlier compiled call of
    the same structure (that call traced, so the sizes are what changed), else None.

    `compiled`: per specialization compiled so far, its pytree spec and `compiled_shapes`.
    """
    cause = err.__cause__
    if cause is not None and "DataDependent" in type(cause).__name__:
        return None  # the model's control flow, not its sizes
    for key_spec, shapes in reversed(compiled):
        if key_spec.removeprefix("dynamic ") != spec:
            continue
        differ = [(i, d, old[d], x.shape[d]) for i, old in sorted(shapes.items())
                  if i < len(leaves) and isinstance(leaves[i], torch.Tensor) and leaves[i].dim() == len(old)
                  for x in (leaves[i],) for d in range(len(old)) if old[d] not in (-1, x.shape[d])]
        if not differ:
            continue
        i, d, was, now = differ[0]
        why = str(cause if cause is not None else err).strip().splitlines()
        why = why[0] if why else type(cause).__name__
        more = f" (and {len(differ) - 1} other dim(s))" if len(differ) > 1 else ""
        return CallError(f"{model_name}: argument {names[i]} dim {d} is {now} here but {was} in the call compiled "
                         f"before{more}, and the model does not trace with it ({why.rstrip('.')}). Pass {names[i]} "
                         f"with dim {d} = {was}, the size the model takes there")
    return None


def precision_fallback(model_name: str, imported, program, target) -> str | None:
    """The warning text when ops of a bf16/fp16 module run on the reference backend of the CPU target (whose
    generated code is float32: every op of a 16-bit dtype falls back), else None."""
    if not program.fallbacks or target.backend != "cpu":
        return None
    types = {str(getattr(a.type, "element_type", "")) for a in imported.func.args}
    low = sorted(types & set(LOW_PRECISION))
    if not low:
        return None
    ops = sorted({f.split(":")[0] for f in program.fallbacks})
    return (f"solder: {model_name}: the cpu backend generates no code for {'/'.join(low)}; "
            f"{len(ops)} op kind(s) ({', '.join(ops[:6])}{', ...' if len(ops) > 6 else ''}) run op by op on the "
            "reference backend (eager speed at best). Run the model in float32 for generated kernels; "
            "explain() lists each op's route")
