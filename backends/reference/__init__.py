"""The reference backend: eager PyTorch op by op, the oracle every backend is tested against and the fallback
for what a backend does not lower. The interpreter itself (one eager implementation per graph op, keyed by the op
class) is compiler/interpret.py, below the passes, so passes can evaluate constants without a backend."""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from solder.backends.base import Backend, Program
from solder.compiler.dialects import symbolic
from solder.compiler.interpret import (  # noqa: F401  (the interpreter's names, re-exported for backends)
    OPS,
    attention_reference,
    block_sparse_reference,
    compile_block,
    sizes,
)
from solder.compiler.ir import forward_func

class ReferenceBackend(Backend):
    """Eager PyTorch, op by op: the oracle and the fallback."""

    name = "reference"
    targets = ("cpu", "h100")

    def supports(self, op: Operation) -> bool:
        return type(op) in OPS

    def lower(self, module: ModuleOp, target=None) -> Program:
        f = forward_func(module)
        fn = compile_block(f.body.block)
        if not symbolic.is_dynamic_module(module):
            return Program(run=lambda tensors: fn(*tensors), source="", fallbacks=[])
        bind = symbolic.Binding.of(f)
        return Program(run=lambda tensors: fn(*tensors, env=bind(tensors)), source="", fallbacks=[])
