"""The CPU backend: graph dialect -> linalg-on-tensors MLIR -> native code (torch-mlir's MLIR + LLVM).

jit.py compiles and calls MLIR text; mathapprox.py and schedule.py are its building blocks;
lower.py/lower_ops.py turn graph ops into kernel functions; backend.py plans, compiles and runs a
model (`CpuBackend`). Importing this package loads nothing heavy; the MLIR bindings load with jit.py.
"""
