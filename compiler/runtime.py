"""The compiled callable: parameters held once, one specialization per input signature, pytree in/out.

`CompiledModule(model, options)(*args, **kwargs)` flattens the inputs, looks up (or compiles) the
specialization for their shapes/dtypes/structure, runs its `Program` on [state tensors..., inputs...]
and rebuilds the model's output structure.
"""

from __future__ import annotations

import inspect
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.fx._pytree as fx_pytree
import torch.utils._pytree as pytree

from backends.base import Program
from compiler import ir, knobs, log
from compiler.buffer_facts import materialize_causal_buffers
from compiler.capture import capture, gc_paused
from compiler.errors import CallError, SolderError, VerifyError
from compiler.importer import Imported, import_program
from compiler.pipeline import PipelineRun, run_pipeline
from compiler.targets import Target

_log = log.get("runtime")


class EagerFallbackWarning(UserWarning):
    """The compiled callable ran the model eagerly instead (training mode, inputs requiring grad, ...)."""


@dataclass
class Options:
    """What `compile()` was asked for."""

    target: Target
    passes: str | None = None
    sparse_attention: object = None
    cost_model: object = None
    cache_dir: str | None = None
    verify: bool = False
    explain: bool = False
    dynamic: bool | None = None

    @property
    def pipeline(self) -> str:
        return self.passes if self.passes is not None else self.target.pipeline


@dataclass
class Specialization:
    """One compiled input signature."""

    key: tuple
    imported: Imported
    program: Program
    in_spec: object
    out_spec: object
    state: list[torch.Tensor]
    pipeline: PipelineRun
    seconds: dict[str, float] = field(default_factory=dict)
    ir_text: str = ""
    decomposed: tuple[str, ...] = ()
    guards: dict[int, tuple[int, int]] = field(default_factory=dict)
    """State tensors whose values were compiled in: index -> (version counter, data pointer) at compile time."""

    def still_valid(self) -> bool:
        return all((self.state[i]._version, self.state[i].data_ptr()) == g for i, g in self.guards.items())


def _leaf_key(x) -> tuple:
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), x.dtype, x.device.type)
    return ("V", type(x).__name__, repr(x))


def _dtype_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return {torch.float16: (1e-2, 1e-2), torch.bfloat16: (3e-2, 3e-2)}.get(dtype, (1e-4, 1e-4))


class CompiledModule:
    """The callable that `compile()` returns; it keeps the model's calling convention."""

    def __init__(self, model: torch.nn.Module, options: Options, name: str | None = None):
        self.model = model
        self.options = options
        self.name = name or type(model).__name__
        self.specializations: OrderedDict[tuple, Specialization] = OrderedDict()
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._verified = 0
        self._fast: dict[tuple, tuple] = {}  # positional-tensor signature -> (key, specialization)

    # ---- calling -------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        fast = self._fast_path(args, kwargs)
        if fast is not None:
            return fast
        reason = self._eager_reason(args, kwargs)
        if reason:
            self._warn_once(reason)
            return self.model(*args, **kwargs)
        leaves, spec = pytree.tree_flatten((args, kwargs))
        key = (str(spec), tuple(_leaf_key(x) for x in leaves))
        sp = self.specializations.get(key)
        if sp is not None and not sp.still_valid():
            _log.info("a buffer compiled in as a constant changed in place; recompiling %s", self.name)
            del self.specializations[key]
            self._fast = {k: v for k, v in self._fast.items() if v[0] != key}
            sp = None
        if sp is None:
            with self._lock:
                sp = self.specializations.get(key) or self._compile(key, args, kwargs)
        else:
            self.specializations.move_to_end(key)
        if not kwargs and all(type(a) is torch.Tensor for a in args):
            self._fast[tuple((a.shape, a.dtype, a.device) for a in args)] = (key, sp)
        out = self._run(sp, args, kwargs)
        if self.options.verify and self._verified < 3:
            self._verified += 1
            self._check_against_eager(sp, args, kwargs, out)
        return out

    def _fast_path(self, args, kwargs):
        """Positional tensors only, a signature seen before, nothing to re-check: skip the pytree work."""
        if kwargs or self.model.training or not all(type(a) is torch.Tensor for a in args):
            return None
        if torch.is_grad_enabled() and any(a.requires_grad for a in args):
            return None
        entry = self._fast.get(tuple((a.shape, a.dtype, a.device) for a in args))
        if entry is None:
            return None
        key, sp = entry
        if self.specializations.get(key) is not sp or not sp.still_valid() or self._verified < 3 and self.options.verify:
            return None
        return self._execute(sp, args)

    def _eager_reason(self, args, kwargs) -> str | None:
        if self.model.training:
            return (f"{self.name} is in training mode; solder compiles inference graphs, so it runs eagerly. "
                    "Call model.eval() before compiling to use the compiled code.")
        if torch.is_grad_enabled():
            for x in pytree.tree_leaves((args, kwargs)):
                if isinstance(x, torch.Tensor) and x.requires_grad:
                    return (f"an input of {self.name} requires grad; solder compiles inference only, so it runs "
                            "eagerly. Use torch.no_grad() / torch.inference_mode() or detach the input.")
        return None

    def _warn_once(self, msg: str) -> None:
        if msg not in self._warned:
            self._warned.add(msg)
            warnings.warn(f"solder: {msg}", EagerFallbackWarning, stacklevel=3)

    def _run(self, sp: Specialization, args, kwargs):
        return self._execute(sp, fx_pytree.tree_flatten_spec((args, kwargs), sp.in_spec))

    @staticmethod
    def _execute(sp: Specialization, inputs: list):
        """Run the program on [state..., tensor inputs...] and rebuild the model's output structure."""
        with torch.no_grad():
            results = sp.program(sp.state + [inputs[i] for i in sp.imported.input_positions])
        flat = [results[o.result] if o.result is not None else o.constant for o in sp.imported.outputs]
        return pytree.tree_unflatten(flat, sp.out_spec)

    # ---- compiling -----------------------------------------------------------------------------
    def _bind_check(self, args, kwargs) -> None:
        try:
            inspect.signature(self.model.forward).bind(*args, **kwargs)
        except TypeError as e:
            sig = inspect.signature(self.model.forward)
            raise CallError(f"{self.name}: the call does not match forward{sig}: {e}") from None
        except ValueError:
            pass  # no inspectable signature (builtins): let export decide

    @gc_paused()
    def _compile(self, key, args, kwargs) -> Specialization:
        from compiler.aten_table import TABLE
        from backends.registry import get_backend

        self._bind_check(args, kwargs)
        t0 = time.perf_counter()
        cap = capture(self.model, args, kwargs, set(TABLE))
        t1 = time.perf_counter()
        imported = import_program(cap.program)
        state = self._state_tensors(cap.program, imported)
        guards = materialize_causal_buffers(imported, state)
        t2 = time.perf_counter()
        pipeline = self.options.pipeline
        if self.options.sparse_attention is not None:  # opt-in: it changes numerics
            from compiler.sparse_attention import with_sparse_attention

            pipeline = with_sparse_attention(pipeline, self.options.sparse_attention, self.model, self.options.target)
        run = run_pipeline(imported.module, pipeline, target=self.options.target)
        t3 = time.perf_counter()
        backend = get_backend(self.options.target.backend)
        program = backend.lower(imported.module, self.options.target)
        t4 = time.perf_counter()
        ep = cap.program
        sp = Specialization(
            key=key, imported=imported, program=program, in_spec=ep.call_spec.in_spec, out_spec=ep.call_spec.out_spec,
            state=state, pipeline=run, decomposed=cap.decomposed, guards=guards,
            seconds={"capture": t1 - t0, "import": t2 - t1, "passes": t3 - t2, "backend": t4 - t3, "total": t4 - t0},
        )
        if self.options.explain:
            sp.ir_text = ir.print_ir(imported.module)
        self.specializations[key] = sp
        limit = knobs.max_specializations()
        if len(self.specializations) > limit:
            old, _ = self.specializations.popitem(last=False)
            self._fast = {k: v for k, v in self._fast.items() if v[0] != old}  # let the dropped program go
            warnings.warn(f"solder: {self.name} has compiled more than {limit} input signatures; the oldest was "
                          "dropped (raise SOLDER_MAX_SPECIALIZATIONS, or pass inputs of fewer shapes)", stacklevel=4)
        _log.info("compiled %s for %s in %.3f s", self.name, key[1], sp.seconds["total"])
        if self.options.explain:
            print(self.explain())
        return sp

    def _state_tensors(self, ep, imported: Imported) -> list[torch.Tensor]:
        named = dict(self.model.named_parameters(remove_duplicate=False))
        named.update(dict(self.model.named_buffers(remove_duplicate=False)))
        state = []
        for a in imported.args:
            if a.kind == "input":
                break
            t = named.get(a.name)
            if t is None:
                t = ep.state_dict[a.name] if a.name in ep.state_dict else ep.constants[a.name]
            state.append(t.detach())
        return state

    def _check_against_eager(self, sp, args, kwargs, out) -> None:
        with torch.no_grad():
            ref = self.model(*args, **kwargs)
        got, want = pytree.tree_leaves(out), pytree.tree_leaves(ref)
        for i, (a, b) in enumerate(zip(got, want)):
            if not isinstance(b, torch.Tensor):
                continue
            atol, rtol = _dtype_tolerance(b.dtype)
            if a.shape != b.shape or not torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol, equal_nan=True):
                err = (a.float() - b.float()).abs().max().item() if a.shape == b.shape else "shape"
                raise VerifyError(f"{self.name}: output {i} differs from eager (max abs error {err}, "
                                  f"tolerance atol={atol} rtol={rtol}). {self._localize(sp, args, kwargs, atol, rtol)}")

    def _localize(self, sp, args, kwargs, atol, rtol) -> str:
        """Which kernel is wrong: each top-level op re-run alone against the reference backend."""
        from backends.registry import get_backend
        from compiler.localize import first_bad_kernel

        inputs = fx_pytree.tree_flatten_spec((args, kwargs), sp.in_spec)
        with torch.no_grad():
            culprit = first_bad_kernel(sp.imported.module, sp.state + [inputs[i] for i in sp.imported.input_positions],
                                       get_backend(self.options.target.backend), self.options.target, atol, rtol)
        if culprit is None:
            return "Every kernel matches the reference backend on its own; the error accumulates across kernels."
        return (f"The first kernel that differs is top-level op #{culprit.index} ({culprit.name}, max abs error "
                f"{culprit.max_error:.3g} against the reference backend):\n{culprit.ir_text}")

    def save(self, path) -> None:
        """Write the compiled specializations (IR, generated sources, weights) to `path`; `compiler.load` reads it."""
        from compiler import artifact

        artifact.save(self, path)

    # ---- explaining ----------------------------------------------------------------------------
    def explain(self) -> str:
        """The pipeline that ran, timings, fallbacks and the IR of every compiled input signature."""
        if not self.specializations:
            return f"{self.name}: not compiled yet (compilation happens on the first call)"
        lines = []
        for sp in self.specializations.values():
            shapes = ", ".join(f"{tuple(k[1])}:{str(k[2]).removeprefix('torch.')}" for k in sp.key[1] if k[0] == "T")
            lines.append(f"== {self.name} [{shapes}] target={self.options.target.name} "
                         f"backend={self.options.target.backend}")
            lines.append("compile: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in sp.seconds.items()))
            lines.append(f"pipeline: {sp.pipeline.pipeline}")
            for name, s in sp.pipeline.timings:
                lines.append(f"  {name:<28} {s * 1e3:8.2f} ms")
            if sp.decomposed:
                lines.append("decomposed at capture (no importer entry): " + ", ".join(sp.decomposed))
            if sp.imported.externs:
                lines.append("eager fallbacks (graph.extern): " + ", ".join(sp.imported.externs))
            if sp.program.fallbacks:
                lines.append("ops the backend did not lower (ran on the reference backend): " +
                             ", ".join(sp.program.fallbacks))
            from compiler.report import backend_table, kernel_table, kernels_of

            lines.append(kernel_table(kernels_of(sp.imported.module)))
            if sp.program.kernels:
                lines.append(backend_table(sp.program.kernels))
            lines.append(sp.ir_text or ir.print_ir(sp.imported.module))
        return "\n".join(lines)
