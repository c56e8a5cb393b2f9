"""`compile()`: the function and decorator users call."""

from __future__ import annotations

import functools

import torch

from solder.dynamo import make_backend
from solder.runtime import CompiledModule, Options
from solder.compiler.targets import get_target


class _FunctionModule(torch.nn.Module):
    """Wraps a plain function so that it can be exported like a module."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        functools.update_wrapper(self, fn, updated=())

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def compile(model=None, *, target="cpu", passes=None, sparse_attention=None, cost_model=None, cache_dir=None,
            verify=False, explain=False, dynamic=None, speed_guard=True, strict=False):
    """Compile `model` (an `nn.Module`, a module class, or a function) for `target`.

    Returns a callable with the model's calling convention. Compilation happens on the first call,
    for the observed shapes and dtypes. `dynamic=None` (default): a later call whose shape differs
    in some dims compiles those dims dynamic once (`?` in the IR, bounds checked per call), and
    shapes that fit reuse it; `dynamic=True`: every dim dynamic from the first call where export
    allows; `dynamic=False`: one specialization per shape. Without `model` it is a decorator:
    `@compile(target="cpu")` on a module class or a function. `speed_guard=True` (default): the first calls
    of each compiled signature are timed against eager PyTorch and the faster is kept (`explain()` says which).
    `strict=False` (default): a signature whose compile or first run fails runs eagerly, with one warning that
    says why; `strict=True` raises the failure instead.

    `passes`: a pipeline string (`"canonicalize,cse,fuse-ops{max-ops=16 cost-model=/path/model}"`), else the
    target's. `cost_model`: the model every cost-driven pass asks: None (the target's shipped learned
    model, the roofline if none loads), "roofline", a path to a model file or folder, or a loaded model
    (`solder.costmodel.load_model(path)`); `explain()` names it. Every option is checked here: a bad one
    raises `OptionError` or `PipelineError` now, not at the first call.
    """
    options = Options(target=get_target(target), passes=passes, sparse_attention=sparse_attention,
                      cost_model=cost_model, cache_dir=cache_dir, verify=verify, explain=explain, dynamic=dynamic,
                      speed_guard=speed_guard, strict=strict)
    if model is None:
        return functools.partial(_compile_one, options=options)
    return _compile_one(model, options)


def _compile_one(model, options: Options):
    if isinstance(model, type) and issubclass(model, torch.nn.Module):
        return _compiled_class(model, options)
    if isinstance(model, torch.nn.Module):
        return _compiled(model, options)
    if callable(model):
        return functools.update_wrapper(_compiled(_FunctionModule(model).eval(), options, model.__name__),
                                        model, updated=())
    raise TypeError(f"compile() expects an nn.Module, a module class or a function; got {type(model).__name__}")


def _compiled(model: torch.nn.Module, options: Options, name: str | None = None) -> CompiledModule:
    """The compiled callable; signatures torch.export cannot take go through torch.compile(backend=solder)."""
    compiled = CompiledModule(model, options, name)
    compiled.dynamo_route = make_backend
    return compiled


def _compiled_class(cls: type, options: Options) -> type:
    """A subclass of `cls` whose instances run through a `CompiledModule` of themselves."""

    def __call__(self, *args, **kwargs):
        if self.__dict__.get("_solder_busy"):  # export and eager fallback call the module itself
            return torch.nn.Module.__call__(self, *args, **kwargs)
        compiled = self.__dict__.get("_solder_compiled")
        if compiled is None:
            compiled = _compiled(self, options, cls.__name__)
            self.__dict__["_solder_compiled"] = compiled
        self.__dict__["_solder_busy"] = True
        try:
            return compiled(*args, **kwargs)
        finally:
            self.__dict__["_solder_busy"] = False

    def explain(self) -> str:
        compiled = self.__dict__.get("_solder_compiled")
        return compiled.explain() if compiled else f"{cls.__name__}: not compiled yet"

    return type(cls.__name__, (cls,), {"__call__": __call__, "explain": explain, "__doc__": cls.__doc__,
                                       "__module__": cls.__module__, "__qualname__": cls.__qualname__})
