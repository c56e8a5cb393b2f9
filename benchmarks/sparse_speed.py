"""Block-sparse attention speed on the GPU: solder's lowering vs dense causal SDPA vs FlexAttention.

    python -m benchmarks.sparse_speed [--out benchmarks/results/sparse_speed_h100.json]

Cases (B=1, H=16, d=128, bf16): the sliding window 1024 (+64 sinks and without) at T=65536, written as
`rewrite-sparse-attention{policy=window ...}` on a `graph.attention` and run through
`backends/triton/sparse.py` (the path the Triton backend takes), and random per-head block layouts at
~50% and <10% of the causal blocks. FlexAttention gets the same block mask, built from the same block
tables (`BlockMask.from_kv_blocks`: off-diagonal blocks full, the diagonal block causal). Times are
medians of triton's do_bench; `rel_err` compares against FlexAttention's output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess

import torch
import torch.nn.functional as F

from solder.backends.triton.sparse import lower_block_sparse_attention
from benchmarks.gpu_kernels import bench, rel_err
from solder.compiler.sparse_attention import OpSpec, head_masks, static_layout, to_csr

BF16 = torch.bfloat16


def window_op(t: int, block: int, window: int, sinks: int):
    """The `graph.block_sparse_attention` that the pass writes for one [1,16,t,128] bf16 attention."""
    from xdsl.dialects.builtin import ModuleOp

    from solder.compiler import ir
    from solder.compiler.dialects import graph as g
    from solder.passes.rewrite_sparse_attention import RewriteSparseAttentionPass

    ty = f"tensor<1x16x{t}x128xbf16>"
    text = (f"func.func @forward(%q: {ty}, %k: {ty}, %v: {ty}) -> {ty} {{\n"
            f"  %o = graph.attention %q, %k, %v {{scale = 0.08838834764831845 : f64, causal}} : {ty}, {ty}, {ty} -> {ty}\n"
            f"  func.return %o : {ty}\n}}")
    module: ModuleOp = ir.parse(text)
    RewriteSparseAttentionPass(policy="window", window=window, sinks=sinks, block=block).apply(ir.context(), module)
    return next(o for o in module.walk() if isinstance(o, g.BlockSparseAttentionOp))


def flex_from_mask(m: torch.Tensor, block: int, t: int):
    """FlexAttention over the block mask m [H, nQB, nKB]: off-diagonal blocks full, diagonal causal."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    eye = torch.eye(m.shape[1], m.shape[2], dtype=torch.bool, device=m.device)
    full, part = m & ~eye, (m & eye) | eye
    n_k = m.shape[2]
    (fc, fi), (pc, pi) = to_csr(full), to_csr(part)
    fi, pi = (F.pad(x, (0, n_k - x.shape[-1])) for x in (fi, pi))  # full-width index tables
    args = (pc[None], pi[None], fc[None], fi[None])
    try:
        bm = BlockMask.from_kv_blocks(*args, BLOCK_SIZE=block, mask_mod=lambda b, h, qi, ki: qi >= ki,
                                      seq_lengths=(t, t))
    except TypeError:  # older torch: no seq_lengths
        bm = BlockMask.from_kv_blocks(*args, BLOCK_SIZE=block, mask_mod=lambda b, h, qi, ki: qi >= ki)
    compiled = torch.compile(flex_attention)
    return lambda q, k, v: compiled(q, k, v, block_mask=bm)


def random_blocks(heads: int, n: int, density: float, seed: int = 0) -> torch.Tensor:
    """Per-head random causal block masks with ~`density` of the causal blocks (diagonal always kept)."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(heads, n, n, generator=g) < density
    return (keep & torch.ones(n, n, dtype=torch.bool).tril()) | torch.eye(n, dtype=torch.bool)


def case(name: str, ours, m: torch.Tensor, block: int, t: int, q, k, v) -> dict:
    ms = {"solder": bench(lambda: ours(q, k, v)),
          "sdpa_dense_causal": bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))}
    try:  # FlexAttention takes only blocks that are multiples of its own tile (128 here)
        flex = flex_from_mask(m.cuda(), block, t)
        ms["flex_attention_same_mask"] = bench(lambda: flex(q, k, v))
        err = rel_err(ours(q, k, v), flex(q, k, v))
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        ms["flex_attention_same_mask"], err = None, f"{type(e).__name__}: {str(e)[:120]}"
    causal_blocks = m.shape[1] * (m.shape[1] + 1) / 2
    row = {"case": name, "block": block, "density": float(m.sum() / (m.shape[0] * causal_blocks)), "ms": ms,
           "speedup_vs_dense_causal": ms["sdpa_dense_causal"] / ms["solder"],
           "ratio_vs_flex": ms["flex_attention_same_mask"] / ms["solder"] if ms["flex_attention_same_mask"] else None,
           "rel_err_vs_flex": err}
    print(json.dumps(row), flush=True)
    return row


def run(t: int = 65536) -> list[dict]:
    q, k, v = (torch.randn(1, 16, t, 128, dtype=BF16, device="cuda") for _ in range(3))
    rows = []
    for block, sinks in ((128, 0), (64, 0), (128, 64), (64, 64)):
        op = window_op(t, block, 1024, sinks)
        spec = OpSpec.of(op)
        m = head_masks(spec.patterns, 16, t, t, block, spec.scale, True)
        static_layout(spec, 16, t, t, q.device)  # computed once at lowering; cached
        rows.append(case(f"window 1024 sinks {sinks} T={t}", lower_block_sparse_attention(op), m, block, t, q, k, v))
    from solder.backends.triton.templates.attention import block_sparse_attention

    for dens in (0.5, 0.25, 0.08, 0.04):
        block = 128
        m = random_blocks(16, t // block, dens)
        lay = tuple(x.cuda() for x in to_csr(m))
        ours = lambda q, k, v, lay=lay: block_sparse_attention(q, k, v, lay, block)  # noqa: E731
        rows.append(case(f"random blocks ~{dens:.0%} T={t}", ours, m, block, t, q, k, v))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--t", type=int, default=65536)
    p.add_argument("--out", default="benchmarks/results/sparse_speed_h100.json")
    p.add_argument("--commit", default="", help="the commit measured (default: git rev-parse HEAD)")
    a = p.parse_args()
    commit = a.commit
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    result = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
              "commit": commit, "torch": torch.__version__, "cases": run(a.t)}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
