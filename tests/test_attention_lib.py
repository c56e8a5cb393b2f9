"""The CPU backend's prebuilt size-generic attention kernels (backends/cpu/attention_lib.py): one kernel per
variant serves every shape, read in place through offsets and strides given at the call; numerics against eager
attention written out; a library that lacks a variant, or holds a corrupt entry, falls back to the per-shape
kernel; models whose attention the library covers compile no attention code."""

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from solder.backends.cpu import attention_lib as L
from solder.backends.cpu import attention_plan as A
from solder.backends.cpu import jit
from solder.backends.cpu.attention import AttentionSpec
from solder.backends.cpu.backend import plan_module
from solder import compile as solder_compile
from tests.test_cpu_attention import FusedQKV, _module, _run, eager_attention

D = 32  # the head dim the test library is built for (16 takes 0.7 s per variant to compile, 32 0.2 s)
VARIANTS = [v for v in L.PREBUILT if v.d == D]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpu-lib")
    assert L.build(root, VARIANTS, quiet=True) == len(VARIANTS)
    assert L.build(root, VARIANTS, quiet=True) == 0  # kept, not rebuilt
    return root


@pytest.fixture
def use_library(library, monkeypatch):
    monkeypatch.setattr(L, "library_dir", lambda: library)
    monkeypatch.delenv("SOLDER_CPU_LIB", raising=False)
    L._load.cache_clear()
    yield library
    L._load.cache_clear()


CASES = [  # b, hq, hkv, t, s, causal, mask
    (1, 2, 2, 100, 100, False, None),    # T, S not multiples of the 64 block
    (2, 4, 2, 70, 70, True, None),       # GQA, causal
    (1, 2, 2, 1, 130, False, None),      # one query row
    (2, 2, 2, 33, 65, False, "add"),     # additive padding mask [B, 1, 1, S]
    (1, 3, 3, 50, 50, False, "bool"),    # boolean keep-mask [1, 1, T, S]
]


@pytest.mark.parametrize("b,hq,hkv,t,s,causal,mask", CASES)
def test_generic_kernel_matches_eager(use_library, b, hq, hkv, t, s, causal, mask):
    torch.manual_seed(t + s)
    q, k, v = torch.randn(b, hq, t, D), torch.randn(b, hkv, s, D), torch.randn(b, hkv, s, D)
    m = None
    if mask == "add":
        m = torch.where(torch.rand(b, 1, 1, s) > 0.2, 0.0, float("-inf"))
        m[..., 0] = 0.0
    elif mask == "bool":
        m = torch.rand(1, 1, t, s) > 0.3
        m[..., 0] = True
    args = (q, k, v) if m is None else (q, k, v, m)
    out, prog = _run(_module(*args, scale=D ** -0.5, causal=causal), *args)
    assert prog.kernels[0]["route"].startswith(A.LIB_ROUTE), prog.kernels[0]["route"]
    torch.testing.assert_close(out, eager_attention(q, k, v, m, scale=D ** -0.5, causal=causal), atol=2e-5, rtol=2e-5)


def test_two_bindings_of_one_kernel_at_different_sizes(use_library):
    """Bindings own their descriptors: calls at one size do not disturb the other's."""
    spec = AttentionSpec(b=1, hq=2, t=40, d=D, hkv=2, s=40, dv=D, scale=0.2, causal=True)
    other = dataclasses.replace(spec, b=2, t=90, s=90)
    calls = [A._dense_call(sp, L.prebuilt(sp)) for sp in (spec, other)]
    for _ in range(2):
        for sp, call in zip((spec, other), calls):
            q, k, v = (torch.randn(sp.b, 2, sp.t, D) for _ in range(3))
            ref = eager_attention(q, k, v, scale=0.2, causal=True)
            torch.testing.assert_close(call(q, k, v), ref, atol=2e-5, rtol=2e-5)


def test_model_reads_head_views_in_place_and_compiles_no_attention(use_library):
    """The zoo's head split (GQA too): the library kernel takes the projection's output with the heads' offsets
    and strides as arguments and writes the merged [B, T, H*Dv] value; the plan has no MLIR module to compile."""
    for kv_heads in (4, 2):
        torch.manual_seed(kv_heads)
        model = FusedQKV(d=128, heads=4, kv_heads=kv_heads).eval()
        x = torch.randn(2, 40, 128)
        cm = solder_compile(model, target="cpu")
        torch.testing.assert_close(cm(x), model(x), atol=2e-5, rtol=2e-5)
        plan = plan_module(next(iter(cm.specializations.values())).imported.module)
        assert [s.route.split(":")[0] for s in plan.steps] == ["library", "library"]
        assert plan.steps[1].route.startswith(A.LIB_ROUTE) and "prebuilt" in plan.steps[1].route
        assert plan.steps[1].ins == plan.steps[0].outs and plan.steps[1].outs == plan.returns
        assert plan.modules() == {}
        assert "prebuilt, size-generic" in cm.explain()


def test_variant_the_library_lacks_gets_the_per_shape_kernel(use_library):
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 20, 24) for _ in range(3))  # head dim 24: not prebuilt
    out, prog = _run(_module(q, k, v, scale=0.2), q, k, v)
    assert prog.kernels[0]["route"].startswith(A.ROUTE)
    torch.testing.assert_close(out, eager_attention(q, k, v, scale=0.2), atol=2e-5, rtol=2e-5)


def test_corrupt_library_entry_is_never_loaded(library, tmp_path, monkeypatch):
    """A damaged entry fails its hash check: the op gets the per-shape kernel, and the answer is right."""
    import shutil

    bad = tmp_path / "lib"
    shutil.copytree(library, bad)
    for f in bad.rglob("*.bin"):
        data = bytearray(f.read_bytes())
        data[-100] ^= 0xFF
        f.write_bytes(bytes(data))
    monkeypatch.setattr(L, "library_dir", lambda: bad)
    L._load.cache_clear()
    try:
        torch.manual_seed(2)
        q, k, v = (torch.randn(1, 2, 30, D) for _ in range(3))
        out, prog = _run(_module(q, k, v, scale=0.2, causal=True), q, k, v)
        assert prog.kernels[0]["route"].startswith(A.ROUTE)
        torch.testing.assert_close(out, eager_attention(q, k, v, scale=0.2, causal=True), atol=2e-5, rtol=2e-5)
    finally:
        L._load.cache_clear()


def test_absent_library(tmp_path, monkeypatch):
    spec = AttentionSpec(b=1, hq=2, t=8, d=D, hkv=2, s=8, dv=D, scale=0.2, causal=False)
    monkeypatch.setattr(L, "library_dir", lambda: tmp_path / "empty")
    L._load.cache_clear()
    assert L.prebuilt(spec) is None and L.dynamic(spec.variant(), 0.2, None) is None


def test_switched_off_library(monkeypatch, tmp_path):
    spec = AttentionSpec(b=1, hq=2, t=8, d=D, hkv=2, s=8, dv=D, scale=0.2, causal=False)
    monkeypatch.setenv("SOLDER_CPU_LIB", "off")
    assert L.library_dir() is None and L.prebuilt(spec) is None and L.dynamic(spec.variant(), 0.2, None) is None
    monkeypatch.setenv("SOLDER_CPU_LIB", str(tmp_path))
    assert L.library_dir().parent == tmp_path


def test_library_dir_is_per_host_and_mlir_build(monkeypatch):
    """Compiled for this CPU's instruction set: another CPU model/flags or MLIR build reads another directory."""
    first = L.fingerprint()
    jit.host_fingerprint.cache_clear()
    monkeypatch.setattr(jit, "_torch_mlir_version", lambda: "another-build")
    try:
        assert L.fingerprint() != first
    finally:
        jit.host_fingerprint.cache_clear()


def test_bind_checks_its_arity():
    spec = dataclasses.replace(VARIANTS[0])
    kern = jit.compile_mlir(A.module(spec, "attn"), "attn", use_cache=False)
    with pytest.raises(jit.CallError, match="bind\\(\\) takes 5 shapes and 21 symbols"):
        kern.bind([(1,)], [])


def test_sdpa_model_matches_with_library(use_library):
    class M(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 3, 45, D) for _ in range(3))
    cm = solder_compile(M().eval(), target="cpu")
    torch.testing.assert_close(cm(q, k, v), M()(q, k, v), atol=2e-5, rtol=2e-5)
    assert "prebuilt, size-generic" in cm.explain()


def test_emit_linalg_shows_the_prebuilt_kernel(use_library):
    """`solder-opt --emit linalg` prints what runs: the prebuilt kernel's MLIR, marked as compiled per install."""
    from solder.backends.cpu.backend import emit_module

    q, k, v = (torch.randn(1, 2, 20, D) for _ in range(3))
    text = emit_module(_module(q, k, v, scale=0.2, causal=True))
    assert "// library: flash attention" in text and "compiled once per install" in text
    assert "func.func @attn(%q_flat: memref<?xf32>" in text and "memref.reinterpret_cast %q_flat" in text
    assert "// opt_level" not in text  # nothing compiled with the module


def test_dynamic_module_calls_the_prebuilt_kernel_per_size(use_library):
    """A dynamic module's attention (sizes known per call only) runs the size-generic kernel, bound once per size."""
    class M(torch.nn.Module):
        def forward(self, q, k, v, m):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m)

    torch.manual_seed(4)
    model = M().eval()
    cm = solder_compile(model, target="cpu")  # the second length makes the sequence dims dynamic
    for t in (17, 40, 17, 70):
        q, k, v = (torch.randn(2, 2, t, D) for _ in range(3))
        m = torch.where(torch.rand(2, 1, 1, t) > 0.2, 0.0, float("-inf"))
        m[..., 0] = 0.0
        torch.testing.assert_close(cm(q, k, v, m), model(q, k, v, m), atol=2e-5, rtol=2e-5)
    dyn = list(cm.specializations.values())[-1]
    assert dyn.program.dynamic
    routes = [k["route"] for k in dyn.program.kernels]
    assert any(r.startswith(A.LIB_ROUTE) and "sizes per call" in r for r in routes), routes


def test_dynamic_module_reads_strided_heads_in_place(use_library):
    """The head split's views reach a dynamic module's attention non-contiguous: their strides go to the kernel
    (no copy), per distinct shape and strides; GQA and the merged output as in the static plan."""
    torch.manual_seed(5)
    model = FusedQKV(d=128, heads=4, kv_heads=2).eval()
    cm = solder_compile(model, target="cpu")
    for t in (20, 33, 20, 50):
        x = torch.randn(2, t, 128)
        torch.testing.assert_close(cm(x), model(x), atol=2e-5, rtol=2e-5)
    dyn = list(cm.specializations.values())[-1]
    assert dyn.program.dynamic
    assert any(k["route"].startswith(A.LIB_ROUTE) for k in dyn.program.kernels)


def test_per_call_binding_copies_nothing_for_strided_inputs(use_library):
    assert L.dynamic((D, D, True, "bool", True, False, 64, 64), 0.2, None) is None  # causal + mask: not prebuilt
    call = L.dynamic((D, D, False, "bool", True, False, 64, 64), 0.2, None)
    torch.manual_seed(6)
    base = torch.randn(2, 30, 3, 2, D)  # [B, T, qkv, H, D]: q, k, v are strided views of it
    q, k, v = (base[:, :, i].transpose(1, 2) for i in range(3))
    keep = torch.rand(2, 1, 1, 30) > 0.3
    keep[..., 0] = True
    keep = keep.expand(2, 2, 30, 30)  # broadcast dims have stride 0
    out = call(q, k, v, keep)
    torch.testing.assert_close(out, eager_attention(q, k, v, keep, scale=0.2), atol=2e-5, rtol=2e-5)
    ((shapes, bound),) = call.bound.items()
    assert shapes[0][1] == q.stride()  # bound to the view's own strides


def test_bf16_inputs_run_on_the_f32_prebuilt_kernel(use_library):
    torch.manual_seed(7)
    q, k, v = (torch.randn(1, 2, 40, D, dtype=torch.bfloat16) for _ in range(3))
    out, prog = _run(_module(q, k, v, scale=0.2, causal=True), q, k, v)
    assert out.dtype == torch.bfloat16 and prog.kernels[0]["route"].startswith(A.LIB_ROUTE)
    ref = eager_attention(q.float(), k.float(), v.float(), scale=0.2, causal=True)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_build_creates_a_library_folder_whose_parents_are_missing(tmp_path):
    """A fresh venv has no share/solder yet: the set-up's build must create it (it failed on a clean clone)."""
    root = tmp_path / "venv" / "share" / "solder" / "cpu-lib" / "fp"
    assert L.build(root, variants=L.PREBUILT[:1], quiet=True) == 1
    assert L.build(root, variants=L.PREBUILT[:1], quiet=True) == 0  # kept, not rebuilt
