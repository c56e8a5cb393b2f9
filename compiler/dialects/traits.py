"""What a `graph` op is to the passes, backends and cost model, declared once on the op class as xDSL traits.

Passes, backends and the cost model ask the op (`op.has_trait(Elementwise)`; `has_trait` is a classmethod,
so an op class answers too) instead of keeping their own tuples of op names, so every user agrees on what
an op is and a new op is classified where it is defined (tests/test_op_traits.py checks that every op is).
Traits only promise facts about the op's semantics; what a backend does with an op (generated code, a
library call) stays in that backend's tables.

    %y = graph.relu %x : tensor<8x768xf32> -> tensor<8x768xf32>      // Elementwise, Activation
    %t = graph.permute %y {perm = array<i64: 1, 0>} : ...            // ViewLike (so Layout)
    %c = graph.concat %a, %b {dim = 0 : i64} : ...                   // Layout, not ViewLike
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.traits import OpTrait


@dataclass(frozen=True)
class Elementwise(OpTrait):
    """Each result element depends only on the operand elements at the same index under PyTorch
    broadcasting (`graph.triangular` reads the index itself; `graph.batch_norm` broadcasts per-channel
    statistics). No reduction and no data movement: any index mapping of the result maps the operands."""


@dataclass(frozen=True)
class Layout(OpTrait):
    """Moves elements without arithmetic (reshape, permute, expand, slice, concat): the fusion planner
    treats it as free glue between the ops of a kernel, and generated code turns it into index arithmetic."""


@dataclass(frozen=True)
class ViewLike(Layout):
    """A `Layout` op over one operand whose every result element is an input element at a computed index
    (reshape, permute, expand, slice; not concat): torch runs it as a view, a kernel as an indexing map."""


@dataclass(frozen=True)
class Source(OpTrait):
    """No tensor operands and trivially cheap (constant, arange): cloned into every kernel that reads it."""


@dataclass(frozen=True)
class Reduction(OpTrait):
    """Combines the elements along some dims (reduce, arg_reduce, softmax, cumsum, layer/rms norm):
    ops of a group that holds one must agree on the row shape."""


@dataclass(frozen=True)
class RowReduction(Reduction):
    """A `Reduction` over contiguous dims (`dims`, `dim` or the last `normalized_ndim`) that one program
    computes from a tile of whole rows (reduce, softmax, log_softmax, cumsum, layer_norm, rms_norm)."""


@dataclass(frozen=True)
class RowWise(RowReduction):
    """A `RowReduction` whose result keeps the input's shape: each element needs its whole row
    (softmax, log_softmax, cumsum, layer_norm, rms_norm)."""


@dataclass(frozen=True)
class Anchor(OpTrait):
    """A contraction that a kernel is built around and that takes a fused epilogue of elementwise ops
    (matmul, linear, attention, block_sparse_attention); a kernel holds at most one."""


@dataclass(frozen=True)
class Attention(OpTrait):
    """softmax(q @ kᵀ * scale + mask) @ v over q[B,Hq,T,D], k/v[B,Hkv,S,D] (dense or block-sparse)."""


@dataclass(frozen=True)
class Activation(OpTrait):
    """A one-operand elementwise nonlinearity that GEMM epilogues apply (gelu, relu, silu, sigmoid, tanh)."""


@dataclass(frozen=True)
class Transcendental(OpTrait):
    """An elementwise op that evaluates a special function per element (exp, log, erf, sqrt, pow, ...):
    a polynomial on a CPU, the special-function units on a GPU; the cost model weighs it above an add."""

