"""`recognize-attention`: replaces every attention sub-graph by one `graph.attention`.

Spellings found (matching lives in passes/attention_patterns.py):
- `softmax(q @ kᵀ · s) @ v` with the scale as mul or div by a constant on q, on kᵀ or on the scores
  (all folded into `scale`), fp32 upcasts around the softmax, and any number of masks applied with
  masked_fill (`where(cond, -inf, x)`), `where(keep, x, -inf)` or an additive float mask, in 3-d
  (bmm) or 4-d form, also through batch-regrouping reshapes (einsum imports that way);
- `scaled_dot_product_attention` (imported as `graph.attention` already): its explicit mask is
  dropped when it keeps everything, and turned into `causal` when it is the causal triangle;
- grouped-query heads: k/v repeated by repeat_interleave or expand+reshape are un-repeated, since
  `graph.attention` does GQA natively (head h reads kv head h // G); multi-query k/v with one head,
  broadcast by the matmul or expanded, stay one head. `repeat` (tiling, h reads h % Hkv) is kept.

A mask that depends on no function argument is evaluated at compile time; a causal triangle (top-
left aligned, however it was built: tril/triu/ones/arange comparisons) becomes `causal`, an all-keep
mask disappears, a mask that hides a whole row is refused (eager gives NaN there). A mask computed
from a function argument (an input, a registered buffer) stays a `mask` operand: its contents are
not known. Each attention gets a `graph.origin` string naming the spelling it came from.

Left alone: softmax over another axis, an intermediate (scores, probabilities) with another user,
q/k/v whose batch dims broadcast, a fill value that is not -inf-like, a mask that is size 1 along
the keys (it would hide whole rows), mixed q/k/v dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, UnitAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.traits import Pure

from solder.compiler import log
from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import broadcast_shapes, dtype_name, is_float, tensor_type
from solder.compiler.importer import scalar_attr
from solder.passes.attention_patterns import (
    BAD,
    CAUSAL,
    NONE,
    ChainMatch,
    Mask,
    classify,
    elem,
    match_chain,
    shape,
    unrepeat_heads,
)

_log = log.get("attention")
ORIGIN = "graph.origin"


class _Builder:
    """Collects new ops to insert before one anchor op."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def emit(self, op: Operation) -> SSAValue:
        self.ops.append(op)
        return op.results[0]

    def reshape(self, v: SSAValue, new_shape: tuple[int, ...]) -> SSAValue:
        t = tensor_type(new_shape, dtype_name(elem(v)))
        return v if v.type == t else self.emit(g.ReshapeOp(v, t))

    def permute(self, v: SSAValue, perm: list[int]) -> SSAValue:
        if perm == sorted(perm):
            return v
        s = shape(v)
        t = tensor_type(tuple(s[p] for p in perm), dtype_name(elem(v)))
        return self.emit(g.PermuteOp(operands=[v], properties={"perm": g.ints_attr(perm)}, result_types=[t]))

    def constant(self, value: float, like: SSAValue) -> SSAValue:
        return self.emit(g.ConstantOp(scalar_attr(value), tensor_type((), dtype_name(elem(like)))))

    def cast(self, v: SSAValue, like: SSAValue) -> SSAValue:
        if elem(v) == elem(like):
            return v
        return self.emit(g.CastOp(v, tensor_type(shape(v), dtype_name(elem(like)))))

    def binary(self, cls, a: SSAValue, b: SSAValue) -> SSAValue:
        out = broadcast_shapes(shape(a), shape(b))
        et = "i1" if cls is g.BINARY_OPS["logical_and"] else dtype_name(elem(a))
        return self.emit(cls(a, b, tensor_type(out, et)))


def _transpose_back(b: _Builder, kt: SSAValue, kt_perm: list[int] | None) -> SSAValue:
    """k from kᵀ (= permute(kt, kt_perm) when given): swap the last two dims, composed with kᵀ's permute."""
    r = len(shape(kt))
    swap = list(range(r - 2)) + [r - 1, r - 2]
    if kt_perm is None and isinstance(kt.owner, g.PermuteOp):
        kt, kt_perm = kt.owner.input, list(kt.owner.perm.get_values())
    if kt_perm is not None:
        return b.permute(kt, [kt_perm[i] for i in swap])
    return b.permute(kt, swap)


def _mask_value(b: _Builder, m: Mask, q: SSAValue) -> SSAValue:
    """The mask as graph.attention takes it: a keep-mask (i1), or an additive mask of q's type."""
    if not m.additive:
        if not m.negate:
            return m.value
        return b.emit(g.LogicalNotOp(m.value, m.value.type))
    v = m.value
    if m.factor != 1.0:
        v = b.binary(g.MulOp, v, b.constant(m.factor, v))
    return b.cast(v, q)


def _in_frame(b: _Builder, v: SSAValue, m: Mask, scores: tuple[int, ...]) -> SSAValue:
    """A mask applied after a batch-only reshape of the scores, brought to the scores' own shape."""
    if m.frame is None:
        return v
    t = tensor_type(m.frame, dtype_name(elem(v)))
    v = v if shape(v) == m.frame else b.emit(g.ExpandOp(operands=[v], result_types=[t]))
    return b.reshape(v, scores)


def _as_additive(b: _Builder, keep: SSAValue, q: SSAValue) -> SSAValue:
    zero, ninf = b.constant(0.0, q), b.constant(float("-inf"), q)
    return b.emit(g.WhereOp(keep, zero, ninf, tensor_type(shape(keep), dtype_name(elem(q)))))


def _combine(b: _Builder, values: list[SSAValue], q: SSAValue) -> SSAValue | None:
    """One mask out of several: keep-masks and-ed, additive ones summed (keep-masks made 0/-inf)."""
    if not values:
        return None
    if all(str(elem(v)) == "i1" for v in values):
        out = values[0]
        for v in values[1:]:
            out = b.binary(g.BINARY_OPS["logical_and"], out, v)
        return out
    values = [v if is_float(elem(v)) else _as_additive(b, v, q) for v in values]
    out = values[0]
    for v in values[1:]:
        out = b.binary(g.AddOp, out, v)
    return out


def _strip_repeats(k: SSAValue, v: SSAValue) -> tuple[SSAValue, SSAValue, bool]:
    """k, v without their repeated heads when both repeat their kv heads the same way."""
    rk, rv = unrepeat_heads(k), unrepeat_heads(v)
    if rk is None or rv is None or rk[1] != rv[1]:
        return k, v, False
    return rk[0], rv[0], True


def _attention(b: _Builder, q, k, v, mask, scale: float, causal: bool) -> SSAValue:
    """graph.attention over rank-4 q/k/v; the base head tensor of a GQA repeat replaces its repeats."""
    props = {"scale": g.float_attr(scale)}
    if causal:
        props["causal"] = UnitAttr()
    out_t = tensor_type(shape(q)[:3] + (shape(v)[3],), dtype_name(elem(q)))
    return b.emit(g.AttentionOp(operands=[q, k, v, mask], properties=props, result_types=[out_t]))


def _unrepeated(b: _Builder, k: SSAValue, v: SSAValue) -> tuple[SSAValue, SSAValue, bool]:
    k2, v2, gqa = _strip_repeats(k, v)
    if not gqa:
        return k, v, False
    s = shape(k)
    heads = shape(k2)[1]
    return b.reshape(k2, (s[0], heads) + s[2:]), b.reshape(v2, (s[0], heads) + shape(v)[2:]), True


def _origin(match: ChainMatch, kinds: list[str], gqa: bool) -> str:
    """E.g. "masked_fill causal, additive mask, gqa, fp32-softmax": the masks met, GQA, upcasts."""
    words = []
    for m, kind in zip(match.masks, kinds):
        if kind != NONE:
            words.append(f"{m.spelling} {'causal' if kind == CAUSAL else 'mask'}")
    if not words:
        words.append("matmul-softmax")
    if gqa:
        words.append("gqa")
    if match.upcast:
        words.append("fp32-softmax")
    return ", ".join(words)


def rewrite_chain(match: ChainMatch, cache: dict) -> Operation | None:
    """Replaces a matched hand-written attention; None (IR untouched) when a mask refuses it."""
    pv = match.chain[0]
    q, kt, v = match.q, match.kt, match.v
    t, s = shape(q)[-2], shape(v)[-2]
    kinds = [classify(m, t, s, cache) for m in match.masks]
    if BAD in kinds:
        _log.info("not attention at %s: a mask hides a whole row", pv.name)
        return None
    b = _Builder()
    k = _transpose_back(b, kt, match.kt_perm)
    if len(shape(q)) == 3:
        q, k, v = (b.reshape(x, (1,) + shape(x)) for x in (q, k, v))
    k, v, _ = _unrepeated(b, k, v)
    gqa = shape(k)[1] != shape(q)[1]
    scores = shape(match.chain[-1].result)
    keep = [_in_frame(b, _mask_value(b, m, match.q), m, scores)
            for m, kind in zip(match.masks, kinds) if kind not in (NONE, CAUSAL)]
    mask = _combine(b, keep, q)
    if mask is not None:
        mask = b.reshape(mask, (1,) * (4 - len(shape(mask))) + shape(mask))
    out = _attention(b, q, k, v, mask, match.scale, CAUSAL in kinds)
    attn = out.owner
    attn.attributes[ORIGIN] = StringAttr(_origin(match, kinds, gqa))
    out = b.reshape(out, shape(pv.result))
    _replace(pv, b.ops, out, match.chain)
    _log.info("%s: q %s, k %s -> graph.attention (scale %.6g%s)", attn.attributes[ORIGIN].data, shape(q),
              shape(k), match.scale, ", causal" if attn.causal is not None else "")
    return attn


def refine_sdpa(op: g.AttentionOp, cache: dict) -> Operation:
    """An imported SDPA: drop an all-keep mask, make a causal-triangle mask `causal`, un-repeat GQA heads."""
    b = _Builder()
    words, mask, causal = ["sdpa"], op.mask, op.causal is not None
    t, s = shape(op.query)[-2], shape(op.key)[-2]
    if mask is not None:
        kind = classify(Mask(mask, is_float(elem(mask)), "sdpa"), t, s, cache)
        if kind == NONE:
            mask = None
            words.append("all-keep mask dropped")
        elif kind == CAUSAL:
            mask, causal = None, True
            words.append("causal mask")
        else:
            words.append("mask")
    elif causal:
        words.append("causal")
    k, v, gqa = _unrepeated(b, op.key, op.value)
    if gqa or shape(op.key)[1] != shape(op.query)[1]:
        words.append("gqa")
    if mask is op.mask and causal == (op.causal is not None) and not gqa:
        op.attributes[ORIGIN] = StringAttr(" ".join(words))
        return op
    out = _attention(b, op.query, k, v, mask, op.scale.value.data, causal)
    out.owner.attributes[ORIGIN] = StringAttr(" ".join(words))
    _replace(op, b.ops, out, [op])
    _log.info("%s: q %s, k %s", " ".join(words), shape(op.query), shape(k))
    return out.owner


def _replace(anchor: Operation, new_ops: list[Operation], out: SSAValue, dead: list[Operation]) -> None:
    """Inserts `new_ops` before `anchor`, routes its uses to `out`, erases `dead` and what only they used."""
    block = anchor.parent
    block.insert_ops_before(new_ops, anchor)
    anchor.results[0].replace_all_uses_with(out)
    inputs = [o for op in dead for o in op.operands]
    for op in dead:
        op.parent.erase_op(op)
    _erase_unused(inputs)


def _erase_unused(values: list[SSAValue]) -> None:
    stack = list(values)
    while stack:
        owner = stack.pop().owner
        if not isinstance(owner, Operation) or owner.parent is None or not owner.has_trait(Pure):
            continue
        if any(r.uses for r in owner.results):
            continue
        stack.extend(owner.operands)
        owner.parent.erase_op(owner)


@dataclass(frozen=True)
class RecognizeAttentionPass(ModulePass):
    """Replaces attention however it is spelled (hand-written, SDPA, GQA, masked) by graph.attention."""

    name = "recognize-attention"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        cache: dict = {}
        found = 0
        for pv in [o for o in op.walk() if isinstance(o, g.MatmulOp)]:
            if pv.parent is None:
                continue  # erased as part of an earlier match
            match = match_chain(pv)
            if match is not None and rewrite_chain(match, cache) is not None:
                found += 1
        for attn in [o for o in op.walk() if isinstance(o, g.AttentionOp)]:
            if ORIGIN not in attn.attributes:
                refine_sdpa(attn, cache)
        _log.info("recognize-attention: %d hand-written attention(s) replaced", found)
