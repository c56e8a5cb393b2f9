"""The Triton backend's templates and library calls: GEMM routing (template with fused epilogue, cuBLAS, or
autotuned between them on the first call), flash and block-sparse attention, row templates (softmax, layer
norm, RMS norm), torch views, and constants made per size binding. backend.py's planner builds steps from
these."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from xdsl.ir import OpResult, SSAValue

from solder.backends.reference import OPS as REFERENCE_OPS
from solder.backends.lowering.steps import StepKind
from solder.compiler import log
from solder.compiler.dialects import graph as g
from solder.compiler.dialects.traits import Attention, Source
from solder.compiler.dialects.types import dims_of, dtype_name

_log = log.get("backend")
GEMMS = (g.LinearOp, g.MatmulOp)
TEMPLATE_OPS = (*GEMMS, g.AttentionOp, g.BlockSparseAttentionOp, g.SoftmaxOp, g.LayerNormOp, g.RmsNormOp)
"""Ops with a Triton template (GEMMs also have cuBLAS as their library route)."""
_ACT = {g.ReluOp: "relu", g.SiluOp: "silu"}
_TEMPLATE_DTYPES = ("float32", "float16", "bfloat16")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _templates():
    """The templates package, or None while it is missing or broken (its ops then fall back)."""
    try:
        from solder.backends.triton import templates
    except Exception as e:  # noqa: BLE001 - any import failure means "no templates"
        _log.warning("triton: templates unavailable (%s); their ops run through the reference backend", e)
        return None
    return templates


def _dtype(v: SSAValue) -> str:
    return dtype_name(v.type.element_type)


def _interpreter_dot_broken(dtype: str) -> bool:
    """Triton 3.7's CPU interpreter computes `tl.dot` on bf16 wrongly (fp16/fp32 are exact)."""
    return dtype == "bfloat16" and interpreting()


def _use_template(planner, dtype: str, epilogue: bool) -> bool:
    """GEMM route: the Triton template where it pays (a fused epilogue on 16-bit), else cuBLAS."""
    if _interpreter_dot_broken(dtype):
        return False
    if planner.gemm != "auto":
        return planner.gemm == "template"
    return interpreting() or (dtype in ("float16", "bfloat16") and epilogue)


def _gemm_layout(linear: bool, a_shape, b_shape, out_shape):
    """(shape_a, shape_b, shape_r, out_shape) the matmul template views its operands as, or None."""
    k_dim, n_dim = a_shape[-1], out_shape[-1]
    m_dim = out_shape[-2] if len(out_shape) >= 2 else 1
    if linear or len(b_shape) == 2:
        return (-1, k_dim), None, (-1, n_dim), tuple(out_shape)
    if a_shape[:-2] == b_shape[:-2]:
        return (-1, m_dim, k_dim), (-1, k_dim, n_dim), (-1, m_dim, n_dim), tuple(out_shape)
    return None


def _gemm_fn(T, anchor, out_shape, act: str, has_bias: bool, has_res: bool):
    """fn(a, b, [bias], [residual]) calling the matmul template, or None if the shapes do not map.

    `out_shape` may hold size expressions (a dynamic module): the route is decided on the expressions
    and the views' sizes are evaluated under each call's binding (`at(env)`)."""
    a_type, b_type, out_type = anchor.operands[0].type, anchor.operands[1].type, anchor.results[0].type
    linear = isinstance(anchor, g.LinearOp)
    layout = _gemm_layout(linear, dims_of(a_type), dims_of(b_type), out_shape)
    if layout is None:
        return None

    def run(shapes, a, b, *rest):
        shape_a, shape_b, shape_r, out = shapes
        it = iter(rest)
        bias = next(it).contiguous() if has_bias else None
        res = next(it).reshape(shape_r) if has_res else None
        b2 = b if shape_b is None else b.reshape(shape_b)
        y = T.matmul(a.reshape(shape_a), b2, trans_b=linear, bias=bias, activation=act, residual=res)
        return y.view(out)

    def run_library(shapes, a, b, *rest):
        import torch
        import torch.nn.functional as F

        it = iter(rest)
        bias = next(it) if has_bias else None
        y = F.linear(a, b, bias) if linear else (torch.matmul(a, b) if bias is None else torch.matmul(a, b) + bias)
        y = _torch_activations()[act](y)
        return (y + next(it) if has_res else y).view(shapes[3])

    if all(isinstance(d, int) for shape in (dims_of(a_type), dims_of(b_type), out_shape) for d in shape):
        return Autotuned({"template": functools.partial(run, layout),
                          "cublas+eager epilogue": functools.partial(run_library, layout)})
    from solder.backends.reference import sizes

    def at(env):
        return _gemm_layout(linear, sizes(a_type, env), sizes(b_type, env), sizes(out_type, env))

    return Autotuned({"template": run, "cublas+eager epilogue": run_library}, at=at)


@functools.cache
def _torch_activations() -> dict:
    import torch.nn.functional as F

    return {"none": lambda y: y, "relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
            "silu": F.silu}


class Autotuned:
    """A bounded autotune between equivalent implementations of one step (the cost model cannot yet
    rank a fused-epilogue Triton GEMM against cuBLAS plus an epilogue kernel: measured here, the
    template wins at 8192x4096x4096 and loses at 8192x4096->16384). On the first CUDA call each
    candidate runs once to warm up and three times timed with CUDA events; the fastest is kept.
    Elsewhere (the interpreter, CPU tensors) the first candidate runs."""

    def __init__(self, candidates: dict, at: Callable | None = None):
        self.candidates, self.choice, self.timings = candidates, None, {}
        self._at = at  # a dynamic module's: env -> the leading shape argument of every candidate

    def __call__(self, *args):
        if self.choice is None:
            self.choice = self._pick(args)
        return self.candidates[self.choice](*args)

    @property
    def wants_env(self) -> bool:
        return self._at is not None

    def at(self, env) -> Callable:
        """The step function for one binding (the choice between candidates is made once, at the first size)."""
        shapes = self._at(env)
        return functools.partial(self, shapes)

    def _pick(self, args) -> str:
        import torch

        first = next(iter(self.candidates))
        lead = next((a for a in args if hasattr(a, "is_cuda")), None)
        if interpreting() or not (lead is not None and lead.is_cuda) or torch.cuda.is_current_stream_capturing():
            return first
        for name, fn in self.candidates.items():
            fn(*args)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(3):
                fn(*args)
            end.record()
            end.synchronize()
            self.timings[name] = start.elapsed_time(end) / 3e3
        return min(self.timings, key=self.timings.get)


def _cublas_fn(op):
    """cuBLAS for a GEMM; for a 16-bit one with N or K off a multiple of 8 elements (16 bytes), autotuned
    against the same GEMM on operands padded to that multiple (cuBLAS takes a slow kernel for rows that are
    not 16-byte aligned: GPT-2's 50257-wide vocabulary projection ran 7.6x slower than padded)."""
    import torch
    import torch.nn.functional as F

    plain = F.linear if isinstance(op, g.LinearOp) else torch.matmul
    a, b = (dims_of(v.type) for v in op.operands[:2])
    n, k = (b[0], b[-1]) if isinstance(op, g.LinearOp) else (b[-1], b[-2] if len(b) > 1 else 1)
    misaligned = any(not isinstance(d, int) or d % ALIGN for d in (n, k))
    if _dtype(op.results[0]) not in ("float16", "bfloat16") or not misaligned or len(b) != 2:
        return plain
    return Autotuned({"cublas-padded": functools.partial(_padded_gemm, isinstance(op, g.LinearOp)), "cublas": plain})


ALIGN = 8  # elements of a 16-bit row that make 16 bytes


def _padded_gemm(linear: bool, a, b, bias=None):
    """`F.linear(a, b, bias)` or `a @ b` with N and K zero-padded to `ALIGN`, the result cut back (contiguous)."""
    import torch
    import torch.nn.functional as F

    n, k = (b.shape[0], b.shape[1]) if linear else (b.shape[1], b.shape[0])
    pn, pk = -n % ALIGN, -k % ALIGN
    if pk:
        a = F.pad(a, (0, pk))
    if linear:
        y = F.linear(a, F.pad(b, (0, pk, 0, pn)), None if bias is None else F.pad(bias, (0, pn)))
    else:
        y = torch.matmul(a, F.pad(b, (0, pn, 0, pk)))
        if bias is not None:
            y = y + F.pad(bias, (0, pn))
    return y[..., :n].contiguous() if pn else y


def gemm_epilogue_step(anchor, rest, planner):
    """(name, fn, ins, out) of `act(anchor + bias) + residual` on the matmul template, or None."""
    T = _templates()
    cur = anchor.results[0]
    out_shape = dims_of(cur.type)
    has_own_bias = isinstance(anchor, g.LinearOp) and anchor.bias is not None
    bias = res = None
    act = "none"
    for op in rest:
        ins = [planner.canon(o) for o in op.operands]
        if cur not in ins or cur in planner.results or len(planner.users.get(cur, [])) != 1:
            return None
        if type(op) in _ACT or isinstance(op, g.GeluOp):
            if act != "none" or res is not None:
                return None
            act = _ACT.get(type(op)) or ("gelu_tanh" if op.approximate.data == "tanh" else "gelu")
        elif isinstance(op, g.AddOp) and len(ins) == 2 and ins[0] is not ins[1]:
            other = ins[1] if ins[0] is cur else ins[0]
            if dims_of(other.type) == out_shape[-1:] and not (bias or has_own_bias or act != "none" or res):
                bias = other
            elif dims_of(other.type) == out_shape and res is None:
                res = other
            else:
                return None
        else:
            return None
        cur = op.results[0]
    if T is None or not rest or planner.outputs([anchor] + list(rest)) != [cur]:
        return None
    if _dtype(cur) not in _TEMPLATE_DTYPES or not _use_template(planner, _dtype(cur), True):
        return None
    fn = _gemm_fn(T, anchor, out_shape, act, has_own_bias or bias is not None, res is not None)
    if fn is None:
        return None
    ins = [planner.canon(o) for o in anchor.operands[:2]]
    ins += [planner.canon(anchor.bias)] if has_own_bias else [bias] if bias is not None else []
    ins += [res] if res is not None else []
    return f"matmul[{act}{'+bias' if has_own_bias or bias else ''}{'+res' if res else ''}]", fn, ins, cur


def _owner(planner, v: SSAValue, cls: type):
    op = v.owner if isinstance(v, OpResult) else None
    return op if isinstance(op, cls) and planner.free(op) else None


def _gqa_source(planner, v: SSAValue) -> SSAValue:
    """k/v before `reshape(expand(reshape(x)))` repeats its heads (GQA), else `v` itself."""
    r3 = _owner(planner, v, g.ReshapeOp)
    ex = r3 and _owner(planner, planner.canon(r3.input), g.ExpandOp)
    r1 = ex and _owner(planner, planner.canon(ex.input), g.ReshapeOp)
    if not r1:
        return v
    x = planner.canon(r1.input)
    (b, h, s, d), gs = dims_of(x.type), dims_of(ex.result.type)
    if len(gs) != 5 or not (isinstance(h, int) and isinstance(gs[2], int)):
        return v
    ok = (dims_of(r1.result.type) == (b, h, 1, s, d) and gs[:2] == (b, h)
          and gs[3:] == (s, d) and dims_of(r3.result.type) == (b, h * gs[2], s, d))
    return x if ok else v


def _attention_step(T, op, ins, planner):
    q, k, v = ins[:3]
    d = dims_of(q.type)[3]
    if d not in (16, 32, 64, 128, 256) or dims_of(k.type) != dims_of(v.type):
        return None
    k2, v2 = _gqa_source(planner, k), _gqa_source(planner, v)
    if dims_of(k2.type) == dims_of(v2.type):
        k, v = k2, v2
    scale, causal = op.scale.value.data, op.causal is not None

    def run(q, k, v, mask=None):
        return T.flash_attention(q, k, v, mask=mask, causal=causal, scale=scale)

    return StepKind.TEMPLATE, "flash_attention", run, [q, k, v] + ins[3:]


def _block_sparse_step(op, ins):
    """The block-sparse flash template through `backends/triton/sparse.py` (layouts cached there)."""
    from solder.backends.triton import sparse

    if not sparse.supports(op):
        return None
    return StepKind.TEMPLATE, "block_sparse_attention", sparse.block_sparse_fn(op), ins[:3]


def _row_step(T, op, ins):
    rank = len(dims_of(op.operands[0].type))
    if isinstance(op, g.SoftmaxOp):
        if op.dim.value.data != rank - 1:
            return None
        return StepKind.TEMPLATE, "softmax", lambda x: T.softmax(x), ins
    if op.normalized_ndim.value.data != 1:
        return None
    eps = op.eps.value.data
    if isinstance(op, g.RmsNormOp):
        return StepKind.TEMPLATE, "rms_norm", (lambda x, w=None: T.rms_norm(x, w, eps)), ins
    has_w, has_b = op.weight is not None, op.bias is not None

    def run(x, *p):
        w = p[0] if has_w else None
        b = p[-1] if has_b else None
        return T.layer_norm(x, w, b, eps)

    return StepKind.TEMPLATE, "layer_norm", run, ins


def template_step(op, ins, planner):
    """(kind, name, fn, ins) for an op that runs as a template or a library call, else None."""
    if not isinstance(op, TEMPLATE_OPS) or _dtype(op.results[0]) not in _TEMPLATE_DTYPES:
        return None
    T = _templates()
    if isinstance(op, GEMMS):
        if T is not None and _use_template(planner, _dtype(op.results[0]), False):
            has_bias = isinstance(op, g.LinearOp) and op.bias is not None
            fn = _gemm_fn(T, op, dims_of(op.results[0].type), "none", has_bias, False)
            if fn is not None:
                return StepKind.TEMPLATE, f"matmul[none{'+bias' if has_bias else ''}]", fn, ins
        return StepKind.EXTERN, f"cublas.{op.name.removeprefix(g.PREFIX)}", _cublas_fn(op), ins
    if T is None:
        return None
    if op.has_trait(Attention):
        if _interpreter_dot_broken(_dtype(op.results[0])):
            return None
        if isinstance(op, g.BlockSparseAttentionOp):
            return _block_sparse_step(op, ins)
        return _attention_step(T, op, ins, planner)
    return _row_step(T, op, ins)


def view_fn(op):
    """(fn, needs_device) materializing a top-level layout op (a torch view) or constant."""
    fn = REFERENCE_OPS[type(op)](op)
    if not op.has_trait(Source):
        return fn, False
    if getattr(fn, "wants_env", False):  # a constant of dynamic size: made once per binding and device
        return _SizedConstant(fn), True
    value, cache = fn(), {}

    def on(device):
        if device not in cache:
            cache[device] = value.to(device)
        return cache[device]

    return on, True


class _SizedConstant:
    """A constant or arange of dynamic size: `at(env)` gives `on(device)`, made once per binding and device
    (as a static constant is made once per device), so a CUDA graph capture copies nothing to the device."""

    wants_env = True

    def __init__(self, make):
        self.make = make

    def at(self, env) -> Callable:
        cache: dict = {}

        def on(device):
            if device not in cache:
                cache[device] = self.make(env=env).to(device)
            return cache[device]

        return on


