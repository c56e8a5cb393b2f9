"""Element types and shapes shared by the dialect, the importer and the backends.

This module does not import torch at module level, so the IR can be read without it; the torch
conversions import it lazily.
"""

from __future__ import annotations

from functools import lru_cache

from xdsl.dialects.builtin import (
    BFloat16Type,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
    TensorType,
    bf16,
    f16,
    f32,
    f64,
    i1,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import Attribute

ui8 = IntegerType(8, Signedness.UNSIGNED)

# name -> xDSL element type; the names are torch dtype names without the "torch." prefix.
ELEMENT_TYPES: dict[str, Attribute] = {
    "float32": f32, "float16": f16, "bfloat16": bf16, "float64": f64,
    "int64": i64, "int32": i32, "int16": i16, "int8": i8, "uint8": ui8, "bool": i1,
}
_NAME_OF = {str(v): k for k, v in ELEMENT_TYPES.items()}


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """PyTorch/NumPy broadcasting of static shapes; ValueError names the clashing sizes."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        sizes = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
        if len(sizes) > 1:
            raise ValueError(f"sizes {sorted(sizes)} clash in dim {i} of shapes {list(shapes)}")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def dtype_name(element_type: Attribute) -> str:
    """'float32', 'bfloat16', 'bool', ... for an xDSL element type."""
    try:
        return _NAME_OF[str(element_type)]
    except KeyError:
        raise ValueError(f"element type {element_type} has no PyTorch dtype; known: {sorted(_NAME_OF)}") from None


def is_float(element_type: Attribute) -> bool:
    return isinstance(element_type, (Float16Type, Float32Type, Float64Type, BFloat16Type))


@lru_cache(maxsize=4096)
def tensor_type(shape: tuple[int, ...], dtype_name_: str) -> TensorType:
    """The (cached) `tensor<shape x dtype>` type; caching keeps the importer fast."""
    try:
        et = ELEMENT_TYPES[dtype_name_]
    except KeyError:
        raise ValueError(f"dtype {dtype_name_} is not supported; supported: {sorted(ELEMENT_TYPES)}") from None
    return TensorType(et, list(shape))


def torch_dtype(element_type: Attribute):
    import torch

    return getattr(torch, dtype_name(element_type))


def shape_of(t: Attribute) -> tuple[int, ...]:
    assert isinstance(t, TensorType), t
    return tuple(t.get_shape())
