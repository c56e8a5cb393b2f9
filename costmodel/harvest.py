"""Harvest the kernels that the fusion passes propose on the zoo, as standalone modules for `generate`.

    python -m solder.costmodel.harvest [--out costmodel/zoo_kernels.jsonl] [--target h100]

Each zoo model is built, its inputs repeated along the batch dimension (x1, x4, x16, x64, x256), in float32
and bfloat16, captured, imported and run through `canonicalize,cse,recognize-attention` followed by
`fuse-ops`/`fuse-blocks` in mode `always` (every legal group: the candidates a cost decision judges)
and in the target's default mode `cost`, asking the target's backend (`can_fuse`) as a compile does. Every
resulting `graph.kernel` becomes one module holding
that kernel alone (`@forward` takes the kernel's operands), printed as MLIR; duplicates are dropped.

The output is committed, so that `generate`'s `zoo` family stays a pure function of (seed, index) and
needs neither torch.export nor the zoo's dependencies when collecting.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from solder.compiler.dialects import graph as g

DEFAULT_OUT = Path(__file__).parent / "zoo_kernels.jsonl"
BATCHES = (1, 4, 16, 64, 256)
DTYPES = ("float32", "bfloat16")
HEAD = "canonicalize,cse,recognize-attention"


def pipelines() -> dict[str, str]:
    return {"always": f"{HEAD},fuse-ops{{mode=always}},fuse-blocks{{mode=always}},dce",
            "cost": f"{HEAD},fuse-ops,fuse-blocks,dce"}


def kernel_module(kernel):
    """A module whose `@forward(operands...)` runs a copy of `kernel` alone."""
    from solder.costmodel.generate import kernel_module as build

    block = kernel.regions[0].block

    def body(b, args):
        mapping = dict(zip(block.args, args))
        for op in block.ops:
            if isinstance(op, g.YieldOp):
                return [mapping.get(v, v) for v in op.operands]
            new = op.clone(value_mapper=mapping)
            b.block.add_op(new)
            mapping.update(zip(op.results, new.results))
        raise ValueError("graph.kernel body without graph.yield")

    return build([v.type for v in kernel.operands], body)


def _scaled(entry, batch: int, dtype: str):
    """(model, args, kwargs) of a zoo entry with every input repeated `batch` times along dim 0."""
    import torch

    model, args, kwargs = entry.build()
    tdt = getattr(torch, dtype)

    def scale(x):
        if not isinstance(x, torch.Tensor):
            return x
        x = x.repeat(batch, *([1] * (x.dim() - 1))) if x.dim() else x
        return x.to(tdt) if x.is_floating_point() else x

    return model.to(tdt), tuple(scale(a) for a in args), {k: scale(v) for k, v in kwargs.items()}


def harvest(target: str = "h100", batches=BATCHES, dtypes=DTYPES, models=None, progress: bool = True) -> list[dict]:
    """Records {model, batch, dtype, mode, ops, ir}, one per distinct kernel."""
    from solder.compiler import ir
    from solder.compiler.aten_table import TABLE
    from solder.compiler.capture import capture
    from solder.compiler.importer import import_program
    from solder.passes.pipeline import run_pipeline
    from solder.compiler.targets import get_target
    from examples.models import ZOO

    from solder.backends.registry import get_backend

    tgt = get_target(target)
    can_fuse = get_backend(tgt.backend).can_fuse  # the kernels fusion forms are the launches that run
    seen: set[str] = set()
    out: list[dict] = []
    for name in sorted(models or ZOO):
        for dtype in dtypes:
            for batch in batches:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model, args, kwargs = _scaled(ZOO[name], batch, dtype)
                        cap = capture(model, args, kwargs, set(TABLE))
                        base = ir.print_ir(import_program(cap.program).module)
                except Exception as e:  # noqa: BLE001 - a model that does not export at this size is skipped
                    print(f"harvest: skip {name} x{batch} {dtype}: {type(e).__name__}: {str(e)[:120]}")
                    continue
                for mode, pipe in pipelines().items():
                    module = ir.parse(base)
                    run_pipeline(module, pipe, target=tgt, can_fuse=can_fuse)
                    for op in module.walk():
                        if not isinstance(op, g.KernelOp) or isinstance(op.parent_op(), g.KernelOp):
                            continue
                        text = ir.print_ir(kernel_module(op))
                        if text in seen:
                            continue
                        seen.add(text)
                        ops = [o.name.removeprefix(g.PREFIX) for o in op.regions[0].block.ops
                               if not isinstance(o, g.YieldOp)]
                        out.append({"model": name, "batch": batch, "dtype": dtype, "mode": mode, "ops": ops,
                                    "ir": text})
                if progress:
                    print(f"harvest: {name} x{batch} {dtype}: {len(out)} kernels so far", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--target", default="h100")
    p.add_argument("--models", nargs="*")
    a = p.parse_args(argv)
    recs = harvest(a.target, models=a.models)
    Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in recs))
    print(f"harvest: {len(recs)} kernels -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
