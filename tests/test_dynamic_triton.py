"""The Triton backend lowers a dynamic module (`?` dims) once: its generated kernels take their sizes as
arguments, and one Program serves every binding of the shape symbols.

Under TRITON_INTERPRET=1 (the default here) on CPU tensors; with TRITON_INTERPRET=0 on a CUDA GPU the
same tests run the compiled kernels (and CUDA graphs, kept per binding). Each test counts lowerings /
compiles and compares every size with the reference backend or eager, so a backend that lowers per size
or computes a wrong size-generic index fails.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder.backends.reference import ReferenceBackend  # noqa: E402
from solder.backends.triton import codegen  # noqa: E402
from solder.backends.triton.backend import PerSizeKernel, SizeGeneric, TritonBackend, plan_module  # noqa: E402
from solder import compile
from solder.compiler import ir  # noqa: E402
from solder.compiler.dialects.symbolic import ShapeBindError  # noqa: E402
from solder.compiler.targets import get_target  # noqa: E402

INTERPRET = os.environ["TRITON_INTERPRET"] not in ("", "0")
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET=0 and no GPU: the h100 target cannot run here", allow_module_level=True)
DEVICE = "cpu" if INTERPRET else "cuda"
H100 = get_target("h100")

# layer_norm (template), a kernel of add + exp + softmax over the symbolic dim (a row of s0 elements),
# a mean over the symbolic dim (empty at s0 = 0), and a reshape that merges the symbolic dim with a static one
DYNAMIC = """
builtin.module {
  func.func @forward(%w: tensor<16xf32>, %x: tensor<?x16xf32, ["s0"]>, %y: tensor<2x?x16xf32, ["s0"]>)
      -> (tensor<?x16xf32, ["s0"]>, tensor<16xf32>, tensor<?x16xf32, ["2*s0"]>)
      attributes {graph.symbols = {s0 = array<i64: 0, -1, 8>}} {
    %n = graph.layer_norm %x weight %w : tensor<16xf32> {normalized_ndim = 1 : i64, eps = 1.000000e-05 : f64} : tensor<?x16xf32, ["s0"]> -> tensor<?x16xf32, ["s0"]>
    %k = "graph.kernel"(%n, %w) ({
    ^bb0(%a: tensor<?x16xf32, ["s0"]>, %b: tensor<16xf32>):
      %s = graph.add %a, %b : (tensor<?x16xf32, ["s0"]>, tensor<16xf32>) -> tensor<?x16xf32, ["s0"]>
      %e = graph.exp %s : tensor<?x16xf32, ["s0"]> -> tensor<?x16xf32, ["s0"]>
      %p = graph.softmax %e {dim = 0 : i64} : tensor<?x16xf32, ["s0"]> -> tensor<?x16xf32, ["s0"]>
      graph.yield %p : tensor<?x16xf32, ["s0"]>
    }) : (tensor<?x16xf32, ["s0"]>, tensor<16xf32>) -> tensor<?x16xf32, ["s0"]>
    %m = graph.reduce "mean" %x {dims = array<i64: 0>} : tensor<?x16xf32, ["s0"]> -> tensor<16xf32>
    %r = graph.reshape %y : tensor<2x?x16xf32, ["s0"]> -> tensor<?x16xf32, ["2*s0"]>
    %t = graph.tanh %r : tensor<?x16xf32, ["2*s0"]> -> tensor<?x16xf32, ["2*s0"]>
    func.return %k, %m, %t : tensor<?x16xf32, ["s0"]>, tensor<16xf32>, tensor<?x16xf32, ["2*s0"]>
  }
}
"""

# a reshape s0 -> s0 // 2, proved by export's assertion that s0 is even (HALVED: size-generic) or proved by
# nothing without it (PER_SIZE: generated per size)
HALVED = """
builtin.module {
  func.func @forward(%x: tensor<?x4xf32, ["s0"]>, %b: tensor<8xf32>)
      -> (tensor<?x8xf32, ["FloorDiv(s0, 2)"]>, tensor<?xf32, ["s0"]>)
      attributes {graph.symbols = {s0 = array<i64: 2, 64, 6>}, graph.assumes = ["Eq(Mod(s0, 2), 0)"]} {
    %k = "graph.kernel"(%x, %b) ({
    ^bb0(%a: tensor<?x4xf32, ["s0"]>, %c: tensor<8xf32>):
      %r = graph.reshape %a : tensor<?x4xf32, ["s0"]> -> tensor<?x8xf32, ["FloorDiv(s0, 2)"]>
      %s = graph.add %r, %c : (tensor<?x8xf32, ["FloorDiv(s0, 2)"]>, tensor<8xf32>) -> tensor<?x8xf32, ["FloorDiv(s0, 2)"]>
      %e = graph.sigmoid %s : tensor<?x8xf32, ["FloorDiv(s0, 2)"]> -> tensor<?x8xf32, ["FloorDiv(s0, 2)"]>
      graph.yield %e : tensor<?x8xf32, ["FloorDiv(s0, 2)"]>
    }) : (tensor<?x4xf32, ["s0"]>, tensor<8xf32>) -> tensor<?x8xf32, ["FloorDiv(s0, 2)"]>
    %m = graph.reduce "sum" %x {dims = array<i64: 1>} : tensor<?x4xf32, ["s0"]> -> tensor<?xf32, ["s0"]>
    func.return %k, %m : tensor<?x8xf32, ["FloorDiv(s0, 2)"]>, tensor<?xf32, ["s0"]>
  }
}
"""
PER_SIZE = HALVED.replace(', graph.assumes = ["Eq(Mod(s0, 2), 0)"]', "")


# layout ops over a symbolic dim as index arithmetic: a gather with s0 ids, a concat along s0 (offsets are
# size arguments), a permute and a slice starting at 1
LAYOUT = """
builtin.module {
  func.func @forward(%x: tensor<?x8xf32, ["s0"]>, %emb: tensor<32x8xf32>, %ids: tensor<?xi64, ["s0"]>)
      -> (tensor<?x8xf32, ["2*s0"]>, tensor<8x?xf32, ["s0 - 1"]>)
      attributes {graph.symbols = {s0 = array<i64: 2, -1, 5>}} {
    %e = graph.gather %emb, %ids {dim = 0 : i64} : (tensor<32x8xf32>, tensor<?xi64, ["s0"]>) -> tensor<?x8xf32, ["s0"]>
    %c = graph.concat %x, %e {dim = 0 : i64} : (tensor<?x8xf32, ["s0"]>, tensor<?x8xf32, ["s0"]>) -> tensor<?x8xf32, ["2*s0"]>
    %n = graph.neg %c : tensor<?x8xf32, ["2*s0"]> -> tensor<?x8xf32, ["2*s0"]>
    %p = graph.permute %x {perm = array<i64: 1, 0>} : tensor<?x8xf32, ["s0"]> -> tensor<8x?xf32, ["s0"]>
    %l = graph.slice %p {dim = 1 : i64, start = 1 : i64, end = 9223372036854775807 : i64, step = 1 : i64} : tensor<8x?xf32, ["s0"]> -> tensor<8x?xf32, ["s0 - 1"]>
    %t = graph.exp %l : tensor<8x?xf32, ["s0 - 1"]> -> tensor<8x?xf32, ["s0 - 1"]>
    func.return %n, %t : tensor<?x8xf32, ["2*s0"]>, tensor<8x?xf32, ["s0 - 1"]>
  }
}
"""


def _counting_compiles(monkeypatch) -> list[str]:
    """Every module of generated kernels compiled from now on (the source text of each)."""
    seen: list[str] = []
    real = codegen.compile_source

    def counted(text):
        seen.append(text)
        return real(text)

    monkeypatch.setattr(codegen, "compile_source", counted)
    return seen


def _check_sizes(program, text: str, shapes_of, sizes, atol=1e-5):
    ref = ReferenceBackend().lower(ir.parse(text))
    gen = torch.Generator().manual_seed(0)
    for n in sizes:
        args = [torch.randint(0, 32, s[1:], generator=gen) if s[0] == "ids" else torch.randn(s, generator=gen)
                for s in shapes_of(n)]
        want = ref(args)
        got = program([a.to(DEVICE) for a in args])
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.shape == b.shape, (n, a.shape, b.shape)
            torch.testing.assert_close(a.cpu(), b, atol=atol, rtol=1e-4, equal_nan=True, msg=f"s0={n}")


def test_one_lowering_serves_every_size(monkeypatch):
    compiled = _counting_compiles(monkeypatch)
    program = TritonBackend().lower(ir.parse(DYNAMIC), H100)
    assert len(compiled) == 1, "the kernels of a dynamic module are compiled once, at lowering"
    steps = program.run.steps
    generic = [s for s in steps if isinstance(s.fn, SizeGeneric)]
    assert len(generic) == 3 and not any(isinstance(s.fn, PerSizeKernel) for s in steps)
    assert "S0" in program.source and "def launch_k0(in0, in1, out0, S0)" in program.source
    assert program.sizes is None and "one lowering serves every size of s0" in program.dynamic
    # 8 and 3 run three times each: on the GPU the third call of a size replays its CUDA graph
    _check_sizes(program, DYNAMIC, lambda n: [(16,), (n, 16), (2, n, 16)], (8, 1, 3, 37, 200, 8, 3, 8, 3))
    assert len(compiled) == 1, "a new size compiled kernels again"
    assert len(program.run.instances) == 5  # buffers (and CUDA graphs) per binding: 8, 1, 3, 37, 200


def test_layout_ops_over_a_symbolic_dim_are_size_generic(monkeypatch):
    compiled = _counting_compiles(monkeypatch)
    program = TritonBackend().lower(ir.parse(LAYOUT), H100)
    assert program.sizes is None and "generated per size" not in program.dynamic
    kernels = [s for s in program.run.steps if s.kind != "view"]  # gather, concat, neg, exp (unfused)
    assert len(kernels) == 4 and all(isinstance(s.fn, SizeGeneric) for s in kernels)
    _check_sizes(program, LAYOUT, lambda n: [(n, 8), (32, 8), ("ids", n)], (5, 2, 9, 30))
    assert len(compiled) == 1


def test_a_size_where_the_kernel_does_not_apply_runs_the_reference_ops():
    """s0 = 0 (an empty row: the mean is NaN) and s0 > 16384 (longer than a row kernel holds): the size-generic
    launcher declines and the group runs op by op through the reference backend, into the same buffers."""
    program = TritonBackend().lower(ir.parse(DYNAMIC), H100)
    calls = []
    for s in program.run.steps:
        if isinstance(s.fn, SizeGeneric):
            ref = s.fn.reference

            def counted(tensors, env, ref=ref, name=s.name):
                calls.append((name, env["s0"]))
                return ref(tensors, env)

            counted.outs = ref.outs
            s.fn.reference = counted
    _check_sizes(program, DYNAMIC, lambda n: [(16,), (n, 16), (2, n, 16)], (5,))
    assert calls == []
    _check_sizes(program, DYNAMIC, lambda n: [(16,), (n, 16), (2, n, 16)], (0, 16385))
    # the softmax and the mean reduce over s0: both decline at 0 and at 16385; the tanh never does
    assert sorted(calls) == [("k0", 0), ("k0", 16385), ("k1", 0), ("k1", 16385)]


def test_out_of_bounds_sizes_are_refused():
    program = TritonBackend().lower(ir.parse(HALVED), H100)
    with pytest.raises(ShapeBindError, match="outside the compiled range"):
        program([torch.randn(66, 4, device=DEVICE), torch.randn(8, device=DEVICE)])
    with pytest.raises(ShapeBindError, match="Mod"):
        program([torch.randn(5, 4, device=DEVICE), torch.randn(8, device=DEVICE)])


def test_a_reshape_export_assertions_prove_is_size_generic(monkeypatch):
    """[s0, 4] -> [s0 // 2, 8] with Eq(Mod(s0, 2), 0): sympy proves the grouping, so the kernel is indexed
    symbolically, compiled once at lowering and right at every even size."""
    assert plan_module(ir.parse(HALVED), H100).per_size == []
    compiled = _counting_compiles(monkeypatch)
    program = TritonBackend().lower(ir.parse(HALVED), H100)
    assert len(compiled) == 1 and program.sizes is None and "generated per size" not in program.dynamic
    _check_sizes(program, HALVED, lambda n: [(n, 4), (8,)], (6, 2, 10, 64))
    assert len(compiled) == 1 and program.sizes is None


def test_a_kernel_that_cannot_be_size_generic_is_generated_per_size(monkeypatch):
    text = PER_SIZE
    plan = plan_module(ir.parse(text), H100)
    assert [name for name, _ in plan.per_size] == ["k0"], plan.per_size
    assert all("regroups symbolic dims" in why for _, why in plan.per_size)
    compiled = _counting_compiles(monkeypatch)
    program = TritonBackend().lower(ir.parse(text), H100)
    assert len(compiled) == 1
    assert "generated per size: k0 (a reshape" in program.dynamic
    _check_sizes(program, text, lambda n: [(n, 4), (8,)], (6, 2, 10, 6))
    # the sum over the static dim stays size-generic; k0 compiles once for each new size (6 was shown at
    # lowering, at its example size, but compiles its own instance on first use)
    assert program.sizes == [{"s0": 6}, {"s0": 2}, {"s0": 10}]
    assert len(compiled) == 1 + 3


class Block(torch.nn.Module):
    """Layer norm, a linear layer, GELU, a reshape into heads and a softmax over the sequence."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.fc = torch.nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = torch.nn.functional.gelu(self.fc(self.norm(x)))
        h = h.reshape(b, t, 4, d // 4).transpose(1, 2)
        return torch.softmax(h, dim=2).sum(-1) + x.mean(-1, keepdim=True).transpose(1, 2)


def test_compile_dynamic_true_one_capture_one_lowering_every_size(monkeypatch):
    torch.manual_seed(0)
    model = Block().eval().to(DEVICE)
    compiled = _counting_compiles(monkeypatch)
    c = compile(model, target="h100", dynamic=True)
    for b, t in ((2, 8), (3, 5), (2, 13), (4, 2), (2, 8)):
        x = torch.randn(b, t, 16, device=DEVICE)
        with torch.no_grad():
            torch.testing.assert_close(c(x), model(x), atol=1e-4, rtol=1e-4)
    assert c.compile_count == 1 and len(compiled) == 1
    sp = next(iter(c.specializations.values()))
    assert sp.program.sizes is None
    text = c.explain()
    assert "one lowering serves every size of s0, s1" in text and "generated per size" not in text


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_zoo_models_with_a_dynamic_sequence_length(name, monkeypatch):
    """The default policy: the first length compiles static, the second dynamic; later lengths reuse it."""
    import torch.utils._pytree as pytree

    from examples.models import get

    entry = get(name)
    model, args, kwargs = entry.build()
    model = model.to(DEVICE)
    args, kwargs = pytree.tree_map(lambda x: x.to(DEVICE) if isinstance(x, torch.Tensor) else x, (args, kwargs))
    c = compile(model, target="h100")
    tol = (max(entry.atol, 1e-5), max(entry.rtol, 1e-4)) if INTERPRET else (2e-3, 2e-3)
    torch.backends.cuda.matmul.allow_tf32 = False
    compiled = None
    for i, t in enumerate((9, 12, 16, 5, 12)):
        if i == 2:
            compiled = _counting_compiles(monkeypatch)
        a, k = pytree.tree_map(lambda x, t=t: x[:, :t] if isinstance(x, torch.Tensor) else x, (args, kwargs))
        with torch.no_grad():
            torch.testing.assert_close(c(*a, **k), model(*a, **k), atol=tol[0], rtol=tol[1])
    assert c.compile_count == 2
    assert compiled == [], "a later length compiled kernels"
    dyn = list(c.specializations.values())[-1]
    assert dyn.binding is not None and dyn.program.sizes is None
    assert "one lowering serves every size of s0" in dyn.program.dynamic


def test_a_constant_of_dynamic_size_is_made_once_per_binding_and_device():
    """On the GPU a host-to-device copy per call cannot be captured in a CUDA graph: the capture fails and
    every call launches each step from Python."""
    from solder.backends.reference import OPS
    from solder.backends.triton.backend import view_fn

    module = ir.parse("""
builtin.module {
  func.func @forward(%x: tensor<?xf32, ["s0"]>) -> tensor<?xf32, ["s0"]> attributes {graph.symbols = {s0 = array<i64: 1, -1, 4>}} {
    %a = graph.arange {start = 0 : i64, step = 2 : i64} : tensor<?xf32, ["s0"]>
    %y = graph.add %x, %a : (tensor<?xf32, ["s0"]>, tensor<?xf32, ["s0"]>) -> tensor<?xf32, ["s0"]>
    func.return %y : tensor<?xf32, ["s0"]>
  }
}""")
    op = next(o for o in module.walk() if o.name == "graph.arange")
    made = []
    real = OPS["graph.arange"](op)

    def counted(env):
        made.append(env["s0"])
        return real(env=env)

    counted.wants_env = True
    fn, needs_device = view_fn(op)
    fn.make = counted
    assert needs_device and fn.wants_env
    on5, on3 = fn.at({"s0": 5}), fn.at({"s0": 3})
    for _ in range(3):
        torch.testing.assert_close(on5(torch.device(DEVICE)).cpu(), torch.arange(5) * 2.0)
        torch.testing.assert_close(on3(torch.device(DEVICE)).cpu(), torch.arange(3) * 2.0)
    assert made == [5, 3]
