"""The Triton backend: `@forward` -> a launch list of generated kernels, templates and library calls.

`plan_module` walks the function once. Each `graph.kernel` region (or, before fusion, each top-level
op) becomes one step:

- a generated kernel (`codegen.generate`): pointwise chains and row reductions, with layout ops
  (reshape, permute, expand, slice) and constants folded into its index arithmetic;
- a template (`templates/`): linear/matmul with a bias/activation/residual epilogue mapped onto the
  matmul template's options, flash attention, and lone softmax/layer_norm/rms_norm;
- an extern call: cuBLAS through `torch.matmul`/`F.linear` where it beats the template (plain fp32
  GEMMs, 16-bit GEMMs with no epilogue), convolutions through cuDNN;
- a fallback: the reference backend's eager op, listed in `Program.fallbacks`.

A kernel group that cannot become one kernel is split (anchor, prologue, epilogue; then single ops),
never a crash. Top-level layout ops that only generated kernels read cost nothing; others run as
torch views. Region flattening, the step type, views and the executor (buffers, sizes, CUDA graphs) are
the shared lowering layer's (backends/lowering/); launch.py turns steps into launches. The launch list
runs on the inputs' device: under `TRITON_INTERPRET=1` on CPU tensors, on CUDA under a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from xdsl.ir import Operation, OpResult, SSAValue

from solder.backends.base import Backend, Program, per_size
from solder.backends.reference import OPS as REFERENCE_OPS
from solder.compiler.ir import forward_func
from solder.compiler.targets import get_target
from solder.backends.lowering.steps import StepKind
from solder.backends.routes import Route
from solder.backends.triton import codegen
from solder.backends.triton.launch import build_launches, check_device
from solder.backends.lowering.executor import Executor
from solder.backends.lowering.flat import Flat
from solder.backends.lowering import steps as shared
from solder.backends.weights import Stack
from solder.backends.lowering.library import LIBRARY_CALLS, library_call
from solder.backends.triton.emit import EMITTERS, Unsupported, is_free, is_row_op
from solder.backends.triton.library import (  # noqa: F401  (re-exported: tests and codegen import some)
    TEMPLATE_OPS,
    Autotuned,
    _dtype,
    _interpreter_dot_broken,
    _templates,
    gemm_epilogue_step,
    interpreting,
    template_step,
    view_fn,
)
from solder.compiler import log
from solder.compiler.dialects import graph as g
from solder.compiler.dialects import symbolic
from solder.compiler.dialects.symbolic import is_dynamic_module
from solder.compiler.dialects.traits import Anchor, Attention
from solder.compiler.dialects.types import dims_of

_log = log.get("backend")


@dataclass
class Step(shared.Step):
    """A launch-list entry (backends/lowering/steps.py); `fn` is None for generated kernels until the module
    is imported."""

    needs_device: bool = False
    sizes: list[str] = field(default_factory=list)
    """A size-generic kernel's size expressions (its launcher's trailing arguments)."""


@dataclass
class Plan:
    """Everything `lower` needs: steps in launch order, the generated source, and the report."""

    steps: list[Step]
    args: list[SSAValue]
    results: list[SSAValue]
    source: str
    fallbacks: list[str]
    kernels: list[dict]
    per_size: list[tuple[str, str]] = field(default_factory=list)
    """A dynamic module's kernels that are generated per binding instead: (name, why)."""
    canon: Callable | None = None


class _Planner:
    def __init__(self, module, target, gemm: str):
        self.flat = Flat(module)
        self.fn, self.block = self.flat.fn, self.flat.block
        self.target, self.gemm = target, gemm
        self.canon, self.outputs, self.users = self.flat.canon, self.flat.outputs, self.flat.users
        self.results = self.flat.results
        self.steps: list[Step] = []
        self.gen: list[codegen.GenKernel] = []
        self.fallbacks: list[str] = []
        self.dynamic = bool(symbolic.symbols(self.fn))
        self.hints = symbolic.hints(self.fn)
        self.per_size: list[tuple[str, str]] = []

    def free(self, op: Operation) -> bool:
        return is_free(op) and self.flat.top_level(op)

    # ---- planning --------------------------------------------------------------------------------
    def run(self) -> Plan:
        self.kernel_ids = {}
        for i, (ops, kop) in enumerate(self.flat.groups()):
            if kop is not None and "kernel_id" in kop.attributes:
                self.kernel_ids[i] = kop.attributes["kernel_id"].value.data
            if kop is None and self.free(ops[0]):
                continue
            self.lower_group(ops, (i,), _attr_float(kop, "est_seconds") if kop is not None else None)
        self.steps.sort(key=lambda s: s.pos)
        self.steps = shared.with_views(self.steps, self.flat, self.view_step)
        source = codegen.HEADER.format(target=self.target.name) + "".join("\n\n" + k.source for k in self.gen)
        source += "\n\n" + launch_list_comment(self.steps)
        kernels = [{"id": n, "name": s.name, "kind": s.kind, "ops": [o.name for o in s.ops], "est_seconds": s.est,
                    "autotune": s.fn if isinstance(s.fn, Autotuned) else None}
                   for n, s in enumerate(st for st in self.steps if st.kind is not StepKind.VIEW)]
        return Plan(self.steps, [self.canon(a) for a in self.block.args], self.results, source,
                    self.fallbacks, kernels, self.per_size, self.canon)

    def add(self, step: Step) -> None:
        if step.kernel_id is None and step.pos:
            step.kernel_id = self.kernel_ids.get(step.pos[0])
        self.steps.append(step)

    def lower_group(self, ops: list[Operation], pos: tuple, est) -> None:
        stacks = [op for op in ops if self.stacks_weights(op)]
        if stacks:  # before the rest of the group, which then reads the stack like any argument
            for j, op in enumerate(stacks):
                self.add(Step(StepKind.HOISTED, "stacked weights", [self.canon(v) for v in op.operands],
                              [self.canon(r) for r in op.results], Stack(0), [op], pos + (-1, j), None))
            rest = [op for op in ops if op not in stacks]
            return self.lower_group(rest, pos + (0,), est) if rest else None
        outs = self.outputs(ops)
        if not outs and not (len(ops) == 1 and not ops[0].results):  # dead, unless an effect (an assertion)
            return
        if len(ops) == 1:
            return self.lower_single(ops[0], pos, est)
        if all(is_free(op) for op in ops):  # layout only: views cost nothing, a copy kernel does
            for j, op in enumerate(ops):
                self.view(op, pos + (j,))
            return
        anchors = [i for i, op in enumerate(ops) if op.has_trait(Anchor)]
        if anchors:
            a = anchors[0]
            if self.try_gemm_epilogue(ops[a], ops[a + 1:], ops[:a], pos, est):
                return
            self.lower_group(ops[:a], pos + (0,), None)
            self.lower_single(ops[a], pos + (1,), None)
            return self.lower_group(ops[a + 1:], pos + (2,), None)
        if self.try_generate(ops, outs, pos, est):
            return
        for j, op in enumerate(ops):
            self.lower_group([op], pos + (j,), None)

    def try_generate(self, ops, outs, pos, est) -> bool:
        if any(type(op) not in EMITTERS for op in ops):
            return False
        rows = any(is_row_op(op) for op in ops)
        by_shape: dict[tuple, list[SSAValue]] = {}
        for o in outs:
            by_shape.setdefault(() if rows else dims_of(o.type), []).append(o)
        made = []
        try:
            for j, group_outs in enumerate(by_shape.values()):
                name = f"k{len(self.gen) + len(made)}"
                made.append(self.generate(name, ops, group_outs))
        except Unsupported as e:
            _log.info("triton: splitting a group of %d ops: %s", len(ops), e)
            return False
        for j, (k, fn) in enumerate(made):
            self.gen.append(k)
            self.add(Step(k.kind, k.name, k.inputs, k.outputs, fn, k.ops, pos + (j,), est, sizes=k.sizes))
        return True

    def generate(self, name, ops, outs) -> tuple[codegen.GenKernel, Callable | None]:
        """(kernel, step fn or None). A dynamic module's kernel is size-generic where the code generator can
        index it symbolically; where it cannot, the group is generated per binding (`PerSizeKernel`, the
        kernel shown is its instance at the example sizes), and a group that fails even there is split."""
        if not self.dynamic:
            return codegen.generate(name, ops, outs, self.canon, self.free), None
        try:
            shapes = codegen.Shapes(symbolic=True, facts=symbolic.facts(self.fn))
            return codegen.generate(name, ops, outs, self.canon, self.free, shapes), None
        except Unsupported as e:
            why = str(e).removeprefix("triton: ")
        k = codegen.generate(name, ops, outs, self.canon, self.free, codegen.Shapes(env=self.hints))
        self.per_size.append((name, why))
        k.source = f"# {name}: generated per size ({why}); shown at the example sizes {self.hints}\n" + k.source
        return k, PerSizeKernel(self.target, name, ops, outs, k.inputs, self.canon, self.free)

    def view(self, op: Operation, pos: tuple) -> None:
        self.add(self.view_step(op, pos))

    def view_step(self, op: Operation, pos: tuple = ()) -> Step:
        fn, needs_device = view_fn(op)
        return Step(StepKind.VIEW, op.name, self.flat.operands(op), [op.results[0]], fn, [op], pos, None,
                    needs_device=needs_device)

    def stacks_weights(self, op: Operation) -> bool:
        """A concatenation along dim 0 of function arguments (merge-linears' stacked weights): made once and
        held as the parameters' storage (backends/weights.py), not copied per call."""
        if not isinstance(op, g.ConcatOp) or op.dim.value.data not in (0, -len(dims_of(op.results[0].type))):
            return False
        return all(self.canon(v) in self.flat.args for v in op.operands)

    def lower_single(self, op: Operation, pos: tuple, est) -> None:
        if is_free(op):
            return self.view(op, pos)
        outs = [self.canon(r) for r in op.results]
        ins = [self.canon(v) for v in op.operands]
        made = template_step(op, ins, self)
        if made is not None:
            kind, name, fn, ins = made
            return self.add(Step(kind, name, ins, outs, fn, [op], pos, est))
        if type(op) in EMITTERS and self.try_generate([op], self.outputs([op]), pos, est):
            return
        call = library_call(op, self.target.name)
        if call is not None:
            return self.add(Step(StepKind.EXTERN, call.route, ins, outs, call.make(op), [op], pos, est))
        self.fallback(op, ins, outs, pos, est)

    def fallback(self, op, ins, outs, pos, est) -> None:
        kind = StepKind.EXTERN if isinstance(op, g.ExternOp) else StepKind.FALLBACK
        reason = "no Triton lowering"
        if op.has_trait(Attention) and _interpreter_dot_broken(_dtype(op.results[0])):
            reason = "bf16 tl.dot is wrong in Triton's CPU interpreter; the flash template runs on the GPU"
        elif isinstance(op, TEMPLATE_OPS) and _templates() is None:
            reason = "its template is missing"
        factory = REFERENCE_OPS.get(type(op))
        if factory is None:
            raise codegen.Unsupported(f"triton: {op.name} has neither a Triton lowering nor a reference "
                                      f"implementation")
        if not g.is_check(op):  # a check, not compute
            self.fallbacks.append(f"{op.name}: {reason} (runs eagerly through the reference backend)")
        self.add(Step(kind, op.name, ins, outs, factory(op), [op], pos, est))

    def try_gemm_epilogue(self, anchor, rest, before, pos, est) -> bool:
        if before or anchor.has_trait(Attention):  # the epilogue template is a GEMM's
            return False
        made = gemm_epilogue_step(anchor, rest, self)
        if made is None:
            return False
        name, fn, ins, out = made
        self.add(Step(StepKind.TEMPLATE, name, ins, [out], fn, [anchor, *rest], pos, est))
        return True


class _GroupView:
    """The planner's questions (canon, users, results, outputs) answered for a candidate group of top-level
    ops during fusion, before any kernel region exists: `can_fuse` asks the same code `lower_group` runs."""

    def __init__(self, ops: list[Operation], gemm: str):
        from xdsl.dialects import func as _func

        self.gemm = gemm
        block = ops[0].parent_block()
        self.results = list(block.last_op.operands) if isinstance(block.last_op, _func.ReturnOp) else []
        self.users = {r: [u.operation for u in r.uses] for op in ops for r in op.results}
        self.block = block

    @staticmethod
    def canon(v: SSAValue) -> SSAValue:
        return v

    def free(self, op: Operation) -> bool:
        return is_free(op) and op.parent_block() is self.block

    def outputs(self, ops: list[Operation]) -> list[SSAValue]:
        inside = set(ops)
        returned = set(self.results)
        return [r for op in ops for r in op.results
                if r in returned or any(u.operation not in inside for u in r.uses)]

    def stacks(self, op: Operation) -> bool:
        from xdsl.ir import BlockArgument

        return isinstance(op, g.ConcatOp) and all(isinstance(v, BlockArgument) and v.owner is self.block
                                                  for v in op.operands)


def launch_list_comment(steps: list[Step]) -> str:
    """The launch order as comments, so `--emit triton` shows templates and fallbacks too."""
    lines = ["# launch list (views are free; kN are the kernels above):"]
    for s in steps:
        if s.kind is not StepKind.VIEW:
            lines.append(f"#   {s.name:<28} {s.kind:<10} {', '.join(o.name for o in s.ops)}")
    return "\n".join(lines) + "\n"


def _attr_float(op: Operation | None, name: str) -> float | None:
    if op is None:
        return None
    attr = op.attributes.get(name) or op.properties.get(name)
    try:
        return float(attr.value.data) if attr is not None else None
    except AttributeError:
        return None


def plan_module(module, target, gemm: str = "auto") -> Plan:
    """The launch plan of `module`'s `@forward` for `target` (no tensors needed: for `--emit triton`)."""
    return _Planner(module, target, gemm).run()


class TritonBackend(Backend):
    """Generated Triton kernels + Triton templates + cuBLAS, under a CUDA graph on the GPU.

    `gemm` picks the GEMM route: "auto" (templates when an epilogue fuses into a 16-bit GEMM or under
    the interpreter, cuBLAS otherwise), "template" or "cublas". `cuda_graphs` turns graph capture off.
    """

    name = "triton"
    targets = ("h100", "h200", "a100")

    def __init__(self, gemm: str = "auto", cuda_graphs: bool = True):
        self.gemm, self.cuda_graphs = gemm, cuda_graphs

    def supports(self, op: Operation) -> bool:
        return self.op_route(type(op)) in (Route.GENERATED, Route.LIBRARY)

    def can_fuse(self, ops: list[Operation]) -> tuple[bool, str]:
        """What `lower_group` emits as one launch: a generated kernel (every op has an emitter; a pointwise
        group writes outputs of one shape), or a GEMM with an epilogue the matmul template takes (bias,
        activation, residual; 16-bit or `gemm="template"`). Attention, a second anchor, a convolution or a
        GEMM whose epilogue goes to cuBLAS + a kernel are more than one launch."""
        view = _GroupView(ops, self.gemm)
        core = [op for op in ops if not is_free(op) and not view.stacks(op)]
        if len(core) <= 1:  # one op and the views around it: one launch (views cost nothing)
            return True, ""
        anchors = [op for op in core if op.has_trait(Anchor) or isinstance(op, g.ConvOp)]
        if anchors:
            a = anchors[0]
            if len(anchors) > 1:
                return False, "one GEMM or attention per kernel (the templates take one)"
            if a.has_trait(Attention):
                return False, f"{a.name} runs as the flash-attention template; what follows is a kernel of its own"
            pos = ops.index(a)
            if pos != 0 or not isinstance(a, (g.LinearOp, g.MatmulOp)):
                return False, f"only an epilogue fuses into {a.name} (nothing before it in the kernel)"
            if gemm_epilogue_step(a, ops[1:], view) is None:
                return False, (f"{a.name}'s epilogue does not map onto the matmul template here (cuBLAS runs the "
                               "GEMM and the epilogue is a kernel of its own)")
            return True, ""
        missing = sorted({op.name for op in ops if type(op) not in EMITTERS and not view.stacks(op)})
        if missing:
            return False, f"no Triton emitter for {', '.join(missing)}"
        if not any(is_row_op(op) for op in ops) and len({dims_of(o.type) for o in view.outputs(ops)}) > 1:
            return False, "pointwise outputs of different shapes are separate kernels"
        return True, ""

    @staticmethod
    def op_route(cls: type[Operation]) -> Route | None:
        """How ops of class `cls` run, from the planner's own tables: generated (an emitter in EMITTERS), a
        library call (a template, cuBLAS), or the reference backend's eager op; None when nothing runs it.
        An emitter or template may still refuse a case (an element type, a shape): that op then falls
        back, and the program's `fallbacks` say so."""
        if cls in EMITTERS:
            return Route.GENERATED
        if issubclass(cls, TEMPLATE_OPS) or "h100" in getattr(LIBRARY_CALLS.get(cls), "targets", ()):
            return Route.LIBRARY
        return Route.EAGER if cls in REFERENCE_OPS else None

    def lower(self, module, target) -> Program:
        if not is_dynamic_module(module):
            return self._lower(module, target)
        try:
            return self._lower(module, target)
        except Exception as e:  # noqa: BLE001 - the per-size route is slower, never wrong
            _log.warning("triton: the size-generic lowering of a dynamic module failed (%s: %s); lowering it "
                         "once per size instead", type(e).__name__, e)
            program = per_size(module, lambda m: self._lower(m, target))
            program.dynamic = f"triton: lowered once per size (the size-generic lowering failed: {e})"
            return program

    def _lower(self, module, target) -> Program:
        plan = plan_module(module, target, self.gemm)
        kernels = codegen.compile_source(plan.source) if any(s.fn is None for s in plan.steps) else None
        for s in plan.steps:
            if s.fn is None:
                s.fn = getattr(kernels, f"launch_{s.name}")
                if s.sizes:
                    s.fn = SizeGeneric(s.fn, s.sizes, _reference_group(s, plan.canon))
        if not is_dynamic_module(module):
            runner = Executor(plan.steps, plan.args, plan.results, build_launches, cuda_graphs=self.cuda_graphs,
                              before_call=check_device(plan.steps))
            return Program(run=runner, source=plan.source, fallbacks=plan.fallbacks, kernels=plan.kernels)
        # one lowering for every size: size-generic kernels, templates reading sizes off their tensors,
        # and per binding only buffers, CUDA graphs and the kernels listed in plan.per_size
        fn = forward_func(module)
        sizes: list[dict] = []
        for s in plan.steps:
            if isinstance(s.fn, PerSizeKernel):
                s.fn.compiled = sizes
        runner = Executor(plan.steps, plan.args, plan.results, build_launches, binding=symbolic.Binding.of(fn),
                          cuda_graphs=self.cuda_graphs, before_call=check_device(plan.steps))
        generic = sum(1 for s in plan.steps if s.sizes)
        note = (f"triton: one lowering serves every size of {', '.join(symbolic.symbols(fn))}: {generic} generated "
                "kernel(s) take their sizes as arguments (grid, and XBLOCK / BLOCK_M / BLOCK_N / num_warps as "
                "power-of-two buckets, picked at launch); templates and library calls read sizes off their "
                "tensors (each template's block sizes come from the size at launch: Triton specializes those "
                "constexprs); buffers and CUDA graphs are kept per size")
        if plan.per_size:
            note += "; generated per size: " + "; ".join(f"{n} ({why})" for n, why in plan.per_size)
        return Program(run=runner, source=plan.source, fallbacks=plan.fallbacks, kernels=plan.kernels,
                       sizes=sizes if plan.per_size else None, dynamic=note)


class SizeGeneric:
    """A size-generic kernel's step: its size arguments evaluated under the call's binding. Its launcher
    returns False where the kernel does not apply at this size (an empty or over-long row): the group's ops
    then run through the reference backend into the same output buffers."""

    wants_env = True

    def __init__(self, launch, exprs: list[str], reference):
        self.launch, self.exprs, self.reference = launch, exprs, reference

    def at(self, env) -> Callable:
        sizes = [int(symbolic.evaluate(e, env)) for e in self.exprs]
        launch, reference = self.launch, self.reference

        def run(*tensors):
            if launch(*tensors, *sizes) is False:
                n_in = len(tensors) - len(reference.outs)
                for out, r in zip(tensors[n_in:], reference(tensors[:n_in], env)):
                    out.copy_(r)

        return run


class PerSizeKernel:
    """A group of ops whose kernel cannot be size-generic (say, a reshape merging a symbolic dim): generated
    with literal sizes once per binding (the code a static module of those sizes gets), compiled, cached.
    At a size where no kernel can be generated, the group's ops run through the reference backend."""

    wants_env = True
    LIMIT = 16

    def __init__(self, target, name, ops, outs, ins, canon, free):
        import threading
        from collections import OrderedDict

        from solder.compiler import knobs

        self.target, self.name, self.ops, self.outs, self.ins = target, name, ops, outs, list(ins)
        self.canon, self.free = canon, free
        self.cache: OrderedDict = OrderedDict()
        self.lock = threading.Lock()
        self.cache_dir = knobs.current_cache_dir_override()
        self.compiled: list[dict] = []  # the bindings compiled for (shared with the Program's `sizes`)
        self.reference = _reference_group(Step(StepKind.POINTWISE, name, self.ins, list(outs)), canon)

    def at(self, env) -> Callable:
        key = tuple(sorted(env.items()))
        with self.lock:
            fn = self.cache.get(key)
            if fn is None:
                fn = self.cache[key] = self._instance(env)
                if len(self.cache) > self.LIMIT:
                    self.cache.popitem(last=False)
            else:
                self.cache.move_to_end(key)
        return fn

    def _instance(self, env) -> Callable:
        from solder.compiler import knobs

        try:
            k = codegen.generate(self.name, self.ops, self.outs, self.canon, self.free, codegen.Shapes(env=dict(env)))
            if list(k.inputs) != self.ins:
                raise Unsupported("triton: the kernel reads other values at this size")
            with knobs.cache_dir_override(self.cache_dir):
                module = codegen.compile_source(codegen.HEADER.format(target=self.target.name) + "\n\n" + k.source)
            launch = getattr(module, f"launch_{self.name}")
        except Unsupported as e:
            _log.info("triton: %s at %s runs through the reference backend: %s", self.name, env, e)
            reference, n_in = self.reference, len(self.ins)

            def launch(*tensors):
                for out, r in zip(tensors[n_in:], reference(tensors[:n_in], env)):
                    out.copy_(r)
        if dict(env) not in self.compiled:
            self.compiled.append(dict(env))
        return launch


def _reference_group(step: Step, canon):
    """fn(input tensors, env) -> the step's outputs, computed op by op by the reference backend from the
    step's inputs (the kernel's ops and the layout ops / constants folded into it)."""
    import torch

    factories: dict = {}

    def run(tensors, env):
        vals = dict(zip(step.ins, tensors))
        device = next((t.device for t in tensors if isinstance(t, torch.Tensor)), None)

        def value(v):
            v = canon(v)
            if v in vals:
                return vals[v]
            op = v.owner if isinstance(v, OpResult) else None
            if op is None:
                raise codegen.Unsupported(f"triton: {step.name}: a value the reference ops need is not an input")
            fn = factories.get(op)
            if fn is None:
                fn = factories[op] = REFERENCE_OPS[type(op)](op)
            args = [value(o) for o in op.operands]
            out = fn(*args, env=env) if getattr(fn, "wants_env", False) else fn(*args)
            out = out[v.index] if isinstance(out, (list, tuple)) else out
            if isinstance(out, torch.Tensor) and device is not None and out.device != device:
                out = out.to(device)
            vals[v] = out
            return out

        return [value(o) for o in step.outs]

    run.outs = step.outs
    return run


def emit_module(module, target) -> str:
    """The Triton source the backend generates for `module` (for `solder-opt --emit triton`)."""
    return plan_module(module, get_target(target)).source
