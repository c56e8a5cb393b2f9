"""How `graph.attention` and `graph.block_sparse_attention` run on the CPU backend: the generated flash kernel
(attention.py writes it) or torch SDPA where it does not apply, and the launch that calls a compiled kernel.

`plan` decides the route of one op (the route string explain() prints says which and why); `_dense_call` /
`_sparse_call` turn a compiled kernel into the step's callable: q/k/v as the planner's views' bases (contiguous
f32, made so when a caller's tensor is not) or [B, H, T, D] tensors, the output [B, H, T, Dv] or, when the planner
took the heads' merge into the step, [B, T, H, Dv] memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from solder.backends.cpu import attention_lib, jit
from solder.backends.cpu.attention import (  # noqa: F401  (emit/module: the kernel text)
    BLOCK_K,
    BLOCK_Q,
    PARALLEL_MIN_FLOPS,
    AttentionSpec,
    emit,
    module,
)
from solder.backends.reference import attention_reference
from solder.backends.routes import Route
from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import shape_of
from solder.compiler.sparse_attention import call_layouts, static_layout

ROUTE = "mlir: flash attention"
SDPA_ROUTE = "library: F.scaled_dot_product_attention"
LIB_ROUTE = "library: flash attention"  # attention_lib.py's prebuilt kernel
_FLOAT = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


@dataclass
class AttentionPlan:
    """How one attention op runs: `spec` set means the generated kernel (`launcher(kernel)` gives
    the callable over the op's operands); otherwise `route` is the library call. `note` says why."""

    route: str
    note: str
    spec: AttentionSpec | None = None
    launcher: object = None
    kind: Route = Route.LIBRARY  # GENERATED with a spec; EAGER where the reference backend runs the op

    def arg_types(self) -> list[tuple[tuple[int, ...], str]]:
        names = {torch.float32: "f32", torch.int8: "i8", torch.int32: "i32"}
        return [(shape, names[dt]) for shape, dt in self.spec.arg_shapes()]


def plan(op, views: tuple = (None, None, None), out_bthd: bool = False) -> AttentionPlan:
    """The route of one attention op on the CPU backend: the generated kernel, except where it does
    not apply (element type, a mask that does not broadcast): torch SDPA then, and the route says why.
    No shape is routed to SDPA for speed: benchmarks/cpu_attention.py (op level, one thread each)
    measured the kernel at 0.9-1.2x SDPA non-causal and 1.2-1.9x causal on a shared 2-core machine,
    within that machine's noise of SDPA where it trails. Block-sparse attention always gets the
    kernel (it visits only the layout's blocks)."""
    q, k, v = (shape_of(x.type) for x in (op.query, op.key, op.value))
    elem = str(op.query.type.element_type)
    sparse = isinstance(op, g.BlockSparseAttentionOp)
    bad = _unsupported(op, elem)
    if bad:
        if sparse:
            return AttentionPlan("reference", f"the generated kernel does not cover {bad}", kind=Route.EAGER)
        return AttentionPlan(f"{SDPA_ROUTE} (the generated kernel does not cover {bad})", "")
    flops = 4 * q[0] * q[1] * q[2] * k[2] * q[3]
    parallel = _threads() > 1 and flops >= PARALLEL_MIN_FLOPS
    if elem != "f32":
        views, out_bthd = (None, None, None), False
    common = {"b": q[0], "hq": q[1], "t": q[2], "d": q[3], "hkv": k[1], "s": k[2], "dv": v[3],
              "scale": op.scale.value.data, "causal": op.causal is not None, "parallel": parallel,
              "views": tuple(views), "out_bthd": out_bthd}
    if sparse:
        from solder.compiler.sparse_attention import OpSpec
        ospec = OpSpec.of(op)
        lb, lh = (q[0], q[1]) if ospec.dynamic else (1, _static_heads(ospec, q[1], q[2], k[2]))
        if ospec.dynamic:  # per-call layouts are computed from the [B, H, T, D] q and k themselves
            common["views"] = (None, None, None)
        spec = AttentionSpec(**common, sparse=(lb, lh), bq=ospec.block, bk=ospec.block)
        return AttentionPlan(_route(spec, "block-sparse: only the layout's key blocks"), "", spec,
                             lambda kern, out_view=None: _sparse_call(spec, kern, ospec, out_view), Route.GENERATED)
    mask, mshape = "", ()
    if op.mask is not None:
        mt = op.mask.type
        mask = "bool" if str(mt.element_type) == "i1" else "add"
        mshape = (1,) * (4 - len(shape_of(mt))) + shape_of(mt)
    spec = AttentionSpec(**common, mask=mask, mask_shape=mshape)
    return AttentionPlan(_route(spec, "default: no TxS buffer"), "", spec,
                         lambda kern, out_view=None: _dense_call(spec, kern, out_view), Route.GENERATED)


def dynamic_prebuilt(op):
    """The install's size-generic kernel for an attention op of a dynamic module (f32/bf16/f16, a mask that
    broadcasts), as `(q, k, v[, mask]) -> out` with a `describe` text; else None. Symbolic head dims are read per
    call (SDPA for a call whose head dims have no prebuilt kernel)."""

    q, v = shape_of(op.query.type), shape_of(op.value.type)
    if _unsupported(op, str(op.query.type.element_type)):
        return None
    mask, row = "", False
    if op.mask is not None:
        mask = "bool" if str(op.mask.type.element_type) == "i1" else "add"
        row = shape_of(op.mask.type)[-1] != 1
    causal, scale = op.causal is not None, op.scale.value.data
    variant = (max(q[3], -1), max(v[3], -1), causal, mask, row, False, BLOCK_Q, BLOCK_K)

    def sdpa(q, k, v, mask=None):
        return attention_reference(q, k, v, mask, scale, causal)
    call = attention_lib.dynamic(variant, scale, sdpa)
    if call is not None:
        call.describe = attention_lib._generic(variant).describe()
        if q[3] < 0 or v[3] < 0:
            call.describe += ", SDPA for a head dim without a prebuilt kernel"
    return call


def _route(spec: AttentionSpec, why: str) -> str:
    return f"{ROUTE} ({spec.describe()}; {why})"


def _unsupported(op, elem: str) -> str:
    if elem not in _FLOAT:
        return f"element type {elem} (f32, bf16, f16 only)"
    q, k = shape_of(op.query.type), shape_of(op.key.type)
    if getattr(op, "mask", None) is not None:
        ms = shape_of(op.mask.type)
        full = (q[0], q[1], q[2], k[2])
        ms4 = (1,) * (4 - len(ms)) + ms
        if len(ms) > 4 or any(m not in (1, f) for m, f in zip(ms4, full)):
            return f"a mask of shape {list(ms)} (broadcastable to {list(full)} expected)"
        if str(op.mask.type.element_type) not in ("i1", *_FLOAT):
            return f"a mask of element type {op.mask.type.element_type}"
    return ""


def _threads() -> int:
    """Threads for the kernel: torch's count when libomp is there (else 1). libomp's workers would
    spin for 200 ms after each kernel (KMP_BLOCKTIME), taking the cores from the torch ops that
    follow (measured: SDPA at T=256 after the kernel 8 ms instead of 0.6 ms): they sleep at once
    unless the user set KMP_BLOCKTIME (read when libomp starts its first parallel region)."""
    if torch.get_num_threads() < 2 or jit.find_openmp() is None:
        return 1
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    return torch.get_num_threads()


def _static_heads(ospec, n_heads: int, t: int, s: int) -> int:
    return static_layout(ospec, n_heads, t, s)[0].shape[0]


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).contiguous()


def _out(spec: AttentionSpec) -> tuple[tuple[int, ...], object]:
    """The output's allocation shape and the view of it the op returns ([B, H, T, Dv] logically)."""
    if spec.out_bthd:
        return (spec.b, spec.t, spec.hq, spec.dv), lambda o: o.permute(0, 2, 1, 3)
    return (spec.b, spec.hq, spec.t, spec.dv), lambda o: o


def _dense_call(spec: AttentionSpec, kernel, out_view=None):
    """The launch of a dense kernel: q, k, v arrive as the planner's views' bases (contiguous f32, made so
    here if a caller's tensor is not) or as [B, H, T, D] tensors; `out_view` maps the [B, T, H, Dv]
    output to the value the step yields (the planner took the heads' merge into the step)."""
    out_shape, logical = _out(spec)
    out_view = out_view or logical
    call = kernel.call_unchecked  # shapes, dtypes and contiguity are ensured here

    def run(q, k, v, mask=None):
        dt = q.dtype
        args = [_f32(q), _f32(k), _f32(v)]
        if spec.mask == "add":
            args.append(_f32(mask).reshape(spec.mask_shape))
        elif spec.mask == "bool":
            args.append(mask.reshape(spec.mask_shape).contiguous().view(torch.int8))
        out = torch.empty(out_shape, dtype=torch.float32)
        call(*args, out)
        out = out_view(out)
        return out if dt == torch.float32 else out.to(dt)
    return run


def sparse_layout_args(spec: AttentionSpec, layouts) -> tuple[torch.Tensor, torch.Tensor]:
    """counts [LB, LH, nQB] and indices [LB, LH, nQB, nKB] (padded) from per-batch CSR layouts."""
    lb, lh = spec.sparse
    counts = torch.stack([c.expand(lh, -1) for c, _ in layouts]).to(torch.int32)
    idx = [torch.nn.functional.pad(i, (0, spec.nk - i.shape[-1])).expand(lh, -1, -1) for _, i in layouts]
    counts, idx = counts.expand(lb, -1, -1), torch.stack(idx).to(torch.int32).expand(lb, -1, -1, -1)
    return counts.contiguous(), idx.contiguous()


def _sparse_call(spec: AttentionSpec, kernel, ospec, out_view=None):
    out_shape, logical = _out(spec)
    out_view = out_view or logical
    fixed = None
    if not ospec.dynamic:
        fixed = sparse_layout_args(spec, [static_layout(ospec, spec.hq, spec.t, spec.s)])

    def run(q, k, v):
        lay = fixed if fixed is not None else sparse_layout_args(spec, call_layouts(ospec, q, k))
        out = torch.empty(out_shape, dtype=torch.float32)
        kernel.call_unchecked(_f32(q), _f32(k), _f32(v), *lay, out)
        out = out_view(out)
        return out if q.dtype == torch.float32 else out.to(q.dtype)
    return run
