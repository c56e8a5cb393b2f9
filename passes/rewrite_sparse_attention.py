"""`rewrite-sparse-attention`: turns `graph.attention` into `graph.block_sparse_attention` under a policy.

    rewrite-sparse-attention{policy=window window=1024 sinks=64 block=64}
    rewrite-sparse-attention{policy=blocks mask="local:256,sinks:64,every:4" block=64}
    rewrite-sparse-attention{policy=blocks mask-mod="masks.py:strided" block=64}
    rewrite-sparse-attention{policy=blocks layout="layout.pt" block=64}           (or a .npy file)
    rewrite-sparse-attention{policy=calibrate plan="plan.json"}   (plan written by compiler.sparse_calibrate.save_plan)
    rewrite-sparse-attention{policy=calibrate budget=0.5 calib="inputs.pt"}   (solder-opt --from-torch only)

File names and masks are quoted strings (the pipeline syntax reads `/`, `.` and `,` as its own).

Policies (compiler/sparse_attention.py has the patterns and layouts):
- `window`: every causal attention without a mask gets a sliding window of `window` tokens plus `sinks`
  sink tokens (rounded up to `block`), one pattern shared by all heads;
- `blocks`: a block layout stored as the op's explicit layout, from exactly one of: `layout=` a block
  mask file (bool [H or 1, nQB, nKB]), `mask=` named causal mask terms (`local:W`, `sinks:S`,
  `every:K` key blocks, unioned), `mask-mod=` a FlexAttention-style `mask_mod(b, h, q_idx, kv_idx)` in
  a Python file or module; from the API, `SparseAttention(policy="blocks", layout=... | mask_mod=...)`;
  a block is visited when any of its elements is;
- `calibrate`: the per-head patterns of a calibration plan, one entry per attention in IR order. The
  plan comes from `plan=` (a JSON file or text), or, when `solder-opt --from-torch` has the model, from
  calibrating it within `budget` on the inputs in `calib=` (a .pt file: a tensor, a tuple, or a list
  of either; default: the builder's example inputs). A bare `.mlir` holds no weights to run, so there
  the plan must come from a file.

Opt-in: it changes numerics. Attentions that stay dense say why in a `graph.sparse` attribute (an explicit
mask operand, not causal, or a density above `max-density`, where the dense kernel wins); under a plan from
`calibrate`, every attention's `graph.sparse` also gives the model's end-to-end output drift and what the
back-off changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, ModuleOp, StringAttr, UnitAttr, i32
from xdsl.passes import ModulePass

from solder.compiler import log
from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import shape_of
from solder.compiler.sparse_attention import (
    SparseAttention,
    SparseAttentionError,
    blocks_from_text,
    density,
    head_masks,
    is_dynamic,
    user_blocks,
)

_log = log.get("attention")
ORIGIN, WHY = "graph.origin", "graph.sparse"
MAX_EXPLICIT = 1 << 22
"""Largest explicit layout (block-mask entries) stored on an op; beyond it the IR text would be huge."""


@dataclass(frozen=True)
class RewriteSparseAttentionPass(ModulePass):
    """Rewrites graph.attention into graph.block_sparse_attention (window, blocks or calibrated layouts)."""

    name = "rewrite-sparse-attention"
    policy: str = "window"
    window: int = 1024
    sinks: int = 64
    block: int = 64
    max_density: float = 0.8
    plan: str = ""
    layout: str = ""
    mask: str = ""
    mask_mod: str = ""
    budget: float = 1.0
    calib: str = ""
    source: SparseAttention | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def from_options(sa: SparseAttention) -> "RewriteSparseAttentionPass":
        """The pass configured by a `SparseAttention` (the API path; it carries layouts and plans)."""
        plan = json.dumps(sa.plan) if sa.plan is not None else ""
        return RewriteSparseAttentionPass(policy=sa.policy, window=sa.window, sinks=sa.sinks, block=sa.block,
                                          max_density=sa.max_density, plan=plan, budget=sa.budget, source=sa)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.policy not in ("window", "blocks", "calibrate"):
            raise SparseAttentionError(f"rewrite-sparse-attention: unknown policy {self.policy!r}; "
                                       "expected window, blocks or calibrate")
        if self.block not in (16, 32, 64, 128):
            raise SparseAttentionError(f"rewrite-sparse-attention: block must be 64 or 128 (16, 32 for small "
                                       f"models), got {self.block}")
        plan = self._plan()
        blocks = self._blocks_source()
        attns = [o for o in op.walk() if isinstance(o, g.AttentionOp)]
        if plan is not None and len(plan) != len(attns):
            raise SparseAttentionError(f"rewrite-sparse-attention: the calibration plan has {len(plan)} entries; "
                                       f"expected one per attention ({len(attns)}). Calibrate on the same model")
        done = 0
        for i, attn in enumerate(attns):
            done += self._rewrite(attn, plan[i] if plan is not None else None, blocks)
        _log.info("rewrite-sparse-attention: %d of %d attention(s) made sparse", done, len(attns))

    def _plan(self) -> list[dict] | None:
        if self.policy != "calibrate":
            return None
        if not self.plan:
            raise SparseAttentionError(
                "rewrite-sparse-attention{policy=calibrate} needs a plan: compile with SparseAttention("
                "policy='calibrate', calibration_inputs=...), pass plan=\"FILE.json\" from compiler.sparse_calibrate.save_plan, "
                "or run solder-opt --from-torch FILE.py:NAME so that it can calibrate the model (calib=\"inputs.pt\")")
        if self.plan.lstrip().startswith("["):
            text = self.plan
        elif Path(self.plan).is_file():
            text = Path(self.plan).read_text()
        else:
            raise SparseAttentionError(f"rewrite-sparse-attention: no such plan file {self.plan!r}")
        try:
            plan = json.loads(text)
        except json.JSONDecodeError as e:
            raise SparseAttentionError(f"rewrite-sparse-attention: the plan is not JSON ({e})") from None
        if not isinstance(plan, list) or not all(isinstance(x, dict) for x in plan):
            raise SparseAttentionError("rewrite-sparse-attention: a plan is a JSON list of one object per attention")
        return plan

    def _blocks_source(self) -> SparseAttention | None:
        """The `blocks` policy's layout: from the API (`source`) or from the layout/mask/mask-mod options."""
        if self.policy != "blocks":
            return None
        if self.source is not None and self.source.policy == "blocks":
            return self.source
        return blocks_from_text(self.block, self.layout, self.mask, self.mask_mod)

    def _rewrite(self, attn: g.AttentionOp, entry: dict | None, blocks: SparseAttention | None) -> int:
        causal = attn.causal is not None
        if attn.mask is not None:
            return _keep(attn, "explicit mask operand")
        if self.policy == "window" and not causal:
            return _keep(attn, "window policy needs causal attention")
        if self.policy == "blocks" and self.mask and not causal:
            return _keep(attn, "named masks (mask=) are causal; give layout= or mask-mod= for this attention")
        q, k = shape_of(attn.query.type), shape_of(attn.key.type)
        heads, explicit, dens, errors = self._heads(attn, entry, q, k, causal, blocks)
        note = (entry or {}).get("calibration")  # calibrate's end-to-end drift and back-off, for explain()
        if heads is None:
            why = (entry or {}).get("reason", "calibration chose dense")
            return _keep(attn, f"{why}; {note}" if note else why)
        if dens > self.max_density:
            why = f"density {dens:.2f} > max-density {self.max_density}: dense is faster"
            return _keep(attn, f"{why}; {note}" if note else why)
        if errors is not None:
            heads = [dict(h, err=round(e, 4)) for h, e in zip(heads, errors)]
        props = {
            "block": g.int_attr(self.block if entry is None else int(entry.get("block", self.block))),
            "scale": attn.scale, "policy": StringAttr(self.policy),
            "heads": StringAttr(json.dumps(heads)), "density": g.float_attr(round(dens, 4)),
        }
        if causal:
            props["causal"] = UnitAttr()
        if explicit is not None:
            props["layout"] = DenseArrayBase.from_list(i32, explicit)
        new = g.BlockSparseAttentionOp.create(operands=list(attn.operands), result_types=[attn.result.type],
                                              properties=props)
        if ORIGIN in attn.attributes:
            new.attributes[ORIGIN] = attn.attributes[ORIGIN]
        if note:
            new.attributes[WHY] = StringAttr(note)
        attn.parent.insert_op_before(new, attn)
        attn.result.replace_all_uses_with(new.result)
        attn.detach()
        attn.erase()
        return 1

    def _heads(self, attn, entry, q, k, causal, blocks):
        """(patterns, explicit layout, density, errors) for one attention, or (None, ...) to stay dense."""
        n_heads, t, s = q[1], q[2], k[2]
        if self.policy == "window":
            heads = [{"pattern": "window", "window": self.window, "sinks": self.sinks}]
            m = head_masks(heads, 1, t, s, self.block, 1.0, causal)
            return heads, None, density(m, causal), None
        if self.policy == "blocks":
            m = user_blocks(blocks, n_heads, t, s)
            if m.shape[0] > 1 and bool((m == m[:1]).all()):  # the same layout for every head: store it once
                m = m[:1]
            if m.numel() > MAX_EXPLICIT:
                raise SparseAttentionError(f"rewrite-sparse-attention: a block layout of {m.numel()} entries is too "
                                           f"large to store (limit {MAX_EXPLICIT}); use block=128 or a window policy")
            return [{"pattern": "blocks"}], [int(x) for x in m.reshape(-1).tolist()], density(m, causal), None
        if entry is None or entry.get("dense"):
            return None, None, 1.0, None
        heads = entry["heads"]
        blk = int(entry.get("block", self.block))
        if is_dynamic(heads):
            dens = float(entry["density"])
        else:
            dens = density(head_masks(heads, n_heads, t, s, blk, 1.0, causal), causal)
        return heads, None, dens, entry.get("errors")


def _keep(attn: g.AttentionOp, why: str) -> int:
    attn.attributes[WHY] = StringAttr(f"dense: {why}")
    return 0


__all__ = ["RewriteSparseAttentionPass"]
