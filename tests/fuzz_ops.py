"""The op families of the fuzzer (tests/fuzz_graphs.py): each `_family(b)` draws one step and returns
its Python expression over the builder's pool of values (or None to skip).

The expressions are plain PyTorch spellings; `torch.export` turns them into the ATen overloads that
the importer's table lists. `IMPORTER_OPS_NOT_GENERATED` is the part of that table the families
leave out, with the reason.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
DTYPES = FLOATS + (torch.int64, torch.int32, torch.bool)
UNARY = ("neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "erf", "sin", "cos",
         "reciprocal", "floor", "ceil", "log1p", "expm1", "sign", "round", "trunc", "isnan", "logical_not",
         "bitwise_not")
UNARY_F = ("nn.functional.silu", "nn.functional.gelu", "nn.functional.hardtanh", "nn.functional.leaky_relu",
           "nn.functional.elu", "nn.functional.hardswish")
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "pow", "remainder", "floor_divide", "rsub",
          "logical_and", "logical_or", "bitwise_and", "bitwise_or")
COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
SCALARS = (0.0, 1.0, -1.5, 2, 3, -1, 0.5, 1e-3, "float('inf')", "float('-inf')", "float('nan')", True)
F = "torch.nn.functional"

# Importer entries no family produces, and why (tests/test_fuzz.py checks the others are reached).
IMPORTER_OPS_NOT_GENERATED = {
    "aten._assert_scalar.default": "emitted by export for symbolic shapes; the fuzzer's shapes are static",
    "aten.sym_constrain_range_for_size.default": "emitted for data-dependent sizes, which export rejects here",
    "aten.lift_fresh_copy.default": "torch.tensor(...) constants inside the program; covered by scalars",
    "aten._softmax.default": "the decomposed form; export keeps softmax.int",
    "aten._log_softmax.default": "the decomposed form; export keeps log_softmax.int",
    "aten._native_batch_norm_legit_no_training.default": "the decomposed form; export keeps batch_norm",
    "aten._adaptive_avg_pool2d.default": "the decomposed form; export keeps adaptive_avg_pool2d",
    "aten._unsafe_view.default": "the decomposed form of reshape",
    "aten._to_copy.default": "the decomposed form of .to(); export keeps to.dtype / to.device",
    "aten.to.dtype_layout": "export emits it for .to('cpu'), a device move, which meta tensors cannot trace",
}
# Scalar-with-scalar overloads: export emits them only for arithmetic on symbolic sizes (the fuzzer's shapes
# are static); tensor-with-Python-scalar ops come out as the .Tensor overloads.
IMPORTER_OPS_NOT_GENERATED.update({f"aten.{op}.{ov}": "scalar arithmetic on symbolic sizes only"
                                   for op in ("add", "sub", "mul", "div") for ov in ("Scalar", "default")})
IMPORTER_OPS_NOT_GENERATED["aten.remainder.default"] = "scalar arithmetic on symbolic sizes only"
# Ops public-corpus models needed, tested on every target by tests/test_coverage_corpus_ops.py. No family draws
# them yet: any new draw reshuffles the derandomized programs of test_generator_covers_the_op_families, and
# some of its needles (torch.cat, embedding, hardswish, ...) then go missing from those 1000 programs.
IMPORTER_OPS_NOT_GENERATED.update(dict.fromkeys((
    "aten.linalg_vector_norm.default", "aten.fmod.Tensor", "aten.fmod.Scalar", "aten.cumprod.default",
    "aten.selu.default", "aten.clamp.Tensor", "aten.instance_norm.default", "aten.max_pool1d.default",
    "aten.max_pool3d.default", "aten.avg_pool1d.default", "aten.avg_pool3d.default",
), "a corpus op: tests/test_coverage_corpus_ops.py (no family yet, see above)"))
IMPORTER_OPS_NOT_GENERATED.update({
    "aten.max_pool2d_with_indices.default": "the decomposed form; export keeps max_pool1d/max_pool2d",
    "aten.max_pool3d_with_indices.default": "the decomposed form; export keeps max_pool3d",
    "aten._native_batch_norm_legit.no_stats": "the decomposed form; export keeps instance_norm and batch_norm",
})


def _broadcastable(a, b) -> bool:
    try:
        torch.broadcast_shapes(tuple(a), tuple(b))
        return True
    except RuntimeError:
        return False


def _is_float(m) -> bool:
    return m.dtype.is_floating_point


def _integral(b):
    """A bool/integer pool value, else a fresh bool or int input (bitwise and logical ops want them)."""
    got = b.pick(lambda m: not _is_float(m))
    if got is not None and b.draw(st.booleans()):
        return got
    b.new_input(dtype=b.choice((torch.bool, torch.int64, torch.int32)))
    return b.pool[-1]


BITWISE = ("logical_not", "bitwise_not", "logical_and", "logical_or", "bitwise_and", "bitwise_or")


def _unary(b):
    op = b.choice(UNARY + UNARY_F + ("clamp", "clamp_min", "clamp_max", "gelu_tanh", "act_args"))
    x = _integral(b) if op in BITWISE else b.pick(empty=True)
    if op == "clamp":
        lo, hi = b.choice(((-1, 1), (None, 0.5), (-0.5, None), (0, 0), (2, -2)))
        return f"torch.clamp({x[0]}, {lo}, {hi})"
    if op in ("clamp_min", "clamp_max"):
        return f"torch.{op}({x[0]}, {b.choice((-1, 0.25, 2))})"
    if op == "gelu_tanh":
        return f"{F}.gelu({x[0]}, approximate='tanh')"
    if op == "act_args":
        form = b.choice((f"{F}.leaky_relu({{}}, 0.2)", f"{F}.elu({{}}, alpha=0.5)",
                                       f"{F}.hardtanh({{}}, -0.5, 2.0)"))
        return form.format(x[0])
    return f"torch.{op}({x[0]})"


_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "remainder": "%", "floor_divide": "//",
            "bitwise_and": "&", "bitwise_or": "|"}


def _binary(b):
    op = b.choice(BINARY + ("div_mode", "alpha"))
    x = _integral(b) if op in BITWISE else b.pick(empty=True)
    y = b.other(x[1])
    if op == "div_mode":
        return f"torch.div({x[0]}, {y}, rounding_mode={b.choice(('floor', 'trunc'))!r})"
    if op == "alpha":
        return f"torch.{b.choice(('add', 'sub'))}({x[0]}, {y}, alpha={b.choice((2, -1, 0.5))})"
    if op in _SYMBOLS and b.draw(st.booleans()):
        if not y.startswith(("x", "v")) and b.draw(st.booleans()):
            return f"({y} {_SYMBOLS[op]} {x[0]})"  # scalar on the left: rsub, rdiv, rpow, __rand__, ...
        return f"({x[0]} {_SYMBOLS[op]} {y})"
    return f"torch.{op}({x[0]}, {y})"


def _compare(b):
    x = b.pick(empty=True)
    cmp = b.choice(COMPARE)
    cond = f"torch.{cmp}({x[0]}, {b.other(x[1])})"
    form = b.choice(("cond", "where", "where_scalars", "where_scalar_self", "masked_fill", "masked_fill_tensor"))
    if form == "cond":
        return cond
    y = b.pick(empty=True)
    if form == "where":
        return f"torch.where({cond}, {y[0]}, {b.other(y[1])})"
    if form == "where_scalars":
        return f"torch.where({cond}, {b.scalar()}, {b.scalar()})"  # where.Scalar
    if form == "where_scalar_self":
        return f"torch.where({cond}, {b.scalar()}, {y[0]})"
    if form == "masked_fill_tensor":  # a 0-d tensor value: masked_fill.Tensor
        v = b.pick(lambda m: m.dim() == 0)
        return f"{y[0]}.masked_fill({cond}, {v[0] if v else b.new_input((), y[1].dtype)})"
    return f"{y[0]}.masked_fill({cond}, {b.scalar()})"


def _cast(b):
    x = b.pick(empty=True)
    form = b.draw(st.integers(0, 3))
    if form == 1:
        y = b.pick(empty=True)
        return f"{x[0]}.type_as({y[0]})"
    if form == 2:
        return f"{x[0]}.to({x[0]}.device, {b.choice(DTYPES)})"
    return f"{x[0]}.to({b.choice(DTYPES)})"


def _factory(b):
    """Tensor factories, alone or combined with a pool value (so they meet broadcasting and casts)."""
    x = b.pick(empty=True)
    shape, dt = list(x[1].shape), b.choice(DTYPES)
    form = b.choice(("like", "new", "full", "arange", "scalar_tensor", "tri"))
    if form == "like":
        fn = b.choice(("zeros_like({})", "ones_like({})", "full_like({}, 2.5)"))
        return "torch." + fn.format(x[0]) if b.draw(st.booleans()) else \
            "torch." + fn.format(x[0])[:-1] + f", dtype={dt})"
    if form == "new":
        fn = b.choice(("new_zeros", "new_ones", "new_full"))
        return f"{x[0]}.{fn}({shape}{', -3' if fn == 'new_full' else ''})"
    if form == "full":
        fn = b.choice((f"torch.full({shape}, {b.scalar()})", f"torch.zeros({shape}, dtype={dt})",
                                     f"torch.ones({shape}, dtype={dt})"))
        return f"({x[0]} + {fn})" if b.draw(st.booleans()) else fn
    if form == "arange":
        n = shape[-1] if shape else 3
        fn = b.choice((f"torch.arange({n})", f"torch.arange(1, {n + 1}, dtype={dt})",
                                     f"torch.arange(-1.0, {n - 1.5}, 1.0)", f"torch.arange({2 * n}, 0, -2)"))
        return f"({x[0]} * {fn})" if b.draw(st.booleans()) else fn
    if form == "scalar_tensor":
        return f"({x[0]} - torch.scalar_tensor({b.choice((2.0, -1, 0.5))}))"
    if x[1].dim() < 2:
        return None
    return f"torch.{b.choice(('tril', 'triu'))}({x[0]}, {b.draw(st.integers(-2, 2))})"


def _reduce(b):
    x = b.pick(lambda m: m.dim() >= 1, empty=True)
    if x is None:
        return None
    d = b.draw(st.integers(-x[1].dim(), x[1].dim() - 1))
    keep = b.draw(st.booleans())
    op = b.choice(("sum", "mean", "amax", "amin", "max_dim", "min_dim", "argmax", "argmin", "prod",
                   "all_dims", "all_dims", "all_dims", "any", "all", "cumsum", "diff", "sum_dtype"))
    if op in ("max_dim", "min_dim"):
        return f"torch.{op[:3]}({x[0]}, dim={d}, keepdim={keep})[{b.draw(st.integers(0, 1))}]"
    if op in ("argmax", "argmin"):
        return f"torch.{op}({x[0]}, dim={d}, keepdim={keep})" if b.draw(st.integers(0, 3)) else f"torch.{op}({x[0]})"
    if op == "all_dims":
        fn = b.choice(("sum", "mean", "amax", "amin", "max", "min", "prod", "any", "all"))
        return f"torch.{fn}({x[0]})"
    if op == "cumsum":
        return f"torch.cumsum({x[0]}, {d})"
    if op == "diff":
        return f"torch.diff({x[0]}, dim={d})"
    if op == "sum_dtype":
        return f"torch.sum({x[0]}, {d}, dtype={b.choice((torch.float64, torch.float32, torch.int64))})"
    dims = sorted({d % x[1].dim(), b.draw(st.integers(0, x[1].dim() - 1))})
    if op == "prod":
        return f"torch.prod({x[0]}, {d}, keepdim={keep})"
    if op in ("any", "all"):
        return f"torch.{op}({x[0]}, dim={tuple(dims) if len(dims) > 1 else d}, keepdim={keep})"
    return f"torch.{op}({x[0]}, dim={dims}, keepdim={keep})"


def _normalize(b):
    x = b.pick(lambda m: m.dim() >= 1 and _is_float(m), empty=True)
    if x is None:
        return None
    d = b.draw(st.integers(-x[1].dim(), x[1].dim() - 1))
    op = b.choice(("softmax", "log_softmax", "softmax_dtype", "layer_norm", "layer_norm_affine",
                                 "rms_norm", "batch_norm"))
    n, dt = x[1].shape[-1], x[1].dtype
    if op == "layer_norm":
        return f"{F}.layer_norm({x[0]}, ({n},))"
    if op == "layer_norm_affine":
        w = b.new_input((n,), dt)
        return f"{F}.layer_norm({x[0]}, ({n},), {w}, {b.new_input((n,), dt)}, eps=1e-3)"
    if op == "rms_norm":
        w = b.new_input((n,), dt) if b.draw(st.booleans()) else "None"
        return f"{F}.rms_norm({x[0]}, ({n},), {w}, eps={b.choice((None, 1e-3))})"
    if op == "batch_norm":
        if x[1].dim() < 2:
            return None
        c = x[1].shape[1]
        mean, var = b.new_input((c,), dt), b.new_input((c,), dt, "positive")
        w, bias = (b.new_input((c,), dt), b.new_input((c,), dt)) if b.draw(st.booleans()) else ("None", "None")
        return f"{F}.batch_norm({x[0]}, {mean}, {var}, {w}, {bias}, False, 0.1, 1e-3)"
    if op == "softmax_dtype":
        return f"torch.softmax({x[0]}, {d}, dtype=torch.float32)"
    return f"torch.{op}({x[0]}, {d})"


def _contract(b):
    form = b.choice(("linear", "matmul", "mm", "bmm", "addmm"))
    rank = {"mm": 2, "addmm": 2, "bmm": 3}.get(form)
    x = b.float_value(rank) if rank else b.pick(lambda m: m.dim() >= 1 and _is_float(m))
    if x is None:
        return None
    k, n, dt = x[1].shape[-1], b.draw(st.integers(1, 4)), x[1].dtype
    if form == "linear":
        w = b.new_input((n, k), dt)
        bias = b.new_input((n,), dt) if b.draw(st.booleans()) else "None"
        return f"{F}.linear({x[0]}, {w}, {bias})"
    if form in ("mm", "addmm") and x[1].dim() == 2:
        w = b.new_input((k, n), dt)
        if form == "mm":
            return f"torch.mm({x[0]}, {w})"
        bias = b.new_input(b.choice(((n,), (1, n), (x[1].shape[0], n))), dt)
        return f"torch.addmm({bias}, {x[0]}, {w}, beta={b.choice((1, 0.5))}, " \
               f"alpha={b.choice((1, 2))})"
    if form == "bmm" and x[1].dim() == 3:
        return f"torch.bmm({x[0]}, {b.new_input((x[1].shape[0], k, n), dt)})"
    lead = list(x[1].shape[:-2]) if x[1].dim() > 2 and b.draw(st.booleans()) else []
    w = b.new_input(tuple(lead + [k, n]) if x[1].dim() > 1 else (k,) if b.draw(st.booleans()) else (k, n), dt)
    return f"torch.matmul({x[0]}, {w})"


def _conv(b):
    """conv1d/conv2d (stride, padding, dilation, groups) and 2-d pooling on small images."""
    two_d = b.draw(st.booleans())
    groups = b.choice((1, 1, 2))
    c = groups * b.draw(st.integers(1, 2))
    spatial = [b.draw(st.integers(3, 6)) for _ in range(2 if two_d else 1)]
    x, meta = b.float_value(len(spatial) + 2, (b.draw(st.integers(1, 2)), c, *spatial))
    c, spatial = meta.shape[1], list(meta.shape[2:])
    form = b.choice(("conv", "conv", "max_pool", "avg_pool", "adaptive"))
    if form != "conv":
        if not two_d:
            return None
        if form == "adaptive":
            return f"{F}.adaptive_avg_pool2d({x}, {b.choice(((1, 1), 1, (2, 1), (2, 2), (3, 2)))})"
        k = b.draw(st.integers(1, min(3, *spatial)))
        stride, pad = b.choice((None, 1, 2)), b.draw(st.integers(0, k // 2))
        extra = f", ceil_mode={b.draw(st.booleans())}" + (f", count_include_pad={b.draw(st.booleans())}"
                                                           if form == "avg_pool" else "")
        return f"{F}.{form}2d({x}, {k}, {stride}, {pad}{extra})"
    groups = groups if c % groups == 0 else 1
    out = groups * b.draw(st.integers(1, 2))
    k = [b.draw(st.integers(1, min(3, s))) for s in spatial]
    w = b.new_input((out, c // groups, *k), meta.dtype)
    bias = b.new_input((out,), meta.dtype) if b.draw(st.booleans()) else "None"
    stride, pad, dil = b.draw(st.integers(1, 2)), b.draw(st.integers(0, 1)), b.draw(st.integers(1, 2))
    return f"{F}.conv{len(spatial)}d({x}, {w}, {bias}, {stride}, {pad}, {dil}, {groups})"


def _attention(b):
    """scaled_dot_product_attention: bool/additive masks, causal, scale, grouped-query heads."""
    d = b.draw
    batch, heads, kv_heads = d(st.integers(1, 2)), b.choice((1, 2, 4)), 1
    if heads > 1 and d(st.booleans()):
        kv_heads = b.choice([h for h in (1, 2) if heads % h == 0])
    else:
        kv_heads = heads
    lq, lk, e, ev = d(st.integers(1, 4)), d(st.integers(1, 4)), d(st.integers(1, 4)), d(st.integers(1, 4))
    dt = b.choice((torch.float32,) * 3 + (torch.float64, torch.float16, torch.bfloat16))
    if d(st.booleans()):
        q, qm = b.float_value(4, (batch, heads, lq, e))
    else:
        q = b.new_input((batch, heads, lq, e), dt)
        qm = b.pool[-1][1]
    batch, heads, lq, e = qm.shape
    kv_heads = kv_heads if heads % kv_heads == 0 else heads
    k, v = b.new_input((batch, kv_heads, lk, e), qm.dtype), b.new_input((batch, kv_heads, lk, ev), qm.dtype)
    mask = b.choice(("none", "none", "causal", "bool", "float"))
    args = ""
    if mask == "causal":
        args = ", is_causal=True"
    elif mask != "none":
        shape = b.choice(((lq, lk), (batch, 1, lq, lk), (1, heads, 1, lk)))
        args = f", attn_mask={b.new_input(shape, torch.bool if mask == 'bool' else qm.dtype)}"
    if d(st.booleans()):
        args += f", scale={b.choice((0.5, 1.0, 0.125))}"
    if kv_heads != heads:
        args += ", enable_gqa=True"
    return f"{F}.scaled_dot_product_attention({q}, {k}, {v}{args})"


def _gather(b):
    """embedding, index_select, indexing with integer tensors, gather."""
    x = b.pick(lambda m: m.dim() >= 1)
    if x is None:
        return None
    shape, r = list(x[1].shape), x[1].dim()
    d = b.draw(st.integers(0, r - 1))
    idx_shape = tuple(b.draw(st.integers(1, 3)) for _ in range(b.draw(st.integers(0, 2))))
    form = b.choice(("embedding", "index_select", "index", "index2", "index_mid", "gather"))
    if form == "embedding":
        if r != 2 or not _is_float(x[1]):
            return None
        return f"{F}.embedding({b.index(idx_shape, shape[0])}, {x[0]})"
    if form == "index_select":
        return f"torch.index_select({x[0]}, {d}, {b.index((b.draw(st.integers(1, 4)),), shape[d])})"
    if form == "index":
        return f"{x[0]}[{b.index(idx_shape, shape[0], negative=True)}]"
    if form == "index2" and r >= 2:
        return f"{x[0]}[{b.index(idx_shape, shape[0])}, {b.index(idx_shape[-1:], shape[1], negative=True)}]"
    if form == "index_mid" and r >= 2:
        return f"{x[0]}[:, {b.index(idx_shape, shape[1])}]"
    if form == "gather":
        ishape = [b.draw(st.integers(1, s)) for s in shape]
        ishape[d] = b.draw(st.integers(1, 4))
        return f"torch.gather({x[0]}, {d}, {b.index(ishape, shape[d])})"
    return None


def _layout(b):
    x = b.pick(empty=True)
    shape, r = list(x[1].shape), x[1].dim()
    op = b.choice(("reshape", "flatten", "unsqueeze", "squeeze", "permute", "transpose", "slice",
                                 "cat", "expand", "view", "t", "contiguous", "select"))
    if op == "reshape":
        return f"{x[0]}.reshape(-1)" if b.draw(st.booleans()) else f"{x[0]}.reshape({[1] + shape})"
    if op == "flatten":
        return f"{x[0]}.flatten({b.draw(st.integers(0, max(r - 1, 0)))})"
    if op == "unsqueeze":
        return f"{x[0]}.unsqueeze({b.draw(st.integers(-r - 1, r))})"
    if op == "squeeze":
        if r == 0 or b.draw(st.booleans()):
            return f"{x[0]}.squeeze()"
        d = b.draw(st.integers(-r, r - 1))
        return f"{x[0]}.squeeze({d})" if b.draw(st.booleans()) else f"{x[0]}.squeeze((0, {d}))"  # squeeze.dims
    if r == 0:
        return None
    if op == "permute":
        perm = b.draw(st.permutations(list(range(r))))
        return f"{x[0]}.permute({list(perm)})"
    if op == "transpose":
        return f"{x[0]}.transpose({b.draw(st.integers(-r, r - 1))}, {b.draw(st.integers(-r, r - 1))})"
    d = b.draw(st.integers(0, r - 1))
    if op == "slice":
        start, stop = b.draw(st.integers(-4, 4)), b.choice((None, -1, 1, 2, 3, 10))
        step = b.draw(st.integers(1, 2))
        return f"{x[0]}[{':, ' * d}{start}:{stop}:{step}]"
    if op == "select":
        if shape[d] == 0:
            return None
        return f"{x[0]}[{':, ' * d}{b.draw(st.integers(-shape[d], shape[d] - 1))}]"
    if op == "cat":
        other = list(shape)
        other[d] = b.draw(st.integers(1, 3))
        fn = b.choice(("cat", "cat", "concat", "concatenate"))
        return f"torch.{fn}([{x[0]}, {b.new_input(tuple(other), x[1].dtype)}, {x[0]}], {d})"
    if op == "expand":
        return f"{x[0]}.unsqueeze(0).expand({[b.draw(st.integers(1, 3))] + [-1] * r})"
    if op == "view":
        return f"{x[0]}.view({list(shape[:-1]) + [shape[-1]]})" if x[1].is_contiguous() else None
    if op == "t":
        return f"{x[0]}.t()" if r <= 2 else f"{x[0]}.mT"
    return f"{x[0]}.contiguous()"


def _layout_more(b):
    """The rest of the view/copy family: split and friends, stack, repeat, narrow, *_as, swapaxes, ..."""
    x = b.pick(lambda m: m.dim() >= 1)
    if x is None:
        return None
    shape, r = list(x[1].shape), x[1].dim()
    d = b.draw(st.integers(0, r - 1))
    n = shape[d]
    op = b.choice(("split", "split_sizes", "chunk", "unbind", "tensor_split", "stack", "repeat",
                                 "repeat_interleave", "narrow", "unflatten", "swapaxes", "broadcast_to",
                                 "expand_as", "view_as", "reshape_as", "numpy_T", "identity"))
    if op == "split":
        s = b.draw(st.integers(1, 3))
        return f"torch.split({x[0]}, {s}, {d})[{b.draw(st.integers(0, (n + s - 1) // s - 1))}]"
    if op == "split_sizes":
        first = b.draw(st.integers(0, n))
        return f"{x[0]}.split([{first}, {n - first}], {d})[{b.draw(st.integers(0, 1))}]"
    if op == "chunk":
        return f"{x[0]}.chunk({b.draw(st.integers(1, 3))}, {d})[{b.choice((0, -1))}]"
    if op == "unbind":
        return f"{x[0]}.unbind({d})[{b.draw(st.integers(0, n - 1))}]"
    if op == "tensor_split":
        k = b.draw(st.integers(1, 3))
        return f"torch.tensor_split({x[0]}, {k}, {d})[{b.draw(st.integers(0, k - 1))}]"
    if op == "stack":
        return f"torch.stack([{x[0]}, {b.new_input(tuple(shape), x[1].dtype)}], {b.draw(st.integers(-r - 1, r))})"
    if op == "repeat":
        return f"{x[0]}.repeat({[b.draw(st.integers(1, 2)) for _ in range(r + b.draw(st.integers(0, 1)))]})"
    if op == "repeat_interleave":
        return f"torch.repeat_interleave({x[0]}, {b.draw(st.integers(1, 3))}, {d})"
    if op == "narrow":
        start = b.draw(st.integers(0, n - 1))
        return f"{x[0]}.narrow({d}, {start}, {b.draw(st.integers(1, n - start))})"
    if op == "unflatten":
        return f"{x[0]}.unflatten({d}, ({b.choice((1, n))}, -1))"
    if op == "swapaxes":
        return f"{x[0]}.swapaxes({d}, {b.draw(st.integers(-r, r - 1))})"
    if op == "broadcast_to":
        return f"{x[0]}.broadcast_to({[b.draw(st.integers(1, 2))] + [s if s != 1 else 3 for s in shape]})"
    if op in ("expand_as", "view_as", "reshape_as"):
        fits = (lambda m: _broadcastable(m.shape, x[1].shape)
                and tuple(torch.broadcast_shapes(m.shape, x[1].shape)) == tuple(m.shape)) if op == "expand_as" else \
            (lambda m: m.numel() == x[1].numel())
        y = b.pick(fits)
        return f"{x[0]}.{op}({y[0]})" if y else None
    if op == "numpy_T":
        return f"{x[0]}.T" if r <= 2 else None
    fn = b.choice(("clone()", "detach()", "dropout", "alpha_dropout", "feature_alpha_dropout",
                                 "dropout1d"))
    return f"{x[0]}.{fn}" if fn.endswith(")") else f"{F}.{fn}({x[0]}, 0.5, training=False)"


def _spatial(b):
    """F.pad (constant with cropping, reflect, replicate, circular; and the ATen spellings), F.interpolate
    (nearest, nearest-exact, (bi/tri)linear with align_corners both ways; by size or scale factor),
    conv_transpose1d/2d/3d (stride, padding, output_padding, groups, dilation), group norm."""
    form = b.choice(("pad", "pad", "pad_mode", "pad_mode", "pad_mode", "upsample", "upsample", "upsample",
                     "upsample_default", "upsample_default", "conv_transpose", "conv_transpose", "group_norm",
                     "group_norm"))
    if form == "pad":
        x = b.pick(lambda m: m.dim() >= 1, empty=True)
        if x is None:
            return None
        k = b.draw(st.integers(1, min(3, x[1].dim())))
        pads = [b.draw(st.integers(-1, 2)) for _ in range(2 * k)]
        spelling = b.choice(("F.pad value", "F.pad", "constant_pad_nd"))
        if spelling == "F.pad":
            return f"{F}.pad({x[0]}, {pads})"
        value = b.choice((0, 1.5, -2, 3, "float('-inf')", True))
        if spelling == "constant_pad_nd":
            return f"torch.constant_pad_nd({x[0]}, {pads}, {value})"
        return f"{F}.pad({x[0]}, {pads}, value={value})"
    n = b.choice((1, 2, 3))
    groups = b.choice((1, 1, 2))
    spatial = [b.draw(st.integers(2, 5 if n < 3 else 3)) for _ in range(n)]
    x, meta = b.float_value(n + 2, (b.draw(st.integers(1, 2)), groups * b.draw(st.integers(1, 2)), *spatial))
    c, spatial = meta.shape[1], list(meta.shape[2:])
    if form == "pad_mode":
        mode = b.choice(("reflect", "replicate", "circular"))
        pads = []
        for s in reversed(spatial):  # every spatial dim: the mode pads want 1 or 2 unpadded leading dims
            pads += [b.draw(st.integers(0, min(2, s - (mode == "reflect")))) for _ in range(2)]
        k = len(pads) // 2
        if b.draw(st.booleans()):
            return f"{F}.pad({x}, {pads}, mode={mode!r})"
        op = {"reflect": f"reflection_pad{k}d", "replicate": f"replication_pad{k}d", "circular": "_pad_circular"}[mode]
        return f"torch.ops.aten.{op}({x}, {pads})"
    linear = {1: "linear", 2: "bilinear", 3: "trilinear"}[n]
    if form == "upsample":
        mode = b.choice(("nearest", "nearest-exact", linear, linear))
        if b.draw(st.booleans()):
            size = [b.draw(st.integers(1, 7)) for _ in range(n)]
            how = f"size={size if n > 1 and b.draw(st.booleans()) else size[0]}"
        else:
            scales = [b.choice((2, 1.5, 0.5, 3, 0.75)) for _ in range(n)]
            how = f"scale_factor={tuple(scales) if n > 1 and b.draw(st.booleans()) else scales[0]}"
            if b.draw(st.integers(0, 3)) == 0:
                how += ", recompute_scale_factor=True"
        if mode == linear:
            how += f", align_corners={b.draw(st.booleans())}"
        return f"{F}.interpolate({x}, {how}, mode={mode!r})"
    if form == "upsample_default":  # the .default overloads (decomposed graphs): output size and maybe the scales
        size = [b.draw(st.integers(1, 7)) for _ in range(n)]
        scales = ""
        if b.draw(st.booleans()):
            factors = [b.choice((2.0, 1.5, 0.5)) for _ in range(n)]
            size = [max(1, int(s * f)) for s, f in zip(spatial, factors)]
            scales = ", " + ", ".join(map(str, factors))
        kind = b.choice(("nearest", "_nearest_exact", "linear"))
        if kind == "linear":
            op = {1: "upsample_linear1d", 2: "upsample_bilinear2d", 3: "upsample_trilinear3d"}[n]
            return f"torch.ops.aten.{op}.default({x}, {size}, {b.draw(st.booleans())}{scales})"
        op = f"upsample_nearest{n}d" if kind == "nearest" else f"_upsample_nearest_exact{n}d"
        return f"torch.ops.aten.{op}.default({x}, {size}{scales})"
    if form == "group_norm":
        g = b.choice([d for d in (1, 2, 3, 4) if c % d == 0])
        dt = meta.dtype
        w, bias = (b.new_input((c,), dt), b.new_input((c,), dt)) if b.draw(st.booleans()) else ("None", "None")
        eps = b.choice((1e-5, 1e-3))
        if b.draw(st.integers(0, 3)) == 0:
            hw = int(torch.Size(spatial).numel())
            return (f"torch.ops.aten.native_group_norm({x}.contiguous(), {w}, {bias}, {meta.shape[0]}, {c}, {hw}, "
                    f"{g}, {eps})[0]")  # the ATen op wants a contiguous input
        return f"{F}.group_norm({x}, {g}, {w}, {bias}, {eps})"
    groups = groups if c % groups == 0 else 1
    k = [b.draw(st.integers(1, 3)) for _ in range(n)]
    w = b.new_input((c, b.draw(st.integers(1, 2)), *k), meta.dtype)
    bias = b.new_input((groups * b.pool[-1][1].shape[1],), meta.dtype) if b.draw(st.booleans()) else "None"
    stride, dil = b.draw(st.integers(1, 3)), b.draw(st.integers(1, 2))
    pad, out_pad = b.draw(st.integers(0, 2)), b.draw(st.integers(0, max(stride, dil) - 1))
    if b.draw(st.integers(0, 3)) == 0:  # per-dim arguments
        stride = [b.draw(st.integers(1, 2)) for _ in range(n)]
        out_pad = [b.draw(st.integers(0, s - 1)) for s in stride]
    if b.draw(st.integers(0, 4)) == 0:  # the generic op, as decomposed graphs hold it
        return (f"torch.convolution({x}, {w}, {bias}, {_per_dim(stride, n)}, {_per_dim(pad, n)}, {_per_dim(dil, n)}, "
                f"True, {_per_dim(out_pad, n)}, {groups})")
    return f"{F}.conv_transpose{n}d({x}, {w}, {bias}, {stride}, {pad}, {out_pad}, {groups}, {dil})"


def _per_dim(v, n: int) -> list:
    return list(v) if isinstance(v, list) else [v] * n


def _scatter(b):
    """scatter (src / value, reduce add / multiply), scatter_add, scatter_reduce (include_self both ways),
    index_put (integer indices with None gaps, a boolean mask; accumulate both ways), slice_scatter,
    select_scatter. Writes without a reduction get indices distinct where they meet."""
    x = b.pick(lambda m: m.dim() >= 1)
    if x is None:
        return None
    shape, r, dt = list(x[1].shape), x[1].dim(), x[1].dtype
    d = b.draw(st.integers(0, r - 1))
    form = b.choice(("scatter", "scatter_value", "scatter_add", "scatter_reduce", "scatter_reduce",
                     "index_put", "index_put", "index_put_mask", "slice_scatter", "select_scatter"))
    if form.startswith("scatter"):
        ishape = [b.draw(st.integers(1, s)) for s in shape]
        reduce = None
        if form == "scatter_reduce":
            reduce = b.choice(("sum", "prod", "mean", "amax", "amin"))
        elif form != "scatter_add" and b.draw(st.booleans()):
            reduce = b.choice(("add", "multiply"))
        if reduce is None and form != "scatter_add":
            idx = b.index(ishape, shape[d], distinct_dim=d)
        else:
            ishape[d] = b.draw(st.integers(1, 4))
            idx = b.index(ishape, shape[d], negative=False)
        dim = d - r if b.draw(st.booleans()) else d
        if form == "scatter_value":
            extra = f", reduce={reduce!r}" if reduce else ""
            return f"torch.scatter({x[0]}, {dim}, {idx}, {b.choice((0, 1.5, -2, 3))}{extra})"
        src = b.new_input(tuple(s + b.draw(st.integers(0, 1)) for s in ishape), dt)
        if form == "scatter_add":
            return f"{x[0]}.scatter_add({dim}, {idx}, {src})"
        if form == "scatter_reduce":
            return f"{x[0]}.scatter_reduce({dim}, {idx}, {src}, {reduce!r}, include_self={b.draw(st.booleans())})"
        return f"{x[0]}.scatter({dim}, {idx}, {src}" + (f", reduce={reduce!r})" if reduce else ")")
    if form == "slice_scatter":
        start, end, step = b.choice((None, 0, 1, -2)), b.choice((None, -1, 2, 3, 10)), b.draw(st.integers(1, 2))
        sl = [slice(None)] * d + [slice(start, end, step)]
        src = b.new_input(tuple(torch.empty(shape, device="meta")[tuple(sl)].shape), dt)
        return f"torch.slice_scatter({x[0]}, {src}, {d}, {start}, {end}, {step})"
    if form == "select_scatter":
        i = b.draw(st.integers(-shape[d], shape[d] - 1))
        return f"torch.select_scatter({x[0]}, {b.new_input(tuple(shape[:d] + shape[d + 1:]), dt)}, {d}, {i})"
    accumulate = b.draw(st.booleans())
    if form == "index_put_mask":  # x[mask] = value over the leading dims
        m = b.draw(st.integers(1, r))
        mask = b.new_input(tuple(shape[:m]), torch.bool)
        v = b.new_input(b.choice(((), (1,))), dt)
        return f"torch.index_put({x[0]}, ({mask},), {v}, {accumulate})"
    # integer indices at some of the first dims (None elsewhere); without accumulate, the first index distinct
    k = b.draw(st.integers(1, min(r, 3)))
    at = sorted(b.draw(st.permutations(list(range(k))))[:b.draw(st.integers(1, k))])
    length = b.draw(st.integers(1, 3)) if accumulate else b.draw(st.integers(1, shape[at[0]]))
    indices, metas = ["None"] * (at[-1] + 1), [None] * (at[-1] + 1)
    for p in at:
        ishape = (length,) if p == at[0] else b.choice(((length,), (1,)))
        indices[p] = b.index(ishape, shape[p], negative=accumulate,
                             distinct_dim=0 if p == at[0] and not accumulate else None)
        metas[p] = b.pool[-1][1]
    result = list(torch.ops.aten.index(torch.empty(shape, dtype=dt, device="meta"), metas).shape)
    vshape = result[b.draw(st.integers(0, len(result))):]
    v = b.new_input(tuple(1 if b.draw(st.integers(0, 3)) == 0 else s for s in vshape), dt)
    if "None" in indices:
        return f"torch.ops.aten.index_put({x[0]}, [{', '.join(indices)}], {v}, {accumulate})"
    return f"torch.index_put({x[0]}, ({', '.join(indices)},), {v}, {accumulate})"


STEP_KINDS = (_unary, _binary, _binary, _compare, _cast, _factory, _reduce, _normalize, _contract, _conv,
              _attention, _gather, _layout, _layout, _layout_more, _spatial, _scatter)
