"""The Triton templates against eager PyTorch, torch.compile, SDPA and FlexAttention on one GPU.

    python -m benchmarks.gpu_kernels [--sweep] [--only rows,linear,attention,sparse]

Everything runs in one process and is timed with `triton.testing.do_bench` (median, after warm-up).
Cases: copy bandwidth (the ceiling of the row kernels); layer norm, RMS norm and softmax on 16384x8192
bf16 (% of copy bandwidth); Linear+bias+GELU at d=4096 on 8192 tokens; flash attention at T=4096 and
16384, B*H=16, d=128, causal and not; block-sparse sliding window (1024) at T=65536. Each template's
output is checked against the reference first (relative error in the JSON). `--sweep` also times a few
launch configurations per template, the data behind `backends/triton/templates/configs.py`.
Writes `$OUT/gpu_kernels.json` when OUT is set, and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from solder.backends.triton.templates import (
    block_sparse_attention,
    copy,
    flash_attention,
    layer_norm,
    matmul,
    rms_norm,
    sliding_window_layout,
    softmax,
)

BF16 = torch.bfloat16


def bench(fn, rep: int = 200) -> float:
    """Median milliseconds of `fn()` after warm-up."""
    fn()
    torch.cuda.synchronize()
    return do_bench(fn, warmup=50, rep=rep, return_mode="median")


def rel_err(out, ref) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm()).item()


def _safe(fn):
    """Run a baseline; a failure (e.g. an unsupported compile) is recorded, not fatal."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a benchmark records what broke and goes on
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"


def bench_copy(n_bytes: int) -> dict:
    x = torch.randn(n_bytes // 2, dtype=BF16, device="cuda")
    y = torch.empty_like(x)
    ms_torch = bench(lambda: y.copy_(x))
    ms_triton = bench(lambda: copy(x, y))
    gbs = {k: 2 * n_bytes / ms / 1e6 for k, ms in (("torch", ms_torch), ("triton", ms_triton))}
    return {"bytes": n_bytes, "ms": {"torch": ms_torch, "triton": ms_triton}, "GB/s": gbs,
            "copy_GBps": max(gbs.values())}


def bench_rows(copy_gbps: float, sweep: bool) -> list[dict]:
    m, n = 16384, 8192
    x, r = torch.randn(m, n, dtype=BF16, device="cuda"), torch.randn(m, n, dtype=BF16, device="cuda")
    w, b = torch.randn(n, dtype=BF16, device="cuda"), torch.randn(n, dtype=BF16, device="cuda")
    cases = {
        "layer_norm": (lambda **kw: layer_norm(x, w, b, **kw),
                       lambda: F.layer_norm(x, (n,), w, b),
                       lambda: F.layer_norm(x.float(), (n,), w.float(), b.float()), 2),
        "rms_norm": (lambda **kw: rms_norm(x, w, **kw), lambda: F.rms_norm(x, (n,), w, 1e-6),
                     lambda: F.rms_norm(x.float(), (n,), w.float(), 1e-6), 2),
        "softmax": (lambda **kw: softmax(x, **kw), lambda: torch.softmax(x, -1),
                    lambda: torch.softmax(x.float(), -1), 2),
        "add_layer_norm": (lambda **kw: layer_norm(x, w, b, residual=r, **kw),
                           lambda: F.layer_norm(x + r, (n,), w, b),
                           lambda: F.layer_norm((x + r).float(), (n,), w.float(), b.float()), 3),
    }
    out = []
    for name, (ours, eager, ref, passes) in cases.items():
        n_bytes = passes * m * n * 2
        compiled = torch.compile(eager)
        ms = {"template": bench(ours), "eager": bench(eager),
              "torch.compile": _safe(lambda: bench(compiled))}
        row = {"case": f"{name} {m}x{n} bf16", "bytes": n_bytes, "ms": ms,
               "rel_err": rel_err(ours(), ref()),
               "pct_copy_bw": {k: 100 * n_bytes / v / 1e6 / copy_gbps
                               for k, v in ms.items() if isinstance(v, float)}}
        if sweep:
            row["sweep"] = {f"warps={nw}": bench(lambda nw=nw: ours(num_warps=nw))
                            for nw in (4, 8, 16, 32)}
        out.append(row)
    return out


def bench_linear(sweep: bool) -> dict:
    t, d = 8192, 4096
    x = torch.randn(t, d, dtype=BF16, device="cuda")
    w = torch.randn(d, d, dtype=BF16, device="cuda") / d ** 0.5
    bias = torch.randn(d, dtype=BF16, device="cuda")
    eager = lambda: F.gelu(F.linear(x, w, bias))  # noqa: E731
    compiled = torch.compile(eager)
    ours = lambda activation="gelu", **kw: matmul(  # noqa: E731
        x, w, trans_b=True, bias=bias, activation=activation, **kw)
    flops = 2 * t * d * d
    ms = {"template": bench(ours), "eager": bench(eager), "torch.compile": _safe(lambda: bench(compiled)),
          "linear_only(cuBLAS)": bench(lambda: F.linear(x, w, bias))}
    row = {"case": f"linear+bias+gelu {t}x{d}x{d} bf16", "ms": ms,
           "rel_err": rel_err(ours(), F.gelu(F.linear(x.float(), w.float(), bias.float()))),
           "TFLOPs": {k: flops / v / 1e9 for k, v in ms.items() if isinstance(v, float)},
           "speedup_vs_eager": ms["eager"] / ms["template"]}
    if sweep:
        configs = [dict(tma=False), dict(flatten=True), dict(persistent=False),
                   dict(flatten=True, num_stages=4), dict(activation="gelu_libdevice"),
                   dict(activation="gelu_libdevice", flatten=True), dict(activation="none"),
                   dict(activation="none", flatten=True), dict(activation="relu"),
                   dict(activation="gelu_tanh"), dict(activation="silu")]
        row["sweep"] = {str(c): _safe(lambda c=c: bench(lambda: ours(**c))) for c in configs}
    return row


def _flex(q, k, v, block_mask):
    from torch.nn.attention.flex_attention import flex_attention
    compiled = torch.compile(flex_attention)
    return lambda: compiled(q, k, v, block_mask=block_mask)


def bench_attention(sweep: bool) -> list[dict]:
    from torch.nn.attention.flex_attention import create_block_mask
    rows = []
    for t in (4096, 16384):
        q, k, v = (torch.randn(1, 16, t, 128, dtype=BF16, device="cuda") for _ in range(3))
        for causal in (False, True):
            flops = 4 * t * t * 128 * 16 * (0.5 if causal else 1.0)
            ours = lambda causal=causal, **kw: flash_attention(q, k, v, causal=causal, **kw)  # noqa: E731
            sdpa = lambda causal=causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
            bm = None
            if causal:
                bm = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, t, t, device="cuda")
            ms = {"template": bench(ours), "sdpa": bench(sdpa),
                  "flex_attention": _safe(lambda: bench(_flex(q, k, v, bm)))}
            row = {"case": f"attention T={t} BH=16 d=128 {'causal' if causal else 'full'} bf16",
                   "ms": ms, "rel_err": rel_err(ours(), sdpa()),
                   "TFLOPs": {kk: flops / vv / 1e9 for kk, vv in ms.items() if isinstance(vv, float)},
                   "ratio_vs_sdpa": ms["sdpa"] / ms["template"]}
            if sweep:
                configs = [dict(tma=False), dict(block_n=64), dict(block_n=64, num_warps=4),
                           dict(block_m=64, block_n=64, num_warps=4), dict(num_stages=2),
                           dict(num_stages=4, block_n=64), dict(block_m=64, block_n=128,
                                                                 num_warps=4)]
                row["sweep"] = {str(c): _safe(lambda c=c: bench(lambda: ours(**c)))
                                for c in configs}
            rows.append(row)
    return rows


def bench_sparse() -> dict:
    from torch.nn.attention.flex_attention import create_block_mask
    t, block, window = 65536, 128, 1024
    q, k, v = (torch.randn(1, 16, t, 128, dtype=BF16, device="cuda") for _ in range(3))
    layout = sliding_window_layout(t, block, window, device="cuda")
    wb = window // block

    def mask_mod(b, h, qi, ki):
        return (qi >= ki) & (qi // block - ki // block <= wb)

    bm = create_block_mask(mask_mod, None, None, t, t, device="cuda", BLOCK_SIZE=block)
    ours = lambda: block_sparse_attention(q, k, v, layout, block)  # noqa: E731
    flex = _flex(q, k, v, bm)
    ms = {"template": bench(ours, rep=500),
          "template_block_n=64": _safe(lambda: bench(lambda: block_sparse_attention(
              q, k, v, layout, block, block_n=64), rep=500)),
          "sdpa_dense_causal": bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                     rep=500),
          "flex_attention_same_mask": _safe(lambda: bench(flex, rep=500))}
    err = _safe(lambda: rel_err(ours(), flex()))
    return {"case": f"block-sparse sliding window {window} T={t} B=1 H=16 d=128 bf16", "ms": ms,
            "rel_err_vs_flex": err, "speedup_vs_dense_causal": ms["sdpa_dense_causal"] / ms["template"],
            "ratio_vs_flex": (ms["flex_attention_same_mask"] / ms["template"]
                              if isinstance(ms["flex_attention_same_mask"], float) else None)}


def _fmt(v):
    return f"{v:8.3f}" if isinstance(v, float) else str(v)[:40]


def print_table(result: dict) -> None:
    print(f"\n{result['device']}  torch {result['torch']}  triton {result['triton']}")
    print(f"copy: {result['copy']['GB/s']}")
    for row in result["cases"]:
        ms = "  ".join(f"{k}={_fmt(v)}" for k, v in row["ms"].items())
        extra = {k: row[k] for k in ("pct_copy_bw", "ratio_vs_sdpa", "speedup_vs_eager",
                                     "speedup_vs_dense_causal", "ratio_vs_flex") if k in row}
        print(f"{row['case']:<55} {ms}")
        for k, v in extra.items():
            v = {kk: round(vv, 1) for kk, vv in v.items()} if isinstance(v, dict) else _fmt(v)
            print(f"{'':<55} {k}: {v}")
        if "sweep" in row:
            print(f"{'':<55} sweep: { {k: _fmt(v) for k, v in row['sweep'].items()} }")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also time a few launch configs")
    parser.add_argument("--only", default="rows,linear,attention,sparse")
    args = parser.parse_args()
    only = set(args.only.split(","))
    result = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
              "torch": torch.__version__, "triton": triton.__version__, "cases": []}
    result["copy"] = bench_copy(2 * 16384 * 8192 * 2)
    sections = [("rows", lambda: bench_rows(result["copy"]["copy_GBps"], args.sweep)),
                ("linear", lambda: [bench_linear(args.sweep)]),
                ("attention", lambda: bench_attention(args.sweep)),
                ("sparse", lambda: [bench_sparse()])]
    for name, run in sections:
        if name in only:
            result["cases"] += run()
            torch.cuda.empty_cache()
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_kernels.json"), "w") as f:
            json.dump(result, f, indent=1)
    print_table(result)


if __name__ == "__main__":
    main()
