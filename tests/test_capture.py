"""Capture takes `export()`'s graph as is: no `run_decompositions()` second trace for the zoo."""

import gc
import threading

import pytest
import torch

from solder import compile as solder_compile
from solder.compiler.aten_table import TABLE
from solder.compiler.capture import capture, gc_paused
from examples.models import ZOO, get


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_needs_no_decomposition(name):
    built = get(name).build()
    kwargs = built[2] if len(built) > 2 else {}
    cap = capture(built[0], built[1], kwargs, set(TABLE))
    assert cap.decomposed == (), f"{name}: importer lacks {cap.decomposed}, so capture traced twice"


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_diff_and_bool_masks_match_eager(target):
    def f(x, p, a, m1, m2):
        return x.diff(dim=1, prepend=p, append=a) * 2 + (m1 & m2).float() - (m1 | m2).float() + x.float().diff(dim=0).sum()

    x, p, a = torch.randint(0, 9, (3, 7)), torch.randint(0, 9, (3, 2)), torch.randint(0, 9, (3, 1))
    m1, m2 = torch.rand(3, 9) > 0.5, torch.rand(3, 9) > 0.5
    compiled = solder_compile(f, target=target)
    torch.testing.assert_close(compiled(x, p, a, m1, m2), f(x, p, a, m1, m2))
    sp = next(iter(compiled.specializations.values()))
    assert not sp.imported.externs, sp.imported.externs


def test_gc_paused_nests_across_threads_and_restores():
    assert gc.isenabled()
    inside = []

    def worker():
        with gc_paused():
            inside.append(gc.isenabled())

    with gc_paused():
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert not gc.isenabled()
    assert inside == [False] and gc.isenabled()


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_first_call_with_aliased_inputs_does_not_tie_them(target):
    # export traces f(a, a) with one placeholder read twice; the compile must still serve f(a, b).
    def f(x, y):
        return x * 2 + y

    compiled = solder_compile(f, target=target)
    a, b = torch.randn(4), torch.randn(4)
    torch.testing.assert_close(compiled(a, a), f(a, a))
    torch.testing.assert_close(compiled(a, b), f(a, b))
    torch.testing.assert_close(compiled(b, a[:4]), f(b, a))


def test_eager_calls_on_other_threads_see_real_weights_while_it_compiles():
    """Export traces a private view of the module: another thread calling it eagerly meanwhile never reads
    the fake tensors export puts in place of parameters, and the compile succeeds."""
    import threading

    from torch import nn

    from solder import compile as solder_compile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 32)).eval()
    x = torch.randn(8, 32)
    with torch.no_grad():
        want = model(x)
    stop, calls, bad = threading.Event(), [0], []

    def eager():
        while not stop.is_set():
            try:
                with torch.no_grad():
                    y = model(x)
                    total = y.sum().item()
            except Exception as e:  # noqa: BLE001 - any failure is what the test looks for
                bad.append(f"{type(e).__name__}: {e}")
                return
            if type(y) is not torch.Tensor or not isinstance(total, float) or not torch.allclose(y, want, atol=1e-5, rtol=1e-5):
                bad.append(f"{type(y).__name__} {total!r}")
            calls[0] += 1

    t = threading.Thread(target=eager, daemon=True)
    t.start()
    try:
        with torch.no_grad():
            got = solder_compile(model, target="cpu", dynamic=False)(x)
    finally:
        stop.set()
        t.join(timeout=30)
    assert not bad, bad[:5]
    assert calls[0] > 0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_module_that_cannot_be_copied_is_traced_itself_with_a_warning():
    from torch import nn

    class NoCopy(nn.Linear):
        def __copy__(self):
            raise TypeError("no copies of this one")

    model, x = NoCopy(4, 4).eval(), torch.randn(2, 4)
    with torch.no_grad(), pytest.warns(UserWarning, match=r"cannot copy NoCopy for capture \(TypeError: no copies "
                                                          r"of this one\); export traces the module itself"):
        got = solder_compile(model, target="cpu")(x)
    torch.testing.assert_close(got, model(x))


def test_an_op_that_functionalizing_surfaces_is_decomposed_too():
    """`hardsigmoid_` functionalizes to `hardsigmoid`, which the importer lacks: capture decomposes it as well,
    so the model compiles with no extern (it ran eagerly before)."""
    from torch import nn

    class M(nn.Module):
        def forward(self, x):
            y = x * 2
            nn.functional.hardsigmoid(y, inplace=True)
            return y + 1

    x = torch.randn(4, 8)
    cap = capture(M(), (x,), {}, set(TABLE))
    ops = {str(n.target) for n in cap.program.graph.nodes if n.op == "call_function"}
    assert not any("hardsigmoid" in o for o in ops), ops
    with torch.no_grad():
        torch.testing.assert_close(solder_compile(M(), target="cpu")(x), M()(x))


def test_hardswish_is_taken_whole_after_functionalizing():
    """`hardswish_` functionalizes to `hardswish`, which the importer has an entry for: not decomposed."""
    from torch import nn

    class M(nn.Module):
        def forward(self, x):
            y = x * 2
            nn.functional.hardswish(y, inplace=True)
            return y + 1

    x = torch.randn(4, 8) * 4
    cap = capture(M(), (x,), {}, set(TABLE))
    ops = {str(n.target) for n in cap.program.graph.nodes if n.op == "call_function"}
    assert "aten.hardswish.default" in ops and "aten.hardswish.default" not in cap.decomposed, cap.decomposed
    with torch.no_grad():
        torch.testing.assert_close(solder_compile(M(), target="cpu")(x), M()(x))
