"""What a `graph.extern` may call: operator overloads from an allowlist, resolved without running anything else.

A `graph.extern` names its callee as text ("aten.cumprod.default") and its arguments as JSON. That text may come
from a file (a saved artifact, an `.mlir` file), so it is data: `resolve` turns it into a callable only when it
is `<namespace>.<op>.<overload>` (three identifiers) with

- the namespace in `NAMESPACES` (ATen, PyTorch's primitive and quantized ops), or a namespace of operators that
  Python code of this process defined through `torch.library` (the user's own library ops), minus PyTorch's
  debugging/export helper namespaces in `PRIVATE_NAMESPACES`;
- the operator and overload registered with PyTorch's dispatcher (checked by name first);
- not one of the few ATen ops that touch files (`DENIED`).

Only then is `torch.ops.<ns>.<op>.<overload>` read, and the result must be a `torch._ops.OpOverload`: no path
through `torch.ops` reaches `load_library`, `import_module` or a Python module. `check_args` holds the argument
spec to plain data: tensors by operand index, numbers, strings, and dtypes, layouts and memory formats found in
torch's own namespace dict (never `getattr(torch, ...)`, which imports submodules lazily). Both raise
`ExternError`; the compile path (the reference backend's `graph.extern`) and `load()` use them.
"""

from __future__ import annotations

import json
import math
import re

import torch

from solder.compiler.errors import ExternError, ImportError_

NAMESPACES = frozenset({"aten", "prims", "quantized", "quantized_decomposed"})
PRIVATE_NAMESPACES = frozenset({"debugprims", "debug_mode_ops", "export", "_native", "rngprims", "inductor",
                                "inductor_prims", "profiler", "_test", "_dtensor"})
DENIED = frozenset({"aten::from_file"})  # reads a path named by its argument
_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_]*)$")
_KINDS = {"$dtype": (torch.dtype,), "$torch": (torch.layout, torch.memory_format)}


def library_namespaces() -> frozenset[str]:
    """Namespaces of operators defined from Python through `torch.library` in this process (not PyTorch's own)."""
    from torch._library import custom_ops

    names = set(torch.library._defs) | set(custom_ops.OPDEFS)
    return frozenset(q.split("::")[0] for q in names) - PRIVATE_NAMESPACES


def resolve(callee: str) -> torch._ops.OpOverload:
    """The operator overload `callee` names ("aten.add.Tensor"), or ExternError saying why it is refused."""
    m = _NAME.match(callee)
    if m is None:
        raise ExternError(f"graph.extern callee {callee!r}: expected '<namespace>.<op>.<overload>' of a PyTorch "
                          "operator, e.g. 'aten.cumprod.default'")
    ns, op, overload = m.groups()
    if ns not in NAMESPACES and ns not in library_namespaces():
        raise ExternError(f"graph.extern callee {callee!r}: namespace {ns!r} is not allowed (allowed: "
                          f"{', '.join(sorted(NAMESPACES))}, and torch.library namespaces defined in this process)")
    if f"{ns}::{op}" in DENIED:
        raise ExternError(f"graph.extern callee {callee!r}: this operator reads files and is never called by solder")
    try:
        torch._C._dispatch_find_schema_or_throw(f"{ns}::{op}", "" if overload == "default" else overload)
    except RuntimeError:
        raise ExternError(f"graph.extern callee {callee!r}: no such operator overload is registered with PyTorch "
                          f"{torch.__version__}") from None
    target = getattr(getattr(getattr(torch.ops, ns), op), overload, None)
    if not isinstance(target, torch._ops.OpOverload):
        raise ExternError(f"graph.extern callee {callee!r}: resolves to {type(target).__name__}, not an operator "
                          "overload")
    return target


def check_args(spec: str, n_operands: int) -> None:
    """Refuse an extern argument spec (`encode_arg`'s JSON) that holds anything but plain data."""
    try:
        args, kwargs = json.loads(spec)
    except (ValueError, TypeError) as e:
        raise ExternError(f"graph.extern args {spec[:80]!r}: expected a JSON pair [args, kwargs] ({e})") from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ExternError(f"graph.extern args {spec[:80]!r}: expected a JSON pair [list, object]")
    _check_value(args, n_operands)
    for v in kwargs.values():
        _check_value(v, n_operands)


def _check_value(x, n: int) -> None:
    if x is None or isinstance(x, (bool, int, float, str)):
        return
    if isinstance(x, list):
        for i in x:
            _check_value(i, n)
        return
    if not isinstance(x, dict) or len(x) != 1:
        raise ExternError(f"graph.extern args: unexpected value {str(x)[:80]}; expected plain data")
    (tag, v), = x.items()
    if tag == "$t" and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n:
        return
    if tag in ("$tuple", "$dict") and isinstance(v, (list, dict)):
        for i in (v if isinstance(v, list) else v.values()):
            _check_value(i, n)
        return
    if tag == "$float" and v in ("inf", "-inf", "nan"):
        return
    if tag == "$device" and isinstance(v, str) and re.fullmatch(r"[a-z]+(:\d+)?", v):
        return
    if tag in _KINDS and isinstance(v, str) and isinstance(vars(torch).get(v), _KINDS[tag]):
        return
    raise ExternError(f"graph.extern args: {tag!r} with {str(v)[:60]!r} is not an operand index, number, dtype, "
                      "layout, memory format or device")


# The argument format of a `graph.extern` (its `args` property): JSON with tensors as operand indices.


def encode_arg(x, operands: list[torch.fx.Node]):
    """JSON-able form of an FX argument, with tensors replaced by {"$t": operand index}."""
    if isinstance(x, torch.fx.Node):
        operands.append(x)
        return {"$t": len(operands) - 1}
    if isinstance(x, (list, tuple)):
        items = [encode_arg(i, operands) for i in x]
        return items if isinstance(x, list) else {"$tuple": items}
    if isinstance(x, dict):
        return {"$dict": {k: encode_arg(v, operands) for k, v in x.items()}}
    if isinstance(x, float) and not math.isfinite(x):
        return {"$float": str(x)}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, torch.dtype):
        return {"$dtype": str(x).removeprefix("torch.")}
    if isinstance(x, torch.device):
        return {"$device": str(x)}
    if isinstance(x, (torch.memory_format, torch.layout)):
        return {"$torch": str(x).removeprefix("torch.")}
    raise ImportError_(f"cannot encode argument {x!r} of type {type(x).__name__} for a graph.extern call")


def decode_args(text: str, tensors: list[torch.Tensor]):
    """Inverse of `encode_arg`: the (args, kwargs) of an extern call with its operand tensors filled in."""

    def dec(x):
        if isinstance(x, list):
            return [dec(i) for i in x]
        if isinstance(x, dict):
            if "$t" in x:
                return tensors[x["$t"]]
            if "$tuple" in x:
                return tuple(dec(i) for i in x["$tuple"])
            if "$dict" in x:
                return {k: dec(v) for k, v in x["$dict"].items()}
            if "$float" in x:
                return float(x["$float"])
            if "$dtype" in x:
                return getattr(torch, x["$dtype"])
            if "$device" in x:
                return torch.device(x["$device"])
            if "$torch" in x:
                return getattr(torch, x["$torch"])
        return x

    args, kwargs = json.loads(text)
    return dec(args), dec(kwargs)
