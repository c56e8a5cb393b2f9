"""Element types and shapes shared by the dialect, the importer and the backends.

A dim is static (an int) or dynamic: `?` in the type, with its size as an expression over the
function's shape symbols (`s0`, `2*s0`, ...) kept in the type's encoding, one string per `?` dim in
order: `tensor<?x?x64xf32, ["s0", "s1"]>`. `dims_of` gives a type's dims as ints and expression
strings, `tensor_type` takes them back; `shape_of` gives `DYNAMIC` (-2**63, as MLIR) for a `?` dim. An expression may be
unknown ("?"), e.g. for a type a pass built from plain shapes; backends then take that size from the
data. The symbols, their bounds and example sizes live on the function (`solder.compiler.dialects.symbolic`);
code that computes with a size reads the string as a sympy expression (`symbolic.expr`, parsed once).

This module does not import torch at module level, so the IR can be read without it; the torch
conversions import it lazily.
"""

from __future__ import annotations

from functools import lru_cache

from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    BFloat16Type,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
    StringAttr,
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


DYNAMIC = DYNAMIC_INDEX
"""`shape_of` / `get_shape()` value of a `?` dim (MLIR's kDynamic, -2**63)."""


def broadcast_shapes(*shapes: tuple) -> tuple:
    """PyTorch/NumPy broadcasting; ValueError names the clashing sizes.

    Dims are ints, DYNAMIC (`?`) or expression strings: a static size wins over a dynamic one (export has
    proven them equal), two dynamic dims give the first expression.
    """
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        sizes = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        static = {d for d in sizes if isinstance(d, int) and d >= 0} - {1}
        if len(static) > 1:
            raise ValueError(f"sizes {sorted(static)} clash in dim {i} of shapes {list(shapes)}")
        dynamic = [d for d in sizes if not (isinstance(d, int) and d >= 0)]
        if static:
            out.append(static.pop())
        elif dynamic:
            out.append(next((d for d in dynamic if isinstance(d, str) and d != "?"), dynamic[0]))
        else:
            out.append(1)
    return tuple(out)


def dtype_name(element_type: Attribute) -> str:
    """'float32', 'bfloat16', 'bool', ... for an xDSL element type."""
    try:
        return _NAME_OF[str(element_type)]
    except KeyError:
        raise ValueError(f"element type {element_type} has no PyTorch dtype; known: {sorted(_NAME_OF)}") from None


def is_float(element_type: Attribute) -> bool:
    return isinstance(element_type, (Float16Type, Float32Type, Float64Type, BFloat16Type))


def size_expr(d):
    """A dim as an int or an expression string; a torch SymInt gives its expression (never a guard)."""
    if isinstance(d, (int, str)):
        return d
    node = getattr(d, "node", None)  # torch.SymInt, duck-typed: this module does not import torch
    if node is None:
        raise TypeError(f"a dim must be an int, a string or a SymInt; got {type(d).__name__}")
    n = node.maybe_as_int()
    return int(n) if n is not None else str(node.expr)


def tensor_type(shape, dtype_name_: str) -> TensorType:
    """The (cached) `tensor<shape x dtype>` type; caching keeps the importer fast.

    A dim is an int, a negative int (a `?` of unknown expression), an expression string (a `?` whose size the
    string gives; a string of digits is a static size) or a torch SymInt.
    """
    return _tensor_type(tuple(size_expr(d) for d in shape), dtype_name_)


@lru_cache(maxsize=4096)
def _tensor_type(shape: tuple, dtype_name_: str) -> TensorType:
    try:
        et = ELEMENT_TYPES[dtype_name_]
    except KeyError:
        raise ValueError(f"dtype {dtype_name_} is not supported; supported: {sorted(ELEMENT_TYPES)}") from None
    sizes, exprs = [], []
    for d in shape:
        if isinstance(d, str) and d.isdigit():
            d = int(d)
        if isinstance(d, int) and d >= 0:
            sizes.append(d)
        else:
            sizes.append(DYNAMIC)
            exprs.append(d if isinstance(d, str) else "?")
    if not any(e != "?" for e in exprs):
        return TensorType(et, sizes)
    return TensorType(et, sizes, ArrayAttr([StringAttr(e) for e in exprs]))


def dims_of(t: Attribute) -> tuple:
    """The dims of a tensor type: ints for static sizes, expression strings ("?" if unknown) for `?`."""
    assert isinstance(t, TensorType), t
    shape = t.get_shape()
    if DYNAMIC not in shape:
        return tuple(shape)
    enc = t.encoding
    exprs = iter([e.data for e in enc.data] if isinstance(enc, ArrayAttr) else [])
    return tuple(d if d != DYNAMIC else next(exprs, "?") for d in shape)


def is_dynamic(t: Attribute) -> bool:
    return isinstance(t, TensorType) and DYNAMIC in t.get_shape()


def with_dims(t: TensorType, dims: tuple) -> TensorType:
    """`t`'s element type with `dims`."""
    return tensor_type(tuple(dims), dtype_name(t.element_type))


def torch_dtype(element_type: Attribute):
    import torch

    return getattr(torch, dtype_name(element_type))


def shape_of(t: Attribute) -> tuple[int, ...]:
    assert isinstance(t, TensorType), t
    return tuple(t.get_shape())
