"""Writing a compiled model to one file: the artifact's format (solder/artifact.py reads it back).

`save` needs only what a compiled module holds (its specializations' IR, sources, state and maps), so the runtime
can offer `CompiledModule.save` without importing the loader, which builds runtime objects.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import torch
import torch.utils._pytree as pytree

from solder.compiler import ir
from solder.compiler.errors import ArtifactError

FORMAT = "solder-artifact"
FORMAT_VERSION = 1


def solder_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("solder")
    except PackageNotFoundError:
        return "unknown"


# ---- saving ------------------------------------------------------------------------------------


def save(compiled, path: str | os.PathLike) -> Path:
    """Write every compiled specialization of `compiled` (a `CompiledModule`) to `path`, atomically."""
    path = Path(path)
    specs = list(compiled.specializations.values())
    if not specs:
        raise ArtifactError(f"save({str(path)!r}): {compiled.name} has not been compiled yet (compilation "
                            "happens on the first call); call it once with example inputs, then save")
    members: dict[str, bytes] = {}
    state: dict[str, torch.Tensor] = {}
    entries = []
    for i, sp in enumerate(specs):
        members[f"spec{i}/graph.mlir"] = ir.print_ir(sp.imported.module).encode()
        members[f"spec{i}/source.txt"] = (sp.program.source or "").encode()
        for a, t in zip(sp.imported.args, sp.state):
            state.setdefault(a.name, t.detach().contiguous())
        entries.append(_spec_entry(compiled.name, i, sp))
    buf = io.BytesIO()
    torch.save(state, buf)
    members["state.pt"] = buf.getvalue()
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "solder_version": solder_version(),
        "torch_version": torch.__version__, "name": compiled.name, "target": compiled.options.target.name,
        "backend": compiled.options.target.backend, "pipeline": specs[0].pipeline.pipeline,
        "specializations": entries,
        "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in members.items()},
    }
    members = {"manifest.json": json.dumps(manifest, indent=1).encode(), **members}
    _write_atomically(path, members)
    return path


def _spec_entry(name: str, i: int, sp) -> dict:
    try:
        in_spec, out_spec = pytree.treespec_dumps(sp.in_spec), pytree.treespec_dumps(sp.out_spec)
    except Exception as e:  # custom pytree nodes without a serialization hook
        raise ArtifactError(f"save: {name} specialization {i}: its input/output structure cannot be serialized "
                            f"({type(e).__name__}: {e}); return tensors in tuples/lists/dicts, or register the "
                            "node type with torch.utils._pytree.register_pytree_node(..., serialized_type_name=...)")
    outputs = []
    for o in sp.imported.outputs:
        if o.result is not None:
            outputs.append({"result": o.result})
        elif o.constant is None or isinstance(o.constant, (bool, int, float, str)):
            outputs.append({"constant": o.constant})
        else:
            raise ArtifactError(f"save: {name} specialization {i}: constant output {o.constant!r} of type "
                                f"{type(o.constant).__name__} cannot be saved; return a tensor or a Python scalar")
    return {
        "key": [sp.key[0], [_leaf_json(k) for k in sp.key[1]]],
        "in_spec": in_spec, "out_spec": out_spec,
        "args": [{"name": a.name, "kind": a.kind} for a in sp.imported.args],
        "outputs": outputs, "externs": list(sp.imported.externs),
        "input_positions": list(sp.imported.input_positions),
        "graph": f"spec{i}/graph.mlir", "source": f"spec{i}/source.txt",
        "flat": sp.flat, "dynamic": sp.binding is not None,  # a dynamic specialization: see runtime.py
        "values": [[i, v] for i, v in sp.values.items()],  # inputs read with .item(), compiled in
    }


def _leaf_json(k: tuple) -> list:
    if k[0] == "T":
        return ["T", list(k[1]), str(k[2]).removeprefix("torch."), k[3]]
    return list(k)


def _write_atomically(path: Path, members: dict[str, bytes]) -> None:
    if path.is_dir():
        raise ArtifactError(f"save({str(path)!r}): that is a directory; give a file path such as "
                            f"{str(path / 'model.solder')!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ArtifactError(f"save({str(path)!r}): cannot write into {str(path.parent)!r} ({e.strerror or e}); "
                            "choose a writable location") from None
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for name, data in members.items():
                    z.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
