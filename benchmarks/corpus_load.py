"""Loading the public corpus (shared/corpus): its manifest, and one sample as (model, args, kwargs).

GraphNet samples are FX `GraphModule` sources whose `forward` takes every weight and input as a
keyword argument; the tensors are replayed from `weight_meta.py`/`input_meta.py` by GraphNet's own
loader (`graph_net_bench.torch.utils` in the corpus folder), under a fixed seed. KernelBench problems
define `Model`, `get_inputs()` and `get_init_inputs()` with sizes meant for a big GPU; on the CPU the
module's size globals are halved (`shrink_kernelbench`) until the inputs and one eager call are small,
and the sizes used are returned with the sample. The corpus files are read where they lie, never copied.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
SEED = 0
CPU_NUMEL = 1 << 22  # elements of inputs and outputs together after shrinking (16 MiB of fp32)
CPU_EAGER_SECONDS = 0.3  # one eager call on the CPU after shrinking
MIN_SIZE = 16  # size globals other than batch_size are not halved below this
MAX_SHRINK_STEPS = 24


class CorpusError(Exception):
    """The corpus folder or one of its samples cannot be read (a harness error, not a compiler one)."""


@dataclass
class Sample:
    """One loaded corpus entry, ready to call as `model(*args, **kwargs)`."""

    name: str
    model: torch.nn.Module
    args: tuple
    kwargs: dict
    sizes: dict = field(default_factory=dict)
    """KernelBench: the size globals as run (only those changed from the file's values, old -> new)."""


def manifest(corpus: Path) -> list[dict]:
    """The manifest's entries, each with a `name` added (its path without the source folder and `.py`)."""
    path = Path(corpus) / "manifest.json"
    if not path.is_file():
        raise CorpusError(f"no manifest.json in {corpus}: pass --corpus <folder of the public corpus>")
    data = json.loads(path.read_text())
    entries = data["entries"]
    for e in entries:
        e["name"] = sample_name(e)
    return entries


def manifest_commits(corpus: Path) -> dict:
    return json.loads((Path(corpus) / "manifest.json").read_text()).get("commits", {})


def sample_name(entry: dict) -> str:
    """`GraphNet/samples/timm/x` -> `timm/x`; `KernelBench/level1/3_Foo.py` -> `level1/3_Foo`."""
    parts = entry["path"].split("/")
    rest = parts[2:] if parts[0] == "GraphNet" else parts[1:]
    return "/".join(rest).removesuffix(".py")


def seed_all(seed: int = SEED) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def load(entry: dict, corpus: Path, device: str = "cpu") -> Sample:
    """Build the model and inputs of `entry` on `device` (eval mode, seeded)."""
    loader = load_graphnet if entry["source"] == "GraphNet" else load_kernelbench
    return loader(entry, Path(corpus), device)


# ---- GraphNet ---------------------------------------------------------------------------------
def _graphnet_utils(corpus: Path):
    root = str(corpus / "GraphNet")
    if root not in sys.path:
        sys.path.insert(0, root)
    from graph_net_bench.torch import utils

    return utils


def load_graphnet(entry: dict, corpus: Path, device: str = "cpu") -> Sample:
    gn = _graphnet_utils(corpus)
    folder = corpus / entry["path"]
    code = gn.modify_code_by_device((folder / "model.py").read_text(), device)
    if device == "cpu":  # export rejects mixing cpu:0 with cpu
        code = re.sub(r"device\(type='cpu', index=0\)", "device(type='cpu')", code)
    ns: dict = {}
    exec(compile(code, str(folder / "model.py"), "exec"), ns)  # noqa: S102 - the corpus's own graph source
    info = gn.load_converted_from_text(str(folder))["weight_info"]
    for t in info.values():
        if "device" in t["info"]:
            t["info"]["device"] = device
    seed_all()
    kwargs = {k: gn.replay_tensor(v) for k, v in info.items()}
    model = ns["GraphModule"]().eval()
    return Sample(entry["name"], model.to(device), (), kwargs)


# ---- KernelBench ------------------------------------------------------------------------------
def _import_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"kb_{abs(hash(str(path)))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_kernelbench(entry: dict, corpus: Path, device: str = "cpu") -> Sample:
    mod = _import_file(corpus / entry["path"])
    sizes = shrink_kernelbench(mod) if device == "cpu" else {}
    seed_all()
    model = mod.Model(*mod.get_init_inputs()).eval().to(device)
    seed_all()
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in mod.get_inputs())
    return Sample(entry["name"], model, args, {}, sizes)


def _numel(mod) -> int:
    """Elements of the inputs and outputs at the module's current sizes, counted on the meta device (no
    memory, no compute); the outputs are left out where an op has no meta kernel. Parameters are not
    counted: a model's width is its problem, the eager time bounds it."""
    with torch.device("meta"):
        inputs = mod.get_inputs()
        model = mod.Model(*mod.get_init_inputs())
        n = sum(a.numel() for a in inputs if isinstance(a, torch.Tensor))
        try:
            with torch.no_grad():
                n += sum(o.numel() for o in torch.utils._pytree.tree_leaves(model(*inputs))
                         if isinstance(o, torch.Tensor))
        except Exception:  # noqa: BLE001 - no meta kernel: the eager call's time still bounds the size
            pass
        return n


def _size_globals(mod) -> list[str]:
    """Integer globals that can be halved, most preferable first: `batch_size`, then the sizes only
    `get_inputs` reads (input extents), then the rest (model widths), larger values first."""
    import inspect

    try:
        init_src = inspect.getsource(mod.get_init_inputs)
        inputs_src = inspect.getsource(mod.get_inputs)
    except (OSError, TypeError):
        init_src = inputs_src = ""
    names = [k for k, v in vars(mod).items() if type(v) is int and v >= 2 and not k.startswith("_")]
    word = lambda k, src: re.search(rf"\b{re.escape(k)}\b", src) is not None  # noqa: E731
    tier = lambda k: 0 if k == "batch_size" else 1 if word(k, inputs_src) and not word(k, init_src) else 2  # noqa: E731
    return sorted((k for k in names if tier(k) < 2 or getattr(mod, k) >= 64), key=lambda k: (tier(k), -getattr(mod, k)))


def _eager_seconds(mod) -> float:
    seed_all()
    model = mod.Model(*mod.get_init_inputs()).eval()
    args = mod.get_inputs()
    with torch.no_grad():
        t0 = time.perf_counter()
        model(*args)
        first = time.perf_counter() - t0
        if first > 4 * CPU_EAGER_SECONDS:  # far over: a second call would not change the verdict
            return first
        t0 = time.perf_counter()  # the first call pays one-time set-up (oneDNN primitives, allocations)
        model(*args)
        return time.perf_counter() - t0


def _halvings(mod) -> int:
    """How many halvings the module's sizes still need: 0 when small enough. Over the time budget, the
    count assumes each halving halves the time, so a slow problem is not re-run after every halving."""
    if _numel(mod) > CPU_NUMEL:
        return 1
    t = _eager_seconds(mod)
    return 0 if t <= CPU_EAGER_SECONDS else max(1, math.ceil(math.log2(t / CPU_EAGER_SECONDS)))


def _halve(mod, frozen: set[str]) -> tuple[str, int] | None:
    """Halve the first candidate global (batch_size down to 1, the others down to MIN_SIZE); None: none left."""
    for k in _size_globals(mod):
        v = getattr(mod, k)
        if k not in frozen and (v >= 2 if k == "batch_size" else v >= 2 * MIN_SIZE):
            setattr(mod, k, v // 2)
            return k, v
    return None


def shrink_kernelbench(mod) -> dict:
    """Halve the module's size globals until its inputs and outputs hold at most CPU_NUMEL
    elements and one eager call takes at most CPU_EAGER_SECONDS; a halving that breaks the problem (an
    exception) is undone and that global left alone. Returns {global: [file value, value used]} for those changed."""
    original = {k: getattr(mod, k) for k in _size_globals(mod)}
    frozen: set[str] = set()
    done = []
    for _ in range(MAX_SHRINK_STEPS):
        try:
            need = _halvings(mod)
        except Exception:  # noqa: BLE001 - the last halving broke a constraint (divisibility, kernel > size)
            if not done:
                break
            k, v = done.pop()
            setattr(mod, k, v)
            frozen.add(k)
            continue
        if not need:
            break
        done = [h for h in (_halve(mod, frozen) for _ in range(need)) if h is not None]
        if not done:
            break
    return {k: [v, getattr(mod, k)] for k, v in original.items() if getattr(mod, k) != v}
