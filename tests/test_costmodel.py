"""costmodel/: estimates (roofline and learned), features, collection with resume, train/evaluate, shipped model."""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import pytest

from solder import costmodel
from solder.compiler.dialects import graph as g
from solder.compiler.targets import get_target
from solder.costmodel import analytic, features, generate
from solder.costmodel import cli
from solder.costmodel.model import LearnedModel


def _module(inputs, body):
    return generate.kernel_module(inputs, body)


def _eltwise(rows: int, cols: int = 256, dtype: str = "float32"):
    """A kernel computing gelu(x + y) on [rows, cols]."""
    return _module([((rows, cols), dtype)] * 2, lambda b, a: [b.unary("gelu", b.binary("add", a[0], a[1]))])


def _matmul(m: int, n: int = 128, k: int = 128):
    def body(b, a):
        return [b.op(g.MatmulOp, [a[0], a[1]], (m, n), "float32")]

    return _module([((m, k), "float32"), ((k, n), "float32")], body)


def _kernel(module):
    return features.the_kernel(module)


@pytest.mark.parametrize("model", ["roofline", None])
@pytest.mark.parametrize("make", [_eltwise, _matmul])
def test_estimate_is_monotone_in_size(make, model):
    kernels = [_kernel(make(rows)) for rows in (16, 64, 256, 1024, 4096, 16384)]
    ests = [costmodel.estimate(k, "cpu", model=model) for k in kernels]
    assert all(e > 0 and math.isfinite(e) for e in ests)
    assert all(a <= b * 1.0001 for a, b in zip(ests, ests[1:])), ests
    assert ests[-1] > 2 * ests[0]


def test_estimate_single_op_and_target_name_or_object():
    k = _kernel(_eltwise(512))
    add = features.body_ops(k)[0]
    assert costmodel.estimate(add, "cpu") == costmodel.estimate(add, get_target("cpu"))
    assert costmodel.estimate(add, "h100", model="roofline") < costmodel.estimate(add, "cpu", model="roofline")


def test_roofline_counts_flops_and_boundary_bytes():
    cpu = get_target("cpu")
    k = _kernel(_matmul(64, 32, 16))
    mm = features.body_ops(k)[0]
    assert analytic.op_flops(mm) == 2 * 64 * 32 * 16
    k2 = _kernel(_eltwise(100, 10))
    add, gelu = features.body_ops(k2)
    fused_read, fused_written, _, _ = analytic.group_io([add, gelu])
    assert (fused_read, fused_written) == (2 * 100 * 10 * 4, 100 * 10 * 4)  # the add result stays inside
    assert analytic.estimate_ops([add, gelu], cpu) < analytic.estimate_ops([add], cpu) + analytic.estimate_ops([gelu], cpu)
    assert analytic.estimate(k2, cpu) == pytest.approx(analytic.estimate_ops([add, gelu], cpu))


def test_attention_flops_halve_when_causal():
    rows = [r for r in _rows(200) if r.family == "attention"]
    for r in rows[:4]:
        att = features.body_ops(_kernel(r.module))[0]
        b, h, t, d = analytic.type_info(att.operands[0].type).shape
        s = analytic.type_info(att.operands[1].type).shape[2]
        full = 4 * b * h * t * s * d + b * h * t * s * 14
        assert analytic.attention_flops(att) == pytest.approx(full / 2 if "causal" in att.properties else full)


def test_estimate_ops_is_fast_and_matches_kernel():
    k = _kernel(_eltwise(256))
    ops = features.body_ops(k)
    cpu = get_target("cpu")
    assert costmodel.estimate_ops(ops, cpu) == pytest.approx(costmodel.estimate(k, cpu), rel=1e-9)
    costmodel.estimate_ops(ops, cpu)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        costmodel.estimate_ops(ops, cpu)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 250e-6, f"{per_call * 1e6:.1f} us per estimate_ops call (goal < 50 us on an idle core)"


def test_features_are_deterministic():
    cpu = get_target("cpu")
    a = [features.kernel_features(_kernel(r.module), cpu, tokens=True) for r in _rows(12)]
    b = [features.kernel_features(_kernel(r.module), cpu, tokens=True) for r in _rows(12)]
    assert a == b
    assert set(a[0]) >= set(features.ANALYTIC_NAMES) | set(features.TOKEN_NAMES)


def test_ir_tokens_strip_names_and_bucket_numbers():
    toks = features.ir_tokens('%12 = graph.relu %x : tensor<388x1000xf32> -> tensor<388x1000xf32>')
    assert "graph.relu" in toks and "f32" in toks and "#b9" in toks
    assert not any(t.startswith("%") and len(t) > 1 for t in toks)


def _rows(n):
    it = generate.rows(0)
    return [next(it) for _ in range(n)]


def test_collect_resumes_without_duplicates(tmp_path, quick_timing):
    out = tmp_path / "data.jsonl"
    args = ["collect", "--target", "cpu", "--out", str(out), "--quiet", "--threads", "1,2"]
    assert cli.main([*args, "--n", "6"]) == 0
    first = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert {i.split("@")[0] for i in first} == {r.id for r in _rows(6)}
    with out.open("a") as f:
        f.write('{"id": "torn')  # an interrupted write
    assert cli.main([*args, "--n", "8"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) and ids[:len(first)] == first
    for r in _rows(8):  # every row on 1 and 2 threads compiled serial; parallel ones both ways
        mine = {i.split("@")[1] for i in ids if i.split("@")[0] == r.id}
        assert {"t1s", "t2s"} <= mine <= {"t1s", "t2s", "t1p", "t2p"} and ("t1p" in mine) == ("t2p" in mine)
    assert all(r["seconds"] > 0 and r["ir"].startswith("builtin.module") and r["features"] for r in rows)


def _synthetic(path, n=160):
    """Rows whose 'measured' seconds are a known function of the roofline (no timing)."""
    cpu = get_target("cpu")
    with path.open("w") as f:
        for r in _rows(n):
            from solder.compiler.ir import print_ir

            k = _kernel(r.module)
            secs = 3 * analytic.estimate(k, cpu) + 4e-6 * len(features.body_ops(k))
            f.write(json.dumps({"id": r.id, "family": r.family, "shape": r.shape_sig, "role": r.role,
                                "pair": r.pair, "ir": print_ir(r.module), "features": {}, "seconds": secs}) + "\n")


def test_train_and_evaluate_on_synthetic_data(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    _synthetic(data)
    out = tmp_path / "model"
    assert cli.main(["train", "--target", "cpu", "--data", str(data), "--out", str(out), "--trees", "40"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["samples"] == 160 and card["heldout"]["learned"]["n"] > 0
    cli.main(["evaluate", "--target", "cpu", "--data", str(data), "--model", str(out), "--plot", str(tmp_path / "e.png")])
    assert (tmp_path / "e.png").stat().st_size > 1000
    assert "learned" in capsys.readouterr().out
    m = costmodel.load_model(out)
    assert isinstance(m, LearnedModel)
    k = _kernel(_eltwise(512))
    assert costmodel.estimate(k, "cpu", model=m) > 0


def test_shipped_cpu_model_loads_and_fast_path_agrees():
    m = costmodel.load_model(costmodel.SHIPPED / "cpu")
    assert isinstance(m, LearnedModel), "costmodel/shipped/cpu/model.npz is missing or does not load"
    card = json.loads((costmodel.SHIPPED / "cpu" / "card.json").read_text())
    assert card["samples"] >= 300 and card["target"] == "cpu"
    cpu = get_target("cpu")
    fs = [features.kernel_features(_kernel(r.module), cpu) for r in _rows(30)]
    slow = m.predict_features_batch(fs)
    fast = [m.predict_features(f) for f in fs]
    assert fast == pytest.approx(list(slow), rel=1e-6)


def test_corrupt_model_falls_back_to_roofline(tmp_path, caplog):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a model")
    k = _kernel(_eltwise(256))
    with caplog.at_level(logging.WARNING, logger="solder.costmodel"):
        got = costmodel.estimate(k, "cpu", model=str(bad))
    assert got == analytic.estimate(k, get_target("cpu"))
    assert "falling back to the roofline" in caplog.text


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["train", "--target", "cpu", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)]) == 1
    assert "no dataset" in capsys.readouterr().err


def test_adapt_fits_a_new_target_from_few_measurements(tmp_path, quick_timing):
    data = tmp_path / "data.jsonl"
    _synthetic(data)
    src = tmp_path / "src"
    assert cli.main(["train", "--target", "cpu", "--data", str(data), "--out", str(src), "--trees", "30"]) == 0
    out = tmp_path / "adapted"
    assert cli.main(["adapt", "--target", "reference", "--n", "10", "--from", str(src), "--out", str(out),
                     "--backend", "reference", "--quiet"]) == 0
    m = costmodel.load_model(out)
    card = json.loads((out / "card.json").read_text())
    assert m.adapter is not None and card["adapted_from"] == str(src) and card["samples"] == 10
    assert costmodel.estimate(_kernel(_eltwise(512)), "reference", model=m) > 0


def test_gpu_profile_is_larger_and_small_profile_is_default():
    import itertools

    small = list(itertools.islice(generate.rows(0), 40))
    assert [r.id for r in small] == [r.id for r in _rows(40)]
    gpu = list(itertools.islice(generate.rows(0, "gpu"), 400))
    numel = lambda rows: max(analytic.type_info(v.type).numel for r in rows for v in _kernel(r.module).operands)
    assert numel(gpu) > 8 * numel(list(itertools.islice(generate.rows(0), 400)))
    with pytest.raises(ValueError, match="size profile"):
        generate.case(0, 0, "huge")


def test_gpu_targets_use_the_gpu_profile_and_cuda_timing_card():
    from solder.costmodel import collect

    assert collect.profile_of(get_target("h100")) == "gpu" and collect.profile_of(get_target("cpu")) == "small"
    assert cli.timing_method("cpu", []) == cli.CPU_TIMING
    assert "graph 2" in cli.timing_method("h100", [{"timing": "graph"}] * 2)


def test_shipped_h100_model_loads_and_card_matches():
    card = json.loads((costmodel.SHIPPED / "h100" / "card.json").read_text())
    m = costmodel.load_model(costmodel.SHIPPED / "h100")
    if card.get("shipped_model") is None:
        assert m is None and card["why_no_model"]
        return
    assert isinstance(m, LearnedModel) and card["samples"] >= 1000
    learned, roof = card["heldout"]["learned"], card["heldout"]["roofline"]
    assert cli.beats_roofline(learned, roof)
    ests = [costmodel.estimate(_kernel(_eltwise(rows)), "h100") for rows in (64, 4096, 262144)]
    assert all(e > 0 for e in ests) and ests[-1] > 10 * ests[0]


def test_streams_other_than_zero_draw_every_family_with_prefixed_ids():
    import itertools

    rows = list(itertools.islice(generate.rows(1), 400))
    assert all(r.id.startswith("s1.") for r in rows)
    fams = {r.family for r in rows}
    assert {"attention_masked", "attention_proj", "mlp_block", "zoo"} <= fams
    assert fams <= set(generate.FAMILIES_ALL)
    assert {r.family for r in _rows(400)} <= set(generate.FAMILIES)  # stream 0 keeps the original mix
    again = list(itertools.islice(generate.rows(1), 400))
    assert [r.id for r in again] == [r.id for r in rows] and [r.shape_sig for r in again] == [r.shape_sig for r in rows]
    with pytest.raises(ValueError, match="unknown kernel family"):
        generate.case(1, 0, family="conv3d")


@pytest.mark.parametrize("family", ["attention_masked", "attention_proj", "mlp_block", "zoo"])
def test_new_families_build_verified_kernels_and_parts(family):
    from solder.compiler import ir

    for i in range(6):
        c = generate.case(1, i, "gpu", family=family)
        m = generate.kernel_module(c.inputs, c.body)
        m.verify()
        ir.parse(ir.print_ir(m)).verify()  # round-trips through the printer
        ops = features.body_ops(_kernel(m))
        if family == "attention_masked":
            assert len(ops[0].operands) == 4  # the mask operand
        if c.chain:
            parts = generate._parts(c)
            assert len(parts) == sum(1 for o in ops if o.operands) >= 2


def test_zoo_family_comes_from_harvested_fusion_groups():
    recs = generate._zoo_records()
    assert len(recs) >= 100
    texts = [t for _, t in recs]
    assert any("graph.attention" in t and "graph.linear" in t for t in texts)  # attention + its projection
    assert any(t.count("graph.linear") >= 2 and "graph.gelu" in t for t in texts)  # an MLP block


def test_launch_count_feature():
    def ops_of(inputs, body):
        return features.body_ops(_kernel(_module(inputs, body)))

    x, w, b = ((64, 128), "float32"), ((256, 128), "float32"), ((256,), "float32")
    w2 = ((128, 256), "float32")
    mlp = ops_of([x, w, b, w2, ((128,), "float32")], lambda bl, a: [bl.op(g.LinearOp, [bl.unary(
        "gelu", bl.op(g.LinearOp, [a[0], a[1], [a[2]]], (64, 256), "float32")), a[3], [a[4]]], (64, 128), "float32")])
    assert features.launches(mlp) == 3  # GEMM, GELU, GEMM: grouping them saves no launch
    chain = ops_of([x, x], lambda bl, a: [bl.unary("exp", bl.binary("add", a[0], a[1]))])
    assert features.launches(chain) == 1
    view = ops_of([x], lambda bl, a: [bl.op(g.PermuteOp, [a[0]], (128, 64), "float32", perm=g.ints_attr([1, 0]))])
    assert features.launches(view) == 0
    bf = [((64, 128), "bfloat16"), ((256, 128), "bfloat16"), ((256,), "bfloat16")]
    epi = ops_of(bf, lambda bl, a: [bl.unary("relu", bl.op(g.LinearOp, [a[0], a[1], [a[2]]], (64, 256), "bfloat16"))])
    assert features.launches(epi) == 1  # the 16-bit GEMM template runs the epilogue


def test_decision_accuracy_beyond_noise_skips_ties():
    from solder.costmodel import evaluate as ev

    rows = [{"pair": "a", "role": "fused", "seconds": 1.00}, {"pair": "a", "role": "part", "seconds": 0.5},
            {"pair": "a", "role": "part", "seconds": 0.51},  # a tie: fused 1.00 vs parts 1.01
            {"pair": "b", "role": "fused", "seconds": 1.0}, {"pair": "b", "role": "part", "seconds": 1.0},
            {"pair": "b", "role": "part", "seconds": 1.0}]  # fusing clearly wins
    pred = np.array([1.1, 0.5, 0.5, 1.0, 1.0, 1.0])  # wrong on the tie, right on the clear pair
    assert ev.decision_accuracy(rows, pred) == (0.5, 2)
    assert ev.decision_accuracy(rows, pred, ev.TIE) == (1.0, 1)


def _synthetic_pairs(path, n=400):
    """Stream-1 rows whose 'measured' seconds are known: parts by the roofline, fused kernels cheaper by a
    factor that depends on the group (so the fusion-factor trees have something to learn)."""
    import itertools
    from solder.compiler.ir import print_ir

    cpu = get_target("cpu")
    with path.open("w") as f:
        for r in itertools.islice(generate.rows(1), n):
            k = _kernel(r.module)
            ops = features.body_ops(k)
            secs = 2 * analytic.estimate(k, cpu) + 3e-6 * features.launches(ops)
            f.write(json.dumps({"id": r.id, "family": r.family, "shape": r.shape_sig, "role": r.role,
                                "pair": r.pair, "ir": print_ir(r.module), "features": {}, "seconds": secs}) + "\n")


def test_parts_structure_trains_and_fast_path_matches_rows(tmp_path):
    from solder.costmodel import evaluate as ev
    from solder.costmodel.model import fit

    data = tmp_path / "data.jsonl"
    _synthetic_pairs(data)
    out = tmp_path / "m"
    assert cli.main(["train", "--target", "cpu", "--data", str(data), "--out", str(out), "--trees", "40",
                     "--structure", "parts"]) == 0
    m = costmodel.load_model(out)
    assert m._ratio_fast is not None and m._direct_fast is None and m.ratio_all  # default scope: every group
    card = json.loads((out / "card.json").read_text())
    assert card["model"]["structure"] == "parts" and "decision_accuracy_beyond_noise" in card["heldout"]["learned"]
    assert card["model"]["ratio_scope"] == "all" and "heldout_first_timing" not in card
    narrow = tmp_path / "narrow"
    assert cli.main(["train", "--target", "cpu", "--data", str(data), "--out", str(narrow), "--trees", "20",
                     "--structure", "parts", "--ratio-scope", "contractions"]) == 0
    assert costmodel.load_model(narrow)._direct_fast is not None
    rows = ev.load_rows(data)[:60]
    ev.refeaturize(rows, "cpu")
    from solder.compiler import ir

    for r in rows:  # estimate() on the kernel agrees with the dataset path (features + parts)
        k = _kernel(ir.parse(r["ir"]))
        assert costmodel.estimate(k, "cpu", model=m) == pytest.approx(m.predict_rows([r])[0], rel=1e-9)
    with pytest.raises(ValueError, match="structure"):
        fit(rows, "cpu", structure="stacked")


def test_free_views_are_a_constant_and_left_out_of_the_fit():
    from solder.costmodel import evaluate as ev
    from solder.costmodel.model import fit

    import itertools
    from solder.compiler.ir import print_ir

    rows = []
    for r in itertools.islice(generate.rows(0, "gpu"), 300):
        rows.append({"id": r.id, "family": r.family, "shape": r.shape_sig, "role": r.role, "pair": r.pair,
                     "ir": print_ir(r.module)})
    ev.refeaturize(rows, "h100")
    for r in rows:
        r["seconds"] = 2e-7 if r["features"]["launches"] == 0 else 1e-5 * (1 + r["features"]["log_bytes"])
    assert any(r["features"]["launches"] == 0 for r in rows)
    m = fit(rows, "h100", n_estimators=20, calibrate=False, structure="parts", free_views=True)
    assert m.view_seconds == pytest.approx(2e-7)
    view = next(r for r in rows if r["features"]["launches"] == 0)
    assert m.predict_rows([view])[0] == pytest.approx(2e-7)


def _pair_rows():
    """Two pairs (fused + 2 parts), one in a held-out (family, shape) group and one in a training group."""
    from solder.costmodel import evaluate as ev

    shapes = [f"s{i}" for i in range(40)]
    held = next(x for x in shapes if ev.is_heldout({"family": "eltwise", "shape": x}))
    kept = next(x for x in shapes if not ev.is_heldout({"family": "eltwise", "shape": x}))
    rows = []
    for pair, shape, fused in (("t", kept, 1.9), ("h", held, 1.0)):
        rows.append({"id": f"{pair}.f", "family": "eltwise", "shape": shape, "role": "fused", "pair": pair,
                     "seconds": fused, "timing": "graph"})
        rows += [{"id": f"{pair}.p{k}", "family": "eltwise", "shape": shape, "role": "part", "pair": pair,
                  "seconds": 1.0, "timing": "graph"} for k in range(2)]
    rows.append({"id": "lone", "family": "eltwise", "shape": kept, "role": "single", "pair": None, "seconds": 1.0})
    return rows


def _retime_line(rid, pair, rounds, run, role="part"):
    return json.dumps({"id": rid, "pair": pair, "role": role, "pair_rows": 3, "rounds": rounds,
                       "seconds": float(np.median(rounds)), "run": run, "batch_ms": 1.5, "timing": "interleaved"})


def test_retime_orders_pairs_pools_runs_and_overlays(tmp_path):
    from solder.costmodel import retime

    rows = _pair_rows()
    assert set(retime.pairs_of(rows)) == {"t", "h"}
    assert retime.order(rows) == ["h", "t"]  # held-out pairs first
    path = tmp_path / "retime.jsonl"
    lines = [_retime_line("h.f", "h", [2.2, 2.3, 2.4], 0, "fused"), _retime_line("h.p0", "h", [1.0, 1.0, 1.0], 0),
             _retime_line("h.p1", "h", [1.0, 1.2, 1.1], 0),
             _retime_line("h.f", "h", [2.4, 2.3, 2.5], 1, "fused"), _retime_line("h.p0", "h", [1.0] * 3, 1),
             _retime_line("h.p1", "h", [1.0] * 3, 1),
             _retime_line("t.f", "t", [3.0] * 3, 0, "fused")]  # pair t cut short: never used
    path.write_text("\n".join(lines) + "\n{torn")
    assert retime.read_done(path, 0) == {"h"} and retime.read_done(path, 1) == {"h"}
    assert retime.read_done(path, 2) == set()
    got = retime.load(path)
    assert set(got) == {"h.f", "h.p0", "h.p1"}
    assert got["h.f"]["runs"] == 2 and got["h.f"]["seconds"] == pytest.approx(2.35)  # median of 6 pooled rounds
    assert retime.apply(rows, got) == 3
    by = {r["id"]: r for r in rows}
    assert by["h.f"]["seconds"] == pytest.approx(2.35) and by["h.f"]["seconds_first"] == 1.0
    assert by["h.f"]["timing"] == "interleaved" and by["t.f"]["seconds"] == 1.9 and "seconds_first" not in by["t.f"]
    assert "runs pooled per row: 2" in retime.describe(rows) and "3 rounds" in retime.describe(rows)
    agree = retime.runs_agreement(path, rows)
    assert agree["pairs"] == 1 and agree["winner_agrees"] == 1.0  # fused slower in both runs
    rep = retime.repeatability(got, rows)
    assert rep["pairs"] == 1 and rep["winner_agrees"] == 0.0  # the first timing had the fused kernel faster


def test_retime_refuses_a_cpu_target_and_too_few_rounds(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _pair_rows()))
    assert cli.main(["retime", "--target", "cpu", "--data", str(data)]) == 1
    assert "not a CUDA target" in capsys.readouterr().err
    assert cli.main(["retime", "--target", "h100", "--data", str(data), "--rounds", "2"]) == 1
    assert "rounds must be at least 3" in capsys.readouterr().err


def test_train_overlays_retimed_pairs_and_scores_the_first_timing_too(tmp_path):
    from solder.costmodel import evaluate as ev
    from solder.costmodel import retime

    data = tmp_path / "data.jsonl"
    _synthetic_pairs(data)
    rows = ev.load_rows(data)
    lines = []
    for pair, rs in retime.pairs_of(rows).items():
        for r in rs:  # a re-timing that makes every fused kernel 10% slower than its first timing
            t = r["seconds"] * (1.1 if r["role"] == "fused" else 1.0)
            lines.append(json.dumps({"id": r["id"], "pair": pair, "role": r["role"], "pair_rows": len(rs),
                                     "rounds": [t] * 3, "seconds": t, "run": 0, "batch_ms": 1.5}))
    (tmp_path / "retime.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "m"
    assert cli.main(["train", "--target", "cpu", "--data", str(data), "--out", str(out), "--trees", "20",
                     "--structure", "parts"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert set(card["heldout_first_timing"]) == set(card["heldout"])
    assert card["heldout_first_timing"]["learned"]["mape"] != card["heldout"]["learned"]["mape"]
    first = tmp_path / "first"
    assert cli.main(["train", "--target", "cpu", "--data", str(data), "--out", str(first), "--trees", "20",
                     "--structure", "parts", "--first-timing"]) == 0
    assert "heldout_first_timing" not in json.loads((first / "card.json").read_text())


# -- the model file holds arrays, never code ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    """A scikit-learn regressor fitted on random data with missing values, and its arrays."""
    from solder.costmodel.model import _trees
    from solder.costmodel.trees import Trees

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + np.where(x[:, 3] > 0, 1.0, -1.0)
    x[rng.random(x.shape) < 0.05] = np.nan
    gbr = _trees(max_iter=60, learning_rate=0.1, max_leaf_nodes=15, random_state=0).fit(x, y)
    test = rng.normal(size=(200, 6))
    test[rng.random(test.shape) < 0.1] = np.nan
    return gbr, Trees.from_sklearn(gbr), test


def test_tree_arrays_predict_what_sklearn_predicts(fitted):
    gbr, trees, x = fitted
    want = gbr.predict(x)
    np.testing.assert_allclose(trees.predict(x), want, rtol=1e-6)
    fast = trees.compile()
    np.testing.assert_allclose([fast(list(r)) for r in x], want, rtol=1e-6)


def test_model_file_roundtrip_holds_no_pickle(tmp_path, fitted):
    from solder.costmodel.trees import Linear

    gbr, trees, x = fitted
    ridge = Linear(np.zeros(6), np.ones(6), np.arange(6.0), 0.5)
    m = LearnedModel(target="cpu", names=tuple(features.FEATURE_NAMES[:6]), gbr=trees, ridge=ridge, log_scale=-0.1,
                     card={"samples": 400})
    m.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:  # every member loads without unpickling
        assert all(z[k].dtype != object for k in z.files)
    back = costmodel.load_model(tmp_path)
    assert back.card == {"samples": 400} and back.log_scale == -0.1
    np.testing.assert_allclose(back.gbr.predict(x), gbr.predict(x), rtol=1e-6)
    np.testing.assert_allclose(back.ridge.predict(x[:3]), ridge.predict(x[:3]))


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_model_file_with_a_pickle_or_a_bad_tree_is_refused(tmp_path, fitted):
    from solder.costmodel.trees import ModelFormatError

    gbr, trees, _ = fitted
    m = LearnedModel(target="cpu", names=tuple(features.FEATURE_NAMES[:6]), gbr=trees)
    m.save(tmp_path / "good.npz")
    arrays = dict(np.load(tmp_path / "good.npz"))
    with pytest.raises(ModelFormatError, match="holds pickled objects, which solder never loads"):
        LearnedModel.load(_write_npz(tmp_path / "p.npz", **{**arrays, "meta": np.array([{"x": 1}], dtype=object)}))
    right = arrays["gbr.right"].copy()
    inner = np.nonzero(~arrays["gbr.leaf"])[0]
    right[inner[0]] = arrays["gbr.left"][inner[0]]  # both branches lead to one node: a graph, not a tree
    with pytest.raises(ModelFormatError, match="gbr: a node with 2 parents"):
        LearnedModel.load(_write_npz(tmp_path / "g.npz", **{**arrays, "gbr.right": right}))
    feature = arrays["gbr.feature"].copy()
    feature[inner[0]] = 99
    with pytest.raises(ModelFormatError, match="a split on a feature index outside 0..5"):
        LearnedModel.load(_write_npz(tmp_path / "f.npz", **{**arrays, "gbr.feature": feature}))


@pytest.mark.parametrize("given, match", [
    ("nonexistent", r"evaluate: no model file at .*nonexistent; expected a model written by"),
    ("empty", r"evaluate: .*empty holds no model.npz"),
    ("corrupt.npz", r"evaluate: .*corrupt.npz: not a solder cost model file"),
])
def test_evaluate_bad_model_is_one_line_error(tmp_path, capsys, given, match):
    import re

    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 garbage")
    data = tmp_path / "data.jsonl"
    data.write_text("")
    code = cli.main(["evaluate", "--target", "cpu", "--data", str(data), "--model", str(tmp_path / given)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("solder-costmodel: error: ") and err.count("\n") == 1
    assert re.search(match, err), err
