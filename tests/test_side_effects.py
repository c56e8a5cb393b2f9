"""In-place writes are never lost: models that mutate their inputs or buffers give eager's outputs AND leave
eager's values in the mutated tensors, call after call, on the cpu target, the reference backend and the
Triton backend (target h100 on CPU tensors runs its kernels under TRITON_INTERPRET=1).

Each model is run eagerly and compiled on twin copies of the same inputs and state, three calls in a row
(state that is read back grows from call to call, so an error that accumulates shows)."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from solder import compile  # noqa: E402
from solder import artifact  # noqa: E402
from solder.compiler.capture import KEEP_WHOLE, capture  # noqa: E402
from solder.compiler.errors import VerifyError  # noqa: E402
from solder.compiler.write_back import WRITES  # noqa: E402

INTERPRET = os.environ["TRITON_INTERPRET"] not in ("", "0")
TARGETS = ["cpu", "reference", pytest.param("h100", marks=pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(), reason="TRITON_INTERPRET=0 and no GPU"))]


class SetItem(torch.nn.Module):
    def forward(self, x):
        x[0] = 5.0
        return x.sum()


class MulInPlace(torch.nn.Module):
    def forward(self, x):
        x.mul_(3)
        return x + 1


class ReturnsMutated(torch.nn.Module):
    def forward(self, x):
        x.mul_(3)
        return x


class CloneThenMutate(torch.nn.Module):
    """`y` is a copy taken before the write: the write must not reach it."""

    def forward(self, x):
        y = x.clone()
        x.add_(1)
        return y, x * 2


class ViewBeforeWrite(torch.nn.Module):
    """Eager's `v` is a view of `x`: it shows the write made after it was taken."""

    def forward(self, x):
        v = x[1:]
        x.mul_(2)
        return v + 0, x.sum()


class BufferCopy(torch.nn.Module):
    def __init__(self, persistent: bool = True):
        super().__init__()
        self.register_buffer("buf", torch.zeros(3), persistent=persistent)

    def forward(self, x):
        self.buf.copy_(x)
        return self.buf * 2


class Counter(torch.nn.Module):
    """A buffer read and written every call: its value grows with the number of calls."""

    def __init__(self):
        super().__init__()
        self.register_buffer("n", torch.zeros(2))

    def forward(self, x):
        self.n.add_(x)
        return self.n * 1.5


class KVCache(torch.nn.Module):
    """A KV cache written at a position given as a tensor, with setitem or index_copy_."""

    def __init__(self, index_copy: bool = False):
        super().__init__()
        self.index_copy = index_copy
        self.register_buffer("cache", torch.zeros(2, 6, 4))

    def forward(self, k, pos):
        if self.index_copy:
            self.cache.index_copy_(1, pos, k)
        else:
            self.cache[:, pos] = k
        return torch.softmax(self.cache.sum(-1), -1), self.cache[:, :3].mean(1)


class GraphNet(torch.nn.Module):
    """Two layers each scatter into a fresh `new_zeros` buffer (identical ops that cse must not merge, since
    each buffer is written), and an accumulator buffer reads one of them on every call."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
        self.register_buffer("acc", torch.zeros(5, 4))

    def forward(self, x, idx):
        outs = []
        for layer in (self.l1, self.l2):
            z = x.new_zeros(5, 4)
            z.scatter_add_(0, idx, layer(x))
            outs.append(z)
        self.acc.add_(outs[0])
        return outs[0] * 2 + outs[1], self.acc.sum(0)


def _inputs(model, call: int) -> tuple:
    gen = torch.Generator().manual_seed(call)
    if isinstance(model, KVCache):
        return torch.randn(2, 1, 4, generator=gen), torch.tensor([call % 6])
    if isinstance(model, GraphNet):
        return torch.randn(7, 4, generator=gen), torch.randint(0, 5, (7, 4), generator=gen)
    if isinstance(model, Counter):
        return (torch.randn(2, generator=gen),)
    return (torch.randn(3, generator=gen),)


def _leaves(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_like_eager(model: torch.nn.Module, target: str, calls: int = 3, inputs=_inputs, **options):
    """Eager and compiled on twins: outputs, every input and every buffer equal after each of `calls` calls."""
    model = model.eval()
    twin = copy.deepcopy(model)
    compiled = compile(twin, target=target, **options)
    for call in range(calls):
        xs = inputs(model, call)
        ys = tuple(x.clone() for x in xs)
        with torch.no_grad():
            want, got = model(*xs), compiled(*ys)
        for i, (a, b) in enumerate(zip(_leaves(got), _leaves(want), strict=True)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"call {call} output {i}: {m}")
        for i, (a, b) in enumerate(zip(ys, xs)):
            torch.testing.assert_close(a, b, msg=lambda m: f"call {call}: input {i} after the call: {m}")
        for (name, a), b in zip(twin.named_buffers(), model.buffers()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"call {call}: buffer {name}: {m}")
    return compiled


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("make", [SetItem, MulInPlace, ReturnsMutated, CloneThenMutate, ViewBeforeWrite, BufferCopy,
                                  lambda: BufferCopy(persistent=False), Counter, KVCache,
                                  lambda: KVCache(index_copy=True), GraphNet],
                         ids=["setitem", "mul_", "returns-mutated", "clone-then-mutate", "view-before-write",
                              "buffer-copy_", "non-persistent-buffer", "counter", "kv-setitem", "kv-index_copy_",
                              "graphnet"])
def test_matches_eager_outputs_and_writes(make, target):
    check_like_eager(make(), target)


def test_setitem_reproducer_value():
    """The reported case: 7.0 with x left [5, 1, 1] (the dropped write gave 3.0 and x unchanged)."""
    x = torch.ones(3)
    assert compile(SetItem().eval(), target="cpu")(x).item() == 7.0
    assert x.tolist() == [5.0, 1.0, 1.0]


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_returned_mutated_input_is_the_input_itself(target):
    compiled = compile(ReturnsMutated().eval(), target=target)
    x = torch.ones(3)
    for n in range(1, 4):
        out = compiled(x)
        assert out is x and x.tolist() == [3.0 ** n] * 3


def test_returned_mutated_buffer_is_the_buffer_itself():
    class Bump(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("steps", torch.zeros(2))

        def forward(self, x):
            return self.steps.add_(x)

    model = Bump().eval()
    compiled = compile(model, target="cpu")
    for n in range(1, 3):
        assert compiled(torch.ones(2)) is model.steps and model.steps.tolist() == [float(n)] * 2


def test_torch_compile_backend_writes_back():
    """torch.compile(backend="solder"): Dynamo's graph of a KV-cache update writes the cache like eager."""
    model, twin = KVCache().eval(), KVCache().eval()
    compiled = torch.compile(twin, backend="solder")
    for call in range(3):
        k, pos = _inputs(model, call)
        with torch.no_grad():
            want, got = model(k, pos), compiled(k.clone(), pos.clone())
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(twin.cache, model.cache)


def test_buffer_read_before_its_write_sees_the_old_value():
    class ReadThenWrite(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("prev", torch.zeros(3))

        def forward(self, x):
            out = self.prev + x
            self.prev.copy_(x)
            return out

    check_like_eager(ReadThenWrite(), "cpu", calls=4)


def test_the_ir_marks_write_backs_and_explain_says_so():
    compiled = compile(Counter().eval(), target="cpu")
    compiled(torch.ones(2))
    text = compiled.explain()
    assert f"{WRITES} = 0 : i64" in text
    assert "written back after each call" in text and "buffer n" in text


def test_verify_applies_each_write_once():
    """verify=True compares with eager on the first calls; the buffer still grows by one step per call."""
    model = Counter().eval()
    compiled = compile(model, target="cpu", verify=True)
    for n in range(1, 5):
        compiled(torch.ones(2))
        assert model.n.tolist() == [float(n)] * 2


def test_verify_catches_a_wrong_write_back(monkeypatch):
    """A write-back whose value is wrong (but whose outputs are right) fails verify=True."""
    from solder.compiler import write_back

    real = write_back.apply

    def off_by_one(writes, tensors, results):
        return real(writes, tensors, [r + 1 if i == writes[0][0] else r for i, r in enumerate(results)])

    class WriteOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("buf", torch.zeros(3))

        def forward(self, x):
            self.buf.copy_(x)
            return x * 2

    monkeypatch.setattr(write_back, "apply", off_by_one)
    compiled = compile(WriteOnly().eval(), target="cpu", verify=True)
    with pytest.raises(VerifyError, match="written buffer buf differs from eager"):
        compiled(torch.ones(3))


@pytest.mark.parametrize("target", TARGETS)
def test_dynamic_shapes_write_back(target):
    """dynamic=True: one size-generic compile serves every length and writes back for each."""

    def sized(model, call):
        return (torch.randn(3 + call),)

    compiled = check_like_eager(MulInPlace(), target, calls=3, inputs=sized, dynamic=True)
    assert compiled.compile_count == 1


def test_automatic_dynamic_writes_back():
    """The default shape policy recompiles dynamic on the second length; that compile writes back too."""

    class Cache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("total", torch.zeros(4))

        def forward(self, x):
            self.total.add_(x.sum(0))
            return x * self.total

    compiled = check_like_eager(Cache(), "cpu", calls=4, inputs=lambda m, call: (torch.randn(2 + call, 4),))
    assert compiled.compile_count == 2


def test_saved_artifact_keeps_write_backs(tmp_path):
    compiled = compile(MulInPlace().eval(), target="cpu")
    compiled(torch.ones(3))
    loaded = artifact.load(compiled.save(tmp_path / "m.solder") or tmp_path / "m.solder")
    x = torch.ones(3)
    out = loaded(x)
    assert x.tolist() == [3.0] * 3 and out.tolist() == [4.0] * 3
    loaded(x)
    assert x.tolist() == [9.0] * 3


def test_saved_artifact_writes_its_own_buffers(tmp_path):
    compiled = compile(Counter().eval(), target="cpu")
    compiled(torch.ones(2))
    compiled.save(tmp_path / "c.solder")
    loaded = artifact.load(tmp_path / "c.solder")
    outs = [loaded(torch.ones(2)).tolist() for _ in range(2)]
    assert outs == [[3.0, 3.0], [4.5, 4.5]]  # saved with n = 1, then 2 and 3


def test_functionalizing_keeps_the_high_level_ops_whole():
    """Capture functionalizes a mutating model; linear, layer_norm, softmax, SDPA, ... stay whole (batch_norm
    becomes its no-training form, which the importer takes)."""

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.ln = torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)
            self.conv, self.bn = torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2)
            self.register_buffer("calls", torch.zeros(1))

        def forward(self, x, im):
            self.calls.add_(1)
            y = torch.nn.functional.gelu(self.ln(self.lin(x))) + torch.nn.functional.silu(x)
            y = torch.softmax(y, -1) + torch.log_softmax(y, -1) + torch.nn.functional.rms_norm(y, (8,))
            q = (y @ y.transpose(-1, -2)).matmul(x).view(1, 2, 2, 8)
            return torch.nn.functional.scaled_dot_product_attention(q, q, q), self.bn(self.conv(im))

    from solder.compiler.aten_table import TABLE

    cap = capture(Mixed().eval(), (torch.randn(4, 8), torch.randn(1, 2, 3, 3)), {}, set(TABLE))
    ops = {str(n.target) for n in cap.program.graph.nodes if n.op == "call_function"}
    assert cap.program.graph_signature.buffers_to_mutate  # functionalized
    missing = set(KEEP_WHOLE) - ops - {"aten.batch_norm.default"}
    assert not missing, f"decomposed by functionalization: {sorted(missing)}"
    assert "aten._native_batch_norm_legit_no_training.default" in ops


def test_functional_models_are_not_retraced():
    """No in-place op, no second trace: the capture keeps export's graph as it is."""

    class Plain(torch.nn.Module):
        def forward(self, x):
            return x.relu() + 1

    from solder.compiler.aten_table import TABLE

    cap = capture(Plain().eval(), (torch.randn(3),), {}, set(TABLE))
    assert cap.same_as_input == {} and not cap.program.graph_signature.buffers_to_mutate


def test_an_in_place_extern_is_marked_as_writing():
    """Imported without functionalization (export's raw graph), `index_put_` becomes a `graph.extern` that
    declares the operand it writes, so cse and dce see a write effect, not a pure op."""
    from xdsl.traits import MemoryEffectKind, get_effects

    from solder.compiler import ir
    from solder.compiler.dialects.structure import ExternOp
    from solder.compiler.importer import import_program

    class Put(torch.nn.Module):
        def forward(self, x, i, v):
            return torch.ops.aten.index_put_.default(x.clone(), [i], v)

    ep = torch.export.export(Put(), (torch.zeros(4, 2), torch.tensor([1, 3]), torch.ones(2, 2)), strict=False)
    with pytest.warns(UserWarning, match="index_put_"):
        module = import_program(ep).module
    op = next(o for o in module.walk() if isinstance(o, ExternOp) and "index_put_" in o.callee.data)
    assert op.written_operands() == (0,) and "writes = array<i64: 0>" in ir.print_ir(module)
    assert {e.kind for e in get_effects(op)} == {MemoryEffectKind.READ, MemoryEffectKind.WRITE}


@pytest.mark.speed_guard
def test_speed_guard_trials_write_once():
    """The speed guard's first calls alternate compiled and eager runs (timing them): each call runs one side,
    so the counter still grows by one step per call, and every output matches eager's."""
    model = check_like_eager(Counter(), "cpu", calls=16)
    guard = next(iter(model.specializations.values())).speed
    assert guard is not None and guard.warm == {"compiled": 2, "eager": 2}  # both sides ran


def test_a_written_input_aliasing_another_runs_eagerly():
    """f(x, x) where forward writes its first argument and reads the second: eager reads the write through the
    alias; the compiled function cannot, so that call runs eagerly (with a warning) and matches eager."""

    class WriteThenRead(torch.nn.Module):
        def forward(self, a, b):
            a.add_(1)
            return b * 2

    model = WriteThenRead().eval()
    compiled = compile(model, target="cpu")
    x, y = torch.ones(3), torch.ones(3)
    assert compiled(x, y).tolist() == [2.0] * 3 and x.tolist() == [2.0] * 3
    z = torch.ones(3)
    with pytest.warns(UserWarning, match="shares memory with another"):
        out = compiled(z, z)
    assert out.tolist() == [4.0] * 3 and z.tolist() == [2.0] * 3


WRITES_INTO_ZEROS = """func.func @forward(%i: tensor<3x2xi64>, %s: tensor<3x2xf32>) -> tensor<4x2xf32> {
  %z = graph.constant 0.0 : f64 : tensor<4x2xf32>
  %v = graph.reshape %z : tensor<4x2xf32> -> tensor<4x2xf32>
  %a = graph.extern "aten.scatter_add_.default"(%v, %i, %s) {args = "[[{\\"$t\\": 0}, 0, {\\"$t\\": 1}, {\\"$t\\": 2}], {}]", writes = array<i64: 0>} : (tensor<4x2xf32>, tensor<3x2xi64>, tensor<3x2xf32>) -> tensor<4x2xf32>
  %y = graph.mul %a, %a : (tensor<4x2xf32>, tensor<4x2xf32>) -> tensor<4x2xf32>
  func.return %y : tensor<4x2xf32>
}"""


@pytest.mark.parametrize("target", ["cpu", "h100"])
def test_an_extern_never_writes_into_a_constant_kept_between_calls(target):
    """A constant is made once and kept; an extern that writes in place into it (or a view of it) gets a
    private copy, else the next call would start from this call's sums and the result would grow."""
    from solder.backends.registry import get_backend
    from solder.compiler import ir
    from solder.compiler.targets import get_target

    t = get_target(target)
    prog = get_backend(t.backend).lower(ir.parse(WRITES_INTO_ZEROS), t)
    i, s = torch.tensor([[0, 1], [2, 3], [0, 0]]), torch.ones(3, 2)
    want = torch.zeros(4, 2).scatter_add_(0, i, s) ** 2
    for _ in range(3):
        torch.testing.assert_close(prog([i, s])[0], want)


class ReturnsNothing(torch.nn.Module):
    """Only a side effect: forward returns None after adding into a buffer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.zeros(4))

    def forward(self, x):
        self.total.add_(x.sum(0))


@pytest.mark.speed_guard
@pytest.mark.parametrize("guard", [True, False])
def test_a_forward_that_returns_none_writes_once_per_call(guard):
    """A call that returns None must not look like "no fast path" and run a second time."""
    model = ReturnsNothing()
    compiled = compile(copy.deepcopy(model), target="cpu", speed_guard=guard)
    for call in range(25):  # past the speed guard's decision
        x = torch.full((3, 4), float(call))
        with torch.no_grad():
            assert compiled(x) is None and model(x) is None
    torch.testing.assert_close(compiled.model.total, model.total)
