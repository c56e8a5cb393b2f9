"""Hand-written, parameterized Triton kernel templates of the GPU backend.

Each template is a Python wrapper `fn(...) -> torch.Tensor` around one `@triton.jit` kernel. Launch
parameters (block sizes, `num_warps`, `num_stages`) are keyword arguments; when left as `None` they come
from a small heuristic table in `configs.py`, so the cost model can later choose them instead. Every
wrapper runs under `TRITON_INTERPRET=1` on CPU tensors (for tests) and natively on the H100.

- `rows`: one-pass row kernels over the last dim: `softmax`, `layer_norm`, `rms_norm`.
- `matmul`: `matmul` (batched, transposed-B, fused bias/activation/residual/cast epilogue).
- `attention`: `flash_attention` (GQA, causal, masks) and `block_sparse_attention` (+ layout helpers).
- `elementwise`: `copy`, the bandwidth probe used by the benchmarks.

These modules import only torch and triton (the GPU machine has no xDSL).
"""

from solder.backends.triton.templates.attention import (
    block_sparse_attention,
    flash_attention,
    layout_to_mask,
    sliding_window_layout,
)
from solder.backends.triton.templates.elementwise import copy
from solder.backends.triton.templates.matmul import ACTIVATIONS, matmul
from solder.backends.triton.templates.rows import layer_norm, rms_norm, softmax

__all__ = [
    "ACTIVATIONS",
    "block_sparse_attention",
    "copy",
    "flash_attention",
    "layer_norm",
    "layout_to_mask",
    "matmul",
    "rms_norm",
    "sliding_window_layout",
    "softmax",
]
