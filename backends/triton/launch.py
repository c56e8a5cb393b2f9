"""The Triton backend's launch list: output buffers planned once by liveness, the steps run in order on the
inputs' device, under a CUDA graph on the GPU where the saved launches outweigh the output copies; for a
dynamic module, one launch list per size binding over the same compiled kernels."""

from __future__ import annotations

import os
import threading

from xdsl.ir import SSAValue

from solder.backends.routes import StepKind
from solder.backends.triton.codegen import numel
from solder.compiler.dialects.types import shape_of



def plan_buffers(steps, results, shape=None) -> tuple[dict, list[int]]:
    """Liveness-based reuse of generated kernels' outputs: value -> buffer id, and the buffer sizes.

    A value is poolable when a generated kernel writes it and it is not returned; its buffer is free
    again after the last step that reads it or anything aliasing it (views, eager ops).
    """
    root: dict[SSAValue, SSAValue] = {}
    last: dict[SSAValue, int] = {}
    for i, s in enumerate(steps):
        for v in s.ins:
            last[root.get(v, v)] = i
        for o in s.outs:
            root[o] = root.get(s.ins[0], s.ins[0]) if s.kind.aliasing and s.ins else o
    pinned = {root.get(v, v) for v in results}
    sizes: list[int] = []
    free: list[int] = []
    assign: dict[SSAValue, int] = {}
    release: dict[int, list[int]] = {}
    for i, s in enumerate(steps):
        if s.kind.generated:
            for o in s.outs:
                if o in pinned:
                    continue
                nbytes = -(-numel((shape or shape_of)(o.type)) * _itemsize(o) // 256) * 256
                fits = [b for b in free if sizes[b] >= nbytes]
                b = min(fits, key=lambda b: sizes[b]) if fits else len(sizes)
                if fits:
                    free.remove(b)
                else:
                    sizes.append(nbytes)
                assign[o] = b
                release.setdefault(max(last.get(o, i), i), []).append(b)
        free += release.pop(i, [])
    return assign, sizes


def _itemsize(v: SSAValue) -> int:
    import torch

    from solder.compiler.dialects.types import torch_dtype

    return torch.empty((), dtype=torch_dtype(v.type.element_type)).element_size()


class LaunchList:
    """Runs the steps on the inputs' device; on CUDA, replays a CUDA graph from the third call on.

    Call 1 runs plainly (compiles every kernel). Call 2 finds which inputs kept their storage
    (parameters) and captures the graph reading those in place and private copies of the others;
    later calls copy the others in and replay. An in-place input that later changes storage becomes a
    copied one (one recapture). Outputs are cloned out of the graph's static buffers. A capture that
    fails (an eager op that synchronizes, ...) leaves the list running plainly. Calls from several
    threads take turns (the pooled buffers and the graph are shared).
    """

    def __init__(self, steps, args, results, cuda_graphs: bool = True, env: dict[str, int] | None = None):
        from solder.compiler.dialects.types import torch_dtype

        self.steps, self.cuda_graphs = steps, cuda_graphs
        slot: dict[SSAValue, int] = {a: i for i, a in enumerate(args)}
        for s in steps:
            for o in s.outs:
                slot.setdefault(o, len(slot))
        self.n_slots, self.n_args = len(slot), len(args)
        self.result_slots = [slot[v] for v in results]
        shape = shape_of
        if env is not None:  # one binding of a dynamic module: its sizes, and step functions bound to it
            from solder.backends.reference import sizes

            shape = lambda t: sizes(t, env)
        self.assign, self.sizes = plan_buffers(steps, results, shape)
        self.prog = []
        for s in steps:
            allocs = [(shape(o.type), torch_dtype(o.type.element_type), self.assign.get(o)) for o in s.outs]
            fn = s.fn
            if env is not None and getattr(fn, "wants_env", False):
                fn = fn.at(env) if hasattr(fn, "at") else _bind_env(fn, env)
            self.prog.append((s, [slot[v] for v in s.ins], [slot[o] for o in s.outs], allocs, fn))
        self._views: dict = {}
        self._graph = None
        self._graph_state = "off" if not cuda_graphs else "first"
        self._volatile: set[int] = set()
        self._lock = threading.Lock()  # pooled buffers and the CUDA graph state: one call at a time

    def _buffers(self, device):
        """Per device: every pooled output as a view of its (allocated once) buffer."""
        import torch

        if device not in self._views:
            bufs = [torch.empty(n, dtype=torch.uint8, device=device) for n in self.sizes]
            views = {}
            for idx, (_, _, _, allocs, _) in enumerate(self.prog):
                for j, (shape, dtype, b) in enumerate(allocs):
                    if b is not None:
                        nbytes = numel(shape) * torch.empty((), dtype=dtype).element_size()
                        views[idx, j] = bufs[b][:nbytes].view(dtype).view(shape)
            self._views[device] = views
        return self._views[device]

    def run_plain(self, tensors: list):
        import torch

        device = next((t.device for t in tensors if isinstance(t, torch.Tensor)), torch.device("cpu"))
        views = self._buffers(device)
        vals = [None] * self.n_slots
        vals[: len(tensors)] = tensors
        for idx, (s, ins, outs, allocs, fn) in enumerate(self.prog):
            args = [vals[i] for i in ins]
            if s.kind.generated:
                res = [views.get((idx, j)) if b is not None else torch.empty(shape, dtype=dtype, device=device)
                       for j, (shape, dtype, b) in enumerate(allocs)]
                fn(*args, *res)
            elif s.needs_device:
                res = [fn(device)]
            else:
                out = fn(*args)
                res = list(out) if isinstance(out, (list, tuple)) else [out]
            for i, t in zip(outs, res):
                vals[i] = t
        return [vals[i] for i in self.result_slots]

    def __call__(self, tensors: list):
        with self._lock:
            return self._call(tensors)

    def _call(self, tensors: list):
        import torch

        on_cuda = any(isinstance(t, torch.Tensor) and t.is_cuda for t in tensors)
        if not on_cuda and not _interpreting() and any(s.kind.generated or s.kind is StepKind.TEMPLATE for s in self.steps):
            from solder.compiler.errors import TargetError

            raise TargetError("triton backend: the inputs are CPU tensors, but Triton kernels run on CUDA; move the "
                              "model and inputs to a GPU, or set TRITON_INTERPRET=1 before triton is imported "
                              "to run the kernels in Triton's CPU interpreter")
        if not on_cuda or self._graph_state in ("off", "failed"):
            return self.run_plain(tensors)
        if self._graph_state == "first":
            out = self.run_plain(tensors)  # first: it may move parameters into a stack (backends/weights.py)
            self._ptrs = [t.data_ptr() if isinstance(t, torch.Tensor) else None for t in tensors]
            self._graph_state = "capture" if self._graph_pays(out) else "off"
            return out
        if self._graph_state == "capture":
            return self._capture(tensors)
        return self._replay(tensors)

    LAUNCH_SECONDS = 4e-6  # host cost of one kernel launch that a CUDA graph replay saves
    COPY_BYTES_PER_SECOND = 1.5e12  # a device copy reads and writes: half of ~3 TB/s

    def _graph_pays(self, outputs) -> bool:
        """A replay saves a launch per step but costs a clone of every output out of the graph's buffers:
        worth it only when the launches cost more than the copies (many small kernels, small outputs)."""
        launches = sum(1 for s in self.steps if s.kind is not StepKind.VIEW)
        out_bytes = sum(t.numel() * t.element_size() for t in outputs if hasattr(t, "numel"))
        return launches * self.LAUNCH_SECONDS > out_bytes / self.COPY_BYTES_PER_SECOND

    def _capture(self, tensors):
        import torch

        keep = [isinstance(t, torch.Tensor) and t.data_ptr() == p and i not in self._volatile
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
            _warn(f"CUDA graph capture failed ({type(e).__name__}: {e}); running the launch list plainly")
            self._graph_state = "failed"
            return self.run_plain(tensors)
        self._graph, self._graph_state = graph, "replay"
        return self._replay(tensors)

    def _replay(self, tensors):
        moved = [i for i, (t, k) in enumerate(zip(tensors, self._keep)) if k and t.data_ptr() != self._static[i].data_ptr()]
        if moved:  # an input we read in place changed storage: copy it into a private buffer from now on
            self._volatile.update(moved)
            self._graph, self._graph_state = None, "capture"
            self._ptrs = [t.data_ptr() for t in tensors]
            return self.run_plain(tensors)
        for i, (t, k) in enumerate(zip(tensors, self._keep)):
            if not k and t is not self._static[i]:
                self._static[i].copy_(t)
        self._graph.replay()
        return [o.clone() for o in self._static_out]


def _bind_env(fn, env):
    def bound(*args):
        return fn(*args, env=env)

    return bound


class DynamicLaunchList:
    """The launch list of a dynamic module: every call binds the shape symbols from its arguments (bounds and
    constraints checked, `ShapeBindError` otherwise) and runs the `LaunchList` of that binding — the same
    steps and compiled kernels, with that size's buffers, size arguments and CUDA graph. The `limit` most
    recently used bindings are kept."""

    def __init__(self, steps, args, results, bind, cuda_graphs: bool = True, limit: int = 16):
        from collections import OrderedDict

        self.steps, self.args, self.results, self.bind = steps, args, results, bind
        self.cuda_graphs, self.limit = cuda_graphs, limit
        self.instances: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, tensors: list):
        env = self.bind(tensors)
        key = tuple(env.values())
        with self._lock:
            inst = self.instances.get(key)
            if inst is None:
                inst = self.instances[key] = LaunchList(self.steps, self.args, self.results, self.cuda_graphs, env)
                if len(self.instances) > self.limit:
                    self.instances.popitem(last=False)
            else:
                self.instances.move_to_end(key)
        return inst(tensors)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _warn(msg: str) -> None:
    from solder.compiler import log

    log.get("backend").warning("triton: %s", msg)
