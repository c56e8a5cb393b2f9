"""The roofline cost model: what a kernel must compute and move, and the least time that takes.

    seconds = max(flops / target.flops(dtype), bytes / target.mem_bandwidth) + launches * launch_overhead

FLOPs come from one function over the op classes and traits (matmul 2MNK, attention 4·B·H·T·S·D, halved when causal,
elementwise 1 per element, transcendental functions more on a CPU, reductions 1 per input element).
Bytes are counted at the group boundary: every value entering the group from outside is read once and
every value leaving it is written once; values made and used inside a fused kernel never touch memory,
so layout-only ops (reshape, permute, expand, slice) inside a kernel cost nothing by themselves.

Everything here works on plain lists of xDSL operations and is written for speed: the fusion planner
asks for many candidate groups, so type facts are cached per type object.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from xdsl.dialects import func
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Attribute, Operation

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.symbolic import hint_shape
from solder.compiler.dialects.traits import Transcendental, ViewLike
from solder.compiler.dialects.types import is_dynamic

# Bytes per element, by the element type's printed name.
ELEMENT_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "i1": 1, "i8": 1, "ui8": 1, "i16": 2, "i32": 4, "i64": 8}
_DTYPE_NAMES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "f64": "float64"}

CONTRACTIONS = (g.MatmulOp, g.LinearOp, g.ConvOp, g.AttentionOp)
"""Ops whose FLOPs are a contraction's and whose input type picks the peak rate."""
_MOVES_ONLY = (g.GatherOp, g.IndexOp, g.GatherElementsOp, g.ConcatOp, g.ExternOp)
"""Ops counted as data movement only (an extern's FLOPs are unknown)."""
# FLOPs per element of the (first) input for row-wise ops; `t` is the transcendental weight.
_ROW_FLOPS = {
    g.SoftmaxOp: lambda t: 4 + t, g.LogSoftmaxOp: lambda t: 4 + t, g.LayerNormOp: lambda t: 8,
    g.RmsNormOp: lambda t: 5, g.BatchNormOp: lambda t: 4, g.CumsumOp: lambda t: 1,
}


def is_layout(op: Operation) -> bool:
    """A view (reshape, permute, expand, slice): no FLOPs, and no bytes inside a kernel."""
    return _has(type(op), ViewLike)


def is_transcendental(op: Operation) -> bool:
    """An op charged the transcendental weight per element."""
    return _has(type(op), Transcendental)


@cache
def _has(cls: type[Operation], trait) -> bool:
    """`cls.has_trait(trait)`, cached: the planner asks for every op of every candidate group."""
    return cls.has_trait(trait)


@dataclass(frozen=True)
class TypeInfo:
    """What the cost model needs to know about one tensor type."""

    numel: int
    nbytes: int
    shape: tuple[int, ...]
    elem: str  # printed element type: "f32", "bf16", "i1", ...


_TYPE_CACHE: dict[int, tuple[Attribute, TypeInfo]] = {}


def type_info(t: Attribute) -> TypeInfo:
    """Numel, bytes, shape and element name of a tensor type (cached by identity; types are immutable)."""
    hit = _TYPE_CACHE.get(id(t))
    if hit is not None and hit[0] is t:
        return hit[1]
    if is_dynamic(t):  # `?` dims at the example sizes (not cached: they depend on the module)
        shape, elem = hint_shape(t), str(t.element_type)
        numel = math.prod(shape)
        return TypeInfo(numel, numel * ELEMENT_BYTES.get(elem, 4), shape, elem)
    if isinstance(t, TensorType):
        shape = tuple(t.get_shape())
        elem = str(t.element_type)
    else:  # scalars (index, i64, f32 ...) and anything else: one element
        shape, elem = (), str(t)
    numel = math.prod(shape)
    info = TypeInfo(numel, numel * ELEMENT_BYTES.get(elem, 4), shape, elem)
    if len(_TYPE_CACHE) > 65536:
        _TYPE_CACHE.clear()
    _TYPE_CACHE[id(t)] = (t, info)  # keep `t` alive so its id is not reused while cached
    return info


def dtype_name(elem: str) -> str:
    """The `Target.peak_flops` key for a printed element type (integers count as float32)."""
    return _DTYPE_NAMES.get(elem, "float32")


def transcendental_weight(target) -> float:
    """FLOPs charged per transcendental function: ~10 on a CPU (polynomials), ~1 where SFUs do it."""
    return 10.0 if getattr(target, "device", "cpu") == "cpu" else 2.0


def op_flops(op: Operation, trans: float = 10.0) -> float:
    """Floating-point operations of one op (a `graph.kernel` is the sum of its body)."""
    rule = _FLOPS.get(type(op))
    if rule is None:
        rule = _FLOPS[type(op)] = _flops_rule(type(op))
    return rule(op, trans)


def _flops_rule(cls: type[Operation]) -> Callable[[Operation, float], float]:
    """The FLOP count of ops of class `cls`, chosen once per class."""
    if _has(cls, ViewLike) or issubclass(cls, (g.ConstantOp, g.YieldOp, func.ReturnOp, *_MOVES_ONLY)):
        return _no_flops
    if issubclass(cls, g.KernelOp):
        return lambda op, t: sum(op_flops(o, t) for o in op.regions[0].block.ops)
    if issubclass(cls, (g.MatmulOp, g.LinearOp)):
        return _gemm_flops
    if issubclass(cls, g.AttentionOp):
        return attention_flops
    if issubclass(cls, g.ConvOp):
        return _conv_flops
    if issubclass(cls, g.PoolOp):
        return lambda op, t: float(_out(op).numel * math.prod(op.properties["kernel"].get_values()))
    if cls in _ROW_FLOPS:
        per = _ROW_FLOPS[cls]
        return lambda op, t: type_info(op.operands[0].type).numel * per(t)
    if issubclass(cls, g.ReduceOp):
        return lambda op, t: float(type_info(op.operands[0].type).numel + _out(op).numel)
    if issubclass(cls, g.ArgReduceOp):
        return lambda op, t: float(type_info(op.operands[0].type).numel)
    if _has(cls, Transcendental):
        return lambda op, t: _out(op).numel * t if op.results else 0.0
    return lambda op, t: _out(op).numel * 1.0 if op.results else 0.0


_FLOPS: dict[type[Operation], Callable[[Operation, float], float]] = {}


def _out(op: Operation) -> TypeInfo:
    return type_info(op.results[0].type)


def _no_flops(op: Operation, trans: float) -> float:
    return 0.0


def _gemm_flops(op: Operation, trans: float) -> float:
    out = _out(op)
    k = type_info(op.operands[0].type).shape[-1]
    bias = out.numel if isinstance(op, g.LinearOp) and len(op.operands) > 2 else 0
    return 2.0 * out.numel * k + bias


def _conv_flops(op: Operation, trans: float) -> float:
    w = type_info(op.operands[1].type).shape  # [Cout, Cin/groups, *kernel]
    return 2.0 * _out(op).numel * math.prod(w[1:])


def attention_flops(op: Operation, trans: float = 10.0) -> float:
    """4·B·H·T·S·D for q@kᵀ and p@v, plus the softmax; half of it when causal."""
    b, h, t, d = type_info(op.operands[0].type).shape
    s = type_info(op.operands[1].type).shape[2]
    dv = type_info(op.operands[2].type).shape[3]
    flops = 2.0 * b * h * t * s * (d + dv) + b * h * t * s * (4 + trans)
    return flops / 2 if "causal" in op.properties else flops


def group_io(ops: list[Operation]) -> tuple[int, int, list, list]:
    """(bytes read, bytes written, values read, values written) of `ops` run as one kernel.

    Read: distinct values used by the group and defined outside it. Written: results of the group used
    outside it, or not used at all (a result must land somewhere).
    """
    members = set(map(id, ops))
    seen: set[int] = set()
    ins, outs = [], []
    nread = nwritten = 0
    for op in ops:
        for v in op.operands:
            if id(v) in seen:
                continue
            seen.add(id(v))
            owner = v.owner
            if isinstance(owner, Operation) and id(owner) in members:
                continue
            ins.append(v)
            nread += type_info(v.type).nbytes
        for r in op.results:
            uses = r.uses
            if not uses or any(id(u.operation) not in members for u in uses):
                outs.append(r)
                nwritten += type_info(r.type).nbytes
    return nread, nwritten, ins, outs


def kernel_io(kernel: Operation) -> tuple[int, int]:
    """Bytes read and written by a `graph.kernel`: its operands in, its results out."""
    return (sum(type_info(v.type).nbytes for v in kernel.operands),
            sum(type_info(r.type).nbytes for r in kernel.results))


def main_dtype(ops: list[Operation]) -> str:
    """The dtype whose peak rate bounds the group: a contraction's input type, else the first float result."""
    first = None
    for op in ops:
        if isinstance(op, CONTRACTIONS):
            return dtype_name(type_info(op.operands[0].type).elem)
        if isinstance(op, g.KernelOp):
            inner = main_dtype(list(op.regions[0].block.ops))
            if inner != "float32":
                return inner
        if first is None and op.results:
            first = type_info(op.results[0].type).elem
    return dtype_name(first or "f32")


def roofline(flops: float, nbytes: float, dtype: str, target, launches: int = 1) -> float:
    """max(compute time, memory time) plus the launch overhead, in seconds."""
    compute = flops / target.flops(dtype)
    memory = nbytes / target.mem_bandwidth if target.mem_bandwidth else 0.0
    return max(compute, memory) + launches * target.launch_overhead


def estimate_ops(ops: list[Operation], target) -> float:
    """Roofline seconds of `ops` fused into one kernel, without building the kernel."""
    trans = transcendental_weight(target)
    flops = sum(op_flops(o, trans) for o in ops)
    nread, nwritten, _, _ = group_io(ops)
    return roofline(flops, nread + nwritten, main_dtype(ops), target)


def estimate(op: Operation, target) -> float:
    """Roofline seconds of one op or one `graph.kernel` region, launched as one kernel."""
    if not isinstance(op, g.KernelOp):
        return estimate_ops([op], target)
    nread, nwritten = kernel_io(op)
    flops = op_flops(op, transcendental_weight(target))
    return roofline(flops, nread + nwritten, main_dtype([op]), target)
