"""The corpus benchmark's judge (benchmarks/corpus_check.py): an output outside eager's tolerance is
wrong unless it is as near a float64 run of the model as eager's own output is."""

from __future__ import annotations

import torch

from benchmarks import corpus_check
from benchmarks.corpus_load import Sample


class BigSum(torch.nn.Module):
    """Exactly zero; in float32 two summation orders of large values leave eager's rounding, far above
    atol = 1e-4."""

    def forward(self, x):
        y = x * 1e6
        return y.sum(-1, keepdim=True) - y.flip(-1).sum(-1, keepdim=True)


def _sample():
    torch.manual_seed(0)
    return Sample("bigsum", BigSum(), (torch.randn(8, 100_000),), {})


def test_a_result_nearer_float64_than_eager_is_not_wrong():
    s = _sample()
    want = s.model(*s.args)
    exact = s.model(s.args[0].double()).float()  # as accurate as float32 can be
    assert not all(o["ok"] for o in corpus_check.compare(exact, want, 1e-4, 1e-4))  # outside eager's tolerance
    verdict = corpus_check.arbitrate(s, "cpu", exact, want)
    assert verdict["as_accurate"], verdict


def test_a_result_farther_from_float64_than_eager_is_wrong():
    s = _sample()
    want = s.model(*s.args)
    off = want + 5 * (want - s.model(s.args[0].double())).abs().max().float()  # 5x eager's error, everywhere
    verdict = corpus_check.arbitrate(s, "cpu", off, want)
    assert not verdict["as_accurate"], verdict
    assert verdict["outputs"][0]["solder_err"] > corpus_check.FP64_SLACK * verdict["outputs"][0]["eager_err"]


def test_a_model_that_cannot_run_in_float64_leaves_the_eager_verdict():
    class Half(torch.nn.Module):
        def forward(self, x):
            return x + torch.ones(3, dtype=torch.float16).float().to(torch.float16)[0] * x.to(torch.float16).float()

    s = Sample("half", Half(), (torch.randn(3),), {})
    verdict = corpus_check.arbitrate(s, "cpu", s.model(*s.args) + 1, s.model(*s.args))
    assert not verdict["as_accurate"]


def test_a_graph_with_its_own_float32_tensors_is_judged_in_float64_throughout():
    class OwnConstant(BigSum):
        """Its own float32 tensor: `.double()` alone leaves a matmul of float64 by float32, which raises."""

        def forward(self, x):
            return super().forward(x) + (x[:, :4] @ torch.ones(4, 1, dtype=torch.float32)) * 0

    torch.manual_seed(0)
    s = Sample("own", OwnConstant(), (torch.randn(8, 100_000),), {})
    want = s.model(*s.args)
    exact = torch.zeros_like(want)
    verdict = corpus_check.arbitrate(s, "cpu", exact, want)
    out = verdict["outputs"][0]
    assert verdict["as_accurate"] and out["solder_err"] < 1e-6 * out["eager_err"], verdict
