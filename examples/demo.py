"""`make demo`: compile a model from the zoo for the CPU, check its output against eager, and time both.

    python examples/demo.py [--model gpt_block] [--target cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from solder import compile  # noqa: E402
from examples.models import ZOO, gpt_block  # noqa: E402


def interleaved_medians(fns, repeats: int = 30) -> list[float]:
    """Median seconds of each function, timed in alternation after warm-up so load affects all alike."""
    for fn in fns:
        for _ in range(3):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpt_block", help=f"a zoo entry: {', '.join(sorted(ZOO))}")
    p.add_argument("--target", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.model == "gpt_block":  # a mid-sized block so the timing means something
        model, inputs, kwargs = gpt_block(d=256, heads=4, batch=4, seq=128)
    else:
        model, inputs, kwargs = ZOO[args.model].build()
    compiled = compile(model, target=args.target)

    t0 = time.perf_counter()
    with torch.no_grad():
        out = compiled(*inputs, **kwargs)
    compile_s = time.perf_counter() - t0
    with torch.no_grad():
        ref = model(*inputs, **kwargs)
        err = (out - ref).abs().max().item()
        ok = torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
        t_eager, t_solder = interleaved_medians([lambda: model(*inputs, **kwargs),
                                                 lambda: compiled(*inputs, **kwargs)])
    sp = next(iter(compiled.specializations.values()))
    print(f"model        {args.model}  inputs {[tuple(x.shape) for x in inputs]}  target {args.target} "
          f"(backend {compiled.options.target.backend})")
    print(f"pipeline     {sp.pipeline.pipeline}")
    print(f"compile      {compile_s:.3f} s (capture {sp.seconds['capture']:.3f} s)")
    print(f"output check {'OK' if ok else 'MISMATCH'}  max abs error {err:.2e}")
    print(f"eager        {t_eager * 1e3:8.3f} ms")
    print(f"solder       {t_solder * 1e3:8.3f} ms   speed-up vs eager {t_eager / t_solder:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
