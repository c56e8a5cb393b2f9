"""Backends: each lowers `graph` IR to something that runs (eager PyTorch, MLIR-compiled CPU code, Triton)."""
