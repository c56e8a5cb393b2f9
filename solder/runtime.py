"""The compiled callable: parameters held once, shape specializations, pytree in/out.

`CompiledModule(model, options)(*args, **kwargs)` flattens the inputs, looks up (or compiles) the
specialization for their shapes/dtypes/structure, runs its `Program` on [state tensors..., inputs...]
and rebuilds the model's output structure.

Shape policy (`compile(..., dynamic=...)`): inputs of one structure, ranks and dtypes form a family.
`dynamic=None` (default) compiles the first shape of a family static; when a call's shape differs
from the family's first in some dims, those dims are exported dynamic (`Dim.AUTO`) and compiled once
with `?` dims; later calls whose sizes fit its bounds and constraints run it without compiling. A
call outside them, or dims export keeps static (said in a `DynamicShapeWarning`), compile static for
that shape. `dynamic=True` makes every dim dynamic from the first call, `dynamic=False` compiles one
specialization per shape. At most `SOLDER_MAX_SPECIALIZATIONS` are kept (oldest dropped, warned).
"""

from __future__ import annotations

import inspect
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.fx._pytree as fx_pytree
import torch.utils._pytree as pytree
from xdsl.passes import ModulePass

from solder import artifact_save, call_checks, localize, report
from solder.compiler import ir, knobs, log, write_back
from solder.compiler.buffer_facts import materialize_causal_buffers
from solder.compiler.capture import capture, gc_paused
from solder.compiler.errors import CallError, CaptureError, OptionError, PrecisionFallbackWarning
from solder.compiler.importer import Imported, import_program
from solder.passes.pipeline import cost_model_option, run_pipeline
from solder.speed_guard import SpeedGuard
from solder.specialization import Specialization, family_key, input_binding, leaf_key
from solder.compiler.targets import Target
from solder.passes import registry

_log = log.get("runtime")


class EagerFallbackWarning(UserWarning):
    """The compiled callable ran the model eagerly instead (training mode, inputs requiring grad, ...)."""


class DynamicShapeWarning(UserWarning):
    """A dim asked to be dynamic compiled static (export specialized it, or the dynamic compile failed)."""


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
    dynamic_dims: frozenset | None = None
    """(flat leaf, dim) pairs compiled dynamic from the first call (the dims Dynamo marked symbolic)."""
    speed_guard: bool = True
    """Time the first calls against eager and keep the faster (solder/speed_guard.py)."""
    strict: bool = False
    """Raise when compiling or first running a signature fails, instead of running it eagerly with a warning."""

    def __post_init__(self):
        """Every option checked here, at `compile()`, not at the first call: a bad one raises a one-line
        `OptionError`/`PipelineError`; `cost_model` becomes the checked `pipeline.CostModel`."""
        if not any(self.dynamic is v for v in (None, True, False)):  # 1 and 1.0 equal True but are not it
            raise OptionError(f"compile(dynamic={self.dynamic!r}): expected None (dims that vary become dynamic), "
                              "True (every dim dynamic) or False (one specialization per shape)")
        if not isinstance(self.strict, bool):
            raise OptionError(f"compile(strict={self.strict!r}): expected False (a signature that fails to compile "
                              "runs eagerly, with one warning) or True (the failure is raised)")
        if not isinstance(self.speed_guard, bool):
            raise OptionError(f"compile(speed_guard={self.speed_guard!r}): expected True (time the first calls "
                              "against eager and keep the faster) or False (always run the compiled program)")
        if isinstance(self.passes, (list, tuple)):
            bad = [p for p in self.passes if not isinstance(p, ModulePass)]
            if bad:
                raise OptionError(f"compile(passes=[...]) holds {type(bad[0]).__name__} {bad[0]!r}; expected pass "
                                  "objects (solder.passes.registry.parse('cse,dce') gives them) or one pipeline string")
            self.passes = list(self.passes)
        elif self.passes is not None and not isinstance(self.passes, str):
            raise OptionError(f"compile(passes=...) got a {type(self.passes).__name__}; expected a pipeline string "
                              "such as 'canonicalize,cse,fuse-ops{max-ops=16}' or a list of pass objects")
        self.cost_model = cost_model_option(self.cost_model)
        if isinstance(self.pipeline, str):
            registry.parse(self.pipeline)  # PipelineError naming the pass and option

    @property
    def pipeline(self) -> str | list:
        """The pipeline string, or the list of pass objects that compile(passes=[...]) gave."""
        return self.passes if self.passes is not None else self.target.pipeline


def _data_dependent_sizes(e: Exception) -> bool:
    """A failure on sizes that depend on data (`nonzero`, boolean masks): Dynamo can break the graph there."""
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    return isinstance(e, GuardOnDataDependentSymNode)


_MISS = object()
MAX_VALUE_RECOMPILES = 2
"""Recompiles of one signature for new values of inputs read with `.item()`; after them the values stay inputs."""
"""`_fast_path`'s answer where the call needs the general path (a forward may itself return None)."""


def _fast_key(args, kwargs) -> tuple:
    sig = tuple((a.shape, a.dtype, a.device) for a in args)
    return (sig, tuple((k, v.shape, v.dtype, v.device) for k, v in kwargs.items())) if kwargs else sig


def _shapes(leaves) -> tuple:
    return tuple(tuple(x.shape) if isinstance(x, torch.Tensor) else None for x in leaves)


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
        self._fast: dict[tuple, tuple] = {}  # tensor-call signature -> (key, specialization, input order)
        self._first_shape: dict[tuple, tuple] = {}  # family -> the leaf shapes of its first call
        self._dynamic: dict[tuple, tuple] = {}  # family -> key of its dynamic specialization
        self._no_dynamic: set[tuple] = set()  # families whose dynamic compile failed: static per shape
        self._failed: dict[tuple, str] = {}  # signatures that failed to compile or run: they run eagerly
        self._value_changes: dict[tuple, int] = {}  # signature -> recompiles for new values read with .item()
        self._via_dynamo: set[tuple] = set()  # signatures export cannot capture: run through `_dynamo`
        self._dynamo = None  # torch.compile(model, backend=solder), made on first need
        self.dynamo_backend = None  # its backend, which holds the graphs Dynamo handed to solder
        self._dynamo_guards: dict[tuple, SpeedGuard] = {}  # per signature: the Dynamo route against eager
        self.dynamo_route = None
        """`solder.dynamo.make_backend`, set by `compile()`: a signature that torch.export cannot capture then goes
        through torch.compile(backend=solder). None for the graphs Dynamo itself hands to solder."""
        self.compile_count = 0
        """How many times this callable captured and compiled (static and dynamic specializations)."""

    # ---- calling -------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        fast = self._fast_path(args, kwargs)
        if fast is not _MISS:
            return fast
        reason = self._eager_reason(args, kwargs)
        if reason:
            self._warn_once(reason)
            return self.model(*args, **kwargs)
        leaves, spec = pytree.tree_flatten((args, kwargs))
        key = (str(spec), tuple(leaf_key(x) for x in leaves))
        sp = self.specializations.get(key)
        if sp is not None and not sp.state_current():
            with self._lock:
                sp = self._rebind_state(key, sp)
        if sp is not None and sp.values and not sp.values_hold(leaves):
            _log.info("%s: an input read with .item() has a new value; recompiling", self.name)
            self._value_changes[key] = self._value_changes.get(key, 0) + 1
            self.specializations.pop(key, None)
            self._fast = {k: v for k, v in list(self._fast.items()) if v[0] != key}
            sp = None
        if sp is not None and not sp.still_valid():
            _log.info("a buffer compiled in as a constant changed in place; recompiling %s", self.name)
            self.specializations.pop(key, None)  # another thread may have dropped it already
            self._fast = {k: v for k, v in list(self._fast.items()) if v[0] != key}
            sp = None
        if sp is None:
            with self._lock:
                sp = self.specializations.get(key)
                if sp is None and key not in self._failed:
                    sp = self._compile_or_fail(key, spec, leaves, args, kwargs)
            if sp is None:
                self._remember_uncompiled(key, args, kwargs)
                return self._uncompiled(key, args, kwargs)
        else:
            with self._lock:  # another thread's compile may drop the oldest specialization meanwhile
                if key in self.specializations:
                    self.specializations.move_to_end(key)
        self._remember_fast(sp, args, kwargs)
        if self.options.verify and self._verified < 3:
            self._verified += 1
            return self._verified_run(sp, args, kwargs)
        if not sp.proven:
            return self._first_run(sp, key, args, kwargs)
        guard = sp.speed
        if guard is None or guard.settled and not guard.runs_eager:
            return self._run(sp, args, kwargs)
        return guard.call(lambda: self._run(sp, args, kwargs), lambda: self.model(*args, **kwargs))

    def _compile_or_fail(self, key, spec, leaves, args, kwargs) -> Specialization | None:
        """The specialization for this signature, or None after a failure that runs it eagerly from now on."""
        try:
            return self._dispatch(key, spec, leaves, args, kwargs)
        except OptionError:
            raise
        except Exception as e:  # noqa: BLE001 - never a crash: any failure of a stage falls back, once
            if self.options.strict or knobs.strict():
                raise
            if self.dynamo_route and (isinstance(e, CaptureError) or _data_dependent_sizes(e)):
                self._failed[key] = f"{type(e).__name__}: {e}"
                self._via_dynamo.add(key)
                first = (str(e).strip().splitlines() or [""])[0][:300]
                self._warn_once(f"{self.name}: solder cannot take its whole graph ({first}); the graphs that "
                                "torch.compile (Dynamo) captures are compiled by solder instead, the rest of the "
                                "Python code runs eagerly. compile(..., strict=True) raises instead.")
                return None
            self._fail(key, "compiling", e)
            return None

    def _uncompiled(self, key, args, kwargs):
        """A call of a signature with no program: through torch.compile(backend=solder) where export failed and
        Dynamo may still capture pieces, else eagerly."""
        if key not in self._via_dynamo:
            return self.model(*args, **kwargs)
        if self._dynamo is None:
            o = self.options
            backend = self.dynamo_route(target=o.target.name, passes=o.passes, sparse_attention=o.sparse_attention,
                                   cost_model=o.cost_model, cache_dir=o.cache_dir, verify=o.verify)
            self._dynamo, self.dynamo_backend = torch.compile(self.model, backend=backend), backend
        def through_dynamo():
            with torch.no_grad():  # inference, as every compiled program runs
                return self._dynamo(*args, **kwargs)

        guard = self._dynamo_guards.get(key)
        if guard is None and self.options.speed_guard and knobs.speed_guard():
            guard = self._dynamo_guards[key] = SpeedGuard(self.options.target.device)
        try:
            if guard is None:
                return through_dynamo()
            return guard.call(through_dynamo, lambda: self.model(*args, **kwargs))  # Dynamo's pieces vs eager
        except Exception as e:  # noqa: BLE001 - Dynamo itself failed (each solder piece falls back on its own)
            if self.options.strict or knobs.strict():
                raise
            self._via_dynamo.discard(key)
            self._fast = {k: v for k, v in list(self._fast.items()) if v[0] != key}
            self._fail(key, "compiling through torch.compile", e)
            return self.model(*args, **kwargs)

    def _remember_uncompiled(self, key, args, kwargs) -> None:
        """Enter a signature that has no program in the fast table, so its calls skip the pytree work too."""
        if all(type(a) is torch.Tensor for a in args) and all(type(v) is torch.Tensor for v in kwargs.values()):
            self._fast[_fast_key(args, kwargs)] = (key, None, None)

    def _first_run(self, sp: Specialization, key, args, kwargs):
        """The first run of a new program: a failure drops it and runs the call (and later ones) eagerly.
        The program is functional and writes back only after it returns, so eager starts from the same state."""
        try:
            out = self._run(sp, args, kwargs)
        except Exception as e:  # noqa: BLE001
            if self.options.strict or knobs.strict():
                raise
            with self._lock:
                if self.specializations.get(key) is sp:
                    del self.specializations[key]
                self._fast = {k: v for k, v in list(self._fast.items()) if v[1] is not sp}
            self._fail(key, "running the compiled program", e)
            return self.model(*args, **kwargs)
        sp.proven = True
        return out

    def _fail(self, key, stage: str, e: Exception) -> None:
        self._failed[key] = f"{type(e).__name__}: {e}"
        first = (str(e).strip().splitlines() or [""])[0][:300]
        shapes = [f"{tuple(k[1])}:{str(k[2]).removeprefix('torch.')}" for k in key[1] if k[0] == "T"]
        _log.info("%s: %s failed for [%s]", self.name, stage, ", ".join(shapes), exc_info=e)
        if len(shapes) > 4:  # GraphNet-style graphs take hundreds of weights: the cause must stay readable
            shapes = shapes[:3] + [f"... {len(shapes) - 3} more"]
        cause = f"{type(e).__name__}: {first}"
        self._warn_once(f"{self.name}: {stage} for inputs [{', '.join(shapes)}] failed ({cause}); those "
                        "inputs run eagerly from now on. compile(..., strict=True) raises instead; "
                        "SOLDER_LOG=runtime logs the traceback.")

    def _fast_path(self, args, kwargs):
        """Tensors only (positional, or keyword as GraphNet-style graphs take every weight), a signature seen
        before, nothing to re-check: skip the pytree work."""
        if self.model.training or not all(type(a) is torch.Tensor for a in args):
            return _MISS
        if kwargs and not all(type(v) is torch.Tensor for v in kwargs.values()):
            return _MISS
        if torch.is_grad_enabled() and any(a.requires_grad for a in (*args, *kwargs.values())):
            return _MISS
        entry = self._fast.get(_fast_key(args, kwargs))
        if entry is None:
            return _MISS
        key, sp, perm = entry
        if sp is None:
            return self._uncompiled(key, args, kwargs) if key in self._failed else _MISS
        guard = sp.speed
        if guard is not None and guard.settled and guard.runs_eager and self.specializations.get(key) is sp:
            return self.model(*args, **kwargs)  # the guard chose eager: nothing compiled to check or bind
        if self.specializations.get(key) is not sp or not sp.still_valid() or self._verified < 3 and self.options.verify:
            return _MISS
        if sp.values and not sp.values_hold((*args, *kwargs.values())):  # tensors only: these are the leaves
            return _MISS
        if perm is not None:
            given = (*args, *kwargs.values())
            inputs = [given[j] for j in perm]
        else:
            inputs = args
        if not sp.proven or not sp.state_current() or sp.writes and self._writes_aliased(sp, inputs):
            return _MISS
        if guard is None or guard.settled and not guard.runs_eager:
            return self._execute(sp, inputs)
        return guard.call(lambda: self._execute(sp, inputs), lambda: self.model(*args, **kwargs))

    def _remember_fast(self, sp: Specialization, args, kwargs) -> None:
        """Enter this call's signature in the fast table, with where each program input sits among
        (*args, *kwargs.values()) when keywords are passed."""
        if not all(type(a) is torch.Tensor for a in args) or \
                not all(type(v) is torch.Tensor for v in kwargs.values()):
            return
        perm = None
        if kwargs:
            given = (*args, *kwargs.values())
            where = {id(t): j for j, t in enumerate(given)}
            inputs = self._inputs(sp, args, kwargs)
            if len(where) != len(given) or any(id(t) not in where for t in inputs):
                return  # a tensor passed twice, or an input not among them: the general path decides
            perm = [where[id(t)] for t in inputs]
        if len(self._fast) > 1024:  # a dynamic specialization sees many shapes: keep the table small
            self._fast.clear()
        self._fast[_fast_key(args, kwargs)] = (sp.key, sp, perm)

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

    def _inputs(self, sp: Specialization, args, kwargs) -> list:
        return pytree.tree_leaves((args, kwargs)) if sp.flat else fx_pytree.tree_flatten_spec((args, kwargs),
                                                                                              sp.in_spec)

    def _run(self, sp: Specialization, args, kwargs):
        inputs = self._inputs(sp, args, kwargs)
        if sp.writes and self._writes_aliased(sp, inputs):
            self._warn_once(f"{self.name} writes in place into an input or buffer that shares memory with another "
                            "of its inputs or buffers in this call; the compiled program reads every input as it "
                            "was before the call, so such calls run eagerly. Pass tensors that do not overlap.")
            return self.model(*args, **kwargs)
        return self._execute(sp, inputs)

    @staticmethod
    def _writes_aliased(sp: Specialization, inputs: list) -> bool:
        return write_back.aliased(sp.writes, sp.state + [inputs[i] for i in sp.imported.input_positions])

    @staticmethod
    def _execute(sp: Specialization, inputs: list):
        """Run the program on [state..., tensor inputs...], write the mutated inputs and buffers back, and
        rebuild the model's output structure.

        An output that eager returns as the mutated input or buffer itself is that tensor here too; any other
        output is a tensor of its own, also where eager returns a view of a mutated input (same values, but
        a later write through it does not reach the input)."""
        with torch.no_grad():
            tensors = sp.state + [inputs[i] for i in sp.imported.input_positions]
            results = write_back.apply(sp.writes, tensors, sp.program(tensors))
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
        leaves = pytree.tree_leaves((args, kwargs))
        err = call_checks.meta_input_error(self.name, leaves, call_checks.leaf_names(self.model.forward, args, kwargs),
                                           self.options.target.device)
        if err is not None:
            raise err

    def _size_error(self, args, kwargs, e: CaptureError) -> CallError | None:
        """The one-line error when this call's sizes differ from a compiled call's and do not trace."""
        leaves, spec = pytree.tree_flatten((args, kwargs))
        compiled = [(sp.key[0], call_checks.compiled_shapes(sp.imported)) for sp in self.specializations.values()]
        return call_checks.size_error(self.name, leaves, call_checks.leaf_names(self.model.forward, args, kwargs),
                                      str(spec), compiled, e)

    # ---- the shape policy ------------------------------------------------------------------------
    def _dispatch(self, key, spec, leaves, args, kwargs) -> Specialization:
        """The specialization for a signature not compiled before: a dynamic one that fits, or a new one."""
        family = family_key(spec, leaves)
        dkey = self._dynamic.get(family)
        dsp = self.specializations.get(dkey) if dkey is not None else None
        if dsp is not None and self._fits(dsp, leaves):
            self.specializations.move_to_end(dkey)
            return dsp
        dims = self._dims_to_make_dynamic(family, leaves, dsp)
        if dims:
            sp = self._compile_dynamic(key, family, dims, leaves, args, kwargs)
            if sp is not None:
                return sp
        elif dsp is not None:
            _log.info("%s: shapes %s are outside the dynamic specialization's bounds; compiling them static",
                      self.name, _shapes(leaves))
        return self._compile(key, args, kwargs)

    def _dims_to_make_dynamic(self, family, leaves, dsp) -> set[tuple[int, int]]:
        """(leaf, dim) pairs to compile dynamic now; empty: compile this shape static."""
        mode = self.options.dynamic
        if mode is False or family in self._no_dynamic:
            return set()
        if self.options.dynamic_dims:
            return set(self.options.dynamic_dims) if dsp is None else set()
        if mode is True:
            dims = {(i, d) for i, x in enumerate(leaves) if isinstance(x, torch.Tensor) for d in range(x.dim())}
            return dims if dsp is None else set()
        first = self._first_shape.setdefault(family, _shapes(leaves))
        differ = {(i, d) for i, (a, b) in enumerate(zip(first, _shapes(leaves))) if a is not None
                  for d in range(len(a)) if a[d] != b[d]}
        known = dsp.dynamic_dims if dsp is not None else frozenset()
        return differ | known if differ - known else set()

    @staticmethod
    def _fits(sp: Specialization, leaves) -> bool:
        from solder.compiler.dialects.symbolic import ShapeBindError

        if sp.binding is None or not sp.values_hold(leaves):
            return False
        try:
            sp.binding([leaves[i] for i in sp.imported.input_positions])
        except ShapeBindError:
            return False
        return True

    def _compile_dynamic(self, key, family, dims, leaves, args, kwargs) -> Specialization | None:
        """Compile with `dims` dynamic; None (and a warning) when that fails, so the caller compiles static."""
        dkey = ("dynamic " + key[0], tuple(
            ("T", tuple(-1 if (i, d) in dims else n for d, n in enumerate(x.shape)), x.dtype, x.device.type)
            if isinstance(x, torch.Tensor) else leaf_key(x) for i, x in enumerate(leaves)))
        try:
            sp = self._compile(dkey, args, kwargs, dynamic=frozenset(dims))
        except CallError:  # sizes the model does not take: the static compile says so, in one line
            return None
        except Exception as e:  # noqa: BLE001 - any failure of the dynamic path must leave the static one
            self._no_dynamic.add(family)
            warnings.warn(f"solder: {self.name}: compiling dims {sorted(dims)} (input, dim) dynamic failed; "
                          f"compiling one specialization per shape instead. {e}", DynamicShapeWarning, stacklevel=5)
            return None
        self._dynamic[family] = dkey
        if not self._fits(sp, leaves):  # cannot happen unless export's bounds exclude its own example
            return None
        return sp

    @gc_paused()
    def _compile(self, key, args, kwargs, dynamic: frozenset | None = None) -> Specialization:
        from solder.backends.registry import get_backend
        from solder.compiler.aten_table import TABLE

        self._bind_check(args, kwargs)
        t0 = time.perf_counter()
        self.compile_count += 1
        try:
            # values read with .item() are compiled in, unless calls keep changing them (then export decides)
            cap = capture(self.model, args, kwargs, set(TABLE), dynamic=set(dynamic) if dynamic is not None else None,
                          read_values=self._value_changes.get(key, 0) <= MAX_VALUE_RECOMPILES)
        except CaptureError as e:
            raise self._size_error(args, kwargs, e) or e from e.__cause__
        if cap.refused:
            warnings.warn(f"solder: {self.name}: export specialized dims {list(cap.refused)} (input, dim) to their "
                          "example sizes; they compile static", DynamicShapeWarning, stacklevel=5)
        t1 = time.perf_counter()
        imported = import_program(cap.program, strip_prefix=cap.prefix, same_as_input=cap.same_as_input)
        state, sources = self._state_tensors(cap.program, imported)
        guards = materialize_causal_buffers(imported, state)
        t2 = time.perf_counter()
        pipeline = self.options.pipeline
        if self.options.sparse_attention is not None:  # opt-in: it changes numerics
            from solder.sparse_calibrate import with_sparse_attention

            pipeline = with_sparse_attention(pipeline, self.options.sparse_attention, self.model, self.options.target)
        backend = get_backend(self.options.target.backend)
        tb = time.perf_counter()
        run = run_pipeline(imported.module, pipeline, target=self.options.target, cost_model=self.options.cost_model,
                           can_fuse=backend.can_fuse)  # a kernel the passes form is one launch
        t3 = time.perf_counter()
        with knobs.cache_dir_override(self.options.cache_dir):
            program = backend.lower(imported.module, self.options.target)
        t4 = time.perf_counter()
        ep = cap.program
        sp = Specialization(
            key=key, imported=imported, program=program, in_spec=ep.call_spec.in_spec, out_spec=ep.call_spec.out_spec,
            state=state, sources=sources, pipeline=run, decomposed=cap.decomposed, guards=guards, flat=cap.flat,
            seconds={"capture": t1 - t0, "import": t2 - t1, "passes": t3 - tb, "backend": t4 - t3 + tb - t2, "total": t4 - t0},
            binding=input_binding(imported) if dynamic is not None else None, dynamic_dims=dynamic or frozenset(),
            values=cap.values,
        )
        if self.options.speed_guard and knobs.speed_guard():
            sp.speed = SpeedGuard(self.options.target.device)
        if self.options.explain:
            sp.ir_text = ir.print_ir(imported.module)
        self.specializations[key] = sp
        limit = knobs.max_specializations()
        if len(self.specializations) > limit:
            old, _ = self.specializations.popitem(last=False)
            # let the dropped program go (a snapshot: calls on other threads add fast-path entries meanwhile)
            self._fast = {k: v for k, v in list(self._fast.items()) if v[0] != old}
            warnings.warn(f"solder: {self.name} has compiled more than {limit} input signatures; the oldest was "
                          "dropped (raise SOLDER_MAX_SPECIALIZATIONS, or pass inputs of fewer shapes)", stacklevel=4)
        _log.info("compiled %s for %s in %.3f s", self.name, key[1], sp.seconds["total"])
        slow = call_checks.precision_fallback(self.name, imported, program, self.options.target)
        if slow and "precision" not in self._warned:  # once per compiled callable
            self._warned.add("precision")
            warnings.warn(slow, PrecisionFallbackWarning, stacklevel=5)
        if self.options.explain:
            print(self.explain())
        return sp

    def _state_tensors(self, ep, imported: Imported) -> tuple[list[torch.Tensor], list]:
        """The parameters, buffers and constants behind the function's leading arguments, in order, and
        where each parameter and buffer lives in the model (`Specialization.sources`)."""
        named = dict(self.model.named_parameters(remove_duplicate=False))
        named.update(dict(self.model.named_buffers(remove_duplicate=False)))
        state, sources = [], []
        for a in imported.args:
            if a.kind == "input":
                break
            t = named.get(a.name)
            sources.append(self._source(a.name, t) if t is not None else None)
            if t is None:
                for n in (a.name, "m." + a.name):  # a dynamic capture wraps the model as the submodule m
                    t = ep.state_dict.get(n) if n in ep.state_dict else ep.constants.get(n)
                    if t is not None:
                        break
            # the model's own tensor, not a detached alias: a later `p.data = t` is then seen too (the
            # program runs under no_grad, so requires_grad parameters record nothing)
            state.append(t)
        return state, sources

    def _source(self, name: str, t: torch.Tensor) -> tuple | None:
        owner, _, attr = name.rpartition(".")
        try:
            mod = self.model.get_submodule(owner)
        except AttributeError:
            return None
        for d in (mod._parameters, mod._buffers):
            if d.get(attr) is t:
                return (d, attr, t)
        return None

    def _rebind_state(self, key, sp: Specialization) -> Specialization | None:
        """After a parameter or buffer was replaced: run on the new tensors when they have the shapes, dtypes
        and devices compiled for (drop the specialization, to recompile, when not), never on the old ones."""
        if sp.state_current():  # another thread rebound it meanwhile
            return sp
        state, sources = list(sp.state), list(sp.sources)
        for i, src in enumerate(sp.sources):
            if src is None:
                continue
            d, attr, old = src
            new = d.get(attr)
            if new is old:
                continue
            if new is None or (new.shape, new.dtype, new.device) != (old.shape, old.dtype, old.device) \
                    or i in sp.guards:
                _log.info("%s: parameter/buffer %s was replaced by a different kind of tensor; recompiling",
                          self.name, attr)
                self.specializations.pop(key, None)
                self._fast = {k: v for k, v in list(self._fast.items()) if v[0] != key}
                return None
            state[i], sources[i] = new, (d, attr, new)
        _log.info("%s: parameters/buffers replaced since compiling; running on the new ones", self.name)
        sp.state, sp.sources = state, sources
        return sp

    def _verified_run(self, sp: Specialization, args, kwargs):
        """A call compared with eager (`verify=True`): localize.verified_run."""
        return localize.verified_run(self, sp, args, kwargs, _dtype_tolerance)

    def save(self, path) -> None:
        """Write the compiled specializations (IR, generated sources, weights) to `path`; `solder.load` reads it."""
        artifact_save.save(self, path)

    # ---- explaining ----------------------------------------------------------------------------
    def explain(self) -> str:
        """The pipeline that ran, timings, fallbacks and the IR of every compiled input signature."""
        return report.explain(self)
