"""A CPU module whose LLVM translation fails is compiled kernel by kernel, and a kernel whose schedule fails to
lower is compiled as plain loops (the squeezeformer mask kernel: vectorized loads of an i64 slice with step 2
left an unrealized cast in the module)."""

from __future__ import annotations

import torch

import solder
from solder.backends.cpu import jit


class Model(torch.nn.Module):
    def forward(self, x, y):
        a = torch.softmax(x, -1) * 2
        return a + y.sum(-1, keepdim=True), torch.relu(y) - 1


def test_kernels_compile_alone_and_without_schedules_when_the_module_fails(monkeypatch):
    real = jit.compile_mlir
    calls = []

    def flaky(text, entry, **kw):
        calls.append(entry)
        if text.count("func.func @") > 1 or "transform.named_sequence" in text:
            raise jit.JitError(f"compile_mlir({entry}): LLVM code generation failed: (simulated)")
        return real(text, entry, use_cache=False, **{k: v for k, v in kw.items() if k != "use_cache"})

    monkeypatch.setattr(jit, "compile_mlir", flaky)
    torch.manual_seed(0)
    model = Model().eval()
    x, y = torch.randn(4, 33), torch.randn(4, 5)
    c = solder.compile(model, target="cpu", speed_guard=False)
    for got, want in zip(c(x, y), model(x, y)):
        torch.testing.assert_close(got, want)
    assert len(set(calls)) >= 2  # the kernels were compiled one by one
