"""The Triton backend's launches: each step of its plan as a closure for the shared executor
(backends/lowering/executor.py), which owns slots, the buffer plan, size bindings and CUDA graphs."""

from __future__ import annotations

from solder.backends.lowering.executor import Context
from solder.backends.lowering.steps import StepKind
from solder.backends.triton.library import interpreting
from solder.compiler.dialects.types import torch_dtype


def build_launches(ctx: Context) -> list:
    """ctx -> [((step index,), fn(vals, bufs))] for every step, bound to the context's sizes."""
    import torch

    out = []
    for k, s in enumerate(ctx.steps):
        ins = [ctx.slots[v] for v in s.ins]
        outs = [ctx.slots[o] for o in s.outs]
        fn = s.fn
        if ctx.env is not None and getattr(fn, "wants_env", False):
            fn = fn.at(ctx.env) if hasattr(fn, "at") else _bind_env(fn, ctx.env)
        if s.kind.writes_into:
            specs = [(ctx.shape(o), torch_dtype(o.type.element_type), (k, j) if ctx.pooled(o) else None)
                     for j, o in enumerate(s.outs)]

            def run(vals, bufs, fn=fn, ins=ins, outs=outs, specs=specs):
                res = [bufs[key] if key is not None else torch.empty(shape, dtype=dt, device=bufs.device)
                       for shape, dt, key in specs]
                fn(*[vals[i] for i in ins], *res)
                for i, t in zip(outs, res):
                    vals[i] = t
        elif s.needs_device:
            def run(vals, bufs, fn=fn, o=outs[0]):
                vals[o] = fn(bufs.device)
        elif not outs:  # an effect only (an assertion on data)
            def run(vals, bufs, fn=fn, ins=ins):
                fn(*[vals[i] for i in ins])
        else:
            def run(vals, bufs, fn=fn, ins=ins, outs=outs):
                res = fn(*[vals[i] for i in ins])
                if isinstance(res, (list, tuple)):
                    for i, t in zip(outs, res):
                        vals[i] = t
                else:
                    vals[outs[0]] = res
        out.append(((k,), run))
    return out


def check_device(steps):
    """A `before_call` hook: Triton kernels need CUDA tensors, or Triton's CPU interpreter.

    A CPU tensor beside CUDA ones (a `torch.tensor(1.0)` constant that export lifted, a CPU scalar the
    caller passes) is fine in eager PyTorch, but a Triton kernel cannot read it: the call then runs on a
    copy on the GPU, made once per tensor and version for a scalar, per call otherwise."""
    import weakref

    needs = any(s.kind.generated or s.kind is StepKind.TEMPLATE for s in steps)
    moved: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def on_device(t, device):
        if t.numel() > 1:
            return t.to(device)
        hit = moved.get(t)
        if hit is None or hit[0] != t._version or hit[1].device != device:
            hit = moved[t] = (t._version, t.to(device))
        return hit[1]

    def check(tensors):
        cuda = next((t.device for t in tensors if getattr(t, "is_cuda", False)), None)
        if cuda is None:
            if needs and not interpreting():
                from solder.compiler.errors import TargetError

                raise TargetError("triton backend: the inputs are CPU tensors, but Triton kernels run on CUDA; move "
                                  "the model and inputs to a GPU, or set TRITON_INTERPRET=1 before triton is "
                                  "imported to run the kernels in Triton's CPU interpreter")
            return None
        if all(getattr(t, "is_cuda", True) for t in tensors):
            return None
        return [on_device(t, cuda) if getattr(t, "is_cuda", True) is False else t for t in tensors]
    return check


def _bind_env(fn, env):
    def bound(*args):
        return fn(*args, env=env)

    return bound
