"""Matching for `recognize-attention`: the scores chain of a hand-written attention, masks, GQA repeats.

A hand-written attention is read backwards from its last matmul:

    P @ V   where P = [cast] softmax(S, dim=-1) [cast back]
    S       = chain of {cast, mul/div by a scalar constant, where(cond, -inf, ·), add(mask)} over
    Q @ Kᵀ  (Q and Kᵀ may carry their own scalar scale factors)

Every intermediate of the chain must have exactly one user and the shape of the scores; anything
else is not attention (or not only attention) and is left alone. Masks are evaluated at compile
time when they depend on no function argument (`evaluate`), so that causal masks built from
tril/triu/arange/ones are recognized by their values, whatever ops spelled them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from xdsl.ir import BlockArgument, Operation, SSAValue

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import dims_of, is_float, torch_dtype
from solder.compiler.interpret import OPS

EVAL_BYTES = 1 << 26
"""Largest tensor (bytes) that a compile-time mask evaluation may produce."""

_RANDOM = ("rand", "normal", "bernoulli", "dropout", "uniform", "multinomial", "empty", "poisson",
           "exponential", "geometric", "cauchy", "log_normal")


@dataclass
class Mask:
    """One mask met on the scores chain.

    `value` is a boolean keep-mask (True = keep), a boolean drop-mask when `negate` (masked_fill's
    condition), or an additive float mask; `factor` is the scale applied to the scores after it.
    """

    value: SSAValue
    additive: bool
    spelling: str
    negate: bool = False
    factor: float = 1.0
    frame: tuple[int, ...] | None = None
    """The scores shape where the mask applied, when a batch-only reshape separates it from q @ kᵀ."""


@dataclass
class ChainMatch:
    """A recognized `softmax(q @ kᵀ · scale + masks) @ v` and the ops it replaces (last op first)."""

    q: SSAValue
    kt: SSAValue
    v: SSAValue
    kt_perm: list[int] | None
    """When set, kᵀ is `permute(kt, kt_perm)` (a scale was peeled from under the permute)."""
    scale: float
    masks: list[Mask] = field(default_factory=list)
    chain: list[Operation] = field(default_factory=list)
    upcast: bool = False


def shape(v: SSAValue) -> tuple:
    """v's dims: ints, and expression strings for `?` dims (so types built from them keep the expressions)."""
    return dims_of(v.type)


def elem(v: SSAValue):
    return v.type.element_type


def scalar_constant(v: SSAValue) -> float | None:
    """The value of a constant whose every dim is 1 (a scalar), else None."""
    op = v.owner
    if not isinstance(op, g.ConstantOp) or any(d != 1 for d in shape(v)):
        return None
    return float(op.py_value)


def is_neg_inf_like(v: SSAValue) -> bool:
    """A scalar constant that acts as -inf under softmax: -inf, finfo.min-like, or <= -1e9."""
    c = scalar_constant(v)
    if c is None or not is_float(elem(v)):
        return False
    threshold = max(0.5 * torch.finfo(torch_dtype(elem(v))).min, -1e9)
    return c == float("-inf") or c <= threshold


def _scaled_operand(op: Operation) -> tuple[SSAValue, float] | None:
    """(x, f) when `op` is x * c, c * x or x / c with a scalar constant c (f = c or 1/c)."""
    if isinstance(op, g.MulOp):
        for a, b in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            c = scalar_constant(b)
            if c is not None and scalar_constant(a) is None:
                return a, c
    if isinstance(op, g.DivOp):
        c = scalar_constant(op.rhs)
        if c is not None and c != 0 and scalar_constant(op.lhs) is None:
            return op.lhs, 1.0 / c
    return None


def peel_scale(v: SSAValue) -> tuple[SSAValue, float]:
    """Strips scalar-constant mul/div factors off `v` (any number of users): (base, product)."""
    factor = 1.0
    while (hit := _scaled_operand(v.owner) if isinstance(v.owner, Operation) else None) is not None:
        v, f = hit
        factor *= f
    return v, factor


def _is_float_cast(op: Operation) -> bool:
    return isinstance(op, g.CastOp) and is_float(elem(op.input)) and is_float(elem(op.result))


def _single_use(v: SSAValue) -> bool:
    return v.has_one_use()


def match_chain(pv: g.MatmulOp) -> ChainMatch | None:
    """The attention ending in `pv` = P @ V, or None if `pv` is not the end of one."""
    p, chain, upcast = pv.lhs, [pv], False
    if isinstance(p.owner, g.CastOp) and _is_float_cast(p.owner) and _single_use(p):
        chain.append(p.owner)
        p, upcast = p.owner.input, True
    run = _layout_run(p)
    if run is not None and _single_use(p):
        chain.extend(run[1])
        p = run[0]
    sm = p.owner
    if not isinstance(sm, g.SoftmaxOp) or not _single_use(p):
        return None
    scores_shape = shape(sm.input)
    if len(scores_shape) not in (3, 4) or sm.dim.value.data != len(scores_shape) - 1:
        return None  # softmax over another axis is not attention
    chain.append(sm)
    return _walk_scores(sm.input, scores_shape, pv, chain, [], 1.0, upcast)


def _walk_scores(s: SSAValue, want: tuple[int, ...], pv, chain, masks, factor, upcast) -> ChainMatch | None:
    """Walks one step back along the scores chain; recursion gives backtracking over add's operands."""
    op = s.owner
    if not isinstance(op, Operation) or not _single_use(s) or shape(s) != want or not is_float(elem(s)):
        return None
    if isinstance(op, g.MatmulOp):
        return _finish(op, pv, chain + [op], masks, factor, upcast)
    if _is_float_cast(op):
        return _walk_scores(op.input, want, pv, chain + [op], masks, factor, True)
    run = _layout_run(s)
    if run is not None:  # e.g. einsum's [B*H,T,S] -> [B,H,T,S]: masks so far live in the outer frame
        framed = [m if m.frame is not None else _with_frame(m, want) for m in masks]
        return _walk_scores(run[0], shape(run[0]), pv, chain + run[1], framed, factor, upcast)
    scaled = _scaled_operand(op)
    if scaled is not None:
        return _walk_scores(scaled[0], want, pv, chain + [op], masks, factor * scaled[1], upcast)
    if isinstance(op, g.WhereOp):
        return _walk_where(op, want, pv, chain, masks, factor, upcast)
    if isinstance(op, g.AddOp):
        for x, m in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            if is_float(elem(m)) and _is_row_consistent(m, want):
                mask = Mask(m, True, "additive", factor=factor)
                hit = _walk_scores(x, want, pv, chain + [op], masks + [mask], factor, upcast)
                if hit is not None:
                    return hit
    return None


def _keeps_order(op) -> bool:
    """A reshape, or a permute that keeps the order of the dims larger than 1: a reshape in effect."""
    if isinstance(op, g.ReshapeOp):
        return True
    if not isinstance(op, g.PermuteOp):
        return False
    src = shape(op.input)
    big = [p for p in op.perm.get_values() if src[p] != 1]
    return big == sorted(big)


def _layout_run(v: SSAValue) -> tuple[SSAValue, list[Operation]] | None:
    """(x, ops) when v is x through order-keeping layout ops that only regroup the batch dims."""
    ops, x = [], v
    while isinstance(x.owner, Operation) and _keeps_order(x.owner) and (x is v or _single_use(x)):
        ops.append(x.owner)
        x = x.owner.input
    a, b = shape(x), shape(v)
    if not ops or len(a) < 3 or len(b) < 3 or a[-2:] != b[-2:]:
        return None
    return x, ops


def _with_frame(m: Mask, frame: tuple[int, ...]) -> Mask:
    return Mask(m.value, m.additive, m.spelling, m.negate, m.factor, frame)


def _walk_where(op: g.WhereOp, want, pv, chain, masks, factor, upcast) -> ChainMatch | None:
    """masked_fill(x, cond, -inf) is where(cond, -inf, x); where(keep, x, -inf) keeps where true."""
    if factor <= 0 or str(elem(op.cond)) != "i1" or not _is_row_consistent(op.cond, want):
        return None  # a negative scale after the fill would turn -inf into +inf
    if is_neg_inf_like(op.lhs) and not is_neg_inf_like(op.rhs):
        mask, x = Mask(op.cond, False, "masked_fill", negate=True), op.rhs
    elif is_neg_inf_like(op.rhs) and not is_neg_inf_like(op.lhs):
        mask, x = Mask(op.cond, False, "where"), op.lhs
    else:
        return None
    return _walk_scores(x, want, pv, chain + [op], masks + [mask], factor, upcast)


def _is_row_consistent(m: SSAValue, want: tuple[int, ...]) -> bool:
    """The mask varies along the key axis or is size 1 there only when keys are 1 (no whole-row masks)."""
    ms = shape(m)
    if len(ms) > len(want):
        return False
    return not ms or ms[-1] == want[-1] or want[-1] == 1 or scalar_constant(m) is not None


def _finish(qk: g.MatmulOp, pv: g.MatmulOp, chain, masks, factor, upcast) -> ChainMatch | None:
    """Checks q, kᵀ and v against each other once the chain reached q @ kᵀ."""
    q, qf = peel_scale(qk.lhs)
    kt, kf = peel_scale(qk.rhs)
    kt_perm = None
    if isinstance(kt.owner, g.PermuteOp) and (under := peel_scale(kt.owner.input))[1] != 1.0:
        kt_perm, kf = list(kt.owner.perm.get_values()), kf * under[1]
        kt = under[0]
    v = pv.rhs
    qs, ks, vs = shape(q), shape(qk.rhs), shape(v)
    if not (len(qs) == len(ks) == len(vs) and ks[:-2] == vs[:-2] and _heads_fit(qs, ks)):
        return None  # batch dims broadcast other than one kv head shared by all heads (MQA)
    if ks[-1] != vs[-2] or not (elem(q) == elem(kt) == elem(v) == elem(pv.result)):
        return None
    return ChainMatch(q, kt, v, kt_perm, qf * kf * factor, masks, chain, upcast)


def _heads_fit(qs: tuple[int, ...], ks: tuple[int, ...]) -> bool:
    """q and kᵀ have the same batch dims, or (rank 4) k has one head that the matmul broadcasts."""
    return qs[:-2] == ks[:-2] or (len(qs) == 4 and qs[0] == ks[0] and ks[1] == 1)


# ---------------------------------------------------------------------------------------------
# Grouped-query heads
# ---------------------------------------------------------------------------------------------


def unrepeat_heads(x: SSAValue) -> tuple[SSAValue, int] | None:
    """(kv, groups) when x[B,H,S,D] is kv[B,H/G,S,D] with each head repeated G times in place.

    That is `kv[B,1,S,D].expand(B,H,S,D)` (multi-query), or `repeat_interleave(G, dim=1)` or
    `kv[:, :, None].expand(B, Hkv, G, S, D).reshape(B, H, S, D)`, both imported as
    reshape(expand([B,Hkv,1,S,D] -> [B,Hkv,G,S,D])). Head h reads kv head h // G,
    which is what grouped-query `graph.attention` does natively.
    """
    rs = x.owner
    if isinstance(rs, g.ExpandOp):  # multi-query: kv[B,1,S,D].expand(B,H,S,D)
        src, out = shape(rs.input), shape(x)
        ok = len(src) == 4 and src[0] == out[0] and src[1] == 1 and src[2:] == out[2:]
        return (rs.input, out[1]) if ok else None
    if not isinstance(rs, g.ReshapeOp) or not isinstance(rs.input.owner, g.ExpandOp):
        return None
    ex = rs.input.owner
    b, h, s, d = shape(x)
    src, out = shape(ex.input), shape(ex.result)
    if len(out) != 5 or out[0] != b or out[3:] != (s, d) or out[1] * out[2] != h:
        return None
    if src != (b, out[1], 1, s, d):
        return None
    return ex.input, out[2]


# ---------------------------------------------------------------------------------------------
# Compile-time evaluation of masks
# ---------------------------------------------------------------------------------------------


def evaluate(value: SSAValue, cache: dict) -> torch.Tensor | None:
    """The tensor `value` holds, computed now, if it depends on no function argument; else None.

    Only pure graph ops the reference backend implements (extern calls of non-random ATen ops
    included) are run, each result at most EVAL_BYTES bytes.
    """
    if value in cache:
        return cache[value]
    ops = _slice_ops(value)
    result = None if ops is None else _interpret(ops, value)
    cache[value] = result
    return result


def _slice_ops(value: SSAValue) -> list[Operation] | None:
    seen: set[Operation] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, BlockArgument):
            return None  # a function argument: its contents are unknown at compile time
        op = v.owner
        if op in seen:
            continue
        if op.regions or op not in OPS or _is_random(op):
            return None
        if any(_nbytes(r) > EVAL_BYTES for r in op.results):
            return None
        seen.add(op)
        stack.extend(op.operands)
    block = value.owner.parent
    if any(op.parent is not block for op in seen):
        return None
    order = {op: i for i, op in enumerate(block.ops)}
    return sorted(seen, key=order.__getitem__)


def _interpret(ops: list[Operation], value: SSAValue) -> torch.Tensor | None:
    vals: dict[SSAValue, torch.Tensor] = {}
    try:
        for op in ops:
            fn = _triangular(op) if isinstance(op, g.TriangularOp) else OPS[op](op)
            out = fn(*[vals[o] for o in op.operands])
            outs = out if isinstance(out, list) else [out]
            vals.update(zip(op.results, outs))
    except Exception:  # an op the interpreter cannot run on these values: treat the mask as unknown
        return None
    return vals[value]


def _triangular(op: g.TriangularOp):
    """tril/triu through an index comparison: torch.tril/triu take ~20 ms even on 32x32 CPU tensors."""
    d, upper = op.diagonal.value.data, op.upper is not None

    def run(x: torch.Tensor) -> torch.Tensor:
        i = torch.arange(x.shape[-2])[:, None]
        j = torch.arange(x.shape[-1])[None, :]
        keep = (j - i >= d) if upper else (j - i <= d)
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype))

    return run


def _is_random(op: Operation) -> bool:
    return isinstance(op, g.ExternOp) and any(r in op.callee.data for r in _RANDOM)


def _nbytes(v: SSAValue) -> int:
    n = torch.empty((), dtype=torch_dtype(elem(v))).element_size()
    for d in shape(v):
        n *= d if isinstance(d, int) else EVAL_BYTES  # a `?` dim: not evaluated at compile time
    return n


# ---------------------------------------------------------------------------------------------
# What a mask's values say
# ---------------------------------------------------------------------------------------------

NONE, CAUSAL, OTHER, BAD = "none", "causal", "other", "bad"
"""Mask kinds: masks nothing; exactly causal (top-left); anything else; masks a whole row."""


def causal_keep(t: int, s: int) -> torch.Tensor:
    """[t, s] booleans, True where key j <= query i (top-left causal; `tril` on bool is ~20 ms on CPU)."""
    return torch.arange(s)[None, :] <= torch.arange(t)[:, None]


def classify_keep(keep: torch.Tensor, t: int, s: int) -> str:
    """Kind of a boolean keep-mask broadcast to [..., t, s]."""
    keep = keep.to(torch.bool).expand(*keep.shape[:-2], t, s) if keep.dim() >= 2 else keep.expand(t, s)
    if not keep.any(-1).all():
        return BAD
    if keep.all():
        return NONE
    return CAUSAL if torch.equal(keep, causal_keep(t, s).expand_as(keep)) else OTHER


def classify_additive(m: torch.Tensor, t: int, s: int) -> str:
    """Kind of an additive float mask broadcast to [..., t, s]: 0 keeps, -inf-like drops."""
    m = m.expand(*m.shape[:-2], t, s) if m.dim() >= 2 else m.expand(t, s)
    threshold = max(0.5 * torch.finfo(m.dtype).min, -1e9)
    dropped = m <= threshold
    if dropped.all(-1).any():
        return BAD
    if bool((m == 0).all()):
        return NONE
    tril = causal_keep(t, s).expand_as(m)
    if bool((m[tril] == 0).all()) and bool(dropped[~tril].all()):
        return CAUSAL
    return OTHER


def classify(mask: Mask, t: int, s: int, cache: dict) -> str:
    """Kind of `mask` from its compile-time values, OTHER when it depends on a function argument."""
    key = ("kind", mask.value, mask.additive, mask.negate, mask.factor, t, s)
    if key not in cache:
        val = evaluate(mask.value, cache)
        if val is None:
            cache[key] = OTHER
        elif mask.additive:
            cache[key] = classify_additive(val.to(torch.float32) * mask.factor, t, s)
        else:
            cache[key] = classify_keep(~val if mask.negate else val, t, s)
    return cache[key]
