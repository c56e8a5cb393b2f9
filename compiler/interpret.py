"""The reference interpreter: every `graph` op run with eager PyTorch, keyed by the op class.

It sits with the IR so that passes can evaluate constant sub-graphs without a backend; the reference backend
(backends/reference) wraps it, and is the correctness oracle for the other backends and their fallback for ops
they do not lower. `compile_block` turns a block into a flat list of steps once (no IR walking per call); each
step reads and writes slots of one value list.

Dynamic functions (`?` dims) run for any sizes within their symbols' bounds: each call binds the
symbols from the argument sizes (`solder.compiler.dialects.symbolic.Binding`, which checks the bounds), and
the few ops whose result size is not a function of their operands' sizes (reshape, expand, constant,
arange) evaluate their `?` dims' expressions under that binding.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue

from solder.compiler import externs
from solder.compiler.dialects import graph as g
from solder.compiler.dialects import symbolic
from solder.compiler.dialects.optable import OpTable
from solder.compiler.dialects.types import dims_of, is_dynamic, shape_of, torch_dtype
from solder.compiler.errors import SolderError

OpFn = Callable[..., torch.Tensor | list[torch.Tensor]]
OPS: OpTable = OpTable("reference")
"""op class -> factory(op) -> fn(*input tensors) -> output tensor(s); factories read attributes once."""
impl = OPS.register


def _prop_int(op, name) -> int:
    return op.properties[name].value.data


def _prop_ints(op, name) -> list[int]:
    return list(op.properties[name].get_values())


_ELEMENTWISE_FNS = {
    g.NegOp: torch.neg, g.AbsOp: torch.abs, g.ExpOp: torch.exp, g.LogOp: torch.log, g.SqrtOp: torch.sqrt,
    g.RsqrtOp: torch.rsqrt, g.TanhOp: torch.tanh, g.SigmoidOp: torch.sigmoid, g.ReluOp: torch.relu, g.SiluOp: F.silu,
    g.ErfOp: torch.erf, g.SinOp: torch.sin, g.CosOp: torch.cos, g.ReciprocalOp: torch.reciprocal,
    g.FloorOp: torch.floor, g.CeilOp: torch.ceil, g.IsNanOp: torch.isnan, g.Log1pOp: torch.log1p,
    g.Expm1Op: torch.expm1, g.SignOp: torch.sign, g.RoundOp: torch.round, g.TruncOp: torch.trunc,
    g.LogicalNotOp: torch.logical_not,
    g.AddOp: torch.add, g.SubOp: torch.sub, g.MulOp: torch.mul, g.DivOp: torch.div, g.PowOp: torch.pow,
    g.MaximumOp: torch.maximum, g.MinimumOp: torch.minimum, g.LogicalAndOp: torch.logical_and,
    g.LogicalOrOp: torch.logical_or, g.RemainderOp: torch.remainder, g.FloorDivideOp: torch.floor_divide,
    g.FmodOp: torch.fmod,
    g.EqOp: torch.eq, g.NeOp: torch.ne, g.LtOp: torch.lt, g.LeOp: torch.le, g.GtOp: torch.gt, g.GeOp: torch.ge,
}
for _c, _f in _ELEMENTWISE_FNS.items():
    OPS[_c] = (lambda f: lambda op: f)(_f)


@impl(g.GeluOp)
def _gelu(op):
    approx = op.approximate.data
    return lambda x: F.gelu(x, approximate=approx)


@impl(g.CastOp)
def _cast(op):
    dt = torch_dtype(op.result.type.element_type)
    return lambda x: x.to(dt)


@impl(g.WhereOp)
def _where(op):
    return torch.where


def sizes(t, env: dict[str, int], unknown: int | None = None) -> tuple[int, ...]:
    """The concrete shape of type `t` under a symbol binding; an unknown `?` gives `unknown` (or an error)."""
    out = []
    for d in dims_of(t):
        if isinstance(d, str):
            if d == "?":
                if unknown is None:
                    raise SolderError(f"reference backend: {t} has a `?` dim without a size expression")
                d = unknown
            else:
                d = int(symbolic.evaluate(d, env))
        out.append(d)
    return tuple(out)


def _needs_env(fn):
    """Mark a step function that takes the call's symbol binding as `env=`."""
    fn.wants_env = True
    return fn


@impl(g.ConstantOp)
def _constant(op):
    dt = torch_dtype(op.result.type.element_type)
    if is_dynamic(op.result.type):
        t, v = op.result.type, op.py_value
        return _needs_env(lambda env: torch.full(sizes(t, env), v, dtype=dt))
    value = torch.full(shape_of(op.result.type), op.py_value, dtype=dt)
    return lambda: value


def _arange_value(n: int, start, step, dt):
    return (torch.arange(n, dtype=torch.float64) * step + start).to(dt) if dt.is_floating_point else \
        torch.arange(start, start + n * step, step, dtype=dt)


@impl(g.ArangeOp)
def _arange(op):
    dt = torch_dtype(op.result.type.element_type)
    start, step = (g.scalar_value(op.properties[k]) for k in ("start", "step"))
    if is_dynamic(op.result.type):
        t = op.result.type
        return _needs_env(lambda env: _arange_value(sizes(t, env)[0], start, step, dt))
    value = _arange_value(shape_of(op.result.type)[0], start, step, dt)
    return lambda: value


@impl(g.TriangularOp)
def _triangular(op):
    d, upper = _prop_int(op, "diagonal"), op.upper is not None
    return (lambda x: torch.triu(x, d)) if upper else (lambda x: torch.tril(x, d))


_REDUCE = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin}


@impl(g.ReduceOp)
def _reduce(op):
    kind, dims, keep = op.kind.data, _prop_ints(op, "dims"), op.keepdim is not None
    if kind in _REDUCE:
        f = _REDUCE[kind]
        return lambda x: f(x, dim=dims, keepdim=keep)
    f = {"prod": torch.prod, "any": torch.any, "all": torch.all}[kind]

    def run(x):
        for d in sorted(dims, reverse=True):
            x = f(x, dim=d, keepdim=keep)
        return x

    return run


@impl(g.ArgReduceOp)
def _arg_reduce(op):
    f = torch.argmax if op.kind.data == "argmax" else torch.argmin
    d, keep = _prop_int(op, "dim"), op.keepdim is not None
    # torch.argmax refuses bools, while max(dim) of bools has indices: take them on bytes
    return lambda x: f(x.to(torch.uint8) if x.dtype == torch.bool else x, dim=d, keepdim=keep)


@impl(g.SoftmaxOp, g.LogSoftmaxOp, g.CumsumOp, g.CumprodOp)
def _along(op):
    f = {g.SoftmaxOp: torch.softmax, g.LogSoftmaxOp: torch.log_softmax, g.CumsumOp: torch.cumsum,
         g.CumprodOp: torch.cumprod}[type(op)]
    d = _prop_int(op, "dim")
    return lambda x: f(x, d)


@impl(g.LayerNormOp)
def _layer_norm(op):
    n, eps = _prop_int(op, "normalized_ndim"), op.eps.value.data
    has_w, has_b = op.weight is not None, op.bias is not None

    def run(x, *params):
        params = list(params)
        w = params.pop(0) if has_w else None
        b = params.pop(0) if has_b else None
        return F.layer_norm(x, x.shape[-n:], w, b, eps)

    return run


@impl(g.RmsNormOp)
def _rms_norm(op):
    n, eps = _prop_int(op, "normalized_ndim"), op.eps.value.data
    return lambda x, w=None: F.rms_norm(x, x.shape[-n:], w, eps)


@impl(g.BatchNormOp)
def _batch_norm(op):
    eps, has_w, has_b = op.eps.value.data, op.weight is not None, op.bias is not None

    def run(x, mean, var, *params):
        params = list(params)
        w = params.pop(0) if has_w else None
        b = params.pop(0) if has_b else None
        return F.batch_norm(x, mean, var, w, b, False, 0.0, eps)

    return run


@impl(g.MatmulOp)
def _matmul(op):
    return torch.matmul


@impl(g.LinearOp)
def _linear(op):
    return F.linear


@impl(g.ConvOp)
def _conv(op):
    stride, padding, dilation = (_prop_ints(op, k) for k in ("stride", "padding", "dilation"))
    groups = _prop_int(op, "groups")
    f = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(stride)]
    return lambda x, w, b=None: f(x, w, b, stride, padding, dilation, groups)


@impl(g.PoolOp)
def _pool(op):
    k, s, p = (_prop_ints(op, n) for n in ("kernel", "stride", "padding"))
    n = len(k)
    if op.kind.data == "max":
        f = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    else:
        f = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    return lambda x: f(x, k, s, p)


@impl(g.ReshapeOp)
def _reshape(op):
    t = op.result.type
    if is_dynamic(t):
        return _needs_env(lambda x, env: x.reshape(sizes(t, env, unknown=-1)))
    shape = shape_of(t)
    return lambda x: x.reshape(shape)


@impl(g.PermuteOp)
def _permute(op):
    perm = _prop_ints(op, "perm")
    return lambda x: x.permute(perm)


@impl(g.ExpandOp)
def _expand(op):
    t = op.result.type
    if is_dynamic(t):
        return _needs_env(lambda x, env: x.expand(sizes(t, env, unknown=-1)))
    shape = shape_of(t)
    return lambda x: x.expand(shape)


@impl(g.SliceOp)
def _slice(op):
    d, s, e, st = (_prop_int(op, k) for k in ("dim", "start", "end", "step"))
    if op.end_expr is not None:
        expr = op.end_expr.data
        return _needs_env(lambda x, env: x[(slice(None),) * d + (slice(s, int(symbolic.evaluate(expr, env)), st),)])
    index = (slice(None),) * d + (slice(s, e, st),)
    return lambda x: x[index]


@impl(g.ConcatOp)
def _concat(op):
    d = _prop_int(op, "dim")
    return lambda *xs: torch.cat(xs, d)


@impl(g.GatherOp)
def _gather(op):
    d = _prop_int(op, "dim")
    return lambda x, idx: x.index_select(d, idx.reshape(-1)).reshape(x.shape[:d] + idx.shape + x.shape[d + 1:])


@impl(g.IndexOp)
def _index(op):
    return lambda x, *idx: x[tuple(idx)]


@impl(g.GatherElementsOp)
def _gather_elements(op):
    d = _prop_int(op, "dim")
    return lambda x, idx: torch.gather(x, d, idx)


@impl(g.SliceScatterOp)
def _slice_scatter(op):
    d, s, e, st = (_prop_int(op, k) for k in ("dim", "start", "end", "step"))
    return lambda x, src: torch.slice_scatter(x, src, d, s, e, st)


@impl(g.ScatterOp)
def _scatter(op):
    d, kind, include_self = _prop_int(op, "dim"), op.reduce.data, op.exclude_self is None
    if kind == "none":
        return lambda x, idx, src: torch.scatter(x, d, idx, src)
    if kind == "sum" and include_self:
        return lambda x, idx, src: torch.scatter_add(x, d, idx, src)
    return lambda x, idx, src: torch.scatter_reduce(x, d, idx, src, kind, include_self=include_self)


@impl(g.IndexPutOp)
def _index_put(op):
    positions, accumulate = _prop_ints(op, "positions"), op.accumulate is not None

    def run(x, *args):
        *idx, values = args
        full: list = [None] * (positions[-1] + 1)
        for p, i in zip(positions, idx):
            full[p] = i
        return torch.ops.aten.index_put.default(x, full, values, accumulate)

    return run


@impl(g.PadOp)
def _pad(op):
    mode, low, high = op.mode.data, _prop_ints(op, "low"), _prop_ints(op, "high")
    if mode == "constant":
        pads = [n for lo, hi in zip(reversed(low), reversed(high)) for n in (lo, hi)]  # last dim first
        value = g.scalar_value(op.value)
        return lambda x: torch.constant_pad_nd(x, pads, value)
    # F.pad's other modes pad the last 1-3 dims of an [N, C, *spatial] tensor: fold the rest into C
    first = next(d for d, (lo, hi) in enumerate(zip(low, high)) if lo or hi) if any(low + high) else len(low)
    k = len(low) - first
    pads = [n for lo, hi in zip(reversed(low[first:]), reversed(high[first:])) for n in (lo, hi)]
    if k == 0:
        return lambda x: x.clone()

    def run(x):
        lead, tail = x.shape[:first], x.shape[first:]
        y = F.pad(x.reshape(1, -1, *tail), pads, mode)
        return y.reshape(*lead, *y.shape[2:])

    return run


def _upsample_call(op, kind: str):
    """fn(x) calling `aten.upsample_<kind><n>d` (or `_upsample_nearest_exact<n>d`) with the result's sizes."""
    t = op.result.type
    n = len(t.get_shape()) - 2
    scales = list(op.scales.get_values()) if op.scales is not None else [None] * n
    if kind == "nearest":
        name = f"_upsample_nearest_exact{n}d" if op.exact is not None else f"upsample_nearest{n}d"
        f, extra = getattr(torch.ops.aten, name).default, []
    else:
        name = {1: "upsample_linear1d", 2: "upsample_bilinear2d", 3: "upsample_trilinear3d"}[n]
        f = getattr(torch.ops.aten, name).default
        extra = [op.align_corners is not None]
    if is_dynamic(t):
        return _needs_env(lambda x, env: f(x, list(sizes(t, env))[2:], *extra, *scales))
    out = list(shape_of(t))[2:]
    return lambda x: f(x, out, *extra, *scales)


@impl(g.UpsampleNearestOp)
def _upsample_nearest(op):
    return _upsample_call(op, "nearest")


@impl(g.UpsampleLinearOp)
def _upsample_linear(op):
    return _upsample_call(op, "linear")


@impl(g.ConvTransposeOp)
def _conv_transpose(op):
    stride, padding, out_pad, dilation = (_prop_ints(op, k)
                                          for k in ("stride", "padding", "output_padding", "dilation"))
    groups = _prop_int(op, "groups")
    f = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[len(stride)]
    return lambda x, w, b=None: f(x, w, b, stride, padding, out_pad, groups, dilation)


def attention_reference(q, k, v, mask=None, scale=None, causal=False):
    """softmax(q kᵀ·scale + mask) v with causal (top-left aligned) and GQA, as `graph.attention` defines it."""
    gqa = q.shape[1] != k.shape[1]
    if causal and mask is not None:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        mask = (mask & keep) if mask.dtype == torch.bool else mask.masked_fill(~keep, -math.inf)
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=gqa)


@impl(g.AttentionOp)
def _attention(op):
    scale, causal = op.scale.value.data, op.causal is not None
    return lambda q, k, v, mask=None: attention_reference(q, k, v, mask, scale, causal)


@impl(g.ExternOp)
def _extern(op):
    target = externs.resolve(op.callee.data)  # an allowlisted operator overload, or ExternError
    spec = op.args.data
    externs.check_args(spec, len(op.operands))

    writes = op.writes is not None

    def run(*tensors):
        if not writes:  # graph values have no layout: the model's .contiguous() before this op is gone, and
            # some ATen ops (native_group_norm, ...) refuse a strided input
            tensors = [t.contiguous() if isinstance(t, torch.Tensor) else t for t in tensors]
        args, kwargs = externs.decode_args(spec, list(tensors))
        out = target(*args, **kwargs)
        return list(out) if isinstance(out, (tuple, list)) else out

    return run


@impl(g.KernelOp)
def _kernel(op):
    run = compile_block(op.body.block, list(op.outputs))
    return _needs_env(lambda *xs, env=None: run(*xs, env=env))


def compile_block(block: Block, _results=None) -> Callable[..., list[torch.Tensor]]:
    """A function from the block's argument tensors to its terminator's operand tensors."""
    slots: dict[SSAValue, int] = {a: i for i, a in enumerate(block.args)}
    steps = []
    term = block.last_op
    for op in block.ops:
        if op is term:
            break
        factory = OPS.get(type(op))
        if factory is None:
            raise SolderError(f"reference backend: no implementation for {op.name}; known: {', '.join(sorted(c.name for c in OPS))}")
        ins = [slots[o] for o in op.operands]
        outs = []
        for r in op.results:
            slots[r] = len(slots)
            outs.append(slots[r])
        fn = factory(op)
        steps.append((fn, ins, outs, getattr(fn, "wants_env", False)))
    ret = [slots[o] for o in term.operands]
    n = len(slots)

    def run(*args, env=None):
        vals = [None] * n
        vals[: len(args)] = args
        for fn, ins, outs, wants_env in steps:
            out = fn(*[vals[i] for i in ins], env=env) if wants_env else fn(*[vals[i] for i in ins])
            if len(outs) == 1:
                vals[outs[0]] = out[0] if isinstance(out, list) else out
            elif outs:  # (no outputs: an effect only, an assertion on data)
                for i, o in zip(outs, out):
                    vals[i] = o
        return [vals[i] for i in ret]

    return run




def block_sparse_reference(q, k, v, counts, indices, block, scale, causal, chunk=16):
    """Block-sparse attention on the CPU: per query block, only its listed key blocks, online softmax.

    q [B,Hq,T,D], k/v [B,Hkv,S,D]; counts [H or 1, nQB], indices [H or 1, nQB, maxK] (the kernels' CSR
    layout). Key blocks are gathered `chunk` at a time into a [B, Hq, block, chunk*block] score tile;
    running max / sum / accumulator in fp32, so no T x S buffer is ever built.
    """
    b, hq, t, d = q.shape
    s, group = k.shape[2], hq // k.shape[1]
    n_k = -(-s // block)
    pad = n_k * block - s
    kb = F.pad(k, (0, 0, 0, pad)).repeat_interleave(group, 1).view(b, hq, n_k, block, d)
    vb = F.pad(v, (0, 0, 0, pad)).repeat_interleave(group, 1).view(b, hq, n_k, block, v.shape[3])
    counts, indices = counts.expand(hq, -1).long(), indices.expand(hq, -1, -1).long()
    heads = torch.arange(hq)[:, None]
    out = torch.empty(b, hq, t, v.shape[3], dtype=q.dtype)
    col = torch.arange(block)
    for i in range(counts.shape[1]):
        rows = torch.arange(i * block, min(t, (i + 1) * block))
        qi = q[:, :, rows].float() * scale
        m = torch.full((b, hq, len(rows), 1), -math.inf)
        l = torch.zeros(b, hq, len(rows), 1)
        acc = torch.zeros(b, hq, len(rows), v.shape[3])
        n = int(counts[:, i].max())
        for j0 in range(0, n, chunk):
            idx = indices[:, i, j0:j0 + chunk]  # [Hq, c]
            keys = (idx[:, :, None] * block + col).flatten(1)  # [Hq, c*block] token positions
            ok = (torch.arange(j0, j0 + idx.shape[1])[None, :] < counts[:, i, None]).repeat_interleave(block, 1)
            ok = ok[:, None, :] & (keys[:, None, :] < s)
            if causal:
                ok = ok & (keys[:, None, :] <= rows[None, :, None])
            sc = qi @ kb[:, heads, idx].flatten(2, 3).float().transpose(-1, -2)
            sc = sc.masked_fill(~ok, -math.inf)
            m_new = torch.maximum(m, sc.amax(-1, keepdim=True))
            m_safe = m_new.masked_fill(m_new == -math.inf, 0.0)
            p = torch.exp(sc - m_safe)
            alpha = torch.exp(m - m_safe)
            l = l * alpha + p.sum(-1, keepdim=True)
            acc = acc * alpha + p @ vb[:, heads, idx].flatten(2, 3).float()
            m = m_new
        out[:, :, rows] = (acc / l.masked_fill(l == 0, 1.0)).to(q.dtype)
    return out


@impl(g.BlockSparseAttentionOp)
def _block_sparse_attention(op):
    from solder.compiler.sparse_attention import OpSpec, call_layouts

    spec = OpSpec.of(op)

    def run(q, k, v):
        layouts = call_layouts(spec, q, k)
        if len(layouts) == 1:
            return block_sparse_reference(q, k, v, *layouts[0], spec.block, spec.scale, spec.causal)
        return torch.cat([block_sparse_reference(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, x, spec.block, spec.scale,
                                                 spec.causal) for i, (c, x) in enumerate(layouts)])

    return run
