"""Deterministic kernel generator for cost-model data: small `graph` modules of varied families and shapes.

A *case* is one computation (a family, a shape signature, typed inputs and a body that appends ops).
`rows(seed)` expands case i into dataset rows, each one module holding ONE `graph.kernel`:

- a single-op or single-kernel case gives one row (`role = "single"`);
- a producer→consumer chain gives a row for the fused kernel (`role = "fused"`) and one row per op run
  as its own kernel (`role = "part"`), all sharing a `pair` id, so "fuse or not" can be scored against
  measured truth: fused seconds versus the sum of its parts.

Row ids are `"<case>"`, `"<case>.f"`, `"<case>.p<k>"` (prefixed `s<seed>.` for seeds other than 0); the
same seed and profile always yield the same rows in the same order, which is what makes `collect`
resumable. Stream 0 draws the original eight families (`FAMILIES`: elementwise chains, casts,
reductions, softmax/norms, matmul with epilogues, attention, layout ops, written-out softmax); streams
1, 2, ... draw every family (`FAMILIES_ALL`), adding masked and grouped-query attention, attention with
its output projection, GEMM→activation→GEMM blocks, and `zoo`: the kernels the fusion passes form on
the zoo models, harvested by `costmodel/harvest.py` into `zoo_kernels.jsonl`.

Two size profiles (`SIZES`): "small" (up to ~2M elements, ~8 MB; the CPU target's data) and "gpu" (up to
~67M elements, ~270 MB, GEMMs up to ~69 GFLOP) so that on a GPU bandwidth and FLOPs, not launch latency,
decide most latencies, while the log-uniform draw still yields small kernels.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, UnitAttr
from xdsl.ir import Block, Region, SSAValue
from xdsl.irdl import IRDLOperation

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import shape_of, tensor_type

Spec = tuple[tuple[int, ...], str]  # (shape, dtype name)


class Builder:
    """Appends graph ops to one block; each helper returns the new op's result."""

    def __init__(self, block: Block):
        self.block = block

    def op(self, cls: type[IRDLOperation], operands: list, shape, dtype: str, **props) -> SSAValue:
        new = cls.__new__(cls)
        IRDLOperation.__init__(new, operands=operands, result_types=[tensor_type(tuple(shape), dtype)],
                               properties={k: v for k, v in props.items() if v is not None})
        self.block.add_op(new)
        return new.results[0]

    def unary(self, name: str, x: SSAValue) -> SSAValue:
        cls = g.GeluOp if name == "gelu" else g.UNARY_OPS[name]
        props = {"approximate": StringAttr("tanh")} if name == "gelu" else {}
        return self.op(cls, [x], shape_of(x.type), _dt(x), **props)

    def binary(self, name: str, a: SSAValue, b: SSAValue) -> SSAValue:
        shape = _broadcast(shape_of(a.type), shape_of(b.type))
        return self.op(g.BINARY_OPS[name], [a, b], shape, _dt(a))


@dataclass
class Case:
    """One generated computation: `body(builder, args) -> outputs`; `chain` marks fusable producer→consumer."""

    family: str
    shape_sig: str
    inputs: list[Spec]
    body: Callable[[Builder, list[SSAValue]], list[SSAValue]]
    chain: bool = False


@dataclass
class Row:
    """One dataset row before timing: a module with one graph.kernel, and its bookkeeping."""

    id: str
    family: str
    shape_sig: str
    role: str  # "single" | "fused" | "part"
    pair: str | None
    module: ModuleOp


def _dt(v: SSAValue) -> str:
    from solder.compiler.dialects.types import dtype_name

    return dtype_name(v.type.element_type)


def _broadcast(a, b):
    from solder.compiler.dialects.types import broadcast_shapes

    return broadcast_shapes(tuple(a), tuple(b))


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """The size ranges of one profile: elements of 2-d tensors, GEMM dims and FLOP cap, attention lengths."""

    mat_lo: int = 1 << 10
    mat_hi: int = 1 << 21
    layout_hi: int = 1 << 20
    mm_dims: tuple[int, ...] = (16, 32, 48, 64, 100, 128, 192, 256, 384, 512)
    mm_flops: int = 1 << 28
    att_t: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    att_s: tuple[int, ...] = (16, 64, 128, 256, 512)
    att_heads: tuple[int, ...] = (1, 2, 4, 8)
    att_flops: int = 1 << 28


SIZES = {
    "small": Sizes(),
    "gpu": Sizes(mat_lo=1 << 12, mat_hi=1 << 26, layout_hi=1 << 25,
                 mm_dims=(16, 32, 64, 100, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096),
                 mm_flops=1 << 36, att_t=(64, 128, 256, 512, 1024, 2048), att_s=(64, 128, 256, 512, 1024, 2048),
                 att_heads=(1, 2, 4, 8, 16), att_flops=1 << 35),
}

_ROWS = [1, 3, 8, 16, 32, 50, 64, 100, 128, 256, 384, 512, 1000, 1024, 2048]
_COLS = [7, 16, 33, 64, 100, 128, 255, 256, 384, 512, 768, 1000, 1024, 2048, 4096]


def _mat(rng: random.Random, lo: int = 1 << 10, hi: int = 1 << 21) -> tuple[int, int]:
    """A 2-d shape whose element count is roughly log-uniform in [lo, hi]."""
    target = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    n = rng.choice(_COLS)
    m = max(1, round(target / n))
    return (m, n)


def _dtype(rng: random.Random, p_bf16: float = 0.2) -> str:
    return "bfloat16" if rng.random() < p_bf16 else "float32"


def _sig(*specs: Spec) -> str:
    return ";".join("x".join(map(str, s)) + ":" + d for s, d in specs)


# ---------------------------------------------------------------------------------------------
# Families: each returns a Case from a seeded rng
# ---------------------------------------------------------------------------------------------

_UNARY = ["exp", "tanh", "sigmoid", "relu", "silu", "neg", "abs", "sqrt", "rsqrt", "gelu", "erf", "log"]
_BINARY = ["add", "mul", "sub", "div", "maximum"]


def eltwise(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """A chain of 1-4 elementwise ops; binary ops read a second full tensor or a broadcast row."""
    shape, dt = _mat(rng, sz.mat_lo, sz.mat_hi), _dtype(rng)
    steps = [(rng.choice(_UNARY), None) if rng.random() < 0.5 else (rng.choice(_BINARY), rng.random() < 0.5)
             for _ in range(rng.randint(1, 4))]
    inputs = [(shape, dt)] + [((shape[1],) if row else shape, dt) for _, row in steps if row is not None]

    def body(b: Builder, args):
        x, extra = args[0], iter(args[1:])
        for name, row in steps:
            x = b.unary(name, x) if row is None else b.binary(name, x, next(extra))
        return [x]

    return Case("eltwise", _sig(*inputs) + "|" + ",".join(n for n, _ in steps), inputs, body, chain=len(steps) > 1)


def cast(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """A dtype conversion (f32 <-> bf16), optionally after an elementwise op."""
    shape = _mat(rng, sz.mat_lo, sz.mat_hi)
    src, dst = rng.choice([("float32", "bfloat16"), ("bfloat16", "float32")])
    pre = rng.random() < 0.5

    def body(b: Builder, args):
        x = b.unary("relu", args[0]) if pre else args[0]
        return [b.op(g.CastOp, [x], shape, dst)]

    return Case("cast", _sig((shape, src)) + f"->{dst}", [(shape, src)], body, chain=pre)


def reduce(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """A sum/mean/max reduction over the last or first dim, optionally fed by an elementwise producer."""
    shape, dt = _mat(rng, sz.mat_lo, sz.mat_hi), _dtype(rng, 0.1)
    kind, dim = rng.choice(["sum", "mean", "max"]), rng.choice([0, 1, 1])
    keep = rng.random() < 0.5
    pre = rng.choice([None, None, "exp", "mul"])
    out = tuple(1 if i == dim else s for i, s in enumerate(shape) if keep or i != dim)

    def body(b: Builder, args):
        x = args[0]
        if pre == "exp":
            x = b.unary("exp", x)
        elif pre == "mul":
            x = b.binary("mul", x, x)
        return [b.op(g.ReduceOp, [x], out, dt, kind=StringAttr(kind), dims=g.ints_attr([dim]),
                     keepdim=UnitAttr() if keep else None)]

    return Case("reduce", _sig((shape, dt)) + f"|{pre}>{kind}{dim}", [(shape, dt)], body, chain=pre is not None)


def rownorm(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """softmax / log_softmax / layer_norm / rms_norm over the last dim, optionally after a residual add."""
    shape, dt = _mat(rng, sz.mat_lo, sz.mat_hi), _dtype(rng, 0.15)
    kind = rng.choice(["softmax", "log_softmax", "layer_norm", "rms_norm"])
    residual = rng.random() < 0.4
    n = shape[1]
    inputs = [(shape, dt)] + ([(shape, dt)] if residual else []) + \
        ([((n,), dt), ((n,), dt)] if kind == "layer_norm" else [((n,), dt)] if kind == "rms_norm" else [])

    def body(b: Builder, args):
        x, rest = args[0], list(args[1:])
        if residual:
            x = b.binary("add", x, rest.pop(0))
        if kind in ("softmax", "log_softmax"):
            cls = g.SoftmaxOp if kind == "softmax" else g.LogSoftmaxOp
            return [b.op(cls, [x], shape, dt, dim=g.int_attr(1))]
        if kind == "layer_norm":
            return [b.op(g.LayerNormOp, [x, [rest[0]], [rest[1]]], shape, dt, normalized_ndim=g.int_attr(1),
                         eps=g.float_attr(1e-5))]
        return [b.op(g.RmsNormOp, [x, [rest[0]]], shape, dt, normalized_ndim=g.int_attr(1), eps=g.float_attr(1e-6))]

    return Case("rownorm", _sig(*inputs) + f"|{kind}", inputs, body, chain=residual)


def matmul(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """matmul (maybe batched) or linear(+bias), optionally with an activation / residual epilogue."""
    dims = list(sz.mm_dims)
    while True:
        m, n, k = rng.choice(dims + [1, 8]), rng.choice(dims), rng.choice(dims)
        batch = rng.choice([1, 1, 2, 4, 8])
        if 2 * batch * m * n * k <= sz.mm_flops:
            break
    dt = _dtype(rng, 0.15)
    linear = batch == 1 and rng.random() < 0.5
    epi = rng.choice([None, None, "relu", "gelu", "add"])
    a_shape = (m, k) if batch == 1 else (batch, m, k)
    out = a_shape[:-1] + (n,)
    inputs = [(a_shape, dt), ((n, k) if linear else (k, n), dt)]
    if linear:
        inputs.append(((n,), dt))
    if epi == "add":
        inputs.append((out, dt))

    def body(b: Builder, args):
        if linear:
            y = b.op(g.LinearOp, [args[0], args[1], [args[2]]], out, dt)
        else:
            y = b.op(g.MatmulOp, [args[0], args[1]], out, dt)
        if epi == "add":
            y = b.binary("add", y, args[-1])
        elif epi:
            y = b.unary(epi, y)
        return [y]

    name = "linear" if linear else "matmul"
    return Case("matmul", _sig(*inputs) + f"|{name}>{epi}", inputs, body, chain=epi is not None)


def attention(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """graph.attention over q[B,H,T,D], k/v[B,H,S,D], causal or not (S = T when causal)."""
    while True:
        bsz, h = rng.choice([1, 2, 4]), rng.choice(sz.att_heads)
        t, d = rng.choice(sz.att_t), rng.choice([16, 32, 64, 128])
        causal = rng.random() < 0.5
        s = t if causal else rng.choice(sz.att_s)
        if 4 * bsz * h * t * s * d <= sz.att_flops:
            break
    dt = _dtype(rng, 0.15)
    q, kv = ((bsz, h, t, d), dt), ((bsz, h, s, d), dt)

    def body(b: Builder, args):
        props = {"scale": g.float_attr(d ** -0.5), "causal": UnitAttr() if causal else None}
        return [b.op(g.AttentionOp, [args[0], args[1], args[2], []], (bsz, h, t, d), dt, **props)]

    return Case("attention", _sig(q, kv) + ("|causal" if causal else ""), [q, kv, kv], body)


def layout(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """A permute (a copy when it stands alone) feeding an elementwise op, or a reshape feeding a reduction."""
    m, n = _mat(rng, sz.mat_lo, sz.layout_hi)
    dt = _dtype(rng, 0.2)
    kind = rng.choice(["permute", "permute", "reshape"])
    consumer = rng.random() < 0.7

    def body(b: Builder, args):
        if kind == "permute":
            y = b.op(g.PermuteOp, [args[0]], (n, m), dt, perm=g.ints_attr([1, 0]))
            return [b.unary("relu", y) if consumer else y]
        y = b.op(g.ReshapeOp, [args[0]], (m * n,), dt)
        if not consumer:
            return [y]
        return [b.op(g.ReduceOp, [y], (), dt, kind=StringAttr("sum"), dims=g.ints_attr([0]))]

    return Case("layout", _sig(((m, n), dt)) + f"|{kind}>{consumer}", [((m, n), dt)], body, chain=consumer)


def softmax_chain(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """Softmax written out: max, sub, exp, sum, div — the classic fusion candidate."""
    shape, dt = _mat(rng, sz.mat_lo, sz.mat_hi), "float32"
    red = (shape[0], 1)

    def body(b: Builder, args):
        x = args[0]
        mx = b.op(g.ReduceOp, [x], red, dt, kind=StringAttr("max"), dims=g.ints_attr([1]), keepdim=UnitAttr())
        e = b.unary("exp", b.binary("sub", x, mx))
        s = b.op(g.ReduceOp, [e], red, dt, kind=StringAttr("sum"), dims=g.ints_attr([1]), keepdim=UnitAttr())
        return [b.binary("div", e, s)]

    return Case("softmax_chain", _sig((shape, dt)), [(shape, dt)], body, chain=True)


def _attention_shape(rng: random.Random, sz: Sizes, causal: bool) -> tuple[int, int, int, int, int, int]:
    """(B, Hq, Hkv, T, S, D) within the profile's FLOP cap; Hkv < Hq (grouped-query) one time in four."""
    while True:
        bsz, h = rng.choice([1, 2, 4]), rng.choice(sz.att_heads)
        t, d = rng.choice(sz.att_t), rng.choice([32, 64, 128])
        s = t if causal else rng.choice(sz.att_s)
        hkv = h // rng.choice([2, 4]) if h >= 4 and rng.random() < 0.25 else h
        if 4 * bsz * h * t * s * d <= sz.att_flops:
            return bsz, h, hkv, t, s, d


def attention_masked(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """graph.attention with a mask operand: boolean padding [B,1,1,S] or full [B,1,T,S] (what transformers
    passes under export), or an additive [1,1,T,S] mask; causal with a padding mask too; GQA sometimes."""
    kind = rng.choice(["pad", "full", "additive", "causal_pad"])
    causal = kind == "causal_pad"
    bsz, h, hkv, t, s, d = _attention_shape(rng, sz, causal)
    dt = _dtype(rng, 0.3)
    mask = {"pad": ((bsz, 1, 1, s), "bool"), "full": ((bsz, 1, t, s), "bool"), "additive": ((1, 1, t, s), dt),
            "causal_pad": ((bsz, 1, 1, s), "bool")}[kind]
    q, kv = ((bsz, h, t, d), dt), ((bsz, hkv, s, d), dt)

    def body(b: Builder, args):
        props = {"scale": g.float_attr(d ** -0.5), "causal": UnitAttr() if causal else None}
        return [b.op(g.AttentionOp, [args[0], args[1], args[2], [args[3]]], (bsz, h, t, d), dt, **props)]

    return Case("attention_masked", _sig(q, kv, mask) + f"|{kind}", [q, kv, kv, mask], body)


def attention_proj(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """Attention followed by its output projection (fuse-blocks' attention block): attention, permute to
    [B,T,H,D], reshape to [B,T,H·D], linear(+bias), optionally a residual add."""
    causal = rng.random() < 0.5
    bsz, h, _, t, s, d = _attention_shape(rng, sz, causal)
    dm = h * d
    dt = _dtype(rng, 0.3)
    residual = rng.random() < 0.5
    q, kv = ((bsz, h, t, d), dt), ((bsz, h, s, d), dt)
    inputs = [q, kv, kv, ((dm, dm), dt), ((dm,), dt)] + ([((bsz, t, dm), dt)] if residual else [])

    def body(b: Builder, args):
        props = {"scale": g.float_attr(d ** -0.5), "causal": UnitAttr() if causal else None}
        y = b.op(g.AttentionOp, [args[0], args[1], args[2], []], (bsz, h, t, d), dt, **props)
        y = b.op(g.PermuteOp, [y], (bsz, t, h, d), dt, perm=g.ints_attr([0, 2, 1, 3]))
        y = b.op(g.ReshapeOp, [y], (bsz, t, dm), dt)
        y = b.op(g.LinearOp, [y, args[3], [args[4]]], (bsz, t, dm), dt)
        return [b.binary("add", y, args[5]) if residual else y]

    sig = _sig(q, kv) + ("|causal" if causal else "") + ("|res" if residual else "")
    return Case("attention_proj", sig, inputs, body, chain=True)


def mlp_block(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """GEMM→activation→GEMM (fuse-blocks' MLP block): linear, GELU/ReLU/SiLU or SwiGLU, linear, maybe a
    residual add; tokens x d in, hidden = 2-4 d."""
    dims = [x for x in sz.mm_dims if x >= 32]
    act = rng.choice(["gelu", "gelu_tanh", "relu", "silu", "swiglu"])
    while True:
        m, d = rng.choice(dims + [1, 8, 16]), rng.choice(dims)
        hid = d * rng.choice([2, 4]) if rng.random() < 0.7 else rng.choice(dims)
        if 2 * m * d * hid * (3 if act == "swiglu" else 2) <= sz.mm_flops:
            break
    dt = _dtype(rng, 0.3)
    residual = rng.random() < 0.4
    x = ((m, d), dt)
    inputs = [x, ((hid, d), dt), ((hid,), dt), ((d, hid), dt), ((d,), dt)]
    if act == "swiglu":
        inputs.append(((hid, d), dt))
    if residual:
        inputs.append(x)

    def body(b: Builder, args):
        h = b.op(g.LinearOp, [args[0], args[1], [args[2]]], (m, hid), dt)
        if act == "swiglu":
            up = b.op(g.LinearOp, [args[0], args[5], []], (m, hid), dt)
            h = b.binary("mul", b.unary("silu", h), up)
        elif act == "gelu_tanh":
            h = b.unary("gelu", h)
        elif act == "gelu":
            h = b.op(g.GeluOp, [h], (m, hid), dt, approximate=StringAttr("none"))
        else:
            h = b.unary(act, h)
        y = b.op(g.LinearOp, [h, args[3], [args[4]]], (m, d), dt)
        return [b.binary("add", y, args[-1]) if residual else y]

    return Case("mlp_block", _sig(*inputs) + f"|{act}" + ("|res" if residual else ""), inputs, body, chain=True)


ZOO_KERNELS = Path(__file__).parent / "zoo_kernels.jsonl"


@functools.cache
def _zoo_records() -> tuple[tuple[int, str], ...]:
    """(largest tensor's elements, module text) of each harvested zoo kernel (costmodel/harvest.py)."""
    if not ZOO_KERNELS.exists():
        raise ValueError(f"no harvested zoo kernels at {ZOO_KERNELS}; run `python -m solder.costmodel.harvest`")
    out = []
    for line in ZOO_KERNELS.read_text().splitlines():
        text = json.loads(line)["ir"]
        numel = max((math.prod(int(x) for x in m.group(1).split("x") if x) or 1
                     for m in re.finditer(r"tensor<((?:\d+x)*)\w+>", text)), default=1)
        out.append((numel, text))
    return tuple(out)


def zoo(rng: random.Random, sz: Sizes = SIZES["small"]) -> Case:
    """A kernel that the fusion passes form on a zoo model (harvested at several batch sizes and dtypes)."""
    recs = [text for numel, text in _zoo_records() if numel <= sz.mat_hi]
    text = rng.choice(recs)
    from solder.compiler import ir

    kernel = next(op for op in ir.parse(text).walk() if isinstance(op, g.KernelOp))
    inputs = list(kernel.operands)
    specs = [(shape_of(v.type), _dt(v)) for v in inputs]
    src = kernel.regions[0].block
    names = [op.name.removeprefix(g.PREFIX) for op in src.ops if not isinstance(op, g.YieldOp)]

    def body(b: Builder, args):
        mapping = dict(zip(src.args, args))
        for op in src.ops:
            if isinstance(op, g.YieldOp):
                return [mapping[v] for v in op.operands]
            new = op.clone(value_mapper=mapping)
            b.block.add_op(new)
            mapping.update(zip(op.results, new.results))
        raise ValueError("graph.kernel body without graph.yield")

    return Case("zoo", _sig(*specs) + "|" + ",".join(names), specs, body, chain=len(names) > 1)


FAMILIES: dict[str, tuple[Callable[[random.Random, Sizes], Case], float]] = {
    "eltwise": (eltwise, 3.0), "cast": (cast, 0.7), "reduce": (reduce, 1.5), "rownorm": (rownorm, 1.5),
    "matmul": (matmul, 2.0), "attention": (attention, 1.0), "layout": (layout, 1.0), "softmax_chain": (softmax_chain, 0.8),
}
"""The families and weights of stream 0 (the shipped datasets' first rows; kept fixed so they stay resumable)."""

FAMILIES_ALL: dict[str, tuple[Callable[[random.Random, Sizes], Case], float]] = {
    "eltwise": (eltwise, 2.0), "cast": (cast, 0.4), "reduce": (reduce, 1.0), "rownorm": (rownorm, 1.2),
    "matmul": (matmul, 2.0), "attention": (attention, 0.6), "layout": (layout, 0.6), "softmax_chain": (softmax_chain, 0.5),
    "attention_masked": (attention_masked, 1.0), "attention_proj": (attention_proj, 1.0), "mlp_block": (mlp_block, 1.5),
    "zoo": (zoo, 3.0),
}
"""Every family: streams with seed >= 1 draw from these (masked/GQA attention, attention + projection,
GEMM-act-GEMM, and the kernels the fusion passes form on the zoo)."""


def families(seed: int) -> dict:
    return FAMILIES if seed == 0 else FAMILIES_ALL


def case(seed: int, index: int, profile: str = "small", family: str | None = None) -> Case:
    """Case `index` of the stream `seed` in size `profile` (pure function of the three); `family` forces one."""
    if profile not in SIZES:
        raise ValueError(f"unknown size profile {profile!r}; expected one of {sorted(SIZES)}")
    mix = families(seed)
    rng = random.Random(f"solder-costmodel:{seed}:{index}")
    names = list(mix)
    chosen = rng.choices(names, weights=[mix[n][1] for n in names])[0]
    if family is not None:
        if family not in FAMILIES_ALL:
            raise ValueError(f"unknown kernel family {family!r}; expected one of {sorted(FAMILIES_ALL)}")
        chosen = family
    return FAMILIES_ALL[chosen][0](rng, SIZES[profile])


# ---------------------------------------------------------------------------------------------
# Cases -> modules with one graph.kernel each
# ---------------------------------------------------------------------------------------------


def kernel_module(inputs: list, body: Callable[[Builder, list[SSAValue]], list[SSAValue]]) -> ModuleOp:
    """`func.func @forward(inputs) { graph.kernel { body } ; return }` with `inputs` as (shape, dtype) or types."""
    types = [tensor_type(tuple(s), d) if isinstance(s, (tuple, list)) else s for s, d in
             ((i, None) if not isinstance(i, tuple) else i for i in inputs)]
    inner = Block(arg_types=types)
    outs = body(Builder(inner), list(inner.args))
    inner.add_op(g.YieldOp(*outs))
    outer = Block(arg_types=types)
    kernel = g.KernelOp.__new__(g.KernelOp)
    IRDLOperation.__init__(kernel, operands=[list(outer.args)], result_types=[[o.type for o in outs]],
                           regions=[Region(inner)])
    outer.add_op(kernel)
    outer.add_op(func.ReturnOp(*kernel.results))
    fn = func.FuncOp("forward", (types, [o.type for o in outs]), Region(outer))
    return ModuleOp([fn])


def _parts(c: Case) -> list[ModuleOp]:
    """One single-op kernel module per op of the case's chain."""
    scratch = Block(arg_types=[tensor_type(tuple(s), d) for s, d in c.inputs])
    c.body(Builder(scratch), list(scratch.args))
    mods = []
    for op in scratch.ops:
        if not op.operands:  # constants and aranges: cloned into their readers, never a kernel alone
            continue
        types = [v.type for v in op.operands]

        def body(b: Builder, args, op=op):
            new = op.clone()
            for i, a in enumerate(args):
                new.operands[i] = a
            b.block.add_op(new)
            return list(new.results)

        mods.append(kernel_module(types, body))
    return mods


def rows(seed: int = 0, profile: str = "small") -> Iterator[Row]:
    """Every row of the stream `seed` in size `profile`, in a fixed order (infinite).

    Ids of stream 0 are `"<case>"`, `"<case>.f"`, `"<case>.p<k>"`; other streams prefix `s<seed>.`, so
    that several streams can grow one dataset.
    """
    index = 0
    pre = "" if seed == 0 else f"s{seed}."
    while True:
        c = case(seed, index, profile)
        whole = kernel_module(c.inputs, c.body)
        if not c.chain:
            yield Row(f"{pre}{index}", c.family, c.shape_sig, "single", None, whole)
        else:
            pair = f"{pre}{index}"
            yield Row(f"{pair}.f", c.family, c.shape_sig, "fused", pair, whole)
            for k, m in enumerate(_parts(c)):
                yield Row(f"{pair}.p{k}", c.family, c.shape_sig, "part", pair, m)
        index += 1
