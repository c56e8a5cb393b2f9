"""One executor for every backend: static and size-generic programs, pooled buffers, CUDA graphs as an option.

A backend hands over its typed steps and a `build(ctx)` that turns them into launches (closures over a flat
list of values: the arguments, then every step output). The executor does the rest, once for all backends:

- slots: argument i is value i, then each step output in order;
- the buffer plan (passes/plan_memory.py `plan_buffers`) over the steps: outputs of steps that write into
  given buffers share pooled storage by liveness; what the caller receives and what is replayed is never
  pooled;
- size binding: a dynamic program binds its shape symbols from each call's arguments (`symbolic.Binding`,
  bounds checked) and keeps one `Instance` (launches built for those sizes, their buffers) per binding, the
  `limit` most recently used; a static program has one instance;
- steps that follow from the sizes alone (no argument reaches them, no eager op with effects, nothing the
  caller receives) run once per instance and are replayed;
- one call at a time (pooled buffers and graph state are shared), an optional `before_call` hook (it may
  return the argument list to run on instead, e.g. CPU scalars moved to the GPU);
- on CUDA, optionally a CUDA graph: call 1 runs plainly, call 2 captures, later calls replay (inputs whose
  storage stays put are read in place, others copied in; outputs cloned out), where the launches it saves
  outweigh the output copies. A capture that fails leaves the instance running plainly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xdsl.ir import SSAValue

from solder.backends.lowering.steps import Step, StepKind
from solder.compiler import log
from solder.compiler.dialects import graph as g
from solder.compiler.dialects.types import dims_of, torch_dtype
from solder.passes.plan_memory import BufferPlan, Launch, plan_buffers

_log = log.get("backend")


class Buffers(dict):
    """The pooled outputs of one call's device: (step index, output index) -> tensor, and the device."""

    device: object = None


@dataclass
class Context:
    """What `build` gets for one instance (one size binding; `env` None for a static program)."""

    steps: Sequence[Step]
    slots: dict[SSAValue, int]
    env: dict[str, int] | None
    key: tuple
    """The binding's values (a static program: ())."""
    plan: BufferPlan
    escaping: set[SSAValue]
    """Values the caller may receive or keep: results and what aliases them, and replayed values."""

    def shape(self, v: SSAValue) -> tuple[int, ...]:
        """`v`'s shape under this binding."""
        dims = dims_of(v.type)
        if self.env is None:
            return tuple(dims)
        from solder.compiler.interpret import sizes

        return tuple(sizes(v.type, self.env))

    def pooled(self, v: SSAValue) -> bool:
        return v in self.plan.assign


def escaping(steps: Sequence[Step], results: Sequence[SSAValue]) -> set[SSAValue]:
    """Values the caller may see: the results and what views, eager ops and library calls pass through."""
    esc = set(results)
    for s in reversed(steps):
        if s.kind.aliasing and any(o in esc for o in s.outs):
            esc.update(s.ins)
    return esc


def size_only(steps: Sequence[Step], args: Sequence[SSAValue], esc: set[SSAValue]) -> set[int]:
    """Indices of the steps whose outputs follow from the sizes alone: no argument reaches them, no
    `graph.extern` (a random op, an op with effects) is among them, and the caller receives none. A program
    with an extern that writes in place replays nothing (a replayed buffer could be the one it writes)."""
    if any(isinstance(op, g.ExternOp) and op.writes is not None for s in steps for op in s.ops):
        return set()
    known: set[SSAValue] = set()
    out = set()
    for k, s in enumerate(steps):
        if any(v not in known for v in s.ins):
            continue
        if any(isinstance(op, g.ExternOp) for op in s.ops):
            continue
        known.update(s.outs)
        if not any(o in esc for o in s.outs):
            out.add(k)
    return out


Build = Callable[[Context], list[tuple[Sequence[int], Callable]]]
"""ctx -> launches: (the step indices a launch runs, fn(vals, bufs)); fn sets those steps' output slots."""


class Executor:
    """Runs a backend's steps (see the module docstring); callable on the argument list."""

    LAUNCH_SECONDS = 4e-6  # host cost of one kernel launch that a CUDA graph replay saves
    COPY_BYTES_PER_SECOND = 1.5e12  # a device copy reads and writes: half of ~3 TB/s

    def __init__(self, steps: Sequence[Step], args: Sequence[SSAValue], results: Sequence[SSAValue], build: Build,
                 binding=None, cuda_graphs: bool = False, before_call: Callable[[list], list | None] | None = None,
                 limit: int = 16, replay_size_only: bool = True, device=None):
        """`device`: the one device this program runs on (the CPU backend's), else read off each call's inputs."""
        self.steps, self.args, self.results, self.build = list(steps), list(args), list(results), build
        self.device = device
        self.binding, self.cuda_graphs, self.before_call, self.limit = binding, cuda_graphs, before_call, limit
        self.slots: dict[SSAValue, int] = {a: i for i, a in enumerate(self.args)}
        for s in self.steps:
            for o in s.outs:
                self.slots.setdefault(o, len(self.slots))
        self.esc = escaping(self.steps, self.results)
        self.replayed = size_only(self.steps, self.args, self.esc) if replay_size_only else set()
        kept = {o for k in self.replayed for o in self.steps[k].outs}
        self.keep = self.esc | kept
        self.launches = [Launch(s.ins, s.outs, aliasing=s.kind.aliasing, pooled=s.kind.writes_into)
                         for s in self.steps]
        self.copy_before = writes_into_kept(self.steps, self.replayed, self.slots)
        self.instances: OrderedDict[tuple, Instance] = OrderedDict()
        self.lock = threading.Lock()

    def plan(self, env) -> BufferPlan:
        """The buffer plan under binding `env` (None: static sizes)."""
        from solder.compiler.interpret import sizes

        def nbytes(v):
            n = 1
            for d in (dims_of(v.type) if env is None else sizes(v.type, env)):
                n *= d
            return n * _itemsize(v)
        return plan_buffers(self.launches, self.results, nbytes, self.keep)

    def instance(self, tensors: list) -> Instance:
        if self.binding is None:
            if self.instances:
                return self.instances[()]
            env, key = None, ()
        else:
            env = self.binding(tensors)  # ShapeBindError for sizes outside the compiled bounds
            key = tuple(env.values())
        inst = self.instances.get(key)
        if inst is None:
            ctx = Context(self.steps, self.slots, env, key, self.plan(env), self.keep)
            inst = Instance(self, ctx)
            self.instances[key] = inst
            if len(self.instances) > self.limit:
                self.instances.popitem(last=False)
        elif self.binding is not None:
            self.instances.move_to_end(key)
        return inst

    def __call__(self, tensors: list) -> list:
        if self.before_call is not None:
            tensors = self.before_call(tensors) or tensors
        with self.lock:
            return self.instance(tensors)(tensors)


class Instance:
    """The launches of one size binding, their pooled buffers (per device) and CUDA graph state."""

    def __init__(self, ex: Executor, ctx: Context):
        self.ex, self.ctx = ex, ctx
        self.n_slots, self.n_args = len(ex.slots), len(ex.args)
        self.result_slots = [ex.slots[v] for v in ex.results]
        self.launches = []
        for idx, fn in ex.build(ctx):
            if idx and all(k in ex.replayed for k in idx):
                fn = _once(fn, [ex.slots[o] for k in idx for o in ex.steps[k].outs])
            private = [i for k in idx for i in ex.copy_before.get(k, ())]
            if private:
                fn = _private_copies(fn, private)
            self.launches.append(fn)
        self._bufs: dict = {}
        self._fixed: Buffers | None = None  # the buffers of a program with one fixed device
        self.graph_state = "first" if ex.cuda_graphs else "off"
        self._volatile: set[int] = set()

    # -- buffers ---------------------------------------------------------------------------------
    def buffers(self, device) -> Buffers:
        """Every pooled output as a view of its (allocated once per device) buffer."""
        bufs = self._bufs.get(device)
        if bufs is None:
            import torch

            plan = self.ctx.plan
            raw = [torch.empty(n, dtype=torch.uint8, device=device) for n in plan.sizes]
            bufs = self._bufs[device] = Buffers()
            bufs.device = device
            for k, s in enumerate(self.ctx.steps):
                for j, o in enumerate(s.outs):
                    b = plan.assign.get(o)
                    if b is not None:
                        shape, dt = self.ctx.shape(o), torch_dtype(o.type.element_type)
                        n = 1
                        for d in shape:
                            n *= d
                        bufs[k, j] = raw[b][: n * _itemsize(o)].view(dt).view(shape)
        return bufs

    # -- running ---------------------------------------------------------------------------------
    def run_plain(self, tensors: list) -> list:
        bufs = self._fixed
        if bufs is None:
            bufs = self.buffers(self.ex.device or _device(tensors))
            if self.ex.device is not None:
                self._fixed = bufs
        vals = [None] * self.n_slots
        vals[: len(tensors)] = tensors
        for f in self.launches:
            f(vals, bufs)
        return [vals[i] for i in self.result_slots]

    def __call__(self, tensors: list) -> list:
        if self.graph_state in ("off", "failed") or not _on_cuda(tensors):
            return self.run_plain(tensors)
        if self.graph_state == "first":
            out = self.run_plain(tensors)  # first: it may move parameters into a stack (backends/weights.py)
            self._ptrs = [t.data_ptr() if hasattr(t, "data_ptr") else None for t in tensors]
            self.graph_state = "capture" if self._graph_pays(out) else "off"
            return out
        if self.graph_state == "capture":
            return self._capture(tensors)
        return self._replay(tensors)

    def _graph_pays(self, outputs) -> bool:
        """A replay saves a launch per step but costs a clone of every output out of the graph's buffers:
        worth it only when the launches cost more than the copies (many small kernels, small outputs)."""
        launches = sum(1 for s in self.ctx.steps if s.kind is not StepKind.VIEW)
        out_bytes = sum(t.numel() * t.element_size() for t in outputs if hasattr(t, "numel"))
        return launches * self.ex.LAUNCH_SECONDS > out_bytes / self.ex.COPY_BYTES_PER_SECOND

    def _capture(self, tensors):
        import torch

        keep = [hasattr(t, "data_ptr") and t.data_ptr() == p and i not in self._volatile
                for i, (t, p) in enumerate(zip(tensors, self._ptrs))]
        self._static = [t if k or not isinstance(t, torch.Tensor) else t.clone() for t, k in zip(tensors, keep)]
        self._keep = keep
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.run_plain(self._static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._static_out = self.run_plain(self._static)
        except Exception as e:  # noqa: BLE001 - any capture failure: run plainly from now on
            _log.warning("CUDA graph capture failed (%s: %s); running the launch list plainly", type(e).__name__, e)
            self.graph_state = "failed"
            return self.run_plain(tensors)
        self._graph, self.graph_state = graph, "replay"
        return self._replay(tensors)

    def _replay(self, tensors):
        moved = [i for i, (t, k) in enumerate(zip(tensors, self._keep))
                 if k and t.data_ptr() != self._static[i].data_ptr()]
        if moved:  # an input read in place changed storage: copy it into a private buffer from now on
            self._volatile.update(moved)
            self._graph, self.graph_state = None, "capture"
            self._ptrs = [t.data_ptr() for t in tensors]
            return self.run_plain(tensors)
        for i, (t, k) in enumerate(zip(tensors, self._keep)):
            if not k and t is not self._static[i]:
                self._static[i].copy_(t)
        self._graph.replay()
        return [o.clone() for o in self._static_out]


def writes_into_kept(steps: Sequence[Step], replayed: set[int], slots: dict) -> dict[int, list[int]]:
    """step index -> the value slots it must get private copies of: operands that a `graph.extern` writes in
    place and whose storage outlives a call (a constant or arange, a replayed value, a held stack of weights,
    or a view of one). Written into directly, the next call would start from this call's writes."""
    from solder.compiler.dialects.traits import Source

    kept: set[SSAValue] = set()
    out: dict[int, list[int]] = {}
    for k, s in enumerate(steps):
        for j, op in enumerate(s.ops):
            if isinstance(op, g.ExternOp) and op.writes is not None:
                keys = s.operand_keys[j] if getattr(s, "operand_keys", None) else s.ins
                written = [keys[i] for i in op.writes.get_values() if i < len(keys)]
                out[k] = [slots[v] for v in written if v in kept and v in slots]
        if s.kind is StepKind.HOISTED or k in replayed or \
                s.kind is StepKind.VIEW and (any(op.has_trait(Source) for op in s.ops) or any(v in kept for v in s.ins)):
            kept.update(s.outs)
    return {k: v for k, v in out.items() if v}


def _private_copies(fn, slots: list[int]):
    """`fn`, after replacing the values in `slots` with private copies (what it writes stays in this call)."""
    def run(vals, bufs):
        for i in slots:
            vals[i] = vals[i].clone()
        fn(vals, bufs)
    return run


def _once(fn, outs: list[int]):
    """`fn`, run on an instance's first call; its outputs replayed after (they follow from the sizes)."""
    memo: list = []

    def run(vals, bufs):
        if memo and memo[0] is bufs:
            for o, t in zip(outs, memo[1]):
                vals[o] = t
            return
        fn(vals, bufs)
        memo[:] = [bufs, [vals[o] for o in outs]]
    return run


def _device(tensors: list):
    """The call's device: a CUDA input's, else the CPU (CPU scalars may come beside CUDA tensors)."""
    import torch

    for t in tensors:
        if getattr(t, "is_cuda", False):
            return t.device
    return torch.device("cpu")


def _on_cuda(tensors: list) -> bool:
    return any(getattr(t, "is_cuda", False) for t in tensors)


_ITEMSIZE: dict[str, int] = {}


def _itemsize(v: SSAValue) -> int:
    key = str(v.type.element_type)
    n = _ITEMSIZE.get(key)
    if n is None:
        import torch

        n = _ITEMSIZE[key] = torch.empty((), dtype=torch_dtype(v.type.element_type)).element_size()
    return n
