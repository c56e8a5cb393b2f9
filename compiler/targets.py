"""Targets: the hardware solder compiles for, as data (peak rates, bandwidth, on-chip memory), plus the
backend, the default pass pipeline and the cost model to use. Passes read a `Target`, never a global."""

from __future__ import annotations

from dataclasses import dataclass, field

from solder.compiler.errors import TargetError


@dataclass(frozen=True)
class Target:
    """One compilation target. Rates are per second; `peak_flops` is keyed by dtype name."""

    name: str
    backend: str
    device: str  # torch device type the compiled code runs on
    peak_flops: dict[str, float] = field(hash=False)
    mem_bandwidth: float = 0.0  # bytes/s
    launch_overhead: float = 0.0  # seconds per kernel launch
    sm_count: int = 1
    shared_mem_per_block: int = 0  # bytes
    registers_per_sm: int = 0
    pipeline: str = ""
    cost_model: str = ""

    def flops(self, dtype: str) -> float:
        return self.peak_flops.get(dtype, self.peak_flops["float32"])


_CLEANUP = "canonicalize,cse"
# Fusion decisions come from the target's shipped learned cost model (costmodel/shipped/<cost_model>/).
_GPU_PIPELINE = "canonicalize,cse,recognize-attention,fuse-ops,fuse-blocks,dce"
# merge-linears (QKV / gate-up projections as one GEMM) stacks weights, which the CPU backend computes once
# per weight version; the Triton backend would stack them per call, so it is not in the GPU pipeline yet.
_CPU_PIPELINE = "canonicalize,cse,recognize-attention,merge-linears,fuse-ops,fuse-blocks,dce"

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            name="cpu", backend="cpu", device="cpu",  # MLIR codegen (backends/cpu), GEMMs via torch
            # This project's reference machine: 2 cores, measured plain copy ~29.6 GB/s (notes/cpu-backend-mlir.md).
            peak_flops={"float32": 2 * 2 * 16 * 3.0e9, "float64": 2 * 2 * 8 * 3.0e9, "bfloat16": 2 * 2 * 16 * 3.0e9},
            mem_bandwidth=29.6e9, launch_overhead=0.5e-6, sm_count=2, shared_mem_per_block=1 << 20,
            pipeline=_CPU_PIPELINE, cost_model="cpu",
        ),
        Target(
            name="h100", backend="triton", device="cuda",
            # H100 SXM: dense tensor-core rates; ~3.35 TB/s HBM3 nominal (measured copy ~2.9-3.0 TB/s).
            peak_flops={"float32": 67e12, "tfloat32": 495e12, "bfloat16": 989e12, "float16": 989e12},
            mem_bandwidth=3.0e12, launch_overhead=3e-6, sm_count=132, shared_mem_per_block=227 * 1024,
            registers_per_sm=65536, pipeline=_GPU_PIPELINE, cost_model="h100",
        ),
        Target(
            name="h200", backend="triton", device="cuda",
            peak_flops={"float32": 67e12, "tfloat32": 495e12, "bfloat16": 989e12, "float16": 989e12},
            mem_bandwidth=4.3e12, launch_overhead=3e-6, sm_count=132, shared_mem_per_block=227 * 1024,
            registers_per_sm=65536, pipeline=_GPU_PIPELINE, cost_model="h100",
        ),
        Target(
            name="a100", backend="triton", device="cuda",
            peak_flops={"float32": 19.5e12, "tfloat32": 156e12, "bfloat16": 312e12, "float16": 312e12},
            mem_bandwidth=1.8e12, launch_overhead=3e-6, sm_count=108, shared_mem_per_block=163 * 1024,
            registers_per_sm=65536, pipeline=_GPU_PIPELINE, cost_model="h100",
        ),
        Target(
            name="reference", backend="reference", device="cpu", peak_flops={"float32": 1e11},
            mem_bandwidth=1e10, launch_overhead=5e-6, pipeline=_CLEANUP + ",dce", cost_model="",
        ),
    ]
}


def get_target(name: str | Target) -> Target:
    """The target called `name`; an unknown name lists the known ones."""
    if isinstance(name, Target):
        return name
    try:
        return TARGETS[name]
    except KeyError:
        raise TargetError(f"unknown target {name!r}; known targets: {', '.join(sorted(TARGETS))}") from None
