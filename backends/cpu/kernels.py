"""Hand-assembled linalg-on-tensors kernels for 2-D row kernels [rows, cols] f32.

These are the reference shapes that the lowering from the `graph` dialect produces, built with the same
xDSL builder (mlir_builder.py; the schedule is text, as there): each
kernel is a public function with memref arguments (inputs, then preallocated outputs) and
`llvm.emit_c_interface`; inside, `bufferization.to_tensor ... restrict`, linalg on tensors, and
`bufferization.materialize_in_destination` into the output. Intermediates that several consumers
read (exp in softmax, the residual sum) go to `tensor.empty` temporaries, so that fusion duplicates
them, CSE merges the copies and the temporary shrinks to one row on the stack.

Tags steer the transform schedule (schedule.py): `solder.root` marks the last generic (fused over
rows), `solder.reduce` the reductions, `solder.ew` the elementwise producers.

Every generator returns (mlir_text, entry_name). The transform schedule is appended unless
`schedule=False`; `parallel=True` runs the row loop on torch's OpenMP pool (threads.py).
"""

from __future__ import annotations

from xdsl.dialects.builtin import UnitAttr
from xdsl.ir import Block, Region, SSAValue

from solder.backends.cpu import mlir_builder as M
from solder.backends.cpu import schedule as sched
from solder.backends.cpu.mathapprox import Emitter
from solder.backends.cpu.mlir_builder import IR

LOOP_FM = "nsz,arcp,contract,afn"
_MAPS = {"rc": (0, 1), "r": (0,), "c": (1,)}  # the loop dims (row, col) each operand shape reads


class _Kernel:
    """Builds one kernel function (xDSL ops, mlir_builder.py) over [rows, cols] f32 operands."""

    def __init__(self, name: str, rows: int, cols: int) -> None:
        self.name, self.rows, self.cols = name, rows, cols
        self.block = Block()
        self.ir = IR(self.block)
        self.memrefs: dict[SSAValue, SSAValue] = {}
        self._n = 0

    def shape(self, shape: str) -> tuple[int, ...]:
        return {"rc": (self.rows, self.cols), "r": (self.rows,), "c": (self.cols,)}[shape]

    def arg(self, name: str, shape: str, writable: bool = False) -> SSAValue:
        m = M.name(self.block.insert_arg(M.memref_t(self.shape(shape), "f32"), len(self.block.args)), f"{name}_m")
        t = self.ir.op(M.bufferization.ToTensorOp(m, restrict=True, writable=writable), name)
        self.memrefs[t] = m
        return t

    def fresh(self) -> str:
        self._n += 1
        return f"v{self._n}"

    def filled(self, shape: str, value: float) -> SSAValue:
        e = self.empty(shape)
        c = self.ir.const(value, M.elem("f32"), self.fresh())
        return self.ir.op(M.FillOp([c], [e], [e.type]), self.fresh())

    def empty(self, shape: str) -> SSAValue:
        return self.ir.empty(M.tensor_t(self.shape(shape), "f32"), [], self.fresh())

    def generic(self, ins: list[tuple[SSAValue, str]], out: tuple[SSAValue, str], body, tag: str) -> SSAValue:
        """`ins`/`out` are (value, shape) with shape in rc/r/c; `body(em, args)` returns the yield.

        A reduction is recognized by an `r` output: the body then gets the accumulator last and
        must return the combined value.
        """
        iters = ["parallel", "reduction" if out[1] == "r" else "parallel"]
        maps = [M.affine_map(2, _MAPS[s]) for _, s in ins + [out]]
        res = self.fresh()
        block = Block(arg_types=[M.elem("f32")] * (len(ins) + 1))
        for i, a in enumerate(block.args):
            M.name(a, f"{res}_a{i}")
        em = Emitter(IR(block), f"{res}_t", fastmath=LOOP_FM)
        y = body(em, list(block.args))
        em.ir.insert(M.YieldOp(y))
        op = self.ir.insert(M.generic([v for v, _ in ins], [out[0]], maps, iters, block, [tag]))
        return M.name(op.results[0], res)

    def store(self, value: SSAValue, dest: SSAValue, shape: str) -> None:
        self.ir.insert(M.bufferization.MaterializeInDestinationOp.build(
            operands=[value, self.memrefs[dest]], result_types=[None],
            properties={"restrict": UnitAttr(), "writable": UnitAttr()}))

    def text(self, schedule: str | None) -> str:
        self.ir.insert(M.func.ReturnOp())
        f = M.func.FuncOp(self.name, ([a.type for a in self.block.args], []), Region(self.block))
        f.attributes[M.EMIT_C] = UnitAttr()
        func = M.finish(f)
        inner = func if schedule is None else f"{func}\n{schedule}"
        return "module attributes {transform.with_named_sequence} {\n" + inner + "\n}\n"


def _row_sched(cols: int, n_reduce: int, n_ew: int, schedule: bool,
               parallel: bool = False) -> str | None:
    if not schedule:
        return None
    return sched.row_kernel_schedule(cols, n_reduce=n_reduce, n_ew=n_ew, parallel=parallel)


def _normalize(k: _Kernel, x: str, eps: float, w: str | None, b: str | None, out: str) -> str:
    """Two-pass layer norm of rows of `x` into `out` (both rc); returns the result tensor."""
    inv_c = 1.0 / k.cols
    s = k.generic([(x, "rc")], (k.filled("r", 0.0), "r"),
                  lambda em, a: em.add(a[0], a[1]), "solder.reduce")

    def var_body(em, a):
        d = em.sub(a[0], em.mul(a[1], em.const(inv_c)))
        return em.add(em.mul(d, d), a[2])
    v = k.generic([(x, "rc"), (s, "r")], (k.filled("r", 0.0), "r"), var_body, "solder.reduce")

    def norm_body(em, a):
        mean = em.mul(a[1], em.const(inv_c))
        rstd = em.rsqrt(em.fma(a[2], em.const(inv_c), em.const(eps)))
        y = em.mul(em.sub(a[0], mean), rstd)
        return em.fma(y, a[3], a[4]) if b else em.mul(y, a[3]) if w else y
    ins = [(x, "rc"), (s, "r"), (v, "r")] + ([(w, "c")] if w else []) + ([(b, "c")] if b else [])
    return k.generic(ins, (out, "rc"), norm_body, "solder.root")


def layer_norm(rows: int, cols: int, eps: float = 1e-5, *, name: str = "layer_norm",
               schedule: bool = True, parallel: bool = False) -> tuple[str, str]:
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim. Args: x, w, b, out."""
    k = _Kernel(name, rows, cols)
    x, w, b = k.arg("x", "rc"), k.arg("w", "c"), k.arg("b", "c")
    out = k.arg("out", "rc", writable=True)
    y = _normalize(k, x, eps, w, b, out)
    k.store(y, out, "rc")
    return k.text(_row_sched(cols, 2, 0, schedule, parallel)), name


def add_layer_norm(rows: int, cols: int, eps: float = 1e-5, *, name: str = "add_layer_norm",
                   schedule: bool = True, parallel: bool = False) -> tuple[str, str]:
    """y = layer_norm(x + residual) * weight + bias. Args: x, residual, w, b, out."""
    k = _Kernel(name, rows, cols)
    x, r = k.arg("x", "rc"), k.arg("res", "rc")
    w, b = k.arg("w", "c"), k.arg("b", "c")
    out = k.arg("out", "rc", writable=True)
    h = k.generic([(x, "rc"), (r, "rc")], (k.empty("rc"), "rc"),
                  lambda em, a: em.add(a[0], a[1]), "solder.ew")
    y = _normalize(k, h, eps, w, b, out)
    k.store(y, out, "rc")
    return k.text(_row_sched(cols, 2, 1, schedule, parallel)), name


def rms_norm(rows: int, cols: int, eps: float = 1e-6, *, name: str = "rms_norm",
             schedule: bool = True, parallel: bool = False) -> tuple[str, str]:
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dim. Args: x, w, out."""
    k = _Kernel(name, rows, cols)
    x, w = k.arg("x", "rc"), k.arg("w", "c")
    out = k.arg("out", "rc", writable=True)
    ss = k.generic([(x, "rc")], (k.filled("r", 0.0), "r"),
                   lambda em, a: em.add(em.mul(a[0], a[0]), a[1]), "solder.reduce")

    def body(em, a):
        rstd = em.rsqrt(em.fma(a[1], em.const(1.0 / cols), em.const(eps)))
        return em.mul(em.mul(a[0], rstd), a[2])
    y = k.generic([(x, "rc"), (ss, "r"), (w, "c")], (out, "rc"), body, "solder.root")
    k.store(y, out, "rc")
    return k.text(_row_sched(cols, 1, 0, schedule, parallel)), name


def softmax(rows: int, cols: int, *, name: str = "softmax",
            schedule: bool = True, parallel: bool = False) -> tuple[str, str]:
    """y = softmax(x) over the last dim (max-subtracted). Args: x, out."""
    k = _Kernel(name, rows, cols)
    x = k.arg("x", "rc")
    out = k.arg("out", "rc", writable=True)
    mx = k.generic([(x, "rc")], (k.filled("r", float("-inf")), "r"),
                   lambda em, a: em.bin("maximumf", a[0], a[1]), "solder.reduce")
    ex = k.generic([(x, "rc"), (mx, "r")], (k.empty("rc"), "rc"),
                   lambda em, a: em.exp_nonpositive(em.sub(a[0], a[1])), "solder.ew")
    s = k.generic([(ex, "rc")], (k.filled("r", 0.0), "r"),
                  lambda em, a: em.add(a[0], a[1]), "solder.reduce")
    y = k.generic([(ex, "rc"), (s, "r")], (out, "rc"),
                  lambda em, a: em.mul(a[0], em.div(em.const(1.0), a[1])), "solder.root")
    k.store(y, out, "rc")
    return k.text(_row_sched(cols, 2, 1, schedule, parallel)), name


def add_gelu_tanh(rows: int, cols: int, *, name: str = "add_gelu_tanh",
                  schedule: bool = True, parallel: bool = False) -> tuple[str, str]:
    """y = gelu_tanh(x + y). Args: x, y, out."""
    k = _Kernel(name, rows, cols)
    x, y = k.arg("x", "rc"), k.arg("y", "rc")
    out = k.arg("out", "rc", writable=True)
    r = k.generic([(x, "rc"), (y, "rc")], (out, "rc"),
                  lambda em, a: em.gelu_tanh(em.add(a[0], a[1])), "solder.root")
    k.store(r, out, "rc")
    return k.text(sched.elementwise_schedule(cols, parallel=parallel) if schedule else None), name


def unary(fn: str, rows: int, cols: int, *, name: str | None = None,
          schedule: bool = True, parallel: bool = False) -> tuple[str, str]:
    """y = fn(x) for one of mathapprox.UNARY; used to test the approximations. Args: x, out."""
    name = name or f"unary_{fn}"
    k = _Kernel(name, rows, cols)
    x = k.arg("x", "rc")
    out = k.arg("out", "rc", writable=True)
    r = k.generic([(x, "rc")], (out, "rc"), lambda em, a: getattr(em, fn)(a[0]), "solder.root")
    k.store(r, out, "rc")
    return k.text(sched.elementwise_schedule(cols, parallel=parallel) if schedule else None), name


KERNELS = {
    "layer_norm": layer_norm,
    "softmax": softmax,
    "add_gelu_tanh": add_gelu_tanh,
    "rms_norm": rms_norm,
    "add_layer_norm": add_layer_norm,
}

# The LLVM opt level each kernel runs best at (4096x1024, measured by benchmarks/cpu_kernels.py).
# At O2/O3 LLVM fully unrolls the 32-trip inner loops of layer_norm/rms_norm and GVN then merges
# the loads of a row across the reduction and normalization loops: 64 zmm values live at once,
# spilled to the stack (layer_norm 64% of copy at O3, 104% at O0). Since MLIR already vectorized,
# O0 costs nothing there; softmax, add_gelu_tanh and add_layer_norm are fastest at O3.
OPT_LEVEL = {"layer_norm": 0, "rms_norm": 0, "softmax": 3, "add_gelu_tanh": 3,
             "add_layer_norm": 3}


def example_args(name: str, rows: int, cols: int, seed: int = 0) -> list:
    """Random inputs plus an empty output for kernel `name`, in its argument order."""
    import torch
    g = torch.Generator().manual_seed(seed)
    rc = lambda: torch.randn(rows, cols, generator=g)  # noqa: E731
    c = lambda: torch.randn(cols, generator=g)  # noqa: E731
    ins = {"layer_norm": lambda: [rc(), c(), c()], "softmax": lambda: [rc() * 4],
           "add_gelu_tanh": lambda: [rc(), rc()], "rms_norm": lambda: [rc(), c()],
           "add_layer_norm": lambda: [rc(), rc(), c(), c()]}[name]()
    return ins + [torch.empty(rows, cols)]


def reference(name: str, *ins):
    """Eager PyTorch result of kernel `name` for inputs `ins` (without the output)."""
    import torch.nn.functional as F
    if name == "layer_norm":
        x, w, b = ins
        return F.layer_norm(x, x.shape[-1:], w, b, 1e-5)
    if name == "softmax":
        return ins[0].softmax(-1)
    if name == "add_gelu_tanh":
        return F.gelu(ins[0] + ins[1], approximate="tanh")
    if name == "rms_norm":
        x, w = ins
        return F.rms_norm(x, x.shape[-1:], w, 1e-6)
    if name == "add_layer_norm":
        x, r, w, b = ins
        return F.layer_norm(x + r, x.shape[-1:], w, b, 1e-5)
    raise KeyError(name)
