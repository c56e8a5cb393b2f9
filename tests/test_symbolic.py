"""Size expressions as sympy expressions (compiler/dialects/symbolic.py, size_expr.py): parsing torch's function
names, canonical printing, compiled evaluation, proofs of size equalities from bounds and export's assertions,
and the CPU lowering proving a reshape's regrouping from them (no copy, one size-generic kernel)."""

from __future__ import annotations

import pytest
import sympy
import torch

from solder.backends.cpu import symdims
from solder.compiler import ir
from solder.compiler.dialects import symbolic

ENV = {"s0": 7, "s1": 3}


@pytest.mark.parametrize("text, value", [
    ("s0", 7), ("2*s0", 14), ("s0 - 1", 6), ("s0*s1 + 1", 22), ("s0**2", 49),
    ("FloorDiv(s0, 2)", 3), ("(s0//2)", 3), ("s0 // 2", 3), ("CleanDiv(s0, 7)", 1), ("CeilDiv(s0, 2)", 4),
    ("Mod(s0, 3)", 1), ("PythonMod(s0, 3)", 1), ("s0 % 3", 1), ("ModularIndexing(s0, 2, 2)", 1),
    ("Identity(s1)", 3),
    ("Max(s0, 9)", 9), ("max(s0, s1)", 7), ("Min(s0, s1, 5)", 3), ("min(s0, 2)", 2),
    ("TruncToInt(IntTrueDiv(s0, 2))", 3), ("FloorToInt(s0)", 7), ("CeilToInt(IntTrueDiv(s0, 2))", 4),
    ("IntTrueDiv(s0, 2)", 3.5), ("Abs(s1 - s0)", 4),
    ("Eq(Mod(s0, 2), 0)", False), ("Ne(s0, 1)", True), ("Lt(s1, s0)", True), ("Le(s0, 7)", True),
    ("Gt(s1, s0)", False), ("Ge(s1, 3)", True), ("StrictLessThan(s0, 8)", True), ("GreaterThan(s0, 8)", False),
    ("And(Ne(s0, 2), s1 < 4)", True), ("Or(Eq(s0, 2), Eq(s1, 2))", False), ("Not(Eq(s0, 2))", True),
    ("2 <= s1 <= 5", True), ("((s0) % 2) == 0", False), ("(s0 > 2) and (s1 == 3)", True), ("True", True),
])
def test_size_expressions_evaluate_with_integer_semantics(text, value):
    got = symbolic.evaluate(text, ENV)
    assert got == value and type(got) is type(value)
    assert symbolic.evaluate(symbolic.expr(text), ENV) == value  # the sympy form evaluates alike


def test_floor_division_and_modulo_round_toward_negative_infinity_as_python():
    env = {"s0": 3}
    assert symbolic.evaluate("FloorDiv(s0 - 10, 4)", env) == -2
    assert symbolic.evaluate("Mod(s0 - 10, 4)", env) == 1
    assert symbolic.evaluate("CeilDiv(s0 - 10, 4)", env) == -1


@pytest.mark.parametrize("text, canonical", [
    ("s0", "s0"), ("2*s0", "2*s0"), ("s0 - 1", "s0 - 1"), ("s1*s0", "s0*s1"), ("FloorDiv(s0, 2)", "(s0//2)"),
    ("FloorDiv(s0 + 1, 2)", "((s0 + 1)//2)"), ("PythonMod(s0, 2)", "Mod(s0, 2)"), ("max(3, s0)", "Max(3, s0)"),
    ("CeilDiv(s0, 4)", "((s0 + 3)//4)"), ("FloorDiv(FloorDiv(s0, 2), 4)", "(s0//8)"), ("Mod(2*s0 + 5, 2)", "1"),
    ("FloorDiv(2*s0 + 4, 2)", "s0 + 2"), ("FloorDiv(64*s0, 128)", "(s0//2)"), ("Eq(Mod(s0, 2), 0)",
                                                                                 "Eq(Mod(s0, 2), 0)"),
])
def test_expressions_print_canonically_and_parse_back(text, canonical):
    e = symbolic.expr(text)
    assert isinstance(e, sympy.Basic)
    assert symbolic.to_str(e) == canonical
    assert symbolic.expr(canonical) == e
    assert symbolic.expr(text) is e  # parsed once, cached


def test_size_symbols_are_nonnegative_integers():
    s0 = symbolic.expr("s0")
    assert s0.is_integer and s0.is_nonnegative
    assert symbolic.simplify("FloorDiv(2*s0, 2)") == s0
    assert symbolic.simplify("Max(s0, 0)") == s0


@pytest.mark.parametrize("text", ["s0.size", "s0[1]", "__import__('os')", "'abc'", "f(s0)", "s0 +", "2**99999999999",
                                  "s0\x00", "s0 + " * 2000])
def test_what_is_not_a_size_expression_is_refused(text):
    with pytest.raises(symbolic.ShapeBindError, match="size expression"):
        symbolic.expr(text)
    with pytest.raises(symbolic.ShapeBindError, match="size expression"):
        symbolic.evaluate(text, ENV)


def test_an_unbound_symbol_is_a_bind_error():
    with pytest.raises(symbolic.ShapeBindError, match=r"cannot evaluate the size expression '2\*s9'"):
        symbolic.evaluate("2*s9", ENV)


def test_compiled_evaluation_is_cached_per_expression():
    symbolic.evaluate("3*s0 + s1", ENV)
    hits = symbolic._compiled.cache_info().hits
    for _ in range(5):
        assert symbolic.evaluate("3*s0 + s1", ENV) == 24
    assert symbolic._compiled.cache_info().hits == hits + 5


EVEN = ("Eq(Mod(s0, 2), 0)",)
BOUNDS = (("s0", 2, 512),)


@pytest.mark.parametrize("claim, bounds, assumes, want", [
    ("Eq(s0*s1, s1*s0)", (), (), True),
    ("Eq(s0 + s0, 2*s0)", (), (), True),
    ("Eq(s0, s0 + 1)", (), (), False),
    ("Ne(s0, s0 + 1)", (), (), True),
    ("Eq(64*s0, 128*FloorDiv(s0, 2))", BOUNDS, EVEN, True),  # [s0, 64] -> [s0 // 2, 128]
    ("Eq(64*s0, 128*FloorDiv(s0, 2))", BOUNDS, (), None),  # odd s0: not provable either way
    ("Eq(s0, 2*(s0//2))", BOUNDS, ("Eq(PythonMod(s0, 2), 0)",), True),
    ("Eq(64*s0, 128*FloorDiv(s0, 2))", (), ("Eq(s0, 2*s1)",), True),  # s0 = 2*s1 symbolically
    ("Eq(Max(s0, 1), s0)", BOUNDS, (), True),  # s0 >= 2
    ("Eq(Max(s0, 1), s0)", (), (), None),  # s0 may be 0
    ("Eq(s0, 5)", (("s0", 5, 5),), (), True),  # fixed by its bounds
    ("s0 > 1", BOUNDS, (), True),
    ("s0 > 2", BOUNDS, (), None),
    ("s0 + 1 > 0", (), (), True),
    ("Lt(s0 - 1, s0)", (), (), True),
])
def test_prove_decides_size_relations_from_bounds_and_assumptions(claim, bounds, assumes, want):
    assert symbolic.prove(claim, bounds, assumes) is want


def test_equal_reads_the_facts_of_a_function():
    fn = _module(_RESHAPE_IR).ops.first
    bounds, assumes = symbolic.facts(fn)
    assert bounds == (("s0", 2, 512),) and assumes == ("Eq(Mod(s0, 2), 0)",)
    assert symbolic.equal("s0*64", "FloorDiv(s0, 2)*128", bounds, assumes)
    assert not symbolic.equal("s0*64", "FloorDiv(s0, 2)*128", bounds)
    assert symbolic.equal(sympy.Integer(6), 6) and not symbolic.equal("s0", "s0 + 1")


def test_rename_substitutes_symbols_at_once_and_folds_constants():
    text = """builtin.module {
  func.func @forward(%x: tensor<?x?xf32, ["s70", "s3"]>) -> tensor<?xf32, ["s3*s70"]>
      attributes {graph.symbols = {s70 = array<i64: 2, 64, 4>}, graph.assumes = ["Eq(Mod(s70, 2), 0)"]} {
    %r = graph.reshape %x : tensor<?x?xf32, ["s70", "s3"]> -> tensor<?xf32, ["s3*s70"]>
    func.return %r : tensor<?xf32, ["s3*s70"]>
  }
}"""
    m = _module(text)
    symbolic.rename(m, {"s70": "s0", "s3": "8"})
    fn = m.ops.first
    assert [str(t) for t in fn.function_type.inputs.data] == ['tensor<?x8xf32, ["s0"]>']
    assert str(fn.function_type.outputs.data[0]) == 'tensor<?xf32, ["8*s0"]>'
    assert symbolic.assumes(fn) == ["Eq(Mod(s0, 2), 0)"]


_RESHAPE_IR = """builtin.module {
  func.func @forward(%x: tensor<?x64xf32, ["s0"]>) -> (tensor<?x2x64xf32, ["FloorDiv(s0, 2)"]>)
      attributes {graph.symbols = {s0 = array<i64: 2, 512, 8>}ASSUMES} {
    %a = graph.neg %x : tensor<?x64xf32, ["s0"]> -> tensor<?x64xf32, ["s0"]>
    %r = graph.reshape %a : tensor<?x64xf32, ["s0"]> -> tensor<?x2x64xf32, ["FloorDiv(s0, 2)"]>
    %b = graph.neg %r : tensor<?x2x64xf32, ["FloorDiv(s0, 2)"]> -> tensor<?x2x64xf32, ["FloorDiv(s0, 2)"]>
    func.return %b : tensor<?x2x64xf32, ["FloorDiv(s0, 2)"]>
  }
}"""


def _module(text: str, even: bool = True):
    return ir.parse(text.replace("ASSUMES", ', graph.assumes = ["Eq(Mod(s0, 2), 0)"]' if even else ""))


def test_regroup_is_proved_from_export_assertions_not_sampled():
    syms = {"s0": symbolic.Symbol("s0", 2, 512, 8)}
    even = symdims.sample_bindings(syms, ["Eq(Mod(s0, 2), 0)"])
    assert even and all(env["s0"] % 2 == 0 for env in even)  # the samples meet the assertion too
    src, dst = ("s0", 64), ("FloorDiv(s0, 2)", 2, 64)
    assert symdims.regroup(src, dst, even) == ("expand", [[0, 1], [2]])
    assert symdims.regroup(dst, src, even) == ("collapse", [[0, 1], [2]])
    assert symdims.regroup(src, dst, symdims.Samples()) is None  # no samples: only the proof could tell
    odd = symdims.sample_bindings(syms)
    assert any(env["s0"] % 2 for env in odd) and symdims.regroup(src, dst, odd) is None
    assert symdims.regroup(("s0", "s1", 8), ("s0*s1", 8), symdims.Samples()) == ("collapse", [[0, 1], [2]])


def test_size_arithmetic_is_emitted_as_index_ops():
    lines: list[str] = []

    def emit(rhs):
        lines.append(rhs)
        return f"%v{len(lines)}"
    ix = symdims.IndexExprs(lambda n: emit(f"arith.constant {n}"), lambda k, a, b: emit(f"arith.{k} {a}, {b}"),
                            lambda name: f"%sym_{name}")
    assert ix.value("FloorDiv(s0, 2)") == ix.value("(s0//2)")  # one expression, emitted once
    ix.value("CeilDiv(s1, 4) + Mod(s0, 3)")  # CeilDiv is (s1 + 3) // 4
    ops = [ln.split()[0] for ln in lines]
    assert ops.count("arith.floordivsi") == 2 and ops.count("arith.remsi") == 1
    with pytest.raises(symdims.SymbolicUnsupported, match="as index arithmetic"):
        ix.value("IntTrueDiv(s0, 3)")
    assert symdims.product((2, "s0", "s1")) == "2*s0*s1" and symdims.product((2, 3)) == 6
    assert symdims.shape_fn(("FloorDiv(s0, 2)", 4, "s0*s1"))(ENV) == (3, 4, 21)


def test_cpu_reshape_proved_by_an_export_assertion_reads_its_input_in_place():
    """[s0, 64] -> [s0 // 2, 2, 64] with Eq(Mod(s0, 2), 0): one size-generic program whose reshape is an
    expand_shape of the kernel's argument (no copy); without the assertion it is proved by nothing and the
    reshape goes through a flattened copy. Both are right at every even size."""
    from solder.backends.cpu.backend import CpuBackend

    for even in (True, False):
        prog = CpuBackend().lower(_module(_RESHAPE_IR, even))
        assert prog.sizes is None and "size-generic" in prog.dynamic and prog.fallbacks == []
        in_place = "tensor.expand_shape %a0 [[0, 1], [2]]" in prog.source
        assert in_place is even, prog.source
        for s0 in (8, 2, 30):
            x = torch.randn(s0, 64)
            (y,) = prog([x])
            torch.testing.assert_close(y, x.reshape(s0 // 2, 2, 64))


def test_index_ranges_are_proved_without_samples():
    """A read of [1, s0) through a dim of s0 is proved in bounds from the expressions alone; one past the end
    is refused, and a range sympy cannot decide is checked at the samples."""
    none = symdims.Samples()
    assert symdims.in_bounds(1, 1, "s0 - 1", "s0", none)
    assert not symdims.in_bounds(1, 1, "s0", "s0", none)
    assert symdims.in_bounds(2, 2, "s0 - 2", "2*s0", none)
    syms = {"s0": symbolic.Symbol("s0", 2, 512, 8), "s1": symbolic.Symbol("s1", 2, 512, 4)}
    samples = symdims.sample_bindings(syms)
    assert not symdims.in_bounds(0, 1, "s1", "s0", none)  # undecided, nothing sampled
    assert symdims.in_bounds(0, 1, "s1", "s0", samples) is all(e["s1"] <= e["s0"] for e in samples)


def test_cpu_reshape_halving_a_symbol_is_one_generic_program(monkeypatch):
    """[s0, 64] -> [s0 // 2, 128] under Eq(Mod(s0, 2), 0): one size-generic program, nothing compiled per size,
    right at every even size (with the reshape done in the kernel from the `index` sizes)."""
    from solder.backends.cpu import jit
    from solder.backends.cpu.backend import CpuBackend

    text = _RESHAPE_IR.replace("?x2x64xf32", "?x128xf32")
    calls: list[str] = []
    real = jit.compile_mlir
    monkeypatch.setattr(jit, "compile_mlir", lambda t, entry, **kw: calls.append(entry) or real(t, entry, **kw))
    prog = CpuBackend().lower(_module(text))
    n = len(calls)
    assert prog.sizes is None and "compiled once for every size" in prog.dynamic and prog.fallbacks == []
    assert all(k["route"] == "mlir (size-generic)" for k in prog.kernels), prog.kernels
    assert "arith.floordivsi %sym_s0" in prog.source
    for s0 in (8, 2, 30, 512):
        x = torch.randn(s0, 64)
        (y,) = prog([x])
        torch.testing.assert_close(y, x.reshape(s0 // 2, 128))
    assert len(calls) == n
