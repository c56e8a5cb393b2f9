"""Never slower than eager: a compiled specialization's first calls time it against the model run eagerly and
keep the faster.

After a few untimed warm-up calls of each side (lazy kernel compiles, autotuning, CUDA-graph capture, eager's
own first-call costs), calls alternate between the compiled program and eager PyTorch, each timed on its own
(synchronized on a GPU), until each side has `SAMPLES` timings or `BUDGET_S` seconds went into timed calls.
Eager is kept only when its median beats the compiled median by more than `MARGIN`, so run-to-run noise does not
flip a program that is as fast as eager. Every call runs exactly one side, so in-place writes to inputs and
buffers happen once per call whichever side runs. A dynamic specialization decides on the sizes of its first
calls. `explain()` prints `describe()`; `compile(speed_guard=False)` or `SOLDER_SPEED_GUARD=off` turn it off.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import torch

WARMUP = 2
"""Untimed calls of each side before timing starts."""
SAMPLES = 7
"""Timed calls of each side for a decision."""
MARGIN = 0.02
"""Eager is kept only when faster than the compiled program by more than this fraction (small: a program
within noise of eager gains nothing, and one kept at 5% slower showed up in the corpus below 0.95x)."""
BUDGET_S = 1.0
"""At most this much wall time goes into timed calls; the decision is then made on what was timed."""


class SpeedGuard:
    """Chooses, over a specialization's first calls, between its compiled program and eager PyTorch."""

    def __init__(self, device: str):
        self.device = device
        self.samples: dict[str, list[float]] = {"compiled": [], "eager": []}
        self.warm = {"compiled": 0, "eager": 0}
        self.spent = 0.0
        self.runs_eager = False
        self.settled = False
        self._lock = threading.Lock()

    def call(self, compiled: Callable[[], object], eager: Callable[[], object]):
        """Run this call on the side the guard picks (timing it while undecided) and return its result."""
        if self.settled:
            return eager() if self.runs_eager else compiled()
        with self._lock:
            side = self._next_side()
            timed = self.warm[side] >= WARMUP
            if not timed:
                self.warm[side] += 1
        fn = compiled if side == "compiled" else eager
        if not timed:
            return fn()
        self._sync()
        t0 = time.perf_counter()
        out = fn()
        self._sync()
        dt = time.perf_counter() - t0
        with self._lock:
            self.samples[side].append(dt)
            self.spent += dt
            self._maybe_settle()
        return out

    def _next_side(self) -> str:
        if self.warm["compiled"] < WARMUP:
            return "compiled"
        if self.warm["eager"] < WARMUP:
            return "eager"
        c, e = len(self.samples["compiled"]), len(self.samples["eager"])
        return "compiled" if c <= e else "eager"

    def _maybe_settle(self) -> None:
        c, e = self.samples["compiled"], self.samples["eager"]
        enough = len(c) >= SAMPLES and len(e) >= SAMPLES
        if not (enough or (self.spent >= BUDGET_S and c and e)):
            return
        self.runs_eager = statistics.median(e) * (1 + MARGIN) < statistics.median(c)
        self.settled = True

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def describe(self) -> str:
        """One line for explain(): the medians and which side runs."""
        c, e = self.samples["compiled"], self.samples["eager"]
        if not self.settled:
            return (f"speed guard: deciding (timed {len(c)} compiled and {len(e)} eager calls so far; "
                    f"{SAMPLES} of each decide)")
        mc, me = statistics.median(c) * 1e3, statistics.median(e) * 1e3
        verdict = ("eager PyTorch runs: it was faster than the compiled program" if self.runs_eager
                   else "the compiled program runs")
        return f"speed guard: compiled {mc:.3f} ms vs eager {me:.3f} ms (medians of {len(c)}/{len(e)} calls): {verdict}"
