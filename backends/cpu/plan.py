"""The CPU backend's plan: the launch steps planned from @forward (backend.py plans them, runner.py runs them),
and the small facts about a step that both read."""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.ir import Operation, SSAValue

from solder.backends.cpu import lower as L
from solder.backends.cpu import lower_schedule as S
from solder.backends.lowering import steps as shared
from solder.backends.lowering.steps import StepKind
from solder.backends.routes import Route
from solder.compiler.dialects import graph as g
from solder.compiler.dialects import symbolic
from solder.compiler.dialects.types import shape_of


@dataclass
class Step(shared.Step):
    """One launch (backends/lowering/steps.py): an MLIR kernel (POINTWISE/REDUCTION), a generated attention
    (TEMPLATE), a library call (EXTERN, HOISTED), a torch view (VIEW) or a reference op (FALLBACK). `kind` says
    which (the runner branches on it); `route` is the text explain() prints."""

    route: str = ""
    func: str = ""
    text: str = ""
    schedule: list[str] = field(default_factory=list)
    schedule_kind: str = ""
    arg_types: list[tuple[tuple[int, ...], str]] = field(default_factory=list)
    opt_level: int = 3
    launch: object = None  # generated attention: kernel -> callable over the op's operands
    operand_keys: list[list[SSAValue]] = field(default_factory=list)  # per op, resolved operands
    nhwc_in: list[bool] = field(default_factory=list)  # MLIR step: input i arrives channels-last
    nhwc_out: list[bool] = field(default_factory=list)  # MLIR step: output i is written channels-last
    symbols: list[str] = field(default_factory=list)  # MLIR step of a dynamic module: its `index` arguments
    prebuilt: str = ""  # a step calling the install's library kernel (attention_lib.py): that kernel's MLIR


KIND_OF_ROUTE = {Route.GENERATED: StepKind.POINTWISE, Route.LIBRARY: StepKind.EXTERN, Route.EAGER: StepKind.FALLBACK,
                 Route.VIEW: StepKind.VIEW, Route.HOISTED: StepKind.HOISTED}
"""The step kind of a route the attention planner names (a generated attention is a TEMPLATE: its own launcher)."""


@dataclass
class Plan:
    args: list[SSAValue]
    steps: list[Step]
    returns: list[SSAValue]
    binding: symbolic.Binding | None = None  # a dynamic module's: sizes are read off each call

    def modules(self) -> dict[int, str]:
        """opt level -> MLIR module text with every kernel compiled at that level."""
        by_level: dict[int, list[Step]] = {}
        for s in self.steps:
            if _compiled(s):
                by_level.setdefault(s.opt_level, []).append(s)
        return {lvl: S.module_text([s.text for s in ss], [s.schedule for s in ss])
                for lvl, ss in sorted(by_level.items())}


_NCHW_OF_NHWC = [L.Aff.dim(0), L.Aff.dim(2), L.Aff.dim(3), L.Aff.dim(1)]  # NHWC dims in NCHW loop dims
_NHWC_OF_NCHW = [L.Aff.dim(0), L.Aff.dim(3), L.Aff.dim(1), L.Aff.dim(2)]  # NCHW dims in NHWC loop dims


def _to_nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1])


def _is_conv2d(op: Operation) -> bool:
    return isinstance(op, g.ConvOp) and len(shape_of(op.results[0].type)) == 4 and \
        str(op.results[0].type.element_type) == "f32"


def _compiled(s: Step) -> bool:
    """An MLIR function of the plan's module: a lowered kernel or a generated attention (not a prebuilt one)."""
    return s.kind.generated or s.kind is StepKind.TEMPLATE


def _lowered(s: Step) -> bool:
    """A kernel lowered by lower.py (not a generated attention, which has its own launcher)."""
    return s.kind.generated
