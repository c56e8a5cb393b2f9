"""recognize-attention: every spelling becomes one graph.attention, every near miss stays as it was.

Each case is a small nn.Module exported and imported the way `compile()` does it; the pass runs in
the standard cleanup pipeline, then the rewritten IR runs on the reference backend against eager.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solder.backends.reference import ReferenceBackend
from solder.compiler.aten_table import TABLE
from solder.compiler.capture import capture
from solder.compiler.importer import import_program
from solder.passes.pipeline import run_pipeline

PIPELINE = "canonicalize,cse,recognize-attention,canonicalize,cse,dce"
B, H, T, D = 2, 4, 8, 16


def _state(ep, name):
    return ep.state_dict[name] if name in ep.state_dict else ep.constants[name]


def compile_and_run(model: nn.Module, *args):
    """(attention ops after the pass, IR output tensors, eager output tensors)."""
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(model, args, {}, set(TABLE))
    imp = import_program(cap.program)
    run_pipeline(imp.module, PIPELINE, verify=True)
    attns = [op for op in imp.module.walk() if op.name == "graph.attention"]
    inputs, pos = [], iter(imp.input_positions)
    for info in imp.args:
        inputs.append(args[next(pos)] if info.kind == "input" else _state(cap.program, info.name))
    got = ReferenceBackend().lower(imp.module).run(inputs)
    with torch.no_grad():
        want = model(*args)
    want = list(want) if isinstance(want, tuple) else [want]
    return attns, got, want


def check(model, *args, count: int, origin: str | None = None, atol=1e-5, rtol=1e-4):
    attns, got, want = compile_and_run(model, *args)
    assert len(attns) == count, [a.attributes.get("graph.origin") for a in attns]
    for g_, w in zip(got, want):
        torch.testing.assert_close(g_, w, atol=atol, rtol=rtol, equal_nan=True)
    if origin is not None:
        assert all(origin in a.attributes["graph.origin"].data for a in attns), \
            [a.attributes["graph.origin"].data for a in attns]
    return attns


def qkv(hk=H, dtype=torch.float32, t=T):
    torch.manual_seed(0)
    return (torch.randn(B, H, t, D, dtype=dtype), torch.randn(B, hk, t, D, dtype=dtype),
            torch.randn(B, hk, t, D, dtype=dtype))


def causal_keep(t=T):
    return torch.tril(torch.ones(t, t, dtype=torch.bool))


class Fn(nn.Module):
    """Wraps a function of the inputs (buffers, when needed, are registered by the caller)."""

    def __init__(self, fn, **buffers):
        super().__init__()
        self.fn = fn
        for k, v in buffers.items():
            self.register_buffer(k, v, persistent=False)

    def forward(self, *xs):
        return self.fn(self, *xs)


# ---------------------------------------------------------------------------------------------
# SDPA spellings
# ---------------------------------------------------------------------------------------------


def test_sdpa_plain_is_annotated():
    check(Fn(lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v)), *qkv(), count=1, origin="sdpa")


def test_sdpa_enable_gqa_keeps_fewer_kv_heads():
    fn = Fn(lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
    (a,) = check(fn, *qkv(hk=2), count=1, origin="sdpa causal gqa")
    assert a.key.type.get_shape()[1] == 2


@pytest.mark.parametrize("spelling", ["repeat_interleave", "expand_reshape"])
def test_sdpa_after_repeated_kv_heads_becomes_gqa(spelling):
    def rep(x):
        if spelling == "repeat_interleave":
            return x.repeat_interleave(2, dim=1)
        b, h, s, d = x.shape
        return x[:, :, None, :, :].expand(b, h, 2, s, d).reshape(b, h * 2, s, d)

    fn = Fn(lambda m, q, k, v: F.scaled_dot_product_attention(q, rep(k), rep(v), is_causal=True))
    (a,) = check(fn, *qkv(hk=2), count=1, origin="gqa")
    assert a.key.type.get_shape()[1] == 2 and a.value.type.get_shape()[1] == 2


def test_sdpa_repeat_tiling_is_not_gqa():
    # x.repeat(1, 2, 1, 1) tiles heads (h reads h % Hkv): not the GQA grouping, so k/v stay repeated.
    fn = Fn(lambda m, q, k, v: F.scaled_dot_product_attention(q, k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1)))
    (a,) = check(fn, *qkv(hk=2), count=1)
    assert a.key.type.get_shape()[1] == H


def test_sdpa_in_graph_causal_mask_becomes_causal():
    def f(m, q, k, v):
        i = torch.arange(q.shape[2])
        mask = (i[None, :] <= i[:, None])[None, None].expand(q.shape[0], 1, -1, -1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    (a,) = check(Fn(f), *qkv(), count=1, origin="sdpa causal mask")
    assert a.mask is None and a.causal is not None


def test_sdpa_all_true_mask_is_dropped():
    def f(m, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(B, 1, T, T, dtype=torch.bool))

    (a,) = check(Fn(f), *qkv(), count=1, origin="all-keep mask dropped")
    assert a.mask is None and a.causal is None


def test_sdpa_input_mask_stays_a_mask():
    mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
    mask[1, ..., T // 2:] = False
    f = Fn(lambda m, q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    (a,) = check(f, *qkv(), mask, count=1, origin="sdpa mask")
    assert a.mask is not None


# ---------------------------------------------------------------------------------------------
# Hand-written spellings
# ---------------------------------------------------------------------------------------------


def _tril_masked_fill(m, q, k, v):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    t = q.shape[2]
    s = s.masked_fill(torch.tril(torch.ones(t, t)) == 0, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _arange_masked_fill(m, q, k, v):
    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    i = torch.arange(q.shape[2])
    return torch.softmax(s.masked_fill(i[None, :] > i[:, None], float("-inf")), dim=-1) @ v


def _where_keep(m, q, k, v):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    keep = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool).tril()
    return torch.softmax(torch.where(keep, s, float("-inf")), dim=-1) @ v


def _additive_triu(m, q, k, v):
    t = q.shape[2]
    mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
    return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + mask, dim=-1) @ v


def _additive_finfo_min(m, q, k, v):
    t = q.shape[2]
    mask = torch.zeros(t, t).masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), torch.finfo(q.dtype).min)
    return torch.softmax(mask + (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), dim=-1) @ v


def _scale_on_q_and_k(m, q, k, v):
    d = q.shape[-1]
    return torch.softmax((q * d**-0.25) @ (k.transpose(-2, -1) / d**0.25), dim=-1) @ v


def _scale_on_k_before_transpose(m, q, k, v):
    return torch.softmax(q @ (k * 0.25).transpose(-2, -1), dim=-1) @ v


def _no_scale(m, q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v


@pytest.mark.parametrize("fn, origin, causal", [
    (_tril_masked_fill, "masked_fill causal", True),
    (_arange_masked_fill, "masked_fill causal", True),
    (_where_keep, "where causal", True),
    (_additive_triu, "additive causal", True),
    (_additive_finfo_min, "additive causal", True),
    (_scale_on_q_and_k, "matmul-softmax", False),
    (_scale_on_k_before_transpose, "matmul-softmax", False),
    (_no_scale, "matmul-softmax", False),
])
def test_hand_written_spellings(fn, origin, causal):
    (a,) = check(Fn(fn), *qkv(), count=1, origin=origin)
    assert (a.causal is not None) == causal and a.mask is None
    expected_scale = 0.25 if fn is not _no_scale else 1.0
    assert a.scale.value.data == pytest.approx(expected_scale)


def test_registered_buffer_mask_stays_a_mask():
    # The pass may not assume what a buffer holds: the mask stays an operand (not `causal`).
    def f(m, q, k, v):
        s = q @ k.transpose(-2, -1) / 4.0
        return torch.softmax(s.masked_fill(m.tril_buf[:T, :T] == 0, float("-inf")), dim=-1) @ v

    (a,) = check(Fn(f, tril_buf=torch.tril(torch.ones(16, 16))), *qkv(), count=1, origin="masked_fill mask")
    assert a.mask is not None and a.causal is None


@pytest.mark.parametrize("additive", [False, True])
def test_padding_mask_becomes_mask_operand(additive):
    pad = torch.ones(B, 1, 1, T, dtype=torch.bool)
    pad[1, ..., 5:] = False
    if additive:
        pad = torch.zeros(B, 1, 1, T).masked_fill(~pad, torch.finfo(torch.float32).min)

    def f(m, q, k, v, pad):
        s = q @ k.transpose(-2, -1) / 4.0
        s = s + pad if additive else s.masked_fill(~pad, float("-inf"))
        return torch.softmax(s, dim=-1) @ v

    (a,) = check(Fn(f), *qkv(), pad, count=1)
    assert a.mask is not None


def test_causal_and_padding_masks_together():
    pad = torch.ones(B, 1, 1, T, dtype=torch.bool)
    pad[1, ..., 5:] = False

    def f(m, q, k, v, pad):
        s = _tril_scores(q, k)
        return torch.softmax(s.masked_fill(~pad, float("-inf")), dim=-1) @ v

    (a,) = check(Fn(f), *qkv(), pad, count=1)
    assert a.mask is not None and a.causal is not None


def _tril_scores(q, k):
    s = q @ k.transpose(-2, -1) / 4.0
    return s.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf"))


def test_additive_bias_before_the_scale_is_scaled():
    # (s + bias) / sqrt(d): graph.attention adds its mask after scaling, so the bias is scaled too.
    bias = torch.randn(1, H, T, T)
    f = Fn(lambda m, q, k, v, bias: torch.softmax((q @ k.transpose(-2, -1) + bias) / 4.0, dim=-1) @ v)
    (a,) = check(f, *qkv(), bias, count=1, origin="additive mask")
    assert a.mask is not None


def test_hand_written_gqa_is_unrepeated():
    def f(m, q, k, v):
        return _tril_masked_fill(m, q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1))

    (a,) = check(Fn(f), *qkv(hk=2), count=1, origin="masked_fill causal, gqa")
    assert a.key.type.get_shape()[1] == 2


@pytest.mark.parametrize("spelling", ["broadcast", "expand"])
def test_multi_query_heads(spelling):
    # One kv head for all query heads: by matmul broadcasting, or by an explicit expand.
    def f(m, q, k, v):
        if spelling == "expand":
            k, v = k.expand(B, H, T, D), v.expand(B, H, T, D)
        return _tril_masked_fill(m, q, k, v)

    (a,) = check(Fn(f), *qkv(hk=1), count=1, origin="masked_fill causal, gqa")
    assert a.key.type.get_shape()[1] == 1 and a.value.type.get_shape()[1] == 1


def test_pass_is_idempotent():
    from solder.compiler import ir

    model = Fn(_tril_masked_fill).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = import_program(capture(model, qkv(), {}, set(TABLE)).program)
    run_pipeline(imp.module, PIPELINE)
    once = ir.print_ir(imp.module)
    run_pipeline(imp.module, PIPELINE)
    assert ir.print_ir(imp.module) == once


def test_fp32_softmax_upcast_in_half_precision():
    def f(m, q, k, v):
        s = (q @ k.transpose(-2, -1)) / 4.0
        s = s.masked_fill(torch.tril(torch.ones(T, T, dtype=torch.bool)) == 0, float("-inf"))
        return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v

    (a,) = check(Fn(f), *qkv(dtype=torch.float16), count=1, origin="fp32-softmax", atol=2e-3, rtol=2e-3)
    assert a.causal is not None


def test_three_dimensional_bmm_attention():
    f = Fn(lambda m, q, k, v: torch.softmax(torch.bmm(q, k.transpose(1, 2)) / 4.0, dim=-1) @ v)
    q, k, v = (x.reshape(B * H, T, D) for x in qkv())
    check(f, q, k, v, count=1, origin="matmul-softmax")


@pytest.mark.parametrize("mask", ["none", "causal", "padding"])
def test_einsum_attention(mask):
    # einsum imports as [B*H,T,D] bmm's between batch-regrouping reshapes; masks apply in [B,H,T,S].
    pad = torch.ones(B, 1, 1, T, dtype=torch.bool)
    pad[1, ..., 5:] = False

    def f(m, q, k, v, pad):
        s = torch.einsum("bhqd,bhkd->bhqk", q, k) / 4.0
        if mask == "causal":
            s = s.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf"))
        if mask == "padding":
            s = s.masked_fill(~pad, float("-inf"))
        return torch.einsum("bhqk,bhkd->bhqd", torch.softmax(s, -1), v)

    (a,) = check(Fn(f), *qkv(), pad, count=1)
    assert (a.causal is not None) == (mask == "causal") and (a.mask is not None) == (mask == "padding")


def test_two_attentions_share_one_mask():
    def f(m, q, k, v):
        return _tril_masked_fill(m, q, k, v) + _tril_masked_fill(m, v, q, k)

    check(Fn(f), *qkv(), count=2, origin="masked_fill causal")


# ---------------------------------------------------------------------------------------------
# Near misses: must stay as they are
# ---------------------------------------------------------------------------------------------


def _softmax_other_axis(m, q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-2) @ v


def _probs_used_twice(m, q, k, v):
    p = torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1)
    return p @ v, p


def _scores_used_twice(m, q, k, v):
    s = q @ k.transpose(-2, -1) / 4.0
    return torch.softmax(s, dim=-1) @ v + s.sum()


def _value_broadcast_over_batch(m, q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1) @ v[:1]


def _row_mask(m, q, k, v, rows):
    return torch.softmax((q @ k.transpose(-2, -1) / 4.0).masked_fill(rows, float("-inf")), dim=-1) @ v


def _whole_row_masked(m, q, k, v):
    # tril(-1) masks the whole first row: eager gives NaN there, a fused kernel would not.
    s = (q @ k.transpose(-2, -1) / 4.0).masked_fill(torch.tril(torch.ones(T, T), -1) == 0, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _fill_with_zero(m, q, k, v):
    s = (q @ k.transpose(-2, -1) / 4.0).masked_fill(torch.tril(torch.ones(T, T)) == 0, 0.0)
    return torch.softmax(s, dim=-1) @ v


def _probs_times_scores(m, q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ (q @ k.transpose(-2, -1))


@pytest.mark.parametrize("fn, extra", [
    (_softmax_other_axis, ()),
    (_probs_used_twice, ()),
    (_scores_used_twice, ()),
    (_value_broadcast_over_batch, ()),
    (_row_mask, (torch.zeros(B, 1, T, 1, dtype=torch.bool),)),
    (_whole_row_masked, ()),
    (_fill_with_zero, ()),
    (_probs_times_scores, ()),
], ids=lambda x: getattr(x, "__name__", "")[1:] or None)
def test_near_misses_are_left_alone(fn, extra):
    check(Fn(fn), *qkv(), *extra, count=0)


# ---------------------------------------------------------------------------------------------
# The zoo: every attention layer found, numerics unchanged
# ---------------------------------------------------------------------------------------------

ZOO_COUNTS = {
    # name: (graph.attention ops, every one causal, every one without a mask, kv heads)
    "attn_sdpa": (1, True, True, 4),
    "attn_masked_fill": (1, False, False, 4),  # the tril buffer's contents are unknown: a mask operand
    "attn_additive": (1, True, True, 4),
    "gpt_block": (1, False, False, 4),
    "gpt2": (2, True, True, 4),  # the in-graph [B,1,T,T] boolean mask is the causal triangle
    "bert": (2, False, False, 4),  # the padding mask comes from the attention_mask input
    "vit": (2, False, True, 4),  # the in-graph all-true mask is dropped
    "llama": (2, True, True, 2),  # repeat_interleave of the kv heads undone: GQA 4/2
}


@pytest.mark.parametrize("name", sorted(ZOO_COUNTS))
def test_zoo_attention_counts_and_numerics(name):
    from examples.models import get

    entry = get(name)
    model, args, kwargs = entry.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(model, args, kwargs, set(TABLE))
    imp = import_program(cap.program)
    run_pipeline(imp.module, PIPELINE, verify=True)
    attns = [op for op in imp.module.walk() if op.name == "graph.attention"]
    count, causal, maskless, kv_heads = ZOO_COUNTS[name]
    assert len(attns) == count
    assert all((a.causal is not None) == causal for a in attns)
    assert all((a.mask is None) == maskless for a in attns)
    assert all(a.key.type.get_shape()[1] == kv_heads for a in attns)
    assert all("graph.origin" in a.attributes for a in attns)
    flat = list(args) + list(kwargs.values())
    pos = iter(imp.input_positions)
    inputs = [flat[next(pos)] if info.kind == "input" else _state(cap.program, info.name) for info in imp.args]
    got = ReferenceBackend().lower(imp.module).run(inputs)[0]
    with torch.no_grad():
        want = model(*args, **kwargs)
    torch.testing.assert_close(got, want, atol=entry.atol, rtol=entry.rtol)
