"""Sparse attention: the user-facing `SparseAttention` options, head patterns and block layouts.

    compile(model, target="h100", sparse_attention=SparseAttention(policy="window", window=1024, sinks=64))
    compile(model, sparse_attention=SparseAttention(policy="calibrate", budget=1.0,
                                                    calibration_inputs=[(tokens,), ...]))

A *pattern* says which key blocks a query block of one head visits; it is a small JSON-able dict:

    {"pattern": "dense"}
    {"pattern": "window", "window": 1024, "sinks": 64}    sliding window + sink tokens (in tokens, rounded
                                                          up to blocks); with sinks it is MInference's A-shape
    {"pattern": "vertical_slash", "vertical": 4, "slash": 4}   per call: from the last query block's
                                                          attention, the top key blocks (columns) and the top
                                                          diagonal offsets (slashes), in blocks
    {"pattern": "topk", "k": 4}                           per call: top-k key blocks by pooled q·k score
    {"pattern": "blocks"}                                 the op's explicit `layout`

Layouts are block masks [H, nQB, nKB] (True = visit), turned into the CSR form of the kernels
`(counts [H, nQB], indices [H, nQB, maxK])` by `to_csr`. Every visited block also gets the causal mask
inside it when the attention is causal; the diagonal block is always visited (no empty rows).
This module is torch-only (it sits below the passes and backends, which share it); calibration and putting
the rewrite into a pipeline live in solder/sparse_calibrate.py, above them.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from solder.compiler.errors import SolderError

POLICIES = ("window", "blocks", "calibrate")
STATIC = ("dense", "window", "blocks")
DYNAMIC = ("vertical_slash", "topk")


class SparseAttentionError(SolderError):
    """A bad sparse-attention policy, pattern or layout."""


@dataclass
class SparseAttention:
    """What `compile(..., sparse_attention=...)` should do to each attention. Opt-in: it changes numerics.

    policy: "window" (every causal head: sliding `window` + `sinks` tokens), "blocks" (a user block
      `layout`, bool [H or 1, nQB, nKB], or a FlexAttention-style `mask_mod(b, h, q_idx, kv_idx) -> bool`,
      rounded up to whole blocks), or "calibrate" (per layer and head, the lowest-density pattern whose
      attention output stays within `budget` of dense on `calibration_inputs`, if the cost model says
      it beats dense; then the whole model's output drift is checked and the plan backed off, below).
    budget: the `calibrate` policy's accuracy dial, one number for two limits, both measured on
      `calibration_inputs` as "the worst row's change in units of the typical row's size":
      - per head: max over query rows of |o_sparse - o_dense| / rms row norm of the head's values must be
        <= budget (a head's output is a convex combination of value rows, so this error is at most about
        2 whatever the pattern: a per-head limit of 2 or more admits any pattern);
      - end to end: the model's outputs (each floating-point output, rows along its last dim; an LM's
        logits per position) may move by at most min(budget, 2) / 2 in the same units: max over rows of
        |y_sparse - y_dense| / rms row norm of y_dense. Per-head errors within the budget compound over
        layers, so after the per-head choice `calibrate` runs the model with the plan and, while this drift
        is over the bound, backs off: the attention whose densifying lowers the drift most gets a lower
        per-head budget (its worst heads become denser or dense), until the drift is within the bound.
      So budget 0 is dense, 1.0 (the default) lets no output row move by more than half the outputs' rms
      row norm, and budgets of 2 or more all mean "any pattern per head, output rows within one rms row
      norm of dense". `explain()` shows per attention the end-to-end drift, the bound and what the back-off
      changed; `calibration` holds the figures. The bound holds on the calibration inputs; other inputs
      can drift more, so calibrate on inputs like the ones the model will see.
    max_density: heads (and whole attentions) denser than this stay dense.
    """

    policy: str = "window"
    budget: float = 1.0
    window: int = 1024
    sinks: int = 64
    block: int = 64
    layout: Any = None
    mask_mod: Callable | None = None
    calibration_inputs: list | None = None
    max_density: float = 0.8
    candidates: list[dict] | None = None
    plan: list[dict] | None = field(default=None, repr=False)
    """Per attention op (in IR order): {"heads": [pattern...], "density": d} — set by `calibrate`."""
    calibration: dict | None = field(default=None, repr=False)
    """Set by `calibrate`: the end-to-end output drift before and after back-off, its bound, the back-off steps
    and the final per-head budget of each attention."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise SparseAttentionError(f"SparseAttention: unknown policy {self.policy!r}; expected one of {POLICIES}")
        if self.block not in (16, 32, 64, 128):
            raise SparseAttentionError(f"SparseAttention: block must be 64 or 128 (16, 32 for small models), got {self.block}")
        if self.policy == "blocks" and (self.layout is None) == (self.mask_mod is None):
            raise SparseAttentionError("SparseAttention(policy='blocks'): give exactly one of layout= or mask_mod=")
        if self.policy == "calibrate" and not self.calibration_inputs and self.plan is None:
            raise SparseAttentionError("SparseAttention(policy='calibrate'): calibration_inputs= is required "
                                       "(a list of argument tuples to run the model on)")


# ---------------------------------------------------------------------------------------------
# Patterns -> block masks
# ---------------------------------------------------------------------------------------------


def nblocks(n: int, block: int) -> int:
    return -(-n // block)


def causal_blocks(n_q: int, n_k: int, device=None) -> torch.Tensor:
    """Key blocks that hold any key j <= query i for some i of the query block (top-left aligned)."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()


def window_blocks(n_q: int, n_k: int, block: int, window: int, sinks: int, device=None) -> torch.Tensor:
    """Query block i sees key blocks [i - ceil(window/block), i] and the first ceil(sinks/block) blocks."""
    i = torch.arange(n_q, device=device)[:, None]
    j = torch.arange(n_k, device=device)[None, :]
    w, s = nblocks(window, block), nblocks(sinks, block)
    return ((j <= i) & (j >= i - w)) | ((j < s) & (j <= i))


def _diag(n_q: int, n_k: int, device=None) -> torch.Tensor:
    return torch.eye(n_q, n_k, dtype=torch.bool, device=device)


def vertical_slash_blocks(q: torch.Tensor, k: torch.Tensor, block: int, scale: float, vertical: int,
                          slash: int) -> torch.Tensor:
    """One head's per-call layout [nQB, nKB] from the last query block's attention (MInference style).

    q [T, D], k [S, D]. Column mass per key block picks `vertical` key blocks (block 0 always), diagonal
    mass per offset block picks `slash` offsets (offset 0 always); each offset covers the two key blocks
    a token diagonal crosses.
    """
    t, s = q.shape[0], k.shape[0]
    n_q, n_k = nblocks(t, block), nblocks(s, block)
    rows = torch.arange(max(0, t - block), t, device=q.device)
    a = (q[rows].float() @ k.float().T) * scale
    a = a.masked_fill(torch.arange(s, device=q.device)[None, :] > rows[:, None], -math.inf).softmax(-1)
    col = torch.zeros(n_k * block, device=q.device)
    col[:s] = a.sum(0)
    col = col.view(n_k, block).sum(1)
    col[0] = math.inf
    vert = col.topk(min(vertical, n_k)).indices
    off = (rows[:, None] - torch.arange(s, device=q.device)[None, :]).clamp(min=0)
    diag = torch.zeros(n_k * block, device=q.device).index_add_(0, off.reshape(-1), a.reshape(-1))
    diag = diag.view(n_k, block).sum(1)
    diag[0] = math.inf
    offs = diag.topk(min(slash, n_k)).indices
    i = torch.arange(n_q, device=q.device)[:, None]
    j = torch.arange(n_k, device=q.device)[None, :]
    m = torch.zeros(n_q, n_k, dtype=torch.bool, device=q.device)
    m[:, vert] = True
    d = i - j
    m |= (d[..., None] == offs).any(-1) | (d[..., None] == offs + 1).any(-1)
    return m & (j <= i) | _diag(n_q, n_k, q.device)


def topk_blocks(q: torch.Tensor, k: torch.Tensor, block: int, kk: int) -> torch.Tensor:
    """One head's per-call layout [nQB, nKB]: per query block the `kk` key blocks of highest mean-pooled
    q·k, plus the diagonal and the first block."""
    n_q, n_k = nblocks(q.shape[0], block), nblocks(k.shape[0], block)
    qp = torch.zeros(n_q * block, q.shape[1], device=q.device)
    kp = torch.zeros(n_k * block, k.shape[1], device=q.device)
    qp[: q.shape[0]], kp[: k.shape[0]] = q.float(), k.float()
    sc = qp.view(n_q, block, -1).mean(1) @ kp.view(n_k, block, -1).mean(1).T
    sc = sc.masked_fill(~causal_blocks(n_q, n_k, q.device), -math.inf)
    top = sc.topk(min(kk, n_k), -1).indices
    m = torch.zeros(n_q, n_k, dtype=torch.bool, device=q.device).scatter_(1, top, True)
    m[:, 0] = True
    return m & causal_blocks(n_q, n_k, q.device) | _diag(n_q, n_k, q.device)


def static_mask(pattern: dict, n_q: int, n_k: int, block: int, causal: bool, device=None) -> torch.Tensor:
    """The block mask [nQB, nKB] of a shape-only pattern (dense or window)."""
    kind = pattern.get("pattern")
    if kind == "dense":
        return causal_blocks(n_q, n_k, device) if causal else torch.ones(n_q, n_k, dtype=torch.bool, device=device)
    if kind in ("window", "a_shape"):
        return window_blocks(n_q, n_k, block, int(pattern["window"]), int(pattern.get("sinks", 0)), device)
    raise SparseAttentionError(f"sparse attention: pattern {kind!r} is not a shape-only pattern; expected dense or window")


def head_masks(heads: list[dict], n_heads: int, t: int, s: int, block: int, scale: float, causal: bool,
               q: torch.Tensor | None = None, k: torch.Tensor | None = None,
               explicit: torch.Tensor | None = None) -> torch.Tensor:
    """The block mask [Hq, nQB, nKB] of one batch element. q [Hq, T, D] and k [Hkv, S, D] are needed
    only by the per-call patterns; `explicit` [H or 1, nQB, nKB] serves the `blocks` pattern."""
    n_q, n_k = nblocks(t, block), nblocks(s, block)
    device = q.device if q is not None else None
    out = []
    for h, p in enumerate(expand_heads(heads, n_heads)):
        kind = p.get("pattern")
        if kind in DYNAMIC and q is None:
            raise SparseAttentionError(f"sparse attention: pattern {kind!r} is computed per call and needs q and k")
        if kind == "blocks":
            if explicit is None:
                raise SparseAttentionError("sparse attention: pattern 'blocks' needs the op's explicit layout")
            out.append(explicit[h if explicit.shape[0] > 1 else 0].to(device))
        elif kind == "vertical_slash":
            kh = k[h // (n_heads // k.shape[0])]
            out.append(vertical_slash_blocks(q[h], kh, block, scale, int(p["vertical"]), int(p["slash"])))
        elif kind == "topk":
            out.append(topk_blocks(q[h], k[h // (n_heads // k.shape[0])], block, int(p["k"])))
        else:
            out.append(static_mask(p, n_q, n_k, block, causal, device))
    return torch.stack(out)


def expand_heads(heads: list[dict], n_heads: int) -> list[dict]:
    """One pattern per head: a single pattern is shared by all heads."""
    if len(heads) == 1:
        return heads * n_heads
    if len(heads) != n_heads:
        raise SparseAttentionError(f"sparse attention: heads has {len(heads)} patterns; expected 1 or {n_heads}")
    return heads


def is_dynamic(heads: list[dict]) -> bool:
    """True when some head's layout depends on the inputs (computed per call)."""
    return any(p.get("pattern") in DYNAMIC for p in heads)


def to_csr(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts [H, nQB] int32, indices [H, nQB, maxK] int32, padded with 0) of a block mask [H, nQB, nKB]."""
    n_k = mask.shape[-1]
    ar = torch.arange(n_k, device=mask.device)
    keyed = torch.where(mask, ar, ar + n_k)
    counts = mask.sum(-1)
    max_k = max(int(counts.max()), 1)
    idx = keyed.sort(-1).values[..., :max_k]
    idx = torch.where(idx >= n_k, 0, idx)
    return counts.to(torch.int32), idx.to(torch.int32)


def density(mask: torch.Tensor, causal: bool) -> float:
    """Visited blocks over the blocks dense (causal) attention visits."""
    n_q, n_k = mask.shape[-2:]
    full = causal_blocks(n_q, n_k, mask.device) if causal else torch.ones(n_q, n_k, dtype=torch.bool, device=mask.device)
    return float((mask & full).sum()) / float(full.sum() * (mask.numel() // (n_q * n_k)))


def mask_mod_blocks(mask_mod: Callable, n_heads: int, t: int, s: int, block: int) -> torch.Tensor:
    """Block mask [H, nQB, nKB] of a FlexAttention-style `mask_mod(b, h, q_idx, kv_idx)`: a block is kept
    when any of its elements is (batch 0 is evaluated; rows are evaluated one query block at a time)."""
    n_q, n_k = nblocks(t, block), nblocks(s, block)
    kv = torch.arange(s)[None, None, :]
    h = torch.arange(n_heads)[:, None, None]
    b = torch.zeros((), dtype=torch.long)
    out = torch.zeros(n_heads, n_q, n_k, dtype=torch.bool)
    pad = n_k * block - s
    for i in range(n_q):
        q_idx = torch.arange(i * block, min(t, (i + 1) * block))[None, :, None]
        keep = torch.as_tensor(mask_mod(b, h, q_idx, kv)).expand(n_heads, q_idx.shape[1], s)
        keep = torch.nn.functional.pad(keep.any(1), (0, pad))
        out[:, i] = keep.view(n_heads, n_k, block).any(-1)
    return out


def user_blocks(sa: SparseAttention, n_heads: int, t: int, s: int) -> torch.Tensor:
    """The `blocks` policy's block mask [H or 1, nQB, nKB] for one attention shape."""
    if sa.mask_mod is not None:
        return mask_mod_blocks(sa.mask_mod, n_heads, t, s, sa.block)
    lay = sa.layout
    if isinstance(lay, (tuple, list)) and len(lay) == 2:  # (counts, indices)
        counts, idx = (torch.as_tensor(x) for x in lay)
        n_k = nblocks(s, sa.block)
        keep = torch.arange(idx.shape[-1])[None, None, :] < counts[..., None]
        m = torch.zeros(*counts.shape, n_k, dtype=torch.int32)  # add: padded indices repeat block 0
        lay = m.scatter_add_(-1, idx.long().clamp(max=n_k - 1), keep.int()) > 0
    lay = torch.as_tensor(lay, dtype=torch.bool)
    lay = lay[None] if lay.dim() == 2 else lay
    want = (nblocks(t, sa.block), nblocks(s, sa.block))
    if tuple(lay.shape[1:]) != want or lay.shape[0] not in (1, n_heads):
        raise SparseAttentionError(f"SparseAttention(policy='blocks'): layout must be [H or 1, {want[0]}, {want[1]}] "
                                   f"for T={t}, S={s}, block={sa.block}; got {tuple(lay.shape)}")
    return lay


# ---------------------------------------------------------------------------------------------
# The `blocks` policy from text (the CLI): a layout file, named mask terms, or a mask_mod in a file
# ---------------------------------------------------------------------------------------------

MASK_TERMS = ("local", "sinks", "every")


def named_mask_mod(spec: str, block: int) -> Callable:
    """A causal FlexAttention-style `mask_mod(b, h, q_idx, kv_idx)` from text: the union of
    comma-separated terms, intersected with `kv_idx <= q_idx`:

        local:W   keys less than W tokens behind the query (FlexAttention's sliding window)
        sinks:S   the first S keys (attention sinks)
        every:K   every K-th key block (`kv_idx // block % K == 0`): strided global columns

    e.g. `local:256,sinks:64` (the window policy's A-shape) or `local:64,every:4`.
    """
    terms = []
    for part in (x.strip() for x in spec.split(",") if x.strip()):
        name, _, arg = part.partition(":")
        if name not in MASK_TERMS or not arg.strip().isdigit() or int(arg) < 1:
            raise SparseAttentionError(f"sparse attention: bad mask term {part!r} in {spec!r}; expected "
                                       "comma-separated local:W, sinks:S or every:K with positive integers "
                                       "(e.g. 'local:256,sinks:64')")
        terms.append((name, int(arg)))
    if not terms:
        raise SparseAttentionError(f"sparse attention: empty mask {spec!r}; expected e.g. 'local:256,sinks:64'")

    def mask_mod(b, h, q_idx, kv_idx):
        keep = torch.zeros((), dtype=torch.bool)
        for name, n in terms:
            if name == "local":
                keep = keep | (q_idx - kv_idx < n)
            elif name == "sinks":
                keep = keep | (kv_idx < n)
            else:
                keep = keep | ((kv_idx // block) % n == 0)
        return keep & (kv_idx <= q_idx)

    mask_mod.__name__ = f"mask[{spec}]"
    return mask_mod


def load_layout(path: str):
    """A block layout from a file: `.pt` (torch.save of a bool block mask [H or 1, nQB, nKB] or
    [nQB, nKB], or a (counts, indices) pair) or `.npy` (a bool or 0/1 array of the same shapes)."""
    from pathlib import Path

    if not Path(path).is_file():
        raise SparseAttentionError(f"sparse attention: no such layout file {path!r}")
    if path.endswith(".npy"):
        import numpy as np

        lay = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.endswith(".pt"):
        try:
            lay = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise SparseAttentionError(f"sparse attention: cannot read layout {path!r}: {e}") from None
    else:
        raise SparseAttentionError(f"sparse attention: layout file {path!r} must end in .pt or .npy")
    if isinstance(lay, (tuple, list)) and len(lay) == 2 and all(isinstance(x, torch.Tensor) for x in lay):
        return tuple(lay)
    if not isinstance(lay, torch.Tensor) or lay.dim() not in (2, 3):
        raise SparseAttentionError(f"sparse attention: layout {path!r} must hold a block mask [H or 1, nQB, nKB] "
                                   "or [nQB, nKB], or a (counts, indices) pair")
    if lay.dtype != torch.bool and not ((lay == 0) | (lay == 1)).all():
        raise SparseAttentionError(f"sparse attention: layout {path!r} must be boolean (or 0/1)")
    return lay.bool()


def load_mask_mod(ref: str) -> Callable:
    """A FlexAttention-style `mask_mod` named `FILE.py:NAME` or `package.module:NAME`."""
    import importlib
    import importlib.util
    from pathlib import Path

    where, _, name = ref.rpartition(":")
    if not where or not name:
        raise SparseAttentionError(f"sparse attention: mask-mod must be FILE.py:NAME or module:NAME, got {ref!r}")
    if where.endswith(".py"):
        if not Path(where).is_file():
            raise SparseAttentionError(f"sparse attention: no such file {where!r} (mask-mod={ref!r})")
        spec = importlib.util.spec_from_file_location(f"_solder_mask_mod_{Path(where).stem}", where)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise SparseAttentionError(f"sparse attention: cannot import {where!r} (mask-mod={ref!r}): {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise SparseAttentionError(f"sparse attention: {where} has no function {name!r} (mask-mod={ref!r})")
    return fn


def blocks_from_text(block: int, layout: str = "", mask: str = "", mask_mod: str = "") -> SparseAttention:
    """The `blocks` policy of `rewrite-sparse-attention{policy=blocks layout=|mask=|mask-mod=...}`."""
    given = [n for n, v in (("layout", layout), ("mask", mask), ("mask-mod", mask_mod)) if v]
    if len(given) != 1:
        raise SparseAttentionError("rewrite-sparse-attention{policy=blocks} needs exactly one of "
                                   "layout=\"FILE.pt|.npy\", mask=\"local:W,sinks:S,every:K\" or "
                                   "mask-mod=\"FILE.py:NAME\"" +
                                   (f"; got {', '.join(given)}" if given else ""))
    if layout:
        return SparseAttention(policy="blocks", layout=load_layout(layout), block=block)
    fn = named_mask_mod(mask, block) if mask else load_mask_mod(mask_mod)
    return SparseAttention(policy="blocks", mask_mod=fn, block=block)


def load_calibration_inputs(path: str) -> list[tuple]:
    """Calibration inputs from a `.pt` file: a tensor (one input), a tuple of tensors (one call's
    arguments), or a list of either (several calls)."""
    from pathlib import Path

    if not Path(path).is_file():
        raise SparseAttentionError(f"sparse attention: no such calibration file {path!r}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SparseAttentionError(f"sparse attention: cannot read calibration inputs {path!r}: {e}") from None
    calls = data if isinstance(data, list) else [data]
    out = []
    for c in calls:
        c = c if isinstance(c, tuple) else (c,)
        if not c or not all(isinstance(x, torch.Tensor) for x in c):
            raise SparseAttentionError(f"sparse attention: {path!r} must hold a tensor, a tuple of tensors, or a list "
                                       "of those (one entry per calibration call)")
        out.append(c)
    return out



# ---------------------------------------------------------------------------------------------
# Layouts of an op, cached per shape for static patterns
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    """What a kernel needs from a `graph.block_sparse_attention` op (read once at lowering)."""

    heads: tuple[str, ...]  # JSON of each pattern (hashable)
    block: int
    scale: float
    causal: bool
    explicit: tuple[int, ...] | None = None

    @staticmethod
    def of(op) -> OpSpec:
        heads = tuple(json.dumps(h, sort_keys=True) for h in json.loads(op.heads.data))
        lay = tuple(op.layout.get_values()) if op.layout is not None else None
        return OpSpec(heads, op.block.value.data, op.scale.value.data, op.causal is not None, lay)

    @property
    def patterns(self) -> list[dict]:
        return [json.loads(h) for h in self.heads]

    @property
    def dynamic(self) -> bool:
        return is_dynamic(self.patterns)

    def explicit_mask(self, n_heads: int, t: int, s: int) -> torch.Tensor | None:
        if self.explicit is None:
            return None
        n_q, n_k = nblocks(t, self.block), nblocks(s, self.block)
        return torch.tensor(self.explicit, dtype=torch.bool).view(-1, n_q, n_k)


def static_layout(spec: OpSpec, n_heads: int, t: int, s: int, device: str = "cpu"):
    """(counts, indices) of a static op spec, computed once per (spec, shape, device)."""
    return _static_layout(spec, n_heads, t, s, str(device))


@functools.lru_cache(maxsize=64)
def _static_layout(spec: OpSpec, n_heads: int, t: int, s: int, device: str):
    pats = spec.patterns
    if len(pats) == 1 and spec.explicit is None:  # one pattern for all heads: an [1, ...] layout
        m = static_mask(pats[0], nblocks(t, spec.block), nblocks(s, spec.block), spec.block, spec.causal)[None]
    else:
        m = head_masks(pats, n_heads, t, s, spec.block, spec.scale, spec.causal,
                       explicit=spec.explicit_mask(n_heads, t, s))
    m = m | _diag(m.shape[1], m.shape[2])[None]
    counts, idx = to_csr(m)
    return counts.to(device), idx.to(device)


def call_layouts(spec: OpSpec, q: torch.Tensor, k: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch element, (counts, indices) for one call: static specs give one shared layout."""
    n_heads, t, s = q.shape[1], q.shape[2], k.shape[2]
    if not spec.dynamic:
        return [static_layout(spec, n_heads, t, s, q.device)]
    explicit = spec.explicit_mask(n_heads, t, s)
    out = []
    for b in range(q.shape[0]):
        m = head_masks(spec.patterns, n_heads, t, s, spec.block, spec.scale, spec.causal, q[b], k[b], explicit)
        out.append(to_csr(m))
    return out


def pattern_label(p: dict) -> str:
    """Short text for explain(): window(1024+64), vertical_slash(4,4), topk(4), dense, blocks."""
    kind = p.get("pattern")
    if kind in ("window", "a_shape"):
        return f"window({p['window']}+{p.get('sinks', 0)})"
    if kind == "vertical_slash":
        return f"vertical_slash({p['vertical']},{p['slash']})"
    if kind == "topk":
        return f"topk({p['k']})"
    return str(kind)




def token_mask(m: torch.Tensor, block: int, t: int, s: int, causal: bool) -> torch.Tensor:
    """Dense keep-mask [..., T, S] of a block mask [..., nQB, nKB] (calibration and tests only)."""
    d = m.repeat_interleave(block, -2).repeat_interleave(block, -1)[..., :t, :s]
    return d & torch.ones(t, s, dtype=torch.bool).tril() if causal else d
