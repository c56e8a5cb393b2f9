"""Running a pass pipeline on a module: timing, optional verification, print-after-all; and the cost model
a compile asked for, checked once and handed to every pass that asks the cost model."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from solder import costmodel
from solder.compiler import ir, knobs, log
from solder.compiler.dialects import symbolic
from solder.compiler.errors import OptionError, SolderError
from solder.compiler.targets import get_target
from solder.passes import fusion_rules, registry

_log = log.get("passes")


@dataclass
class PipelineRun:
    """What ran: each pass's printed spec and seconds."""

    pipeline: str
    timings: list[tuple[str, float]] = field(default_factory=list)
    cost_models: dict[str, str] = field(default_factory=dict)
    """Pass name -> the cost model it asked (`CostModel.describe`), for the passes that have the option."""


@dataclass(frozen=True)
class CostModel:
    """The cost model `compile(cost_model=...)` chose: `value` is what the passes get in their `cost_model`
    option (None: the target's own; "roofline"; a model path; or a loaded model), `label` names it."""

    value: object = None
    label: str = ""

    def describe(self, target) -> str:
        """What `explain()` prints: the model the passes asked, for `target`."""
        if self.value is not None:
            return self.label
        shipped = costmodel.SHIPPED / target.cost_model if target.cost_model else None
        if shipped is not None and costmodel.load_model(shipped) is not None:
            return f"the learned model shipped for {target.cost_model} ({shipped})"
        return f"roofline (no learned model ships for target {target.name})"


def cost_model_option(spec) -> CostModel:
    """`compile(cost_model=spec)` checked: None, "roofline", a path to a model file or folder, or a loaded model
    (anything with `predict_op` and `predict_ops`). OptionError when it names nothing usable."""
    if spec is None or isinstance(spec, CostModel):
        return spec or CostModel()
    if isinstance(spec, str) and spec == "roofline":
        return CostModel("roofline", "roofline (costmodel/analytic.py)")
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser().resolve()
        problem = registry.cost_model_problem(path)
        if problem:
            raise OptionError(f"compile(cost_model={str(spec)!r}): {problem}. Pass a model file or folder written by "
                              "`solder-costmodel train`, 'roofline', or a loaded model (solder.costmodel.load_model)")
        return CostModel(str(path), f"learned model from {path}")
    if callable(getattr(spec, "predict_op", None)) and callable(getattr(spec, "predict_ops", None)):
        target = getattr(spec, "target", None)
        return CostModel(spec, f"loaded {type(spec).__name__}" + (f" (fitted for {target})" if target else ""))
    raise OptionError(f"compile(cost_model=...) got a {type(spec).__name__}; expected a path to a model file or "
                      "folder, 'roofline', or a loaded model (solder.costmodel.load_model(path))")


def pass_spec(p: ModulePass) -> str:
    model = getattr(p, "cost_model", "")
    if model is not None and not isinstance(model, str):  # a loaded model: named, not printed
        p = dataclasses.replace(p, cost_model=f"<loaded {type(model).__name__}>")
    try:
        return str(p.pipeline_pass_spec())
    except Exception:
        return p.name


def run_pipeline(module: ModuleOp, pipeline: str | list[ModulePass], *, target=None, verify: bool | None = None,
                 after_each: Callable[[str, ModuleOp], None] | None = None,
                 cost_model: CostModel | None = None, can_fuse=None) -> PipelineRun:
    """Apply `pipeline` to `module` in place. Passes that accept a `target` get it set when absent, and
    passes with a `cost_model` option get `cost_model` where the pipeline string left theirs empty.
    `can_fuse`: the target backend's answer whether a group is one launch (passes/fusion_rules.py)."""
    passes = registry.parse(pipeline) if isinstance(pipeline, str) else pipeline
    passes = [_with_cost_model(_with_target(p, target), cost_model) for p in passes]
    verify = knobs.verify_ir() if verify is None else verify
    ctx = ir.context()
    run = PipelineRun(",".join(pass_spec(p) for p in passes), cost_models=_cost_models(passes, target))
    backend = getattr(target, "backend", "") if target is not None else ""
    with symbolic.example_sizes(module), fusion_rules.backend_rule(backend, can_fuse):
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
    return dataclasses.replace(p, target=target.name)


def _cost_models(passes: list[ModulePass], target) -> dict[str, str]:
    out = {}
    for p in passes:
        if "cost_model" not in getattr(p, "__dataclass_fields__", {}):
            continue
        try:
            chosen = cost_model_option(p.cost_model or None)
        except OptionError:  # a pass built in code with a model that does not load: the roofline answers
            chosen = CostModel("roofline", f"roofline ({p.cost_model} does not load)")
        out[p.name] = chosen.describe(target or get_target(getattr(p, "target", "") or "cpu"))
    return out


def _with_cost_model(p: ModulePass, model: CostModel | None) -> ModulePass:
    if model is None or model.value is None or "cost_model" not in getattr(p, "__dataclass_fields__", {}):
        return p
    if getattr(p, "cost_model", None):  # the pipeline string named one for this pass: it wins
        return p
    return dataclasses.replace(p, cost_model=model.value)
