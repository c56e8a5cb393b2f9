"""Flash attention for the CPU backend: one generated MLIR kernel per attention shape, no T×S buffer.

`graph.attention` and `graph.block_sparse_attention` lower to one function (same ABI and JIT path as
the other kernels: memref arguments, destination passing, `llvm.emit_c_interface`, jit.compile_mlir
and its disk cache). The function first copies k transposed into kT [B, Hkv, D, S padded to whole
key blocks] (one heap buffer the size of k, zeros past S), then walks (batch, head, query block) —
an `scf.forall` on torch's OpenMP pool (threads.py) above PARALLEL_MIN_FLOPS — and, inside, the key blocks the query
block needs: all, those up to the diagonal when causal, or those a block-sparse layout lists for the
head (counts/indices arguments). Per key block, four query rows at a time:

    s[r, :BK]  = scale * sum_d q[r, d] * kT[d, j0:j0+BK]     (4 vector<BK> accumulators share each load)
    s          = s + mask row | select(mask row, s, -inf); -inf past the causal diagonal and past S
    m_new      = max(m[r], max(s));  p = exp(s - m_new);  alpha = exp(m[r] - m_new)
    l[r]       = l[r] * alpha + sum(p)
    acc[r, :]  = acc[r, :] * alpha + sum_j p[r, j] * v[j0 + j, :]  (64-column chunks, 4 rows per v load)
    out[r, :]  = acc[r, :] / l[r]   at the end (0 for a row every key of which is masked)

Scratch per (batch, head, query block): BQ×Dv + 2·BQ + 4·BK floats on the stack; with kT and the
output that is all the memory the call takes. exp is mathapprox's 10-op polynomial, written on
vectors for p and inline on scalars for alpha (a libm call would spill the live score vectors).
Scores and accumulators are fp32 (bf16/fp16 inputs are upcast at the call). GQA: query head h reads
key/value head h // (Hq / Hkv). Masks keep their own (broadcast) shape: size-1 dims index 0.
attention_plan.py decides the route of an op (this kernel, or torch SDPA where the kernel does not
apply) and calls the compiled kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from solder.backends.cpu.mathapprox import (
    _EXP2_POLY,
    _EXP_FAST_BOUND,
    _LOG2E,
    Emitter,
    f32_literal,
)

PARALLEL_MIN_FLOPS = 1 << 26  # ~5 ms on one core: below it, waking and joining threads outweighs the second one


BLOCK_Q = 64
BLOCK_K = 64


@dataclass(frozen=True)
class AttentionSpec:
    """Everything the emitted kernel depends on (static shapes: one kernel per spec)."""

    b: int
    hq: int
    t: int
    d: int
    hkv: int
    s: int
    dv: int
    scale: float
    causal: bool
    mask: str = ""                     # "", "add" (f32, added to the scores) or "bool" (i8, 1 = keep)
    mask_shape: tuple[int, ...] = ()   # 4-d, broadcastable to [B, Hq, T, S]
    sparse: tuple[int, int] | None = None  # (layout batch LB, layout heads LH) of a block layout
    bq: int = BLOCK_Q
    bk: int = BLOCK_K
    parallel: bool = False
    # Where q, k, v live: None = a contiguous [B, H, T, D] tensor; else (base shape, element offset,
    # strides): the operand is a strided view of a contiguous `base shape` tensor (e.g. the heads of
    # a fused QKV projection's output), which the kernel reads in place instead of copying.
    views: tuple = (None, None, None)
    out_bthd: bool = False  # write the output as [B, T, H, Dv] in memory (the heads' merge is then a view)
    # Size-generic: B, H, T, S, the scale, and every operand's offset and strides are call arguments (see
    # `generic_args`); only D, Dv, the masking and the blocks are fixed. One such kernel serves every
    # shape of its variant: attention_lib.py builds the common variants once per install.
    generic: bool = False

    @property
    def nq(self) -> int:
        return -(-self.t // self.bq)

    @property
    def nk(self) -> int:
        return -(-self.s // self.bk)

    @property
    def group(self) -> int:
        return self.hq // self.hkv

    def arg_shapes(self) -> list[tuple[tuple[int, ...], torch.dtype]]:
        """Argument shapes and dtypes, in order: q, k, v, [mask], [counts, indices], out."""
        args = [((self.b, self.hq, self.t, self.d), torch.float32),
                ((self.b, self.hkv, self.s, self.d), torch.float32),
                ((self.b, self.hkv, self.s, self.dv), torch.float32)]
        if self.mask:
            args.append((self.mask_shape, torch.float32 if self.mask == "add" else torch.int8))
        if self.sparse:
            lb, lh = self.sparse
            args += [((lb, lh, self.nq), torch.int32), ((lb, lh, self.nq, self.nk), torch.int32)]
        args = [(v[0], dt) if v else (shape, dt) for (shape, dt), v in zip(args[:3], self.views)] + args[3:]
        out = (self.b, self.t, self.hq, self.dv) if self.out_bthd else (self.b, self.hq, self.t, self.dv)
        return args + [(out, torch.float32)]

    def layouts(self) -> list[str]:
        """The memref layout suffix of each argument (q, k, v, ..., out): strided views or ''."""
        lay = [f", strided<[{', '.join(map(str, v[2]))}], offset: {v[1]}>" if v else "" for v in self.views]
        lay += [""] * (len(self.arg_shapes()) - 4)
        h, d = self.hq, self.dv
        return lay + [f", strided<[{self.t * h * d}, {d}, {h * d}, 1]>" if self.out_bthd else ""]

    def variant(self) -> tuple:
        """What a size-generic kernel is specialized on (the rest are its arguments)."""
        row = bool(self.mask) and self.mask_shape[-1] > 1
        return (self.d, self.dv, self.causal, self.mask, row, self.parallel, self.bq, self.bk)

    def generic_args(self) -> list[int]:
        """The index arguments of the size-generic kernel for this spec's shapes and layouts, in order:
        B, Hq, Hkv, T, S, then offset and three outer strides of q, k, v, out (and mask)."""
        def contiguous(shape):
            st, acc = [], 1
            for n in reversed(shape):
                st.append(acc)
                acc *= n
            return st[::-1]
        vals = [self.b, self.hq, self.hkv, self.t, self.s]
        logical = [(self.b, self.hq, self.t, self.d), (self.b, self.hkv, self.s, self.d),
                   (self.b, self.hkv, self.s, self.dv)]
        for shape, view in zip(logical, self.views):
            off, st = (view[1], view[2]) if view else (0, contiguous(shape))
            vals += [off, *st[:3]]
        if self.out_bthd:
            h, dv = self.hq, self.dv
            vals += [0, self.t * h * dv, dv, h * dv]
        else:
            vals += [0, *contiguous((self.b, self.hq, self.t, self.dv))[:3]]
        if self.mask:  # the mask is passed contiguous in its own shape: a size-1 dim broadcasts (stride 0)
            st = contiguous(self.mask_shape)
            vals += [0, *(0 if n == 1 else k for n, k in zip(self.mask_shape[:3], st[:3]))]
        return vals

    def describe(self) -> str:
        """Short text for explain(): blocks, masking, GQA, threads."""
        bits = [f"{self.bq}x{self.bk} blocks", "online softmax"]
        if self.causal:
            bits.append("causal")
        if self.mask:
            bits.append(f"{self.mask} mask")
        if self.group > 1:
            bits.append(f"GQA {self.hq}:{self.hkv}")
        if self.sparse:
            bits.append("block-sparse layout")
        bits.append("OpenMP" if self.parallel else "1 thread")
        if self.generic:
            bits.append("size-generic")
        return ", ".join(bits)


def _memref(shape, elem: str = "f32", layout: str = "") -> str:
    return "memref<" + "x".join(str(n) for n in shape) + f"x{elem}{layout}>"


class _Text:
    """Line-oriented MLIR builder: `v(rhs)` appends `%xN = rhs` and returns `%xN`."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0
        self.indent = 1
        self._consts: dict[tuple[str, str], str] = {}

    def line(self, s: str) -> None:
        self.lines.append("  " * self.indent + s)

    def v(self, rhs: str) -> str:
        self.n += 1
        name = f"%x{self.n}"
        self.line(f"{name} = {rhs}")
        return name

    def idx(self, n: int) -> str:
        return self.const(str(n), "index")

    def const(self, lit: str, ty: str) -> str:
        """Constants are emitted once, at the top of the function (hoisted by `text()`)."""
        key = (lit, ty)
        if key not in self._consts:
            self._consts[key] = f"%c{len(self._consts)}"
        return self._consts[key]

    def const_lines(self) -> list[str]:
        return [f"    {n} = arith.constant {lit} : {ty}" for (lit, ty), n in self._consts.items()]


class _Emitter:
    """Writes the kernel for one AttentionSpec (see the module docstring for the algorithm)."""

    FM = " fastmath<nnan,ninf,nsz,contract,afn>"

    def __init__(self, spec: AttentionSpec, name: str) -> None:
        self.sp, self.name, self.x = spec, name, _Text()
        self.vk = f"vector<{spec.bk}xf32>"
        self.vki = f"vector<{spec.bk}xi32>"
        self.vd = f"vector<{spec.dv}xf32>"
        self.r = 4 if spec.bk <= 64 else 2  # query rows per micro-kernel step (4 x 64 lanes: 16 zmm)
        self.sizes: dict[str, str] = {}  # generic kernels: size name -> SSA index value (see `n`)

    def n(self, name: str) -> str:
        """A size as an index value: a constant, or in a size-generic kernel an argument or a value the
        prologue derives from them (b, hq, hkv, t, s, nq, nk, nkbk = nk * bk, t1 = t - 1, group)."""
        if self.sp.generic:
            return self.sizes[name]
        sp = self.sp
        return self.x.idx({"b": sp.b, "hq": sp.hq, "hkv": sp.hkv, "t": sp.t, "s": sp.s, "nq": sp.nq,
                           "nk": sp.nk, "nkbk": sp.nk * sp.bk, "t1": sp.t - 1, "group": sp.group}[name])

    # -- helpers ------------------------------------------------------------------------------
    def f(self, value: float) -> str:
        return self.x.const(f32_literal(value), "f32")

    def splat(self, value: float, ty: str | None = None) -> str:
        ty = ty or self.vk
        return self.x.const(f"dense<{f32_literal(value)}>", ty)

    def vbin(self, op: str, a: str, b: str, ty: str | None = None) -> str:
        return self.x.v(f"arith.{op} {a}, {b}{self.FM} : {ty or self.vk}")

    def vfma(self, a: str, b: str, c: str, ty: str | None = None) -> str:
        return self.x.v(f"vector.fma {a}, {b}, {c} : {ty or self.vk}")

    def exp(self, x: str) -> str:
        """exp(x) for x <= 0 on a vector<BK>: mathapprox's 10-op exp (2^n · 2^f, polynomial 2^f)."""
        x = self.vbin("maximumf", x, self.splat(-_EXP_FAST_BOUND))
        nn = self.x.v(f"math.ceil {self.vfma(x, self.splat(-_LOG2E), self.splat(-0.5))} : {self.vk}")
        f = self.vfma(x, self.splat(_LOG2E), nn)
        acc = self.splat(_EXP2_POLY[0])
        for c in _EXP2_POLY[1:]:
            acc = self.vfma(acc, f, self.splat(c))
        ni = self.x.v(f"arith.fptosi {nn} : {self.vk} to {self.vki}")
        shift = self.x.v(f"arith.shli {ni}, {self.x.const('dense<23>', self.vki)} : {self.vki}")
        bits = self.x.v(f"arith.bitcast {acc} : {self.vk} to {self.vki}")
        bits = self.x.v(f"arith.subi {bits}, {shift} : {self.vki}")
        return self.x.v(f"arith.bitcast {bits} : {self.vki} to {self.vk}")

    def scalar_exp(self, x: str) -> str:
        """exp(x) for x <= 0 inline (mathapprox's 10-op exp): a libm call here would make LLVM spill
        every live score vector around it. Gives ~4e-38 instead of 0 below -86, where the running
        sum and accumulator it scales are 0 (the first visible key block of the row)."""
        self.x.n += 1
        em = Emitter(f"%e{self.x.n}_")
        y = em.exp_nonpositive(x)
        for ln in em.lines:
            self.x.line(ln)
        return y

    def for_(self, lo: str, hi: str, iv: str, iter_args: str = "", ty: str = "") -> str | None:
        """Open an scf.for; with `iter_args` ("%a = %init") returns the result name."""
        res = None
        if iter_args:
            self.x.n += 1
            res = f"%x{self.x.n}"
            count = ty.count(",") + 1
            self.x.line(f"{res}{f':{count}' if count > 1 else ''} = scf.for {iv} = {lo} to {hi} step {self.x.idx(1)} iter_args({iter_args}) -> ({ty}) {{")
        else:
            self.x.line(f"scf.for {iv} = {lo} to {hi} step {self.x.idx(1)} {{")
        self.x.indent += 1
        return res

    def for_n(self, lo: str, hi: str, iv: str, inits: list[str], ty: str) -> str:
        """Open an scf.for carrying len(inits) values of type `ty` (%it0, %it1, ... in the body)."""
        its = ", ".join(f"%it{k} = {v}" for k, v in enumerate(inits))
        return self.for_(lo, hi, iv, its, ", ".join([ty] * len(inits)))

    def end(self, yields: str = "", ty: str = "") -> None:
        if yields:
            self.x.line(f"scf.yield {yields} : {ty}")
        self.x.indent -= 1
        self.x.line("}")

    # -- the kernel ---------------------------------------------------------------------------
    def text(self) -> str:
        sp = self.sp
        names = ["%q", "%k", "%v"] + (["%mask"] if sp.mask else []) + (["%cnt", "%idx"] if sp.sparse else [])
        names.append("%out")
        elems = {"%mask": "f32" if sp.mask == "add" else "i8", "%cnt": "i32", "%idx": "i32"}
        # the kernel indexes every argument as its logical [B, H, T, D] (or mask/layout) shape; a strided
        # layout maps that onto the tensor actually passed (a view's base, a [B, T, H, Dv] output)
        if sp.generic:
            params = self.generic_prologue(names, elems)
        else:
            logical = [(sp.b, sp.hq, sp.t, sp.d), (sp.b, sp.hkv, sp.s, sp.d), (sp.b, sp.hkv, sp.s, sp.dv)]
            logical += [shape for shape, _ in sp.arg_shapes()[3:-1]] + [(sp.b, sp.hq, sp.t, sp.dv)]
            self.types = {n: _memref(shape, elems.get(n, "f32"), lay)
                          for n, shape, lay in zip(names, logical, sp.layouts())}
            params = list(self.types.items())
        self.outer()
        head = f"  func.func @{self.name}(" + ", ".join(f"{n}: {t}" for n, t in params) + \
            ") attributes {llvm.emit_c_interface} {"
        return "\n".join([head, *self.x.const_lines(), *self.x.lines, "    return", "  }"]) + "\n"

    def generic_prologue(self, names: list[str], elems: dict[str, str]) -> list[tuple[str, str]]:
        """A size-generic kernel's parameters (flat memrefs, the scale, `index` sizes and strides: the order
        of AttentionSpec.generic_args) and its prologue: each operand as a strided 4-d view of its flat
        memref, the sizes derived from the arguments, the scale as a vector."""
        sp, x = self.sp, self.x
        x.indent = 2
        flat = [(f"{n}_flat", f"memref<?x{elems.get(n, 'f32')}>") for n in names]
        idx = [f"%{n}" for n in ("B", "HQ", "HKV", "T", "S")]
        roles = ["%q", "%k", "%v", "%out"] + (["%mask"] if sp.mask else [])
        for r in roles:
            idx += [f"{r}_off", f"{r}_s0", f"{r}_s1", f"{r}_s2"]
        dims = {"%q": ("%B", "%HQ", "%T", str(sp.d)), "%k": ("%B", "%HKV", "%S", str(sp.d)),
                "%v": ("%B", "%HKV", "%S", str(sp.dv)), "%out": ("%B", "%HQ", "%T", str(sp.dv)),
                "%mask": ("%B", "%HQ", "%T", "%S")}
        self.types = {}
        for r in names:
            elem = elems.get(r, "f32")
            inner = "1" if r != "%mask" or self.mask_row() else "0"
            shape = "x".join("?" if d.startswith("%") else d for d in dims[r])
            ty = f"memref<{shape}x{elem}, strided<[?, ?, ?, {inner}], offset: ?>>"
            sizes = ", ".join(dims[r])
            x.line(f"{r} = memref.reinterpret_cast {r}_flat to offset: [{r}_off], sizes: [{sizes}], "
                   f"strides: [{r}_s0, {r}_s1, {r}_s2, {inner}] : memref<?x{elem}> to {ty}")
            self.types[r] = ty
        c1 = x.idx(1)
        bq, bk = x.idx(sp.bq), x.idx(sp.bk)
        nk = x.v(f"arith.ceildivui %S, {bk} : index")
        self.sizes = {"b": "%B", "hq": "%HQ", "hkv": "%HKV", "t": "%T", "s": "%S",
                      "nq": x.v(f"arith.ceildivui %T, {bq} : index"), "nk": nk,
                      "nkbk": x.v(f"arith.muli {nk}, {bk} : index"), "t1": x.v(f"arith.subi %T, {c1} : index"),
                      "group": x.v("arith.divui %HQ, %HKV : index")}
        sc = x.v(f"memref.load %scale[{x.idx(0)}] : memref<1xf32>")
        self.scale_vec = x.v(f"vector.broadcast {sc} : f32 to {self.vk}")
        return flat + [("%scale", "memref<1xf32>")] + [(n, "index") for n in idx]

    def mask_row(self) -> bool:
        """The mask varies along the keys (a row is read per query), else one value per query row."""
        return bool(self.sp.mask) and self.sp.mask_shape[-1] > 1

    def outer(self) -> None:
        sp, x = self.sp, self.x
        x.indent = 2
        self.transpose_keys()
        if sp.parallel:
            bounds = ", ".join(self.n(k) for k in ("b", "hq", "nq")) if sp.generic else f"{sp.b}, {sp.hq}, {sp.nq}"
            x.line(f"scf.forall (%b, %h, {'%qs' if sp.causal else '%qb'}) in ({bounds}) {{")
            x.indent += 1
            if sp.causal:  # threads take contiguous ranges: interleave short and long query blocks
                half = x.v(f"arith.divui %qs, {x.idx(2)} : index")
                odd = x.v(f"arith.cmpi ne, {x.v(f'arith.remui %qs, {x.idx(2)} : index')}, {x.idx(0)} : index")
                last = x.v(f"arith.subi {self.n('nq')}, {x.idx(1)} : index")
                late = x.v(f"arith.subi {last}, {half} : index")
                x.line(f"%qb = arith.select {odd}, {late}, {half} : index")
        else:
            for iv, n in (("%b", "b"), ("%h", "hq"), ("%qb", "nq")):
                self.for_(x.idx(0), self.n(n), iv)
        self.query_block()
        for _ in range(1 if sp.parallel else 3):
            self.end()

    def transpose_keys(self) -> None:
        """kT[b, hk, d, j] = k[b, hk, j, d], zero past S (padded to whole key blocks): one heap buffer
        the size of k, so a score row is one vector load per d in every query block."""
        sp, x = self.sp, self.x
        c0 = x.idx(0)
        if sp.generic:
            kt_t = f"memref<?x?x{sp.d}x?xf32>"
            dyn = f"({self.n('b')}, {self.n('hkv')}, {self.n('nkbk')})"
        else:
            kt_t, dyn = _memref((sp.b, sp.hkv, sp.d, sp.nk * sp.bk)), "()"
        self.kt, self.kt_t = x.v(f"memref.alloc{dyn} {{alignment = 64 : i64}} : {kt_t}"), kt_t
        self.for_(c0, self.n("b"), "%b")
        self.for_(c0, self.n("hkv"), "%hk")
        self.for_(c0, x.idx(sp.d), "%d")
        if sp.generic or sp.s < sp.nk * sp.bk:
            self.for_(self.n("s"), self.n("nkbk"), "%j")
            x.line(f"memref.store {self.f(0.0)}, {self.kt}[%b, %hk, %d, %j] : {kt_t}")
            self.end()
        self.for_(c0, self.n("s"), "%j")
        kv = x.v(f"memref.load %k[%b, %hk, %j, %d] : {self.types['%k']}")
        x.line(f"memref.store {kv}, {self.kt}[%b, %hk, %d, %j] : {kt_t}")
        for _ in range(4):
            self.end()

    def query_block(self) -> None:
        sp, x = self.sp, self.x
        c0 = x.idx(0)
        i0 = x.v(f"arith.muli %qb, {x.idx(sp.bq)} : index")
        left = x.v(f"arith.subi {self.n('t')}, {i0} : index")
        nr = x.v(f"arith.minsi {x.idx(sp.bq)}, {left} : index")
        self.hk = x.v(f"arith.divui %h, {self.n('group')} : index") if sp.generic or sp.group > 1 else "%h"
        acc = x.v(f"memref.alloca() : {_memref((sp.bq, sp.dv))}")
        ml = x.v(f"memref.alloca() : {_memref((2, sp.bq))}")
        pbuf = x.v(f"memref.alloca() : {_memref((self.r, sp.bk))}")
        self.acc, self.ml, self.pbuf, self.i0 = acc, ml, pbuf, i0
        # acc = 0, m = -inf, l = 0
        self.for_(c0, x.idx(sp.bq), "%i")
        x.line(f"vector.store {self.splat(0.0, self.vd)}, {acc}[%i, {c0}] : {_memref((sp.bq, sp.dv))}, {self.vd}")
        x.line(f"memref.store {self.f(-math.inf)}, {ml}[{c0}, %i] : {_memref((2, sp.bq))}")
        x.line(f"memref.store {self.f(0.0)}, {ml}[{x.idx(1)}, %i] : {_memref((2, sp.bq))}")
        self.end()
        self.for_(c0, self.key_block_count(i0, nr), "%t")
        self.key_block(nr)
        self.end()
        self.write_out(nr)

    def key_block_count(self, i0: str, nr: str) -> str:
        sp, x = self.sp, self.x
        if sp.sparse:
            lb, lh = ("%b" if sp.sparse[0] > 1 else x.idx(0)), ("%h" if sp.sparse[1] > 1 else x.idx(0))
            self.lay = (lb, lh)
            n = x.v(f"memref.load %cnt[{lb}, {lh}, %qb] : {self.types['%cnt']}")
            return x.v(f"arith.index_cast {n} : i32 to index")
        if not sp.causal:
            return self.n("nk")
        last = x.v(f"arith.minsi {x.v(f'arith.addi {i0}, {nr} : index')}, {self.n('s')} : index")
        return x.v(f"arith.ceildivsi {last}, {x.idx(sp.bk)} : index")

    def key_block(self, nr: str) -> None:
        sp, x = self.sp, self.x
        kb = "%t"
        if sp.sparse:
            lb, lh = self.lay
            kbi = x.v(f"memref.load %idx[{lb}, {lh}, %qb, %t] : {self.types['%idx']}")
            kb = x.v(f"arith.index_cast {kbi} : i32 to index")
        j0 = x.v(f"arith.muli {kb}, {x.idx(sp.bk)} : index")
        left = x.v(f"arith.subi {self.n('s')}, {j0} : index")
        nc = x.v(f"arith.minsi {x.idx(sp.bk)}, {left} : index")
        x.line(f"scf.for %i = {x.idx(0)} to {nr} step {x.idx(self.r)} {{")
        x.indent += 1
        self.rows(j0, nc)
        self.end()

    def rows(self, j0: str, nc: str) -> None:
        """R query rows against one key block: R score vectors share each kT load, R accumulator
        rows share each v row load (independent FMA chains; loads amortized over R rows)."""
        sp, x, vk, r = self.sp, self.x, self.vk, self.r
        c0 = x.idx(0)
        ii = [x.v(f"arith.addi %i, {x.idx(k)} : index") if k else "%i" for k in range(r)]
        qi = [x.v(f"arith.addi {self.i0}, {i} : index") for i in ii]
        # rows past T (last query block) read row T-1; their results are never written out
        qc = [x.v(f"arith.minsi {q}, {self.n('t1')} : index") for q in qi]
        z = self.splat(0.0)
        ss = self.for_n(c0, x.idx(sp.d), "%d", [z] * r, vk)
        kv = x.v(f"vector.load {self.kt}[%b, {self.hk}, %d, {j0}] : {self.kt_t}, {vk}")
        outs = []
        for k in range(r):
            qv = x.v(f"memref.load %q[%b, %h, {qc[k]}, %d] : {self.types['%q']}")
            outs.append(self.vfma(x.v(f"vector.broadcast {qv} : f32 to {vk}"), kv, f"%it{k}"))
        self.end(", ".join(outs), ", ".join([vk] * r))
        rels, alphas = [], []
        for k in range(r):
            rel, alpha = self.softmax_row(f"{ss}#{k}", ii[k], qi[k], j0, k)
            rels.append(rel)
            alphas.append(alpha)
        # acc rows = acc rows * alpha + sum_j p[j] v[j0 + j, :], j up to the last key any row sees;
        # in column chunks of at most 64 so that R accumulator rows stay in registers
        jend = x.v(f"arith.maxsi {x.v(f'arith.minsi {nc}, {rels[-1]} : index')}, {c0} : index")
        for col in range(0, sp.dv, 64):
            self.pv_chunk(ii, alphas, j0, jend, col, min(64, sp.dv - col))

    def pv_chunk(self, ii: list[str], alphas: list[str], j0: str, jend: str, col: int, width: int) -> None:
        sp, x, r = self.sp, self.x, self.r
        vt, at, c = f"vector<{width}xf32>", _memref((sp.bq, sp.dv)), x.idx(col)
        a0 = []
        for k in range(r):
            a = x.v(f"vector.load {self.acc}[{ii[k]}, {c}] : {at}, {vt}")
            a0.append(self.vbin("mulf", a, x.v(f"vector.broadcast {alphas[k]} : f32 to {vt}"), vt))
        aa = self.for_n(x.idx(0), jend, "%j", a0, vt)
        vj = x.v(f"vector.load %v[%b, {self.hk}, {x.v(f'arith.addi {j0}, %j : index')}, {c}] : "
                 f"{self.types['%v']}, {vt}")
        outs = []
        for k in range(r):
            pj = x.v(f"memref.load {self.pbuf}[{x.idx(k)}, %j] : {_memref((r, sp.bk))}")
            outs.append(self.vfma(x.v(f"vector.broadcast {pj} : f32 to {vt}"), vj, f"%it{k}", vt))
        self.end(", ".join(outs), ", ".join([vt] * r))
        for k in range(r):
            x.line(f"vector.store {aa}#{k}, {self.acc}[{ii[k]}, {c}] : {at}, {vt}")

    def softmax_row(self, s: str, i: str, qi: str, j0: str, k: int) -> tuple[str, str]:
        """Mask one score row, update its running max and sum, leave p in pbuf[k]; returns the
        number of keys of the block the row may see (may be <= 0) and the rescale factor alpha."""
        sp, x, vk = self.sp, self.x, self.vk
        c0, c1 = x.idx(0), x.idx(1)
        s = self.vbin("mulf", s, self.scale_vec if sp.generic else self.splat(sp.scale))
        # keys this row may see in the block: j < limit - j0 (S, or i + 1 when causal)
        limit = self.n("s")
        if sp.causal:
            limit = x.v(f"arith.minsi {x.v(f'arith.addi {qi}, {c1} : index')}, {limit} : index")
        rel = x.v(f"arith.subi {limit}, {j0} : index")
        reli = x.v(f"arith.index_cast {rel} : index to i32")
        iota = x.const("dense<[" + ", ".join(map(str, range(sp.bk))) + "]>", self.vki)
        keep = x.v(f"arith.cmpi slt, {iota}, {x.v(f'vector.broadcast {reli} : i32 to {self.vki}')} : {self.vki}")
        s, keep = self.apply_mask(s, keep, qi, j0)
        ninf = self.splat(-math.inf)
        s = x.v(f"arith.select {keep}, {s}, {ninf} : vector<{sp.bk}xi1>, {vk}")
        mt = _memref((2, sp.bq))
        mo = x.v(f"memref.load {self.ml}[{c0}, {i}] : {mt}")
        lo = x.v(f"memref.load {self.ml}[{c1}, {i}] : {mt}")
        mx = x.v(f"vector.reduction <maxnumf>, {s} : {vk} into f32")
        mn = x.v(f"arith.maxnumf {mo}, {mx} : f32")
        dead = x.v(f"arith.cmpf oeq, {mn}, {self.f(-math.inf)} : f32")
        msafe = x.v(f"arith.select {dead}, {self.f(0.0)}, {mn} : f32")
        alpha = self.scalar_exp(x.v(f"arith.subf {mo}, {msafe} : f32"))
        p = self.exp(self.vbin("subf", s, x.v(f"vector.broadcast {msafe} : f32 to {vk}")))
        masked = x.v(f"arith.cmpf oeq, {s}, {ninf} : {vk}")
        p = x.v(f"arith.select {masked}, {self.splat(0.0)}, {p} : vector<{sp.bk}xi1>, {vk}")
        rs = x.v(f"vector.reduction <add>, {p} : {vk} into f32")
        x.line(f"memref.store {mn}, {self.ml}[{c0}, {i}] : {mt}")
        x.line(f"memref.store {x.v(f'math.fma {lo}, {alpha}, {rs} : f32')}, {self.ml}[{c1}, {i}] : {mt}")
        x.line(f"vector.store {p}, {self.pbuf}[{x.idx(k)}, {c0}] : {_memref((self.r, sp.bk))}, {vk}")
        return rel, alpha

    def apply_mask(self, s: str, keep: str, qi: str, j0: str) -> tuple[str, str]:
        sp, x, vk = self.sp, self.x, self.vk
        if not sp.mask:
            return s, keep
        c0 = x.idx(0)
        mb, mh, mt, ms = sp.mask_shape
        if sp.generic:  # broadcast dims have stride 0 (generic_args): every index is the operand's own
            mb = mh = mt = 2
        ix = ["%b" if mb > 1 else c0, "%h" if mh > 1 else c0, qi if mt > 1 else c0]
        mty = self.types["%mask"]
        elem = "f32" if sp.mask == "add" else "i8"
        vty = vk if elem == "f32" else f"vector<{sp.bk}xi8>"
        if ms > 1:
            pad = self.f(0.0) if elem == "f32" else x.const("0", "i8")
            row = x.v(f"vector.transfer_read %mask[{', '.join(ix)}, {j0}], {pad} {{in_bounds = [false]}} : "
                      f"{mty}, {vty}")
        else:
            one = x.v(f"memref.load %mask[{', '.join(ix)}, {c0}] : {mty}")
            row = x.v(f"vector.broadcast {one} : {elem} to {vty}")
        if elem == "f32":
            return self.vbin("addf", s, row), keep
        on = x.v(f"arith.cmpi ne, {row}, {x.const('dense<0>', vty)} : {vty}")
        return s, x.v(f"arith.andi {keep}, {on} : vector<{sp.bk}xi1>")

    def write_out(self, nr: str) -> None:
        sp, x = self.sp, self.x
        c0, c1 = x.idx(0), x.idx(1)
        self.for_(c0, nr, "%i")
        li = x.v(f"memref.load {self.ml}[{c1}, %i] : {_memref((2, sp.bq))}")
        empty = x.v(f"arith.cmpf oeq, {li}, {self.f(0.0)} : f32")
        inv = x.v(f"arith.select {empty}, {self.f(0.0)}, {x.v(f'arith.divf {self.f(1.0)}, {li} : f32')} : f32")
        row = x.v(f"vector.load {self.acc}[%i, {c0}] : {_memref((sp.bq, sp.dv))}, {self.vd}")
        row = self.vbin("mulf", row, x.v(f"vector.broadcast {inv} : f32 to {self.vd}"), self.vd)
        qi = x.v(f"arith.addi {self.i0}, %i : index")
        x.line(f"vector.store {row}, %out[%b, %h, {qi}, {c0}] : {self.types['%out']}, {self.vd}")
        self.end()


def emit(spec: AttentionSpec, name: str) -> str:
    """The MLIR func text of the attention kernel for `spec`, named `name`."""
    return _Emitter(spec, name).text()


def module(spec: AttentionSpec, name: str) -> str:
    return "module {\n" + emit(spec, name) + "}\n"
