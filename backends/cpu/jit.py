"""Compile linalg-on-tensors MLIR text to native code with torch-mlir's bundled MLIR, and call it.

`compile_mlir(text, entry)` runs one named pipeline (stages below), JIT-compiles the result with
the MLIR ExecutionEngine and returns a `JitKernel`: a callable over torch tensors in
destination-passing style (inputs, then preallocated outputs, as the entry's memref arguments).

Calling: the entry must carry `llvm.emit_c_interface`; the kernel looks up the packed wrapper
of `_mlir_ciface_<entry>` once, builds one ctypes memref descriptor per argument once (shapes are
static), and per call only checks each tensor (dtype, shape, contiguity) and refreshes the data
pointers: ~1.5 us for 3 tensors, ~1 us unchecked (building descriptors per call costs 125-225 us).
A size-generic kernel (memrefs with `?` dims, trailing `index` arguments: the shape symbols) also
refreshes the `?` sizes and the strides they change, and takes the symbols' values after the tensors.
Parallel kernels (scf.forall, see schedule.py) run on torch's OpenMP pool through threads.py's shim.
The text comes from mlir_builder.py: kernel functions built as xDSL ops and verified by xDSL before they
get here (a malformed kernel fails there, as `KernelVerifyError`); their transform schedules are text.

Disk cache (content hash of MLIR text, pipeline, opt level, torch-mlir version, format): the
bindings cannot load an object file back into an ExecutionEngine, so an entry holds either
  - "so": the engine's object file (`dump_to_object_file`, compiled with PIC) linked by the system
    C compiler into a shared library, loaded with ctypes (no MLIR work at all on a hit), or
  - "mlir": the lowered LLVM-dialect MLIR (skips the pass pipeline, still runs LLVM codegen),
    used when no C compiler is found.
Each entry is one file: a magic line, a JSON header (key, kind, payload length and sha256) and
the payload. Writes are atomic (tempfile + os.replace); an entry whose header or hash does not
match is ignored and rebuilt, never loaded. The hash only detects damage: what makes an entry
trusted is who could have written it (cache_files.py): the entry and its directories up to the
cache root must be owned by this user (or root) and not writable by group or others, else the
entry is refused and its kernel compiled again into this process's private directory, with one
warning. A read-only cache is read in place; temporary files go to the private directory, and
kernels that cannot be stored are kept there until the process exits (said once).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_mlir import execution_engine, ir, passmanager

from solder.backends import cache_files
from solder.backends.cpu import row_loops, threads
from solder.compiler import knobs
from solder.compiler.errors import CallError, SolderError

CACHE_FORMAT = "solder-jit-1"
_MAGIC = b"SOLDERJIT1\n"

BUFFERIZE = (
    "one-shot-bufferize{bufferize-function-boundaries "
    "function-boundary-type-conversion=identity-layout-map}",
    "drop-equivalent-buffer-results",
    "func.func(buffer-loop-hoisting)",
    "func.func(promote-buffers-to-stack{max-alloc-size-in-bytes=65536})",
    "buffer-deallocation-pipeline",
)
LOWER_LOOPS = (
    "func.func(convert-linalg-to-loops)",
    "func.func(lower-vector-multi-reduction{lowering-strategy=inner-reduction})",
    "func.func(convert-vector-to-scf{full-unroll=true})",
)
LOWER_TO_LLVM = (
    "expand-strided-metadata", "lower-affine", "convert-scf-to-cf", "convert-vector-to-llvm",
    "convert-math-to-llvm", "finalize-memref-to-llvm", "convert-arith-to-llvm",
    "convert-ub-to-llvm", "convert-index-to-llvm", "convert-func-to-llvm", "convert-cf-to-llvm",
    "reconcile-unrealized-casts",
)

_DTYPES = {
    "f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16,
    "i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8,
    "i1": torch.bool,
}


class JitError(SolderError):
    """MLIR text that does not parse, a pass pipeline that fails, or a missing entry point."""


# scf.forall (from a schedule's `use_forall`) -> scf.parallel -> OpenMP; runs on torch's libgomp (threads.py).
PARALLEL = ("func.func(scf-forall-to-parallel)", "convert-scf-to-openmp")


def pipeline(*, schedule: bool, parallel: bool = False) -> str:
    """The pass pipeline as one string: transform schedule (if any), bufferize, lower to LLVM."""
    stages = (("transform-interpreter",) if schedule else ()) + BUFFERIZE + LOWER_LOOPS
    stages += (PARALLEL if parallel else ()) + LOWER_TO_LLVM
    if parallel:
        # convert-scf-to-openmp wraps loop bodies in memref.alloca_scope, which must be lowered
        # (finalize-memref-to-llvm) before convert-scf-to-cf splits the body into blocks.
        stages = tuple(x for x in stages if x != "finalize-memref-to-llvm")
        at = stages.index("convert-scf-to-cf")
        stages = stages[:at] + ("convert-vector-to-llvm", "finalize-memref-to-llvm") + stages[at:]
        stages = stages[:-1] + ("convert-openmp-to-llvm",) + stages[-1:]
    return "builtin.module(" + ",".join(stages) + ")"


def find_openmp() -> str | None:
    """The OpenMP runtime parallel kernels run on: torch's own libgomp pool through the `__kmpc_*` shim
    (threads.py), loaded into the process; a stable name of it for cache keys, or None (kernels stay serial)."""
    return threads.runtime()


@dataclass(frozen=True)
class ArgSpec:
    """One argument of the entry: a memref (shape, -1 for a `?` dim, and element type) or, with dtype
    None, an `index` scalar (a shape symbol's value)."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None

    @property
    def dynamic(self) -> bool:
        return self.dtype is None or any(n < 0 for n in self.shape)

    def descriptor(self) -> ctypes.Structure | None:
        if self.dtype is None:
            return None
        rank = len(self.shape)
        fields = [("allocated", ctypes.c_void_p), ("aligned", ctypes.c_void_p),
                  ("offset", ctypes.c_int64)]
        if rank:
            fields += [("sizes", ctypes.c_int64 * rank), ("strides", ctypes.c_int64 * rank)]
        desc = type(f"MemRef{rank}D", (ctypes.Structure,), {"_fields_": fields})()
        stride = 1
        for d in reversed(range(rank)):
            desc.sizes[d] = self.shape[d]
            desc.strides[d] = stride
            stride *= self.shape[d]
        return desc


class JitKernel:
    """A compiled entry point, called with torch tensors (inputs then outputs), returns None.

    `fnptr` is the address of the packed wrapper that the ExecutionEngine generates for the C
    interface function (`raw_lookup` returns that one, not `_mlir_ciface_<entry>` itself).
    """

    def __init__(self, entry: str, fnptr: int, specs: list[ArgSpec], keepalive: object,
                 *, cache_hit: bool, compile_seconds: float, cache_kind: str | None) -> None:
        self.entry, self.specs = entry, specs
        self.cache_hit, self.cache_kind = cache_hit, cache_kind
        self.compile_seconds = compile_seconds
        self._keepalive = keepalive  # engine or shared library: owns the code behind fnptr
        # fnptr is the packed wrapper `_mlir__mlir_ciface_<entry>(void **args)`: args[i] points
        # at a slot that holds the address of descriptor i. All of it is built once.
        self._fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(fnptr)
        self._descs = [s.descriptor() for s in specs]
        n = len(specs)
        self._slots = (ctypes.c_void_p * n)(*[0 if d is None else ctypes.addressof(d) for d in self._descs])
        base, size = ctypes.addressof(self._slots), ctypes.sizeof(ctypes.c_void_p)
        self._packed = (ctypes.c_void_p * n)(*[base + i * size for i in range(n)])
        self._packed_addr = ctypes.addressof(self._packed)
        self._checks = tuple((s.dtype, torch.Size(s.shape), d) for s, d in zip(specs, self._descs))
        self._arity = len(specs)
        if any(s.dynamic for s in specs):
            self._fast, self._fast_unchecked, self.call_keyed = self._make_dynamic_call()
        else:
            self._fast, self._fast_unchecked = self._make_fast_call()

    def __call__(self, *tensors: torch.Tensor) -> None:
        if len(tensors) != self._arity:
            return self._checked_call(*tensors)
        self._fast(*tensors)

    def _checked_call(self, *tensors: torch.Tensor) -> None:
        """The generic path: only reached when the fast path saw a bad argument."""
        if len(tensors) != len(self._checks):
            raise CallError(f"{self.entry}: expected {len(self._checks)} tensors "
                            f"(inputs then outputs), got {len(tensors)}")
        for i, (t, (dtype, shape, desc)) in enumerate(zip(tensors, self._checks)):
            try:
                bad = t.dtype is not dtype or t.shape != shape or not t.is_contiguous()
            except AttributeError:
                bad = True
            if bad:
                self._bad_arg(i, t)
            desc.aligned = t.data_ptr()  # the code reads `aligned` (+ offset 0) only
        self._fn(self._packed_addr)

    def _make_fast_call(self):
        """Call functions for this arity with the per-argument work unrolled (checked, and
        unchecked): half the Python overhead of a loop over the arguments (1.5 vs 3.0 us
        for 3 tensors)."""
        n = len(self.specs)
        args = ", ".join(f"t{i}" for i in range(n))
        checks = " or ".join(["False"] + [f"t{i}.dtype is not D{i} or t{i}.shape != S{i} or "
                             f"not t{i}.is_contiguous()" for i in range(n)])
        sets = "".join(f"    d{i}.aligned = t{i}.data_ptr()\n" for i in range(n))
        src = (f"def fast({args}):\n    try:\n        bad = {checks}\n"
               f"    except AttributeError:\n        bad = True\n"
               f"    if bad:\n        return slow({args})\n{sets}    fn(addr)\n"
               f"def fast_unchecked({args}):\n{sets}    fn(addr)\n")
        env: dict = {"fn": self._fn, "addr": self._packed_addr, "slow": self._checked_call}
        for i, (dtype, shape, desc) in enumerate(self._checks):
            env.update({f"D{i}": dtype, f"S{i}": shape, f"d{i}": desc})
        exec(compile(src, f"<jit call {self.entry}>", "exec"), env)
        return env["fast"], env["fast_unchecked"]

    def _make_dynamic_call(self):
        """The call functions of a size-generic kernel: tensors (inputs, outputs), then the symbols' ints.

        Per `?` dim the descriptor's size is refreshed, and the row-major strides that depend on it.
        `call_keyed(key, ...)` (a runner that knows every size follows from `key`, the call's symbol values)
        refreshes sizes, strides and symbols only when `key` differs from the last call's: 1.6 us instead of
        5.7 us for seven tensors."""
        tensors = [i for i, s in enumerate(self.specs) if s.dtype is not None]
        scalars = [i for i, s in enumerate(self.specs) if s.dtype is None]
        args = ", ".join([f"t{i}" for i in tensors] + [f"n{i}" for i in scalars])
        checks, ptrs, sets = ["False"], [], []
        for i in tensors:
            shape = self.specs[i].shape
            checks.append(f"t{i}.dtype is not D{i} or not t{i}.is_contiguous() or t{i}.dim() != {len(shape)}" + "".join(
                f" or t{i}.shape[{k}] != {n}" for k, n in enumerate(shape) if n >= 0))
            ptrs.append(f"    d{i}.aligned = t{i}.data_ptr()")
            if not any(n < 0 for n in shape):
                continue
            sets.append(f"    z = t{i}.shape")
            for k, n in enumerate(shape):
                if n < 0:
                    sets.append(f"    d{i}.sizes[{k}] = z[{k}]")
                if any(m < 0 for m in shape[k + 1:]):
                    prod = "*".join(f"z[{j}]" if shape[j] < 0 else str(shape[j]) for j in range(k + 1, len(shape)))
                    sets.append(f"    d{i}.strides[{k}] = {prod}")
        sets += [f"    slots[{i}] = n{i}" for i in scalars]
        body = "\n".join(ptrs + sets)
        keyed = "\n".join(ptrs + ["    if key != last[0]:", "        last[0] = key"] + ["    " + x for x in sets])
        src = (f"def fast({args}):\n    try:\n        bad = {' or '.join(checks)}\n"
               f"    except AttributeError:\n        bad = True\n"
               f"    if bad:\n        return slow({args})\n    last[0] = None\n{body}\n    fn(addr)\n"
               f"def fast_unchecked({args}):\n    last[0] = None\n{body}\n    fn(addr)\n"
               f"def keyed(key, {args}):\n{keyed}\n    fn(addr)\n")
        env: dict = {"fn": self._fn, "addr": self._packed_addr, "slow": self._dynamic_bad, "slots": self._slots,
                     "last": [None]}
        for i in tensors:
            env.update({f"D{i}": self.specs[i].dtype, f"d{i}": self._descs[i]})
        exec(compile(src, f"<jit call {self.entry}>", "exec"), env)
        return env["fast"], env["fast_unchecked"], env["keyed"]

    def _dynamic_bad(self, *args) -> None:
        for i, (t, spec) in enumerate(zip(args, self.specs)):
            if spec.dtype is None:
                continue
            ok = isinstance(t, torch.Tensor) and t.dtype is spec.dtype and t.is_contiguous() and \
                t.dim() == len(spec.shape) and all(n < 0 or t.shape[k] == n for k, n in enumerate(spec.shape))
            if not ok:
                self._bad_arg(i, t)

    def call_unchecked(self, *tensors: torch.Tensor) -> None:
        """Like calling the kernel, without the dtype/shape/contiguity checks.

        For callers that validated the tensors already (a runtime with a fixed buffer plan):
        a wrong tensor here reads or writes out of bounds.
        """
        self._fast_unchecked(*tensors)

    def bind(self, shapes: list[tuple[int, ...]], symbols: list[int]):
        """A call of this size-generic kernel at fixed sizes: `shapes` gives each memref argument's descriptor
        shape (row-major strides), `symbols` each `index` argument's value, in order. Returns `call(*tensors)`
        (one tensor per memref argument, unchecked: its data pointer becomes the descriptor's, offset 0, and the
        kernel reads it as the shapes and symbols say, e.g. a flat memref viewed through strides given as
        symbols) that per call only stores the data pointers. Each binding owns its descriptors, so bindings of
        one kernel at different sizes coexist."""
        mems = [i for i, s in enumerate(self.specs) if s.dtype is not None]
        syms = [i for i, s in enumerate(self.specs) if s.dtype is None]
        if len(shapes) != len(mems) or len(symbols) != len(syms):
            raise CallError(f"{self.entry}: bind() takes {len(mems)} shapes and {len(syms)} symbols, "
                            f"got {len(shapes)} and {len(symbols)}")
        descs = [ArgSpec(tuple(shape), self.specs[i].dtype).descriptor() for i, shape in zip(mems, shapes)]
        n = len(self.specs)
        slots = (ctypes.c_void_p * n)()
        for i, d in zip(mems, descs):
            slots[i] = ctypes.addressof(d)
        for i, v in zip(syms, symbols):
            slots[i] = v
        base, size = ctypes.addressof(slots), ctypes.sizeof(ctypes.c_void_p)
        packed = (ctypes.c_void_p * n)(*[base + i * size for i in range(n)])
        args = ", ".join(f"t{i}" for i in range(len(mems)))
        sets = "".join(f"    d{i}.aligned = t{i}.data_ptr()\n" for i in range(len(mems)))
        env: dict = {"fn": self._fn, "addr": ctypes.addressof(packed), **{f"d{i}": d for i, d in enumerate(descs)}}
        exec(compile(f"def call({args}):\n{sets}    fn(addr)\n", f"<jit bound {self.entry}>", "exec"), env)
        call = env["call"]
        call.keepalive = (self, descs, slots, packed)  # the kernel's code and the memory the pointers name
        return call

    def _bad_arg(self, i: int, t: object) -> None:
        spec = self.specs[i]
        want = f"a contiguous {spec.dtype} tensor of shape {['?' if n < 0 else n for n in spec.shape]}"
        if not isinstance(t, torch.Tensor):
            raise CallError(f"{self.entry}: argument {i}: expected {want}, got {type(t).__name__}")
        got = f"{t.dtype} {list(t.shape)}{'' if t.is_contiguous() else ' non-contiguous'}"
        raise CallError(f"{self.entry}: argument {i}: expected {want}, got {got}; "
                        "pass .contiguous() / .to(dtype) copies or fix the shape")

    def __repr__(self) -> str:
        args = ", ".join(f"{list(s.shape)}:{s.dtype}" for s in self.specs)
        return f"JitKernel({self.entry}({args}), cache_hit={self.cache_hit})"


# -- compile ------------------------------------------------------------------------------------
def compile_mlir(text: str, entry: str, *, opt_level: int = 3, cache_dir: str | Path | None = None,
                 shared_libs: tuple[str, ...] = (), use_cache: bool = True) -> JitKernel:
    """Compile MLIR `text` and return the callable kernel for the public function `entry`."""
    start = time.perf_counter()
    has_schedule = "transform.named_sequence" in text
    pipe, shared_libs, key = _keyed(text, entry, opt_level, shared_libs)
    cdir = Path(cache_dir) if cache_dir is not None else knobs.cache_dir()
    if use_cache:
        hit = _load_cached(cdir, key, entry, opt_level, shared_libs, start)
        if hit is not None:
            return hit
    with ir.Context() as ctx, ir.Location.unknown(ctx):
        module = _parse(text, entry)
        specs = _arg_specs(module, entry)
        _run_pipeline(module, pipe, entry, has_schedule)
        lowered = str(module) if use_cache else ""
        try:
            engine = execution_engine.ExecutionEngine(
                module, opt_level=opt_level, shared_libs=list(shared_libs), enable_pic=True)
        except RuntimeError as exc:
            raise JitError(f"compile_mlir({entry}): LLVM code generation failed: {exc}") from None
        fnptr = engine.raw_lookup(f"_mlir_ciface_{entry}")
    if not fnptr:
        raise JitError(f"compile_mlir({entry}): no '_mlir_ciface_{entry}' in the compiled code; "
                       f"give @{entry} the llvm.emit_c_interface attribute")
    kind = _store(cdir, key, entry, specs, engine, lowered, shared_libs) if use_cache else None
    return JitKernel(entry, fnptr, specs, (ctx, module, engine), cache_hit=False,
                     compile_seconds=time.perf_counter() - start, cache_kind=kind)


def _keyed(text: str, entry: str, opt_level: int, shared_libs: tuple[str, ...]) -> tuple[str, tuple[str, ...], str]:
    """The pipeline, shared libraries and cache key of `text` (a parallel kernel's key names the OpenMP shim;
    its `__kmpc_*` symbols resolve from the process, where threads.py loaded the shim)."""
    parallel = any(m in text for m in ("use_forall", "tile_using_forall", "scf.forall"))
    key_libs = tuple(shared_libs)
    if parallel:
        omp = find_openmp()
        if omp is None:
            raise JitError(f"compile_mlir({entry}): the kernel is parallel (scf.forall) but torch's OpenMP "
                           "runtime or a C compiler to build the shim for it is missing (threads.py); "
                           "build the kernel with parallel=False")
        key_libs += (omp,)
    schedule = "transform.named_sequence" in text
    pipe = pipeline(schedule=schedule, parallel=parallel)
    # the rewrites between schedule and bufferization (row_loops.py) are not in the pipeline text: key their version
    key_pipe = f"{pipe}+row-loops-v{row_loops.VERSION}" if schedule else pipe
    return pipe, tuple(shared_libs), cache_key(text, key_pipe, opt_level, key_libs)


def load_cached(text: str, entry: str, *, opt_level: int = 3, cache_dir: str | Path,
                shared_libs: tuple[str, ...] = ()) -> JitKernel | None:
    """What `compile_mlir` with these arguments would load from `cache_dir` without compiling, or None
    (no entry, or one that fails its checks). Never compiles or writes."""
    _, shared_libs, key = _keyed(text, entry, opt_level, shared_libs)
    return _load_cached(Path(cache_dir), key, entry, opt_level, shared_libs, time.perf_counter())


@functools.lru_cache(maxsize=None)
def host_fingerprint() -> str:
    """The host CPU (model and feature flags) and the MLIR build: what compiled code depends on beyond its text
    (the ExecutionEngine compiles for this CPU's instruction set), so a cache directory shared with another
    machine never hands it code it cannot run."""
    import platform

    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu += "".join(sorted({ln for ln in f if ln.startswith(("model name", "flags"))}))
    except OSError:
        cpu += platform.processor()
    return hashlib.sha256(f"{cpu}\0{_torch_mlir_version()}\0{CACHE_FORMAT}".encode()).hexdigest()[:16]


def cache_key(text: str, pipe: str, opt_level: int, shared_libs: tuple[str, ...] = ()) -> str:
    """Content hash of everything that determines the compiled code, the host it is compiled for included."""
    h = hashlib.sha256()
    for part in (CACHE_FORMAT, host_fingerprint(), pipe, str(opt_level),
                 "\0".join(shared_libs), text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _torch_mlir_version() -> str:
    try:
        return importlib.metadata.version("torch-mlir")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parse(text: str, entry: str) -> ir.Module:
    try:
        return ir.Module.parse(text)
    except Exception as exc:  # MLIRError carries the diagnostics
        raise JitError(f"compile_mlir({entry}): MLIR text does not parse: {exc}") from None


def _arg_specs(module: ir.Module, entry: str) -> list[ArgSpec]:
    for op in module.body.operations:
        if op.operation.name == "func.func" and \
                ir.StringAttr(op.attributes["sym_name"]).value == entry:
            ftype = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
            return [_spec(entry, i, t) for i, t in enumerate(ftype.inputs)]
    raise JitError(f"compile_mlir: no func.func @{entry} at the top level of the module")


def _spec(entry: str, i: int, t: ir.Type) -> ArgSpec:
    if str(t) == "index":
        return ArgSpec((), None)  # a shape symbol of a size-generic kernel
    try:
        mt = ir.MemRefType(t)
    except (ValueError, TypeError):
        raise JitError(f"compile_mlir({entry}): argument {i} has type {t}; "
                       "expected a memref") from None
    elem = str(mt.element_type)
    if elem not in _DTYPES or not (mt.has_static_shape or str(mt.layout).startswith("affine_map")):
        raise JitError(f"compile_mlir({entry}): argument {i} has type {t}; expected an identity-layout "
                       f"memref of {', '.join(_DTYPES)} or an index")
    return ArgSpec(tuple(-1 if mt.is_dynamic_dim(k) else n for k, n in enumerate(mt.shape)), _DTYPES[elem])


def _run_pipeline(module: ir.Module, pipe: str, entry: str, has_schedule: bool) -> None:
    """Run `pipe` in three steps: the transform schedule (then drop its ops and rewrite the row loops,
    row_loops.py), bufferize and lower loops, (re-attach reduction fast-math flags) lower to LLVM."""
    stages = pipe[len("builtin.module("):-1]
    split = stages.index(LOWER_TO_LLVM[0], stages.index(LOWER_LOOPS[-1]))
    if PARALLEL[0] in stages:
        split = stages.index(PARALLEL[0])
    head, tail = stages[:split].rstrip(","), stages[split:]
    try:
        if has_schedule:
            head = head[len("transform-interpreter,"):]
            passmanager.PassManager.parse("builtin.module(transform-interpreter)").run(
                module.operation)
            _drop_transform_ops(module)
            row_loops.fuse_reductions(module)
            row_loops.temps_into_outputs(module)
        passmanager.PassManager.parse(f"builtin.module({head})").run(module.operation)
        _reassociate_reductions(module)
        passmanager.PassManager.parse(f"builtin.module({tail})").run(module.operation)
    except Exception as exc:
        raise JitError(f"compile_mlir({entry}): pass pipeline failed: {exc}") from None


def _reassociate_reductions(module: ir.Module) -> None:
    """Give horizontal `vector.reduction`s `reassoc` so LLVM emits a shuffle tree.

    lower-vector-multi-reduction drops fast-math flags; without them LLVM lowers each
    vector.reduction <add> to an ordered chain of scalar adds (32 dependent adds per row).
    Loop bodies keep their flags without `reassoc` (which would fuse accumulators into one chain).
    """
    add = {"reassoc", "nsz", "contract"}
    fms: dict[str, ir.Attribute] = {}

    def visit(op):
        if op.name == "vector.reduction":  # flags the op has (an attention max's nnan) are kept
            old = str(op.attributes["fastmath"]) if "fastmath" in op.attributes else ""
            have = set(old[old.find("<") + 1:old.rfind(">")].split(",")) - {"", "none"} if "<" in old else set()
            flags = ",".join(sorted(have | add))
            if flags not in fms:
                fms[flags] = ir.Attribute.parse(f"#arith.fastmath<{flags}>")
            op.attributes["fastmath"] = fms[flags]
        return ir.WalkResult.ADVANCE
    module.operation.walk(visit)


def _drop_transform_ops(module: ir.Module) -> None:
    for op in list(module.body.operations):
        if op.operation.name.startswith("transform."):
            op.operation.erase()
    if "transform.with_named_sequence" in module.operation.attributes:
        del module.operation.attributes["transform.with_named_sequence"]


# -- disk cache ---------------------------------------------------------------------------------
def _entry_path(cdir: Path, key: str) -> Path:
    return cdir / "jit" / f"{key[:2]}" / f"{key}.bin"


def _store(cdir: Path, key: str, entry: str, specs: list[ArgSpec], engine, lowered: str,
           shared_libs: tuple[str, ...]) -> str | None:
    """Write the cache entry into `cdir`, or into the private directory when `cdir` cannot take it or is not
    trusted; returns its kind, or None when it could be written nowhere."""
    try:
        payload, kind = _shared_object(engine, shared_libs), "so"
    except OSError:
        payload = None
    if payload is None:
        payload, kind = lowered.encode(), "mlir"
    header = {"key": key, "kind": kind, "entry": entry, "len": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest(),
              "args": [[list(s.shape), str(s.dtype)] for s in specs]}
    data = _MAGIC + json.dumps(header).encode() + b"\n" + payload
    root = cache_files.writable_root(cdir, _entry_path(cdir, key))
    for place in dict.fromkeys([root, cache_files.private_dir()]):
        try:
            path = _entry_path(place, key)
            cache_files._make_dirs(place, path.parent)
            cache_files.atomic_write(path, data)
            return kind
        except OSError:
            continue
    return None


def _shared_object(engine, shared_libs: tuple[str, ...]) -> bytes | None:
    """The engine's code linked into a shared library (in the private directory), or None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory(dir=cache_files.private_dir()) as tmp:
        obj, so = os.path.join(tmp, "k.o"), os.path.join(tmp, "k.so")
        engine.dump_to_object_file(obj)
        cmd = [cc, "-shared", "-Wl,-Bsymbolic", "-o", so, obj, *shared_libs, "-lm"]
        if not os.path.exists(obj) or subprocess.run(cmd, capture_output=True).returncode:
            return None
        return Path(so).read_bytes()


def _read_entry(root: Path, path: Path, key: str) -> tuple[dict, bytes] | None:
    """The verified (header, payload) of a cache entry under `root`, or None if missing, foreign or corrupt."""
    data = cache_files.read_trusted(root, path)
    if data is None or not data.startswith(_MAGIC):
        return None
    head, sep, payload = data[len(_MAGIC):].partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:
        return None
    ok = (sep and isinstance(header, dict) and header.get("key") == key
          and header.get("kind") in ("so", "mlir") and header.get("len") == len(payload)
          and header.get("sha256") == hashlib.sha256(payload).hexdigest())
    return (header, payload) if ok else None


def _load_cached(cdir: Path, key: str, entry: str, opt_level: int,
                 shared_libs: tuple[str, ...], start: float) -> JitKernel | None:
    """The kernel of `key` from this process's private directory or from `cdir`, or None."""
    got = None
    for root in dict.fromkeys(r for r in (cache_files.private_root(), cdir) if r is not None):
        got = _read_entry(root, _entry_path(root, key), key)
        if got is not None:
            break
    if got is None:
        return None
    header, payload = got
    try:
        specs = [ArgSpec(tuple(shape), _dtype(dt)) for shape, dt in header["args"]]
    except (TypeError, ValueError):
        return None
    try:
        if header["kind"] == "so":
            lib = cache_files.load_library(payload)
            fnptr = ctypes.cast(getattr(lib, f"_mlir__mlir_ciface_{entry}"), ctypes.c_void_p).value
            keep: object = lib
        else:
            keep, fnptr = _load_lowered(payload.decode(), entry, opt_level, shared_libs)
    except (OSError, AttributeError, JitError):
        return None
    return JitKernel(entry, fnptr, specs, keep, cache_hit=True,
                     compile_seconds=time.perf_counter() - start, cache_kind=header["kind"])


def _dtype(name: str) -> torch.dtype | None:
    """An entry header's dtype ("torch.float32", or "None" for an index argument), looked up without getattr."""
    if name == "None":
        return None
    dtype = vars(torch).get(str(name).removeprefix("torch."))
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a dtype: {name!r}")
    return dtype


def _load_lowered(text: str, entry: str, opt_level: int, shared_libs: tuple[str, ...]):
    ctx = ir.Context()
    with ctx, ir.Location.unknown(ctx):
        module = _parse(text, entry)
        engine = execution_engine.ExecutionEngine(
            module, opt_level=opt_level, shared_libs=list(shared_libs))
        fnptr = engine.raw_lookup(f"_mlir_ciface_{entry}")
    if not fnptr:
        raise JitError(f"cached entry lacks _mlir_ciface_{entry}")
    return (ctx, module, engine), fnptr
