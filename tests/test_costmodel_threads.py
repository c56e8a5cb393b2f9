"""The thread count in the CPU cost model: the features, collection's thread configurations, training and scoring on
them, and the serial-or-parallel decision of generated CPU kernels (backends/cpu/threads.py) that the shipped
model takes. No test here reads a clock: decisions come from the shipped model's estimates and from synthetic
rows whose seconds are a known function of their features."""

from __future__ import annotations

import json

import pytest
import torch

from solder import compile, costmodel
from solder.backends.cpu import threads
from solder.compiler.dialects import graph as g
from solder.compiler.ir import print_ir
from solder.compiler.targets import get_target
from solder.costmodel import cli, features, generate
from solder.costmodel import evaluate as ev
from solder.costmodel.model import fit

CPU = get_target("cpu")
needs_shim = pytest.mark.skipif(threads.runtime() is None,
                                reason="no GNU OpenMP runtime in torch or no C compiler (threads.py)")


def _gelu_add(rows: int, cols: int):
    """The body ops of a kernel computing gelu(x + y) on [rows, cols] (an elementwise kernel)."""
    m = generate.kernel_module([((rows, cols), "float32")] * 2,
                               lambda b, a: [b.unary("gelu", b.binary("add", a[0], a[1]))])
    return features.body_ops(features.the_kernel(m))


def _softmax_exp(rows: int, cols: int):
    """The body ops of exp(x) -> softmax over the last dim (a row kernel)."""
    m = generate.kernel_module([((rows, cols), "float32")], lambda b, a: [
        b.op(g.SoftmaxOp, [b.unary("exp", a[0])], (rows, cols), "float32", dim=g.int_attr(1))])
    return features.body_ops(features.the_kernel(m))


# -- features ---------------------------------------------------------------------------------------------------
def test_thread_features_default_to_one_serial_thread_and_split_the_bytes():
    ops = _gelu_add(64, 256)
    one = features.ops_features(ops, CPU)
    assert (one["threads"], one["parallel"]) == (1.0, 0.0)
    two = features.ops_features(ops, CPU, threads=2, parallel=True)
    assert (two["threads"], two["parallel"]) == (2.0, 1.0)
    assert two["log_bytes_per_thread"] == pytest.approx(one["log_bytes_per_thread"] - 1, abs=1e-3)
    serial_on_two = features.ops_features(ops, CPU, threads=2)
    assert serial_on_two["log_bytes_per_thread"] == one["log_bytes_per_thread"]  # a serial kernel splits nothing
    assert set(features.THREAD_NAMES) <= set(features.FEATURE_NAMES)


def test_shipped_cpu_model_reads_the_thread_features_and_they_change_estimates():
    model = costmodel.load_model(costmodel.SHIPPED / "cpu")
    assert model.reads_threads, "costmodel/shipped/cpu was trained without the thread features"
    ops = _gelu_add(2048, 1024)
    serial = costmodel.estimate_ops(ops, "cpu", threads=2)
    parallel = costmodel.estimate_ops(ops, "cpu", threads=2, parallel=True)
    assert parallel != serial and costmodel.estimate_ops(ops, "cpu", threads=1, parallel=True) != parallel
    assert costmodel.estimate_parallel(ops, "cpu", 2) == (serial, parallel)
    assert costmodel.estimate_parallel(ops, "cpu", 2, model="roofline") is None  # the roofline knows no threads
    old = costmodel.load_model(costmodel.SHIPPED / "h100")  # a model without them ignores them
    assert not old.reads_threads and costmodel.estimate_parallel(ops, "cpu", 2, model=old) is None


# -- the decision -----------------------------------------------------------------------------------------------
@needs_shim
@pytest.mark.parametrize("make", [_gelu_add, _softmax_exp])
def test_tiny_kernel_stays_serial_and_large_one_goes_parallel_on_two_threads(make, torch_threads):
    torch_threads(2)
    tiny, large = make(8, 64), make(4096, 1024)
    go, why = threads.decide(8 * 64, 8, tiny)
    assert not go and why.startswith("cost model:"), why
    go, why = threads.decide(4096 * 1024, 4096, large)
    assert go and why.startswith("cost model:"), why


class _Stub:
    """A thread-aware model stand-in: `serial` seconds compiled serial, `parallel` seconds compiled parallel."""

    reads_threads = True

    def __init__(self, serial: float, parallel: float):
        self.serial, self.parallel = serial, parallel

    def predict_ops(self, ops, target, threads=1, parallel=False):
        return self.parallel if parallel else self.serial


@needs_shim
def test_parallel_only_where_the_estimate_saves_the_minimum_gain(torch_threads):
    torch_threads(2)
    ops, gain = _gelu_add(512, 256), costmodel.PARALLEL_MIN_GAIN
    assert threads.decide(512 * 256, 512, ops, model=_Stub(1e-5, 1e-5 * (1 - gain) * 0.99))[0]
    go, why = threads.decide(512 * 256, 512, ops, model=_Stub(1e-5, 1e-5 * (1 - gain) * 1.01))
    assert not go and "does not save" in why  # within the margin: a tie, serial
    assert not threads.decide(512 * 256, 512, ops, model=_Stub(1e-5, 2e-5))[0]


@needs_shim
def test_one_torch_thread_never_goes_parallel(torch_threads):
    torch_threads(1)
    for make in (_gelu_add, _softmax_exp):
        go, why = threads.decide(4096 * 1024, 4096, make(4096, 1024))
        assert not go and "one thread" in why
    model = _Big().eval()
    c = compile(model, target="cpu")
    x = torch.randn(1024, 1024)
    with torch.no_grad():
        forks = threads.forks()
        torch.testing.assert_close(c(x), model(x), rtol=1e-5, atol=1e-5)
        assert threads.forks() == forks
    source = next(iter(c.specializations.values())).program.source
    assert "forall" not in source


class _Big(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.gelu(x * 2.0 + 1.0).softmax(-1)


@needs_shim
def test_without_a_thread_model_the_size_threshold_decides(torch_threads):
    torch_threads(2)
    n = threads.MIN_PARALLEL_ELEMENTS
    ops = _gelu_add(n // 256, 256)
    assert threads.decide(n, n // 256, ops, model="roofline") == (True, threads.decide(n, n // 256, None)[1])
    go, why = threads.decide(n - 256, n // 256 - 1, _gelu_add(n // 256 - 1, 256), model="roofline")
    assert not go and "threshold" in why
    go, why = threads.decide(10**6, 3, _gelu_add(3, 10**6 // 3))  # 3 rows: fewer than 2 per thread
    assert not go and "fewer than" in why


@needs_shim
def test_forced_overrides_the_decision_and_is_restored(torch_threads):
    torch_threads(2)
    tiny = _gelu_add(8, 64)
    with threads.forced(True):
        assert threads.decide(8 * 64, 8, tiny)[0]
        with threads.forced(False):
            assert not threads.decide(4096 * 1024, 4096, _gelu_add(4096, 1024))[0]
        assert threads.decide(8 * 64, 8, tiny)[0]
    assert not threads.decide(8 * 64, 8, tiny)[0]


@needs_shim
def test_the_decision_and_its_reason_are_logged(torch_threads, caplog):
    torch_threads(2)
    import logging

    with caplog.at_level(logging.INFO, logger="solder.backend"):
        assert threads.worth_parallel(4096 * 1024, 4096, _gelu_add(4096, 1024), "k7")
    assert "threads: k7 parallel: cost model:" in caplog.text and " us on 2 threads vs " in caplog.text


# -- collection, training and scores on thread configurations ----------------------------------------------------
@needs_shim
def test_collect_times_serial_and_parallel_compilations_on_each_thread_count(tmp_path, quick_timing):
    out = tmp_path / "data.jsonl"
    assert cli.main(["collect", "--target", "cpu", "--n", "40", "--out", str(out), "--quiet", "--threads", "1,2",
                     "--families", "rownorm"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and {r["family"] for r in rows} == {"rownorm"}
    par = [r for r in rows if r["id"].endswith("p")]
    assert par, "no norm of the first 40 rows has a parallel schedule"
    for r in par:  # the parallel compilation forked a team, on 1 thread and on 2; the serial one did not
        assert r["parallel"] is True
        twin = next(s for s in rows if s["id"] == r["id"][:-1] + "s")
        assert twin["parallel"] is False and twin["threads"] == r["threads"] and twin["ir"] == r["ir"]
    ev.refeaturize(rows, "cpu")
    assert {(r["features"]["threads"], r["features"]["parallel"]) for r in par} == {(1.0, 1.0), (2.0, 1.0)}


def _synthetic_thread_rows(n: int = 120) -> list[dict]:
    """Rows on 1 and 2 threads, serial and parallel, whose seconds are a known function: a serial kernel takes
    bytes / 10 GB/s + 2 us; a parallel one on a team of t that time / t plus a 20 us fork and join."""
    rows = []
    for r in generate.rows(0):
        if len(rows) >= 4 * n:
            break
        if r.family not in ("eltwise", "rownorm", "softmax_chain", "reduce"):
            continue
        text = print_ir(r.module)
        for t in (1, 2):
            for par in (False, True):
                rows.append({"id": f"{r.id}@t{t}{'p' if par else 's'}", "family": r.family, "shape": r.shape_sig,
                             "role": r.role, "pair": None, "ir": text, "threads": t, "parallel": par})
    ev.refeaturize(rows, "cpu")
    for r in rows:
        serial = (2 ** r["features"]["log_bytes"]) / 1e10 + 2e-6
        r["seconds"] = serial / r["threads"] + 2e-5 if r["parallel"] else serial
    return rows


def test_a_model_trained_on_thread_configurations_learns_the_fork_and_the_split(tmp_path, capsys):
    rows = _synthetic_thread_rows()
    train, test = ev.split(rows)
    model = fit(train, "cpu", n_estimators=150, calibrate=False)
    assert model.reads_threads
    pred = model.predict_rows(test)
    choice = ev.parallel_accuracy(test, pred)
    assert choice["pairs"] > 10 and choice["model"] >= 0.9 and choice["model"] > choice["always_serial"]
    assert costmodel.estimate_parallel(_gelu_add(8, 64), "cpu", 2, model=model)[0] < \
        costmodel.estimate_parallel(_gelu_add(8, 64), "cpu", 2, model=model)[1]
    big = costmodel.estimate_parallel(_gelu_add(2048, 1024), "cpu", 2, model=model)
    assert big[1] < big[0]
    data = tmp_path / "data.jsonl"  # the CLI reports scores per thread count and the choice
    data.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("features", "parts")}) + "\n"
                            for r in rows))
    assert cli.main(["train", "--target", "cpu", "--data", str(data), "--out", str(tmp_path / "m"),
                     "--trees", "60"]) == 0
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    by = card["heldout_threads"]["by_threads"]["learned"]
    assert {"threads=1", "threads=2", "t1s", "t1p", "t2s", "t2p"} <= set(by)
    assert card["heldout_threads"]["parallel_choice"]["pairs"] > 10
    assert "serial-or-parallel choice: model" in capsys.readouterr().out


def test_parallel_accuracy_counts_pairs_on_several_threads_only():
    rows = [{"id": "a@t2s", "threads": 2, "parallel": False, "seconds": 2.0, "elements": 10},
            {"id": "a@t2p", "threads": 2, "parallel": True, "seconds": 1.0, "elements": 10},
            {"id": "b@t2s", "threads": 2, "parallel": False, "seconds": 1.0, "elements": 1 << 20},
            {"id": "b@t2p", "threads": 2, "parallel": True, "seconds": 1.02, "elements": 1 << 20},
            {"id": "a@t1s", "threads": 1, "parallel": False, "seconds": 2.0},
            {"id": "a@t1p", "threads": 1, "parallel": True, "seconds": 2.1}]
    pred = [2.0, 1.0, 1.0, 2.0, 1.0, 2.0]  # right on both kernels
    got = ev.parallel_accuracy(rows, pred)
    assert got["pairs"] == 2 and got["model"] == 1.0 and got["always_serial"] == 0.5 and got["threshold"] == 0.0
    assert got["lost_threshold"] == pytest.approx((0.6931 + 0.0198) / 2, abs=1e-3)
    assert ev.parallel_accuracy(rows, pred, ev.TIE)["pairs"] == 1  # b differs by 2%: within noise
    assert ev.config_of(rows[1]) == "t2p" and ev.config_of({"id": "old"}) == "t1s"
