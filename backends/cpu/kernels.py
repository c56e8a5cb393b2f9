"""Hand-assembled linalg-on-tensors kernels for 2-D row kernels [rows, cols] f32.

These are the reference shapes that the lowering from the `graph` dialect will produce: each
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

from solder.backends.cpu import schedule as sched
from solder.backends.cpu.mathapprox import Emitter, f32_literal

ID = "affine_map<(d0, d1) -> (d0, d1)>"
ROW = "affine_map<(d0, d1) -> (d0)>"
COL = "affine_map<(d0, d1) -> (d1)>"
PAR2 = '["parallel", "parallel"]'
RED2 = '["parallel", "reduction"]'
LOOP_FM = "nsz,arcp,contract,afn"


class _Kernel:
    """Builds one kernel function body line by line."""

    def __init__(self, name: str, rows: int, cols: int) -> None:
        self.name, self.rows, self.cols = name, rows, cols
        self.args: list[str] = []
        self.body: list[str] = []
        self._n = 0

    def ty(self, shape: str) -> str:
        return {"rc": f"{self.rows}x{self.cols}xf32", "r": f"{self.rows}xf32",
                "c": f"{self.cols}xf32"}[shape]

    def arg(self, name: str, shape: str, writable: bool = False) -> str:
        t = self.ty(shape)
        self.args.append(f"%{name}_m: memref<{t}>")
        flags = "restrict writable" if writable else "restrict"
        self.body.append(f"%{name} = bufferization.to_tensor %{name}_m {flags} "
                         f": memref<{t}> to tensor<{t}>")
        return f"%{name}"

    def fresh(self) -> str:
        self._n += 1
        return f"%v{self._n}"

    def line(self, text: str) -> None:
        self.body.append(text)

    def filled(self, shape: str, value: float) -> str:
        t = self.ty(shape)
        e, c, f = self.fresh(), self.fresh(), self.fresh()
        self.line(f"{e} = tensor.empty() : tensor<{t}>")
        self.line(f"{c} = arith.constant {f32_literal(value)} : f32")
        self.line(f"{f} = linalg.fill ins({c} : f32) outs({e} : tensor<{t}>) -> tensor<{t}>")
        return f

    def empty(self, shape: str) -> str:
        e = self.fresh()
        self.line(f"{e} = tensor.empty() : tensor<{self.ty(shape)}>")
        return e

    def generic(self, ins: list[tuple[str, str]], out: tuple[str, str], body, tag: str) -> str:
        """`ins`/`out` are (ssa, shape) with shape in rc/r/c; `body(em, args)` returns the yield.

        A reduction is recognized by an `r` output: the body then gets the accumulator last and
        must return the combined value.
        """
        maps = {"rc": ID, "r": ROW, "c": COL}
        reduce = out[1] == "r"
        iters = RED2 if reduce else PAR2
        ind = ", ".join(maps[s] for _, s in ins + [out])
        res = self.fresh()
        ins_s = ", ".join(v for v, _ in ins)
        ins_t = ", ".join(f"tensor<{self.ty(s)}>" for _, s in ins)
        out_t = f"tensor<{self.ty(out[1])}>"
        self.line(f"{res} = linalg.generic {{indexing_maps = [{ind}], iterator_types = {iters}}} "
                  f"ins({ins_s} : {ins_t}) outs({out[0]} : {out_t}) attrs = {{{tag}}} {{")
        bargs = [f"{res[1:]}_a{i}" for i in range(len(ins) + 1)]
        self.line("^bb0(" + ", ".join(f"%{a}: f32" for a in bargs) + "):")
        em = Emitter(f"%{res[1:]}_t", fastmath=LOOP_FM)
        y = body(em, [f"%{a}" for a in bargs])
        self.body.extend("  " + ln for ln in em.lines)
        self.line(f"  linalg.yield {y} : f32")
        self.line(f"}} -> {out_t}")
        return res

    def store(self, value: str, dest: str, shape: str) -> None:
        t = self.ty(shape)
        self.line(f"bufferization.materialize_in_destination {value} in restrict writable "
                  f"{dest}_m : (tensor<{t}>, memref<{t}>) -> ()")

    def text(self, schedule: str | None) -> str:
        head = (f"func.func @{self.name}({', '.join(self.args)}) "
                "attributes {llvm.emit_c_interface} {")
        body = "\n".join("  " + ln for ln in self.body)
        func = f"{head}\n{body}\n  return\n}}"
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
