"""FlexAttention-style mask functions for the `blocks` policy, usable from the API and the CLI:

    compile(model, sparse_attention=SparseAttention(policy="blocks", mask_mod=local_strided, block=16))
    solder-opt ... -p 'rewrite-sparse-attention{policy=blocks mask-mod="examples/sparse_lm/masks.py:local_strided" block=16}'

A mask_mod(b, h, q_idx, kv_idx) returns True where query q_idx may attend to key kv_idx; the rewrite
visits a key block when any of its elements is True.
"""

from __future__ import annotations

LOCAL = 64
STRIDE_BLOCK, EVERY = 16, 4


def local_strided(b, h, q_idx, kv_idx):
    """Causal: the last LOCAL keys, plus every EVERY-th key block of STRIDE_BLOCK tokens (global columns)."""
    return (kv_idx <= q_idx) & ((q_idx - kv_idx < LOCAL) | ((kv_idx // STRIDE_BLOCK) % EVERY == 0))
