"""Prebuilt, size-generic flash-attention kernels: built once per install, so that no model compile pays for them.

The generated attention kernel (attention.py) costs 0.1-0.7 s of MLIR and LLVM work per shape, most of a
small model's cold compile (attn_sdpa: 0.13 of 0.18 s). Its size-generic form (`AttentionSpec(generic=True)`:
B, H, T, S, the scale and every operand's offset and strides are call arguments; D, Dv, the masking and the
blocks are not) runs as fast as the per-shape kernel (measured within 5% at the zoo's and GPT-2's shapes), so
the common variants are compiled once, like a vendor library's kernels, and every model whose attention matches
one calls it instead of generating its own.

`python -m solder.backends.cpu.attention_lib build` (run by the Makefile's set-up) compiles PREBUILT into
`library_dir()`: $SOLDER_CPU_LIB, else <venv>/share/solder/cpu-lib (compiler/knobs.py), in a subdirectory named by a fingerprint
of the host CPU and the torch-mlir build (the code is compiled for this CPU's instruction set; another CPU or
MLIR build gets its own directory). The directory holds ordinary JIT cache entries (jit.py: atomic, verified
by hash, never trusted when corrupt) and is only read while compiling models: a variant it lacks is generated
per shape as before, into the model's own cache. Its entries are machine code, so they follow the cache's trust
rule (cache_files.py): read only when they and their directories are owned by this user or root and not writable
by group or others; a library on a read-only mount is read in place (nothing is written into it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from pathlib import Path

import torch

from solder.backends import cache_files
from solder.backends.cpu import jit, threads
from solder.backends.cpu.attention import PARALLEL_MIN_FLOPS, AttentionSpec, module
from solder.compiler import knobs

ENTRY = "attn"
OPT_LEVEL = 3
HEAD_DIMS = (16, 32, 64, 128)


def _variants() -> list[AttentionSpec]:
    """The prebuilt set: head dims 16-128 (Dv = D); no mask (causal or not), and a mask that varies along the
    keys (an additive padding mask, a boolean keep-mask), not causal; each on one thread and on torch's threads
    (batch x heads x query blocks across them: threads.py; built where the OpenMP shim can be)."""
    out = []
    for d in HEAD_DIMS:
        base = AttentionSpec(b=1, hq=1, t=1, d=d, hkv=1, s=1, dv=d, scale=1.0, causal=False, generic=True)
        out += [base, dataclasses.replace(base, causal=True),
                dataclasses.replace(base, mask="add", mask_shape=(1, 1, 1, 2)),
                dataclasses.replace(base, mask="bool", mask_shape=(1, 1, 1, 2))]
    return out + [dataclasses.replace(v, parallel=True) for v in out]


PREBUILT = _variants()


def fingerprint() -> str:
    """Host CPU (model and feature flags) and MLIR build: what the compiled code depends on beyond its text."""
    return jit.host_fingerprint()


def library_dir() -> Path | None:
    """This host's directory of the library (knobs.cpu_library_root()), or None when it is switched off."""
    root = knobs.cpu_library_root()
    return None if root is None else root / fingerprint()


@functools.lru_cache(maxsize=None)
def _text(variant: tuple) -> str:
    """The MLIR of a variant's size-generic kernel (what the library holds compiled)."""
    return module(_generic(variant), ENTRY)


@functools.lru_cache(maxsize=None)
def _load(variant: tuple, root: str):
    """The prebuilt kernel of `variant` from `root`, or None (not built, or an entry that fails its checks)."""
    try:
        return jit.load_cached(_text(variant), ENTRY, opt_level=OPT_LEVEL, cache_dir=root)
    except jit.JitError:  # a parallel variant without an OpenMP runtime
        return None


def _generic(variant: tuple) -> AttentionSpec:
    """The size-generic spec of a variant (AttentionSpec.variant()): its fixed fields, placeholder sizes."""
    d, dv, causal, mask, row, parallel, bq, bk = variant
    return AttentionSpec(b=1, hq=1, t=1, d=d, hkv=1, s=1, dv=dv, scale=1.0, causal=causal, mask=mask,
                         mask_shape=(1, 1, 1, 2 if row else 1) if mask else (), parallel=parallel, bq=bq, bk=bk,
                         generic=True)


class Bound:
    """A prebuilt kernel bound to one attention op's sizes and layouts: `call_unchecked(q, k, v, [mask], out)`
    with the same operands as the per-shape kernel (attention_plan._dense_call calls it)."""

    def __init__(self, kernel, spec: AttentionSpec) -> None:
        self.text = _text(spec.variant())
        shapes = [(math.prod(shape),) for shape, _ in spec.arg_shapes()] + [(1,)]
        call = kernel.bind(shapes, spec.generic_args())
        scale = torch.tensor([spec.scale], dtype=torch.float32)
        self.call_unchecked = lambda *ts: call(*ts, scale)


class PerCall:
    """A prebuilt kernel for an attention op of a dynamic module: `(q, k, v[, mask]) -> out` with the sizes and
    strides read off each call's tensors. One binding per distinct shapes and strides, kept (a few per module in
    practice; at most `keep`). `variant` may leave the head dims open (-1 where the module's are symbolic): a
    call whose head dims have no prebuilt kernel runs torch SDPA (`fallback`)."""

    def __init__(self, variant: tuple, scale: float, fallback, keep: int = 64) -> None:
        self.variant, self.fallback, self.keep = variant, fallback, keep
        self.scale_t = torch.tensor([scale], dtype=torch.float32)
        self.bound: dict[tuple, object] = {}
        self.text = "\n".join(_text(v) for v in self._known())

    def _known(self) -> list[tuple]:
        d, dv, *rest = self.variant
        if d > 0 and dv > 0:
            return [self.variant]
        return [p.variant() for p in PREBUILT if p.variant()[2:] == tuple(rest)]

    def __call__(self, q, k, v, mask=None):
        """q, k, v are read where they are (any strides with the head dim's stride 1, as the head split's views
        come), the mask too (broadcast dims stride 0); the output is a fresh [B, Hq, T, Dv] f32 tensor."""
        dt = q.dtype
        ts = [x if x.dtype == torch.float32 and x.stride(-1) == 1 else x.float().contiguous() for x in (q, k, v)]
        if mask is not None:
            m = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
            m = m.view(torch.int8) if m.dtype == torch.bool else m.float()
            if m.shape[-1] > 1 and m.stride(-1) != 1:
                m = m.contiguous()
            ts.append(m)
        key = tuple((x.shape, x.stride()) for x in ts)
        call = self.bound.get(key)
        if call is None:
            if len(self.bound) >= self.keep:
                self.bound.clear()
            call = self.bound[key] = self._bind(ts)
        if call is self.fallback:
            return call(q, k, v, mask) if mask is not None else call(q, k, v)
        b, hq, t, _ = q.shape
        out = torch.empty((b, hq, t, v.shape[3]), dtype=torch.float32)
        call(*ts, out, self.scale_t)
        return out if dt == torch.float32 else out.to(dt)

    def _bind(self, ts: list):
        """The kernel call for these tensors' shapes and strides (the fallback where no kernel is prebuilt): the
        variant on torch's threads where the call is big enough (`_threaded`) and that variant is built."""
        q, k, v = ts[:3]
        (b, hq, t, d), (_, hkv, s, _), dv = q.shape, k.shape, v.shape[3]
        root = library_dir()
        kernel = None
        if root is not None:
            variant = (d, dv) + self.variant[2:]
            if _threaded(4 * b * hq * t * s * d):
                kernel = _load(variant[:5] + (True,) + variant[6:], str(root))
            kernel = kernel or _load(variant, str(root))
        if kernel is None:
            return self.fallback
        args = [b, hq, hkv, t, s]
        for x in (q, k, v):
            args += [0, *x.stride()[:3]]  # the data pointer is the view's first element: offset 0
        args += [0, hq * t * dv, t * dv, dv]  # out: contiguous [B, Hq, T, Dv]
        if len(ts) > 3:
            args += [0, *(0 if n == 1 else st for n, st in zip(ts[3].shape[:3], ts[3].stride()[:3]))]
        extent = [1 + sum((n - 1) * st for n, st in zip(x.shape, x.stride())) for x in ts]
        return kernel.bind([(n,) for n in extent] + [(b * hq * t * dv,), (1,)], args)


def _threaded(flops: int) -> bool:
    """Whether an attention call of `flops` runs on torch's threads (the threshold is attention_plan's)."""
    return flops >= PARALLEL_MIN_FLOPS and threads.torch_threads() > 1 and threads.runtime() is not None


def dynamic(variant: tuple, scale: float, fallback) -> PerCall | None:
    """The prebuilt kernel of `variant` (head dims -1: those of each call) for an op whose sizes are known per
    call only, or None when the library has no kernel for it."""
    root = library_dir()
    if root is None:
        return None
    call = PerCall(variant, scale, fallback)
    known = [v for v in call._known() if _load(v, str(root)) is not None]
    if known and threads.torch_threads() > 1:
        threads.runtime()  # load the OpenMP shim now: the runner built next then syncs torch's thread count
    return call if known else None


def prebuilt(spec: AttentionSpec) -> Bound | None:
    """`spec`'s attention as a call of the installed library's kernel, or None when the library lacks its
    variant (or is not built): the caller then generates the per-shape kernel."""
    root = library_dir()
    if spec.sparse or spec.generic or root is None:
        return None
    kernel = _load(spec.variant(), str(root))
    return None if kernel is None else Bound(kernel, spec)


def build(root: Path | None = None, variants: list[AttentionSpec] = PREBUILT, quiet: bool = False) -> int:
    """Compile `variants` into the library (kept ones are not rebuilt); returns how many were compiled."""
    root = root or library_dir()
    if root is None:
        raise SystemExit("SOLDER_CPU_LIB=off: no library directory to build into")
    if cache_files.writable_root(root, root / "jit" / "00" / "probe") != root:
        raise SystemExit(f"{root}: cannot build the CPU attention library there (not writable, or writable by "
                         "others); set SOLDER_CPU_LIB to a directory of yours")
    built = 0
    t0 = time.perf_counter()
    for spec in variants:
        if _load.__wrapped__(spec.variant(), str(root)) is not None:
            continue
        try:
            jit.compile_mlir(_text(spec.variant()), ENTRY, opt_level=OPT_LEVEL, cache_dir=root)
        except jit.JitError:
            if not spec.parallel:
                raise
            continue  # no OpenMP shim here (threads.py): attention stays on one thread
        built += 1
    _load.cache_clear()
    if not quiet:
        print(f"solder CPU attention library: {built} kernel(s) built, {len(variants) - built} kept, "
              f"{time.perf_counter() - t0:.1f} s, in {root}")
    return built


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m solder.backends.cpu.attention_lib build")
    build()
