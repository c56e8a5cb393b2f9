"""The CPU backend's size-generic code for dynamic modules: one MLIR compile serves every size (symbolic dims,
sizes bound per call), what falls back (attention to SDPA without the prebuilt kernels, an unknown size to the
reference backend, a failed generic compile to per-size code), and random programs against eager.
Split from tests/test_dynamic_shapes.py (the shape policy itself)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from solder import compile

from solder.compiler import ir
from solder.compiler.dialects import symbolic
from solder.compiler.errors import SolderError
from tests.test_dynamic_shapes import _model, _run_shapes, _sliced


def _count_mlir_compiles(monkeypatch) -> list[str]:
    """Every `compile_mlir` call from now on (disk-cache hits included) appends its entry name."""
    from solder.backends.cpu import jit

    calls: list[str] = []
    real = jit.compile_mlir

    def counting(text, entry, **kw):
        calls.append(entry)
        return real(text, entry, **kw)
    monkeypatch.setattr(jit, "compile_mlir", counting)
    return calls


def test_cpu_compiles_a_dynamic_module_once_for_every_size(monkeypatch):
    """Five sizes after the dynamic compile, not one MLIR compile among them; eager's numbers at each."""
    calls = _count_mlir_compiles(monkeypatch)
    model = _model()
    c = compile(model, target="cpu")
    _run_shapes(c, model, [(2, 8, 16)])
    static_calls = len(calls)
    assert static_calls >= 1
    _run_shapes(c, model, [(2, 12, 16)])
    dyn = list(c.specializations.values())[-1]
    generic_calls = len(calls) - static_calls
    assert generic_calls >= 1  # one module per LLVM opt level
    _run_shapes(c, model, [(2, 5, 16), (2, 33, 16), (2, 17, 16), (2, 64, 16), (2, 12, 16)])
    assert len(calls) == static_calls + generic_calls, calls  # no compile for the new sizes
    assert c.compile_count == 2
    assert dyn.program.sizes is None
    assert "memref<2x?x16xf32>" in dyn.program.source and "%sym_s0: index" in dyn.program.source
    text = c.explain()
    assert "size-generic MLIR kernel(s), compiled once for every size" in text and "mlir (size-generic)" in text
    # the static specialization generated static code, as before
    static = list(c.specializations.values())[0]
    assert "?" not in static.program.source.split("transform.named_sequence")[0]


_DYN_IR = """builtin.module {
  func.func @forward(%x: tensor<?x?x8xf32, ["s0", "s1"]>, %y: tensor<?x8xf32, ["s1"]>) -> (tensor<?x?x8xf32, ["s0", "s1"]>, tensor<?x1x8xf32, ["s0"]>, tensor<?x?x8xf32, ["s0", "s1 - 1"]>, tensor<?x8xf32, ["s0*s1"]>)
      attributes {graph.symbols = {s0 = array<i64: 2, 64, 3>, s1 = array<i64: 2, -1, 5>}} {
    %a = graph.add %x, %y : (tensor<?x?x8xf32, ["s0", "s1"]>, tensor<?x8xf32, ["s1"]>) -> tensor<?x?x8xf32, ["s0", "s1"]>
    %m = graph.reduce "mean" %a {dims = array<i64: 1>, keepdim} : tensor<?x?x8xf32, ["s0", "s1"]> -> tensor<?x1x8xf32, ["s0"]>
    %s = graph.softmax %a {dim = 1 : i64} : tensor<?x?x8xf32, ["s0", "s1"]> -> tensor<?x?x8xf32, ["s0", "s1"]>
    %d = graph.slice %s {dim = 1 : i64, start = 1 : i64, step = 1 : i64, end = 9223372036854775807 : i64} : tensor<?x?x8xf32, ["s0", "s1"]> -> tensor<?x?x8xf32, ["s0", "s1 - 1"]>
    %r = graph.reshape %s : tensor<?x?x8xf32, ["s0", "s1"]> -> tensor<?x8xf32, ["s0*s1"]>
    func.return %a, %m, %d, %r : tensor<?x?x8xf32, ["s0", "s1"]>, tensor<?x1x8xf32, ["s0"]>, tensor<?x?x8xf32, ["s0", "s1 - 1"]>, tensor<?x8xf32, ["s0*s1"]>
  }
}"""


def test_cpu_size_generic_program_on_a_hand_written_dynamic_module(monkeypatch):
    """Broadcast over a symbolic dim, a mean over one (its 1/n computed from the size), a softmax whose row
    is symbolic (no vector schedule: loops), a slice to `s1 - 1` and a reshape merging two symbols: one
    program, checked against eager at several sizes, and its bounds checked at call time."""
    from solder.backends.cpu.backend import CpuBackend

    calls = _count_mlir_compiles(monkeypatch)
    prog = CpuBackend().lower(ir.parse(_DYN_IR))
    n_compiles = len(calls)
    assert prog.sizes is None and "size-generic" in prog.dynamic and prog.fallbacks == []
    assert "%sym_s1: index" in prog.source
    for s0, s1 in [(3, 5), (2, 2), (7, 33), (64, 3), (5, 130)]:
        x, y = torch.randn(s0, s1, 8), torch.randn(s1, 8)
        a, m, d, r = prog([x, y])
        want = x + y
        torch.testing.assert_close(a, want)
        torch.testing.assert_close(m, want.mean(1, keepdim=True))
        torch.testing.assert_close(d, torch.softmax(want, 1)[:, 1:])
        torch.testing.assert_close(r, torch.softmax(want, 1).reshape(s0 * s1, 8))
    assert len(calls) == n_compiles  # nothing compiled per size
    with pytest.raises(symbolic.ShapeBindError, match=r"outside the compiled range s0 in \[2, 64\]"):
        prog([torch.randn(65, 3, 8), torch.randn(3, 8)])
    with pytest.raises(symbolic.ShapeBindError, match="needs s1 = 3"):
        prog([torch.randn(4, 3, 8), torch.randn(4, 8)])


def test_cpu_dynamic_attention_calls_sdpa_and_says_so(monkeypatch):
    """Without the install's size-generic attention kernels (tests/test_attention_lib.py has them), the generated
    kernel is emitted for static sizes only: a dynamic gpt2 calls SDPA there, and the backend table and the
    dynamic line of explain() say so; the rest is size-generic MLIR."""
    from examples.models import get

    monkeypatch.setenv("SOLDER_CPU_LIB", "off")

    entry = get("gpt2")
    model, args, kwargs = entry.build()
    c = compile(model, target="cpu")
    for t in (9, 12, 20):
        a, k = _sliced(args, kwargs, t)
        with torch.no_grad():
            torch.testing.assert_close(c(*a, **k), model(*a, **k), atol=max(entry.atol, 1e-5),
                                       rtol=max(entry.rtol, 1e-4))
    dyn = list(c.specializations.values())[-1]
    routes = [k["route"] for k in dyn.program.kernels]
    assert any(r.startswith("library: F.scaled_dot_product_attention (dynamic shapes") for r in routes), routes
    assert not any(r.startswith("mlir: flash attention") for r in routes)
    assert "mlir (size-generic)" in routes
    assert "attention op(s) call a library or reference op" in dyn.program.dynamic
    static = list(c.specializations.values())[0]  # the first, static shape keeps the flash kernel
    assert any(k["route"].startswith(("mlir: flash attention", "library: flash attention"))
               for k in static.program.kernels)


def test_cpu_dynamic_module_falls_back_to_per_size_code_when_the_generic_compile_fails(monkeypatch):
    """Never a wrong answer: if the size-generic module does not compile, each size is lowered static."""
    from solder.backends.cpu import jit
    from solder.backends.cpu.backend import CpuBackend

    real = jit.compile_mlir

    def no_generic(text, entry, **kw):
        if "index)" in text:  # a kernel taking shape symbols
            raise jit.JitError("no size-generic code today")
        return real(text, entry, **kw)
    monkeypatch.setattr(jit, "compile_mlir", no_generic)
    prog = CpuBackend().lower(ir.parse(_DYN_IR))
    assert prog.sizes == [{"s0": 3, "s1": 5}] and prog.dynamic is None
    for s0, s1 in [(3, 5), (4, 6)]:
        x, y = torch.randn(s0, s1, 8), torch.randn(s1, 8)
        torch.testing.assert_close(prog([x, y])[0], x + y)
    assert prog.sizes == [{"s0": 3, "s1": 5}, {"s0": 4, "s1": 6}]


def test_jit_kernel_with_symbolic_dims_takes_sizes_per_call():
    """The JIT's calling convention for `?` dims and `index` arguments, on its own."""
    from solder.backends.cpu import jit

    text = """module {
func.func @scale(%x_m: memref<?x3xf32>, %y_m: memref<?x3xf32>, %n: index) attributes {llvm.emit_c_interface} {
  %x = bufferization.to_tensor %x_m restrict : memref<?x3xf32> to tensor<?x3xf32>
  %e = tensor.empty(%n) : tensor<?x3xf32>
  %i = arith.index_cast %n : index to i64
  %f = arith.sitofp %i : i64 to f32
  %g = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, d1)>],
      iterator_types = ["parallel", "parallel"]} ins(%x : tensor<?x3xf32>) outs(%e : tensor<?x3xf32>) {
  ^bb0(%a: f32, %o: f32):
    %m = arith.mulf %a, %f : f32
    linalg.yield %m : f32
  } -> tensor<?x3xf32>
  bufferization.materialize_in_destination %g in restrict writable %y_m : (tensor<?x3xf32>, memref<?x3xf32>) -> ()
  return
}
}"""
    k = jit.compile_mlir(text, "scale", use_cache=False)
    assert [s.shape for s in k.specs] == [(-1, 3), (-1, 3), ()] and k.specs[2].dtype is None
    for n in (1, 4, 37):
        x, y = torch.randn(n, 3), torch.empty(n, 3)
        k(x, y, n)
        torch.testing.assert_close(y, x * n)
    with pytest.raises(SolderError, match=r"shape \['\?', 3\]"):
        k(torch.randn(4, 2), torch.empty(4, 2), 4)


def test_cpu_dynamic_kernel_with_an_unknown_size_runs_on_the_reference_backend():
    """A `?` dim without a size expression (a type a pass built from plain shapes) has no size to compute:
    that kernel runs eagerly, says why, and the rest stays size-generic."""
    from solder.backends.cpu.backend import CpuBackend

    text = """builtin.module {
  func.func @forward(%x: tensor<?x8xf32, ["s0"]>) -> (tensor<?x8xf32>, tensor<?x8xf32, ["s0"]>)
      attributes {graph.symbols = {s0 = array<i64: 2, -1, 4>}} {
    %a = graph.add %x, %x : (tensor<?x8xf32, ["s0"]>, tensor<?x8xf32, ["s0"]>) -> tensor<?x8xf32>
    %b = graph.exp %x : tensor<?x8xf32, ["s0"]> -> tensor<?x8xf32, ["s0"]>
    func.return %a, %b : tensor<?x8xf32>, tensor<?x8xf32, ["s0"]>
  }
}"""
    prog = CpuBackend().lower(ir.parse(text))
    assert prog.sizes is None and prog.fallbacks == ["graph.add"]
    reasons = [k["reason"] for k in prog.kernels]
    assert any("without a size expression" in r for r in reasons), reasons
    assert any(k["route"] == "mlir (size-generic)" for k in prog.kernels)
    for n in (4, 9):
        x = torch.randn(n, 8)
        a, b = prog([x])
        torch.testing.assert_close(a, x + x)
        torch.testing.assert_close(b, torch.exp(x))


# -- random programs, compiled dynamic ------------------------------------------------------------------------
DYNAMIC_FUZZ_EXAMPLES = int(os.environ.get("SOLDER_FUZZ_DYNAMIC_EXAMPLES", "30"))
"""Random programs for the dynamic fuzz test (SOLDER_FUZZ_SEED, as tests/test_fuzz.py, picks the seed)."""


def _resized_inputs(prog, sp, seed: int):
    """The program's inputs at other sizes: every symbol one larger (within its bounds), the dims that read it
    or an expression of it changed to match, values drawn as the fuzzer draws them. None if the binding's
    constraints refuse those sizes."""
    from dataclasses import replace

    b = sp.binding
    env = {s.name: s.hint + 1 if s.hi is None or s.hint + 1 <= s.hi else max(s.lo, s.hint - 1)
           for s in b.symbols.values()}
    shapes = [list(spec.shape) for spec in prog.inputs]
    users = sp.imported.input_positions  # binding argument j is flat input users[j]
    for name, (j, d) in b.reads.items():
        shapes[users[j]][d] = env[name]
    try:
        for j, d, e in b.checks:
            shapes[users[j]][d] = int(symbolic.evaluate(e, env))
        if not all(symbolic.evaluate(a, env) for a in b.assumes):
            return None
    except symbolic.ShapeBindError:
        return None
    gen = torch.Generator().manual_seed(seed)
    return [replace(spec, shape=tuple(s)).make(gen) for spec, s in zip(prog.inputs, shapes)]


def test_cpu_size_generic_code_matches_eager_on_random_programs():
    """The fuzzer's programs compiled with `dynamic=True` on the CPU backend: checked against eager at the
    example sizes, then (one capture, no recompile) at sizes one larger in every symbolic dim."""
    import hypothesis
    from hypothesis import HealthCheck, given, reject, settings

    from tests.fuzz_graphs import programs
    from tests.test_fuzz import EagerRejects, UndefinedCasts, assert_same

    count = {"generic": 0, "per size": 0, "static": 0, "resized": 0}

    def eager(fn, inputs):
        try:
            with UndefinedCasts():
                return fn(*[x.clone() for x in inputs])
        except EagerRejects:
            raise
        except Exception as e:  # noqa: BLE001
            raise EagerRejects(str(e)) from e

    seed = os.environ.get("SOLDER_FUZZ_SEED")

    @settings(max_examples=DYNAMIC_FUZZ_EXAMPLES, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(programs())
    def one(prog):
        fn = prog.function()
        inputs = prog.make_inputs(0)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                want = eager(fn, inputs)
            except EagerRejects:
                reject()
            c = compile(fn, target="cpu", dynamic=True)
            assert_same(c(*inputs), want, where=f"\n[cpu, dynamic=True]\n{prog.source}", through=prog.dtypes)
            sp = list(c.specializations.values())[-1]
            if sp.binding is None or not sp.binding.symbols:
                count["static"] += 1
                return
            count["per size" if sp.program.sizes is not None else "generic"] += 1
            more = _resized_inputs(prog, sp, 1)
            if more is None:
                return
            try:
                want = eager(fn, more)
            except EagerRejects:
                return
            assert_same(c(*more), want, where=f"\n[cpu, dynamic=True, resized]\n{prog.source}", through=prog.dtypes)
            assert c.compile_count == 1
            count["resized"] += 1

    (one if seed is None else hypothesis.seed(int(seed))(one))()
    print(f"\nfuzz cpu dynamic: {count}")
    dynamic = count["generic"] + count["per size"]
    assert dynamic >= DYNAMIC_FUZZ_EXAMPLES // 3 and count["generic"] >= 0.8 * dynamic, count


def test_cpu_dynamic_steps_that_read_no_argument_run_once_per_size(monkeypatch):
    """A causal mask built from arange(s0) (what a static compile folds into a constant) is computed when the
    size changes and replayed while it holds; the kernel reading the input runs every call."""
    from solder.backends.cpu import runner
    from solder.backends.cpu.backend import CpuBackend

    text = """builtin.module {
  func.func @forward(%x: tensor<?x?xf32, ["s0", "s0"]>) -> tensor<?x?xf32, ["s0", "s0"]>
      attributes {graph.symbols = {s0 = array<i64: 2, 64, 4>}} {
    %i = graph.arange {start = 0 : i64, step = 1 : i64} : tensor<?xi64, ["s0"]>
    %r = graph.reshape %i : tensor<?xi64, ["s0"]> -> tensor<?x1xi64, ["s0"]>
    %m = graph.le %i, %r : (tensor<?xi64, ["s0"]>, tensor<?x1xi64, ["s0"]>) -> tensor<?x?xi1, ["s0", "s0"]>
    %c = graph.cumsum %x {dim = 1 : i64} : tensor<?x?xf32, ["s0", "s0"]> -> tensor<?x?xf32, ["s0", "s0"]>
    %z = graph.constant 0.0 : f64 : tensor<f32>
    %y = graph.where %m, %c, %z : (tensor<?x?xi1, ["s0", "s0"]>, tensor<?x?xf32, ["s0", "s0"]>, tensor<f32>) -> tensor<?x?xf32, ["s0", "s0"]>
    func.return %y : tensor<?x?xf32, ["s0", "s0"]>
  }
}"""
    runs: dict[str, int] = {}
    real = runner._launches

    def counting(ctx, kernels):
        out = []
        for idx, f in real(ctx, kernels):
            name = "+".join(op.name.removeprefix("graph.") for k in idx for op in ctx.steps[k].ops)

            def run(vals, bufs, f=f, name=name):
                runs[name] = runs.get(name, 0) + 1
                f(vals, bufs)
            out.append((idx, run))
        return out
    monkeypatch.setattr(runner, "_launches", counting)
    prog = CpuBackend().lower(ir.parse(text))
    for n in (4, 4, 4, 7, 7):
        x = torch.randn(n, n)
        want = torch.where(torch.arange(n) <= torch.arange(n)[:, None], x.cumsum(1), 0.0)
        torch.testing.assert_close(prog([x])[0], want)
    mask = [k for k in runs if "le" in k.split("+") and "where" not in k]
    assert mask and all(runs[k] == 2 for k in mask), runs  # once per size
    assert runs["cumsum"] == 5, runs  # reads the input: every call
