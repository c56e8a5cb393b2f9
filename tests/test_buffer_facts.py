"""Causal-mask buffers are compiled in as IR (so attention is recognized as causal), guarded against change."""

from __future__ import annotations

import math

import torch

from solder import compile
from solder.compiler.buffer_facts import classify
from examples.models import ZOO


def test_classify():
    keep = torch.ones(5, 5).tril()
    assert classify(keep) == "keep" and classify(keep.bool()) == "keep"
    assert classify(torch.full((4, 4), -math.inf).triu(1)) == "additive"
    assert classify(torch.ones(5, 5).tril(-1)) is None
    assert classify(torch.ones(5, 5)) is None
    assert classify(torch.ones(3)) is None


def _attention_line(compiled) -> str:
    return next(line for line in compiled.explain().splitlines() if "graph.attention" in line)


def test_registered_tril_buffer_becomes_causal_and_mutation_recompiles():
    model, args, _ = ZOO["gpt_block"].build()
    c = compile(model, target="cpu")
    torch.testing.assert_close(c(*args), model(*args))
    assert "causal" in _attention_line(c) and " mask " not in _attention_line(c)
    buf = dict(model.named_buffers())["attn.tril"]
    with torch.no_grad():
        buf.fill_(1.0)  # no longer causal: the compiled-in mask must not be used any more
    torch.testing.assert_close(c(*args), model(*args))
    assert "causal" not in _attention_line(c)


def test_a_non_causal_buffer_stays_a_mask_operand():
    model, args, _ = ZOO["attn_masked_fill"].build()
    with torch.no_grad():
        dict(model.named_buffers())["tril"].copy_(torch.ones_like(dict(model.named_buffers())["tril"]).triu())
    c = compile(model, target="cpu")
    torch.testing.assert_close(c(*args), model(*args), equal_nan=True)
    assert "causal" not in _attention_line(c)
