"""Flash attention for the CPU backend: one generated MLIR kernel per attention shape, no T×S buffer.

`graph.attention` and `graph.block_sparse_attention` lower to one function (same ABI and JIT path as
the other kernels: memref arguments, destination passing, `llvm.emit_c_interface`, jit.compile_mlir
and its disk cache). The function first copies k transposed into kT [B, Hkv, key blocks, D, BK] (one heap
buffer the size of k, zeros past S), then walks (batch, head, query block) —
an `scf.forall` on torch's OpenMP pool (threads.py) above PARALLEL_MIN_FLOPS — and, inside, the key blocks the query
block needs: all, those up to the diagonal when causal, or those a block-sparse layout lists for the
head (counts/indices arguments). Per key block, four query rows at a time:

    s[r, :BK]  = scale * sum_d q[r, d] * kT[j0/BK, d, :]     (4 vector<BK> accumulators share each load)
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
apply) and calls the compiled kernel. The kernel is built as xDSL ops and verified (mlir_builder.py); its
parallel `scf.forall` and vector compares/selects/fptosi use the few ops mlir_builder declares where xDSL
0.74 has none.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import torch
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, i64
from xdsl.ir import Attribute, Block, Region, SSAValue

from solder.backends.cpu import mlir_builder as M
from solder.backends.cpu.mathapprox import _EXP2_POLY, _EXP_FAST_BOUND, _LOG2E, Emitter
from solder.backends.cpu.mlir_builder import IR

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

    def layouts(self) -> list[tuple]:
        """The memref layout of each argument (q, k, v, ..., out): (strides, offset) of a strided view, or
        (None, None) for the identity layout."""
        lay = [(list(v[2]), v[1]) if v else (None, None) for v in self.views]
        lay += [(None, None)] * (len(self.arg_shapes()) - 4)
        h, d = self.hq, self.dv
        return lay + [([self.t * h * d, d, h * d, 1], 0) if self.out_bthd else (None, None)]

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


class _Emitter:
    """Builds the kernel for one AttentionSpec as xDSL ops (see the module docstring for the algorithm).

    Ops go to the innermost open loop (`for_` opens one, `end` closes it); constants are made once and placed
    at the top of the function (`text`)."""

    FM = "nnan,ninf,nsz,contract,afn"

    def __init__(self, spec: AttentionSpec, name: str) -> None:
        self.sp, self.name = spec, name
        self.vk = M.vector_t(spec.bk, "f32")
        self.vki = M.vector_t(spec.bk, "i32")
        self.vd = M.vector_t(spec.dv, "f32")
        self.fm = M.fastmath(self.FM)
        self.r = 4 if spec.bk <= 64 else 2  # query rows per micro-kernel step (4 x 64 lanes: 16 zmm)
        self.sizes: dict[str, SSAValue] = {}  # generic kernels: size name -> index value (see `n`)
        self.refs: dict[str, SSAValue] = {}   # q, k, v, [mask], [cnt, idx], out as the kernel indexes them
        self.loops: list[IR] = []
        self._n = 0
        self._consts: dict[tuple, SSAValue] = {}
        self._const_ops: list = []

    # -- building -----------------------------------------------------------------------------
    @property
    def ir(self) -> IR:
        return self.loops[-1]

    def v(self, op) -> SSAValue:
        """Insert `op` in the innermost open loop; its result, named `%xN`."""
        self._n += 1
        return self.ir.op(op, f"x{self._n}")

    def hint(self) -> str:
        self._n += 1
        return f"x{self._n}"

    def const(self, value, ty) -> SSAValue:
        """A constant (a splat for a vector type, a list: a dense vector), made once, hoisted by `text()`."""
        key = (struct.pack("f", M.f32_value(value)) if ty == M.elem("f32") else tuple(value) if isinstance(value, list)
               else value, ty)
        if key not in self._consts:
            hold = IR(Block())
            self._consts[key] = hold.const(value, ty, f"c{len(self._consts)}")
            self._const_ops.append(self._consts[key].owner)
        return self._consts[key]

    def idx(self, n: int) -> SSAValue:
        return self.const(n, M.INDEX)

    def n(self, name: str) -> SSAValue:
        """A size as an index value: a constant, or in a size-generic kernel an argument or a value the
        prologue derives from them (b, hq, hkv, t, s, nq, nk, nkbk = nk * bk, t1 = t - 1, group)."""
        if self.sp.generic:
            return self.sizes[name]
        sp = self.sp
        return self.idx({"b": sp.b, "hq": sp.hq, "hkv": sp.hkv, "t": sp.t, "s": sp.s, "nq": sp.nq,
                         "nk": sp.nk, "nkbk": sp.nk * sp.bk, "t1": sp.t - 1, "group": sp.group}[name])

    def ibin(self, kind: str, a: SSAValue, b: SSAValue) -> SSAValue:
        """An integer (index) op: "addi", "muli", "minsi", "divui", ..."""
        return self.ir.bin(kind, a, b, self.hint())

    def load(self, ref: SSAValue, idx: list[SSAValue]) -> SSAValue:
        return self.ir.load(ref, idx, self.hint())

    def vload(self, ty, ref: SSAValue, idx: list[SSAValue]) -> SSAValue:
        return self.ir.vload(ty, ref, idx, self.hint())

    def bcast(self, x: SSAValue, ty) -> SSAValue:
        return self.ir.splat(x, ty, self.hint())

    # -- helpers ------------------------------------------------------------------------------
    def f(self, value: float) -> SSAValue:
        return self.const(value, M.elem("f32"))

    def splat(self, value: float, ty=None) -> SSAValue:
        return self.const(value, ty or self.vk)

    def vbin(self, op: str, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.ir.bin(op, a, b, self.hint(), fm=self.fm)

    def vfma(self, a: SSAValue, b: SSAValue, c: SSAValue) -> SSAValue:
        return self.ir.vfma(a, b, c, self.hint())

    def exp(self, x: SSAValue) -> SSAValue:
        """exp(x) for x <= 0 on a vector<BK>: mathapprox's 10-op exp (2^n · 2^f, polynomial 2^f)."""
        x = self.vbin("maximumf", x, self.splat(-_EXP_FAST_BOUND))
        nn = self.ir.un("ceil", self.vfma(x, self.splat(-_LOG2E), self.splat(-0.5)), self.hint())
        f = self.vfma(x, self.splat(_LOG2E), nn)
        acc = self.splat(_EXP2_POLY[0])
        for c in _EXP2_POLY[1:]:
            acc = self.vfma(acc, f, self.splat(c))
        ni = self.ir.cast("fptosi", nn, self.vki, self.hint())
        shift = self.ibin("shli", ni, self.const(23, self.vki))
        bits = self.ir.cast("bitcast", acc, self.vki, self.hint())
        bits = self.ibin("subi", bits, shift)
        return self.ir.cast("bitcast", bits, self.vk, self.hint())

    def scalar_exp(self, x: SSAValue) -> SSAValue:
        """exp(x) for x <= 0 inline (mathapprox's 10-op exp): a libm call here would make LLVM spill
        every live score vector around it. Gives ~4e-38 instead of 0 below -86, where the running
        sum and accumulator it scales are 0 (the first visible key block of the row)."""
        self._n += 1
        return Emitter(self.ir, f"e{self._n}_").exp_nonpositive(x)

    def for_(self, lo: SSAValue, hi: SSAValue, iv: str, inits: list[SSAValue] = ()) -> list[SSAValue]:
        """Open an scf.for (induction variable `%iv`) carrying `inits` (%it0, %it1, ... in the body);
        returns the loop's results, named `%xN`."""
        loop, body, _ = self.ir.for_(lo, hi, self.idx(1), iv, list(inits), [f"it{k}" for k in range(len(inits))])
        if inits:
            h = self.hint()
            for k, r in enumerate(loop.results):
                M.name(r, h if len(inits) == 1 else f"{h}_{k}")
        self.loops.append(body)
        return list(loop.results)

    def end(self, *yields: SSAValue) -> None:
        """Close the innermost loop (yielding `yields`, or nothing)."""
        self.ir.yield_(*yields)
        self.loops.pop()

    def it(self, k: int) -> SSAValue:
        """The innermost loop's k-th iteration argument."""
        return self.ir.block.args[1 + k]

    def iv(self) -> SSAValue:
        """The innermost loop's induction variable."""
        return self.ir.block.args[0]

    # -- the kernel ---------------------------------------------------------------------------
    def text(self) -> str:
        sp = self.sp
        names = ["q", "k", "v"] + (["mask"] if sp.mask else []) + (["cnt", "idx"] if sp.sparse else [])
        names.append("out")
        elems = {"mask": "f32" if sp.mask == "add" else "i8", "cnt": "i32", "idx": "i32"}
        # the kernel indexes every argument as its logical [B, H, T, D] (or mask/layout) shape; a strided
        # layout maps that onto the tensor actually passed (a view's base, a [B, T, H, Dv] output)
        if sp.generic:
            params = self.generic_params(names, elems)
        else:
            logical = [(sp.b, sp.hq, sp.t, sp.d), (sp.b, sp.hkv, sp.s, sp.d), (sp.b, sp.hkv, sp.s, sp.dv)]
            logical += [shape for shape, _ in sp.arg_shapes()[3:-1]] + [(sp.b, sp.hq, sp.t, sp.dv)]
            params = [(n, M.memref_t(shape, elems.get(n, "f32"), *lay))
                      for n, shape, lay in zip(names, logical, sp.layouts())]
        fn, top = M.kernel_func(self.name, params)
        self.loops = [top]
        args = dict(zip((n for n, _ in params), fn.body.block.args))
        if sp.generic:
            self.generic_prologue(names, elems, args)
        else:
            self.refs = {n: args[n] for n in names}
        self.outer()
        top.insert(M.func.ReturnOp())
        first = fn.body.block.first_op
        for op in self._const_ops:
            op.detach()
            fn.body.block.insert_op_before(op, first)
        return M.finish(fn)

    def generic_params(self, names: list[str], elems: dict[str, str]) -> list[tuple[str, Attribute]]:
        """A size-generic kernel's parameters, in the order of AttentionSpec.generic_args: flat memrefs, the
        scale, `index` sizes and strides."""
        sp = self.sp
        flat = [(f"{n}_flat", M.memref_t(("?",), elems.get(n, "f32"))) for n in names]
        idx = ["B", "HQ", "HKV", "T", "S"]
        for r in ["q", "k", "v", "out"] + (["mask"] if sp.mask else []):
            idx += [f"{r}_off", f"{r}_s0", f"{r}_s1", f"{r}_s2"]
        return flat + [("scale", M.memref_t((1,), "f32"))] + [(n, M.INDEX) for n in idx]

    def generic_prologue(self, names: list[str], elems: dict[str, str], args: dict[str, SSAValue]) -> None:
        """Each operand as a strided 4-d view of its flat memref, the sizes derived from the arguments, the
        scale as a vector."""
        sp = self.sp
        d = {"q": ("B", "HQ", "T", sp.d), "k": ("B", "HKV", "S", sp.d), "v": ("B", "HKV", "S", sp.dv),
             "out": ("B", "HQ", "T", sp.dv), "mask": ("B", "HQ", "T", "S")}
        for r in names:
            inner = 1 if r != "mask" or self.mask_row() else 0
            shape = [n if isinstance(n, int) else "?" for n in d[r]]
            ty = M.memref_t(shape, elems.get(r, "f32"), [None, None, None, inner], None)
            sizes = [n if isinstance(n, int) else args[n] for n in d[r]]
            strides = [args[f"{r}_s0"], args[f"{r}_s1"], args[f"{r}_s2"], inner]
            op = M.memref.ReinterpretCastOp.from_dynamic(args[f"{r}_flat"], [args[f"{r}_off"]], sizes, strides, ty)
            self.refs[r] = self.ir.op(op, r)
        c1 = self.idx(1)
        bq, bk = self.idx(sp.bq), self.idx(sp.bk)
        nk = self.ibin("ceildivui", args["S"], bk)
        self.sizes = {"b": args["B"], "hq": args["HQ"], "hkv": args["HKV"], "t": args["T"], "s": args["S"],
                      "nq": self.ibin("ceildivui", args["T"], bq), "nk": nk,
                      "nkbk": self.ibin("muli", nk, bk), "t1": self.ibin("subi", args["T"], c1),
                      "group": self.ibin("divui", args["HQ"], args["HKV"])}
        sc = self.load(args["scale"], [self.idx(0)])
        self.scale_vec = self.bcast(sc, self.vk)

    def mask_row(self) -> bool:
        """The mask varies along the keys (a row is read per query), else one value per query row."""
        return bool(self.sp.mask) and self.sp.mask_shape[-1] > 1

    def outer(self) -> None:
        sp = self.sp
        self.transpose_keys()
        if sp.parallel:
            self.forall()
            if sp.causal:  # threads take contiguous ranges: interleave short and long query blocks
                qs = self.iv_qs
                half = self.ibin("divui", qs, self.idx(2))
                odd = self.ir.cmpi("ne", self.ibin("remui", qs, self.idx(2)), self.idx(0), self.hint())
                last = self.ibin("subi", self.n("nq"), self.idx(1))
                late = self.ibin("subi", last, half)
                self.qb = self.ir.select(odd, late, half, "qb")
        else:
            self.for_(self.idx(0), self.n("b"), "b")
            self.b = self.iv()
            self.for_(self.idx(0), self.n("hq"), "h")
            self.h = self.iv()
            self.for_(self.idx(0), self.n("nq"), "qb")
            self.qb = self.iv()
        self.query_block()
        if sp.parallel:
            self.ir.insert(M.InParallelOp.build(regions=[Region(Block())]))
            self.loops.pop()
        else:
            for _ in range(3):
                self.end()

    def forall(self) -> None:
        """Open `scf.forall (%b, %h, %qb) in (B, Hq, nq)` (`%qs` for qb when causal: see `outer`)."""
        sp = self.sp
        body = Block(arg_types=[M.INDEX] * 3)
        for a, n in zip(body.args, ("b", "h", "qs" if sp.causal else "qb")):
            M.name(a, n)
        self.b, self.h = body.args[0], body.args[1]
        self.iv_qs = self.qb = body.args[2]
        if sp.generic:
            dyn, static = [self.n(k) for k in ("b", "hq", "nq")], [M.DYNAMIC_INDEX] * 3
        else:
            dyn, static = [], [sp.b, sp.hq, sp.nq]
        arr = lambda xs: DenseArrayBase.from_list(i64, xs)  # noqa: E731
        self.ir.insert(M.ForallOp.build(
            operands=[[], dyn, [], []], regions=[Region(body)],
            properties={"staticLowerBound": arr([0, 0, 0]), "staticUpperBound": arr(static),
                        "staticStep": arr([1, 1, 1])}))
        self.loops.append(IR(body))

    def transpose_keys(self) -> None:
        """kT[b, hk, j // BK, d, j % BK] = k[b, hk, j, d], zero past S (padded to whole key blocks): one heap
        buffer the size of k, so a score row is one vector load per d in every query block, and a key block's
        D x BK panel is contiguous (rows S floats apart would fall in the same few L1 sets)."""
        sp = self.sp
        c0 = self.idx(0)
        bk = self.idx(sp.bk)
        if sp.generic:
            kt_t = M.memref_t(("?", "?", "?", sp.d, sp.bk), "f32")
            dyn = [self.n("b"), self.n("hkv"), self.n("nk")]
        else:
            kt_t, dyn = M.memref_t((sp.b, sp.hkv, sp.nk, sp.d, sp.bk), "f32"), []
        self.kt = self.v(M.memref.AllocOp.build(operands=[dyn, []], result_types=[kt_t],
                                                properties={"alignment": IntegerAttr(64, i64)}))
        self.for_(c0, self.n("b"), "b")
        b = self.iv()
        self.for_(c0, self.n("hkv"), "hk")
        hk = self.iv()
        self.for_(c0, self.idx(sp.d), "d")
        d = self.iv()
        if sp.generic or sp.s < sp.nk * sp.bk:
            self.for_(self.n("s"), self.n("nkbk"), "j")
            j = self.iv()
            self.ir.store(self.f(0.0), self.kt, [b, hk, self.ibin("divui", j, bk), d, self.ibin("remui", j, bk)])
            self.end()
        self.for_(c0, self.n("s"), "j")
        j = self.iv()
        kv = self.load(self.refs["k"], [b, hk, j, d])
        self.ir.store(kv, self.kt, [b, hk, self.ibin("divui", j, bk), d, self.ibin("remui", j, bk)])
        for _ in range(4):
            self.end()

    def query_block(self) -> None:
        sp = self.sp
        c0 = self.idx(0)
        i0 = self.ibin("muli", self.qb, self.idx(sp.bq))
        left = self.ibin("subi", self.n("t"), i0)
        nr = self.ibin("minsi", self.idx(sp.bq), left)
        self.hk = self.ibin("divui", self.h, self.n("group")) if sp.generic or sp.group > 1 else self.h
        acc_t, ml_t = M.memref_t((sp.bq, sp.dv), "f32"), M.memref_t((2, sp.bq), "f32")
        acc = self.v(M.memref.AllocaOp.build(operands=[[], []], result_types=[acc_t]))
        ml = self.v(M.memref.AllocaOp.build(operands=[[], []], result_types=[ml_t]))
        pbuf = self.v(M.memref.AllocaOp.build(operands=[[], []], result_types=[M.memref_t((self.r, sp.bk), "f32")]))
        self.acc, self.ml, self.pbuf, self.i0 = acc, ml, pbuf, i0
        # acc = 0, m = -inf, l = 0
        self.for_(c0, self.idx(sp.bq), "i")
        i = self.iv()
        self.ir.vstore(self.splat(0.0, self.vd), acc, [i, c0])
        self.ir.store(self.f(-math.inf), ml, [c0, i])
        self.ir.store(self.f(0.0), ml, [self.idx(1), i])
        self.end()
        self.for_(c0, self.key_block_count(i0, nr), "t")
        self.key_block(nr)
        self.end()
        self.write_out(nr)

    def key_block_count(self, i0: SSAValue, nr: SSAValue) -> SSAValue:
        sp = self.sp
        if sp.sparse:
            lb, lh = (self.b if sp.sparse[0] > 1 else self.idx(0)), (self.h if sp.sparse[1] > 1 else self.idx(0))
            self.lay = (lb, lh)
            n = self.load(self.refs["cnt"], [lb, lh, self.qb])
            return self.ir.cast("index_cast", n, M.INDEX, self.hint())
        if not sp.causal:
            return self.n("nk")
        last = self.ibin("minsi", self.ibin("addi", i0, nr), self.n("s"))
        return self.ibin("ceildivsi", last, self.idx(sp.bk))

    def key_block(self, nr: SSAValue) -> None:
        sp = self.sp
        kb = self.iv()
        if sp.sparse:
            lb, lh = self.lay
            kbi = self.load(self.refs["idx"], [lb, lh, self.qb, kb])
            kb = self.ir.cast("index_cast", kbi, M.INDEX, self.hint())
        j0 = self.ibin("muli", kb, self.idx(sp.bk))
        left = self.ibin("subi", self.n("s"), j0)
        nc = self.ibin("minsi", self.idx(sp.bk), left)
        loop, body, _ = self.ir.for_(self.idx(0), nr, self.idx(self.r), "i")
        self.loops.append(body)
        self.rows(j0, nc)
        self.end()

    def rows(self, j0: SSAValue, nc: SSAValue) -> None:
        """R query rows against one key block: R score vectors share each kT load, R accumulator
        rows share each v row load (independent FMA chains; loads amortized over R rows)."""
        sp, vk, r = self.sp, self.vk, self.r
        c0 = self.idx(0)
        i = self.iv()
        ii = [self.ibin("addi", i, self.idx(k)) if k else i for k in range(r)]
        qi = [self.ibin("addi", self.i0, x) for x in ii]
        # rows past T (last query block) read row T-1; their results are never written out
        qc = [self.ibin("minsi", q, self.n("t1")) for q in qi]
        z = self.splat(0.0)
        kb = self.ibin("divui", j0, self.idx(sp.bk))
        ss = self.for_(c0, self.idx(sp.d), "d", [z] * r)
        d = self.iv()
        kv = self.vload(vk, self.kt, [self.b, self.hk, kb, d, c0])
        outs = []
        for k in range(r):
            qv = self.load(self.refs["q"], [self.b, self.h, qc[k], d])
            outs.append(self.vfma(self.bcast(qv, vk), kv, self.it(k)))
        self.end(*outs)
        rels, alphas = [], []
        for k in range(r):
            rel, alpha = self.softmax_row(ss[k], ii[k], qi[k], j0, k)
            rels.append(rel)
            alphas.append(alpha)
        # acc rows = acc rows * alpha + sum_j p[j] v[j0 + j, :], j up to the last key any row sees;
        # in column chunks of at most 64 so that R accumulator rows stay in registers
        jend = self.ibin("maxsi", self.ibin("minsi", nc, rels[-1]), c0)
        for col in range(0, sp.dv, 64):
            self.pv_chunk(ii, alphas, j0, jend, col, min(64, sp.dv - col))

    def pv_chunk(self, ii: list[SSAValue], alphas: list[SSAValue], j0: SSAValue, jend: SSAValue, col: int,
                 width: int) -> None:
        r = self.r
        vt, c = M.vector_t(width, "f32"), self.idx(col)
        a0 = []
        for k in range(r):
            a = self.vload(vt, self.acc, [ii[k], c])
            a0.append(self.vbin("mulf", a, self.bcast(alphas[k], vt)))
        aa = self.for_(self.idx(0), jend, "j", a0)
        j = self.iv()
        vj = self.vload(vt, self.refs["v"], [self.b, self.hk, self.ibin("addi", j0, j), c])
        outs = []
        for k in range(r):
            pj = self.load(self.pbuf, [self.idx(k), j])
            outs.append(self.vfma(self.bcast(pj, vt), vj, self.it(k)))
        self.end(*outs)
        for k in range(r):
            self.ir.vstore(aa[k], self.acc, [ii[k], c])

    def softmax_row(self, s: SSAValue, i: SSAValue, qi: SSAValue, j0: SSAValue, k: int) -> tuple[SSAValue, SSAValue]:
        """Mask one score row, update its running max and sum, leave p in pbuf[k]; returns the
        number of keys of the block the row may see (may be <= 0) and the rescale factor alpha."""
        sp, vk = self.sp, self.vk
        c0, c1 = self.idx(0), self.idx(1)
        s = self.vbin("mulf", s, self.scale_vec if sp.generic else self.splat(sp.scale))
        # keys this row may see in the block: j < limit - j0 (S, or i + 1 when causal)
        limit = self.n("s")
        if sp.causal:
            limit = self.ibin("minsi", self.ibin("addi", qi, c1), limit)
        rel = self.ibin("subi", limit, j0)
        reli = self.ir.cast("index_cast", rel, "i32", self.hint())
        iota = self.const(list(range(sp.bk)), self.vki)
        keep = self.ir.cmpi("slt", iota, self.bcast(reli, self.vki), self.hint())
        s, keep = self.apply_mask(s, keep, qi, j0)
        ninf = self.splat(-math.inf)
        s = self.ir.select(keep, s, ninf, self.hint())
        mo = self.load(self.ml, [c0, i])
        lo = self.load(self.ml, [c1, i])
        # nnan (as on the vector ops here; not ninf: masked scores are -inf): without it LLVM takes the max
        # lane by lane (16 dependent maxss), with it a shuffle tree
        mx = self.ir.reduction("maxnumf", s, self.hint(), fm="nnan,nsz")
        mn = self.ir.bin("maxnumf", mo, mx, self.hint())
        dead = self.ir.cmpf("oeq", mn, self.f(-math.inf), self.hint())
        msafe = self.ir.select(dead, self.f(0.0), mn, self.hint())
        alpha = self.scalar_exp(self.ir.bin("subf", mo, msafe, self.hint()))
        p = self.exp(self.vbin("subf", s, self.bcast(msafe, vk)))
        masked = self.ir.cmpf("oeq", s, ninf, self.hint())
        p = self.ir.select(masked, self.splat(0.0), p, self.hint())
        rs = self.ir.reduction("add", p, self.hint())
        self.ir.store(mn, self.ml, [c0, i])
        self.ir.store(self.ir.fma(lo, alpha, rs, self.hint()), self.ml, [c1, i])
        self.ir.vstore(p, self.pbuf, [self.idx(k), c0])
        return rel, alpha

    def apply_mask(self, s: SSAValue, keep: SSAValue, qi: SSAValue, j0: SSAValue) -> tuple[SSAValue, SSAValue]:
        sp, vk = self.sp, self.vk
        if not sp.mask:
            return s, keep
        c0 = self.idx(0)
        mb, mh, mt, ms = sp.mask_shape
        if sp.generic:  # broadcast dims have stride 0 (generic_args): every index is the operand's own
            mb = mh = mt = 2
        ix = [self.b if mb > 1 else c0, self.h if mh > 1 else c0, qi if mt > 1 else c0]
        mask = self.refs["mask"]
        elem = "f32" if sp.mask == "add" else "i8"
        vty = vk if elem == "f32" else M.vector_t(sp.bk, "i8")
        if ms > 1:
            pad = self.f(0.0) if elem == "f32" else self.const(0, M.elem("i8"))
            row = self.ir.transfer_read(mask, [*ix, j0], pad, vty, self.hint())
        else:
            one = self.load(mask, [*ix, c0])
            row = self.bcast(one, vty)
        if elem == "f32":
            return self.vbin("addf", s, row), keep
        on = self.ir.cmpi("ne", row, self.const(0, vty), self.hint())
        return s, self.ibin("andi", keep, on)

    def write_out(self, nr: SSAValue) -> None:
        c0, c1 = self.idx(0), self.idx(1)
        self.for_(c0, nr, "i")
        i = self.iv()
        li = self.load(self.ml, [c1, i])
        empty = self.ir.cmpf("oeq", li, self.f(0.0), self.hint())
        inv = self.ir.bin("divf", self.f(1.0), li, self.hint())
        inv = self.ir.select(empty, self.f(0.0), inv, self.hint())
        row = self.vload(self.vd, self.acc, [i, c0])
        row = self.vbin("mulf", row, self.bcast(inv, self.vd))
        qi = self.ibin("addi", self.i0, i)
        self.ir.vstore(row, self.refs["out"], [self.b, self.h, qi, c0])
        self.end()


def emit(spec: AttentionSpec, name: str) -> str:
    """The MLIR func text of the attention kernel for `spec`, named `name` (built with xDSL, verified)."""
    return _Emitter(spec, name).text()


def module(spec: AttentionSpec, name: str) -> str:
    return "module {\n" + emit(spec, name) + "}\n"
