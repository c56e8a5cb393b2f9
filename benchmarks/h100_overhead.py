"""Where the time goes between a Triton template and a compiled call on the GPU.

    python -m benchmarks.h100_overhead

For the layer-norm kernel case and the large MLP block: the template (or cuBLAS) called directly,
the compiled callable, its Program alone, the same plan with every GEMM on cuBLAS, and the host time
per call (back-to-back calls, one synchronize) — the host time bounds the call when it exceeds the
GPU time.
"""

from __future__ import annotations

import time

import torch
from triton.testing import do_bench

from solder.backends.triton.backend import TritonBackend
from solder.backends.triton.templates import layer_norm
from solder import compile
from examples.models import mlp_block


def host_us(fn, n: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def report(name: str, fns: dict) -> None:
    for k, fn in fns.items():
        print(f"{name:<10} {k:<22} gpu {do_bench(fn) * 1e3:9.1f} us   host {host_us(fn):8.1f} us")


def main() -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        ln = torch.nn.LayerNorm(8192).cuda().to(torch.bfloat16).eval()
        x = torch.randn(16384, 8192, device="cuda", dtype=torch.bfloat16)
        c = compile(ln, target="h100")
        c(x)
        sp = next(iter(c.specializations.values()))
        args = sp.state + [x]
        report("layer_norm", {"eager": lambda: ln(x), "template": lambda: layer_norm(x, ln.weight, ln.bias),
                              "compiled": lambda: c(x), "program": lambda: sp.program(args)})
        m, (t,), _ = mlp_block(d=4096, tokens=8192, dtype=torch.bfloat16)
        m, t = m.cuda(), t.cuda()
        c = compile(m, target="h100")
        c(t)
        sp = next(iter(c.specializations.values()))
        cublas = TritonBackend(gemm="cublas").lower(sp.imported.module, c.options.target)
        args = sp.state + [t]
        print("mlp plan:", [(k.get("kind"), k.get("name")) for k in sp.program.kernels])
        report("mlp", {"eager": lambda: m(t), "compiled": lambda: c(t), "program": lambda: sp.program(args),
                       "program, cuBLAS GEMMs": lambda: cublas(args)})


if __name__ == "__main__":
    main()
