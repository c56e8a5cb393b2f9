"""Running a pass pipeline on a module: timing, optional verification, print-after-all."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from solder.compiler import ir, knobs, log
from solder.compiler.dialects import symbolic
from solder.compiler.errors import SolderError
from solder.passes import registry

_log = log.get("passes")


@dataclass
class PipelineRun:
    """What ran: each pass's printed spec and seconds."""

    pipeline: str
    timings: list[tuple[str, float]] = field(default_factory=list)


def pass_spec(p: ModulePass) -> str:
    try:
        return str(p.pipeline_pass_spec())
    except Exception:
        return p.name


def run_pipeline(module: ModuleOp, pipeline: str | list[ModulePass], *, target=None, verify: bool | None = None,
                 after_each: Callable[[str, ModuleOp], None] | None = None) -> PipelineRun:
    """Apply `pipeline` to `module` in place. Passes that accept a `target` get it set when absent."""
    passes = registry.parse(pipeline) if isinstance(pipeline, str) else pipeline
    passes = [_with_target(p, target) for p in passes]
    verify = knobs.verify_ir() if verify is None else verify
    ctx = ir.context()
    run = PipelineRun(",".join(pass_spec(p) for p in passes))
    with symbolic.example_sizes(module):  # cost estimates on `?` dims use the example sizes
        _run_passes(passes, ctx, module, run, verify, after_each)
    return run


def _run_passes(passes, ctx, module, run, verify, after_each) -> None:
    for p in passes:
        t0 = time.perf_counter()
        try:
            p.apply(ctx, module)
        except SolderError:
            raise
        except Exception as e:
            raise SolderError(f"pass {p.name} failed: {type(e).__name__}: {e}") from e
        run.timings.append((p.name, time.perf_counter() - t0))
        _log.info("%s: %.2f ms", p.name, 1e3 * run.timings[-1][1])
        if verify:
            ir.verify(module)
        if after_each is not None:
            after_each(pass_spec(p), module)


def _with_target(p: ModulePass, target) -> ModulePass:
    if target is None or "target" not in getattr(p, "__dataclass_fields__", {}):
        return p
    if getattr(p, "target", None):
        return p
    import dataclasses

    return dataclasses.replace(p, target=target.name)
