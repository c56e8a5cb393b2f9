"""The CPU backend's MLIR builder (backends/cpu/mlir_builder.py): xDSL ops, verified, printed for MLIR."""

from __future__ import annotations

import pytest
import torch
from torch_mlir import ir as mlir_ir
from xdsl.dialects.builtin import f32

from solder.backends.cpu import attention, jit, kernels
from solder.backends.cpu import lower as L
from solder.backends.cpu import mlir_builder as M
from solder.backends.cpu.attention import AttentionSpec
from solder.compiler.errors import SolderError


def _parses(text: str) -> None:
    with mlir_ir.Context():
        mlir_ir.Module.parse("module {\n" + text + "\n}")


def _malformed_kernel() -> L.FuncBuilder:
    """A kernel whose body adds an i32 to an f32: a lowering bug the verifier must catch."""
    fb = L.FuncBuilder("bad")
    x = fb.arg((4,), "f32")
    wrong = L.node((4,), "f32", lambda b, a, n: b.em.ir.bin("addf", a[0], b.em.iconst(1)), x)
    fb.store([(wrong, fb.arg((4,), "f32", writable=True))])
    return fb


def test_malformed_kernel_fails_in_the_verifier_before_mlir(monkeypatch):
    def no_mlir(*args, **kwargs):
        raise AssertionError("MLIR was invoked on a kernel that does not verify")
    monkeypatch.setattr(jit, "compile_mlir", no_mlir)
    monkeypatch.setattr(mlir_ir.Module, "parse", no_mlir)
    with pytest.raises(M.KernelVerifyError, match=r"@bad does not verify .*'arith.addf' \(f32, i32 -> f32\)") as e:
        _malformed_kernel().text()
    assert isinstance(e.value, SolderError)


def test_lowered_kernel_is_xdsl_printed_and_parses():
    fb = L.FuncBuilder("k0")
    x, y = fb.arg((8, 32), "f32"), fb.arg((32,), "f32")
    s = L.node((8, 32), "f32", lambda b, a, n: b.em.exp(b.em.add(a[0], a[1])), x, y)
    fb.store([(s, fb.arg((8, 32), "f32", writable=True))])
    text = fb.text()
    assert "func.func @k0(%a0_m: memref<8x32xf32>, %a1_m: memref<32xf32>, %a2_m: memref<8x32xf32>)" in text
    assert "affine_map<(d0, d1) -> (d1)>" in text and "attrs =  {solder.k0.root, solder.k0.g1}" in text
    _parses(text)


def test_float_constants_are_the_f32_values_mlir_would_hold():
    f, top = M.kernel_func("c", [])
    for i, v in enumerate((0.7978845608028654, float("-inf"))):
        top.const(v, f32, f"c{i}")
    top.insert(M.func.ReturnOp())
    text = M.finish(f)
    assert "0.797884583 : f32" in text and "0xff800000 : f32" in text
    _parses(text)


def test_sibling_loops_reuse_names_as_mlir_allows():
    """Two sibling loops both print `%j` (xDSL's printer would number the second `%j_1`)."""
    f, top = M.kernel_func("loops", [("n", M.INDEX)])
    n = f.body.block.args[0]
    c0, c1 = top.const(0, M.INDEX, "c0"), top.const(1, M.INDEX, "c1")
    for _ in range(2):
        _, body, _ = top.for_(c0, n, c1, "j")
        body.yield_()
    top.insert(M.func.ReturnOp())
    text = M.finish(f)
    assert text.count("scf.for %j = %c0 to %n step %c1") == 2
    _parses(text)


def test_vector_ops_xdsl_lacks_print_as_mlir_parses():
    f, top = M.kernel_func("vec", [("x", M.memref_t((8,), "f32"))])
    x = f.body.block.args[0]
    c0 = top.const(0, M.INDEX, "c0")
    v = top.vload(M.vector_t(8, "f32"), x, [c0], "v")
    lim = top.const(2.0, M.vector_t(8, "f32"), "lim")
    m = top.cmpf("olt", v, lim, "m")
    n = top.cast("fptosi", v, M.vector_t(8, "i32"), "n")
    k = top.cmpi("slt", n, top.const(list(range(8)), M.vector_t(8, "i32"), "iota"), "k")
    both = top.bin("andi", m, k, "both")
    top.vstore(top.select(both, v, lim, "s"), x, [c0])
    top.insert(M.func.ReturnOp())
    text = M.finish(f)
    assert "%m = arith.cmpf olt, %v, %lim : vector<8xf32>" in text
    assert "%n = arith.fptosi %v : vector<8xf32> to vector<8xi32>" in text
    assert "%s = arith.select %both, %v, %lim : vector<8xi1>, vector<8xf32>" in text
    _parses(text)


@pytest.mark.parametrize("spec", [
    AttentionSpec(1, 4, 100, 64, 2, 100, 64, 0.125, True),
    AttentionSpec(2, 4, 70, 64, 4, 90, 64, 0.125, False, mask="bool", mask_shape=(2, 1, 70, 90), parallel=True),
    AttentionSpec(1, 2, 64, 64, 2, 64, 64, 0.125, True, mask="add", mask_shape=(1, 1, 64, 64), parallel=True,
                  generic=True),
], ids=["causal-gqa", "bool-mask-forall", "generic"])
def test_attention_kernels_verify_and_parse(spec):
    _parses(attention.emit(spec, "attn"))


def test_hand_assembled_kernel_runs(tmp_path):
    text, entry = kernels.softmax(4, 32)
    k = jit.compile_mlir(text, entry, cache_dir=tmp_path)
    args = kernels.example_args("softmax", 4, 32)
    k(*args)
    torch.testing.assert_close(args[-1], kernels.reference("softmax", *args[:-1]))

