"""`make demo`: compile a model for the CPU, check its output against eager, time both, and say where the time goes.

    python examples/demo.py [--model gpt_block] [--seq 1024] [--target cpu]

The default is a pre-LN GPT block (d=256, 4 heads, MLP 4x, tanh-GELU) at a 1024-token context whose causal
attention is written out by hand, as in nanoGPT/minGPT-style code: q @ kᵀ, masked_fill on a tril buffer,
softmax, @ v. Eager PyTorch runs that as written: four [1024 x 1024] score matrices per sequence (16 MB),
materialized, masked, soft-maxed and multiplied. solder recognizes the pattern as causal attention and runs one
flash-attention kernel (no score matrix, only the blocks on or below the diagonal), fuses the norms, residual
adds and GELU into generated kernels, and calls torch for the GEMMs exactly as eager does. The block is also
timed in eager with `F.scaled_dot_product_attention` in place of the written-out attention, to show how much of
the win is the attention. Other zoo models: `--model NAME`.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from solder import compile, speed_guard  # noqa: E402
from examples.models import ZOO, AttnSDPA, gpt_block  # noqa: E402


def interleaved_medians(fns, repeats: int = 20) -> list[float]:
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


def sdpa_twin(model):
    """The GPT block with F.scaled_dot_product_attention in place of its written-out attention (same weights)."""
    twin = copy.deepcopy(model)
    attn = AttnSDPA(model.ln1.normalized_shape[0], model.attn.heads)
    attn.load_state_dict(model.attn.state_dict(), strict=False)  # the tril buffer is not part of it
    twin.attn = attn.eval()
    return twin


LAYOUT = {"reshape", "permute", "slice", "constant", "expand", "concat"}  # named in a kernel, not what it computes


def why(program, written_out: bool) -> list[str]:
    """Where the compiled program's time goes, from its steps' routes."""
    lines, fused, gemms = [], [], 0
    for k in program.kernels:
        route, ops = k["route"], "+".join(k["ops"])
        if "attention" in k["ops"]:
            how = route.split(":", 1)[-1].strip()
            note = (": the written-out q@kᵀ, masked_fill, softmax, @v recognized as one causal attention; "
                    "no T x T score tensor")
            lines.append(f"  attention    {how}" + (note if written_out else ""))
        elif route == "mlir":
            fused.append("+".join(dict.fromkeys(o for o in k["ops"] if o not in LAYOUT)) or ops)
        elif route.startswith("library") and set(k["ops"]) & {"linear", "matmul", "bmm", "mm", "addmm"}:
            gemms += 1
        else:
            lines.append(f"  {ops:12s} {route}")
    if fused:
        kinds = list(dict.fromkeys(fused))
        shown = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "")
        lines.append(f"  generated    {len(fused)} fused kernel(s): {shown}")
    if gemms:
        lines.append(f"  GEMMs        {gemms} torch call(s), as in eager")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpt_block", help=f"a zoo entry: {', '.join(sorted(ZOO))}")
    p.add_argument("--seq", type=int, default=1024, help="context length of the default GPT block")
    p.add_argument("--target", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    block = args.model == "gpt_block"
    if block:
        model, inputs, kwargs = gpt_block(d=256, heads=4, batch=1, seq=args.seq)
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
        sp = next(iter(compiled.specializations.values()))
        for _ in range(2 * (speed_guard.WARMUP + speed_guard.SAMPLES)):  # let the speed guard decide first
            if sp.speed is None or sp.speed.settled:
                break
            compiled(*inputs, **kwargs)
        fns = [lambda: model(*inputs, **kwargs), lambda: compiled(*inputs, **kwargs)]
        if block:
            twin = sdpa_twin(model)
            fns.append(lambda: twin(*inputs, **kwargs))
        times = interleaved_medians(fns)
    t_eager, t_solder = times[:2]
    shapes = [tuple(x.shape) for x in inputs]
    print(f"model        {args.model}" + (" (d=256, 4 heads, causal attention written out)" if block else "")
          + f"  inputs {shapes}  target {args.target} (backend {compiled.options.target.backend}), "
          f"{torch.get_num_threads()} threads")
    print(f"compile      {compile_s:.3f} s (capture {sp.seconds['capture']:.3f} s)")
    print(f"output check {'OK' if ok else 'MISMATCH'}  max abs error {err:.2e}")
    print(f"eager        {t_eager * 1e3:8.3f} ms")
    if block:
        print(f"eager + SDPA {times[2] * 1e3:8.3f} ms   (the same block with F.scaled_dot_product_attention)")
    print(f"solder       {t_solder * 1e3:8.3f} ms   speed-up vs eager {t_eager / t_solder:.2f}x"
          + (f", vs eager + SDPA {times[2] / t_solder:.2f}x" if block else ""))
    if sp.speed is not None:
        print(sp.speed.describe())
    print("why:")
    for line in why(sp.program, written_out=block):
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
