"""Saving a compiled model to one file and loading it back without re-exporting.

An artifact is a zip archive:

    manifest.json              format version, solder/torch versions, target, pipeline, and for each
                               specialization its cache key, pytree specs, argument and output maps;
                               a sha256 for every other member
    spec<i>/graph.mlir         the `graph` IR after the pass pipeline (what the backend lowered)
    spec<i>/source.txt         the backend's generated kernel source (for reading; not executed)
    state.pt                   the parameters and buffers, `torch.save` of {state_dict key: tensor}

`load(path)` parses each IR with `solder.compiler.ir.parse`, lowers it with the target's backend and returns a
callable with the model's calling convention: no model class, no torch.export. A file of another
format version, for another target, or damaged (truncated, a member whose sha256 does not match) is
refused with an `ArtifactError` that says what is wrong and what to do.

An artifact is data, never code: the sha256 values only detect damage (anyone can recompute them), so `load`
checks what it reads before anything runs. The manifest must have the fields and types `save` writes; each
`graph.extern` must name an allowlisted operator overload with a plain-data argument spec (compiler/externs.py);
every size expression in the IR must be arithmetic over shape symbols; dtypes are looked up in torch's namespace
dict; the state is read with `torch.load(weights_only=True)`. The kernels are regenerated from the IR by the
target's backend; the saved `source.txt` is only shown by `explain()`, never compiled or executed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from pathlib import Path

import torch
import torch.fx._pytree as fx_pytree
import torch.utils._pytree as pytree

from xdsl.dialects.builtin import ArrayAttr, FunctionType, StringAttr

from solder.backends.registry import get_backend
from solder.compiler import externs, ir, log
from solder.artifact_save import FORMAT, FORMAT_VERSION, save, solder_version  # noqa: F401  (save: re-exported)
from solder.compiler.dialects import graph as g
from solder.compiler.dialects import size_expr
from solder.compiler.dialects.size_expr import SizeExprError
from solder.compiler.dialects.types import dims_of, is_dynamic
from solder.compiler.errors import ArtifactError, CallError, ExternError, IRParseError, VerifyError
from solder.compiler.importer import ArgInfo, Imported, OutputInfo
from solder.passes.pipeline import PipelineRun
from solder.runtime import CompiledModule
from solder.specialization import Specialization, family_key, input_binding, leaf_key
from solder.compiler.targets import TARGETS, get_target

__all__ = ["ArtifactError", "LoadedModule", "load", "save"]
_log = log.get("runtime")

# ---- loading -----------------------------------------------------------------------------------


def _leaf_from_json(j: list) -> tuple:
    if j[0] == "T":
        dtype = vars(torch).get(j[2]) if isinstance(j[2], str) else None
        if not isinstance(dtype, torch.dtype):
            raise ArtifactError(f"load: manifest names dtype {j[2]!r}, which is not a torch dtype")
        return ("T", tuple(j[1]), dtype, j[3])
    return tuple(j)



def load(path: str | os.PathLike, *, target: str | None = None) -> LoadedModule:
    """Rebuild the callable saved at `path`; `target`, when given, must be the target it was compiled for."""

    path = Path(path)
    members = _read_members(path)
    manifest = _check_manifest(path, members, target)
    modules = [_checked_ir(path, members, entry) for entry in manifest["specializations"]]
    tgt = get_target(manifest["target"])
    backend = get_backend(tgt.backend)
    state = _read_state(path, members)
    loaded = LoadedModule(manifest["name"], tgt, manifest["pipeline"], path)
    for entry, module in zip(manifest["specializations"], modules):
        program = backend.lower(module, tgt)
        source = members[entry["source"]].decode(errors="replace")
        try:
            loaded.add(_specialization(entry, module, program, state, source, path))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ArtifactError(f"load: {path}: specialization {entry['graph']} is malformed ({type(e).__name__}: "
                                f"{e}); save the model again") from None
    return loaded


def _read_state(path: Path, members: dict[str, bytes]) -> dict:
    try:
        state = torch.load(io.BytesIO(members["state.pt"]), weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise ArtifactError(f"load: {path}: state.pt is not a plain tensor dict ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); save the model again") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ArtifactError(f"load: {path}: state.pt is not a dict of tensors; save the model again")
    return state


def _checked_ir(path: Path, members: dict[str, bytes], entry: dict):
    """The parsed IR of a specialization, after checking that it holds data only: allowlisted extern callees
    with plain-data arguments, and size expressions that are arithmetic over shape symbols."""
    where = f"{path}:{entry['graph']}"
    try:
        text = members[entry["graph"]].decode()
    except UnicodeDecodeError as e:
        raise ArtifactError(f"load: {where} is not UTF-8 text ({e}); the file is damaged. Save the model again.")
    try:
        module = ir.parse(text, where)
    except (IRParseError, VerifyError) as e:
        raise ArtifactError(f"load: {e}; the file is damaged. Save the model again.") from None
    for op in module.walk():
        _check_op(where, op)
    for name in entry["externs"]:
        _checked_extern(where, name)
    return module


def _checked_extern(where: str, callee: str):
    try:
        return externs.resolve(callee)
    except ExternError as e:
        raise ArtifactError(f"load: {where}: {e}; refusing to load a file that calls it") from None


def _check_op(where: str, op) -> None:
    if isinstance(op, g.ExternOp):
        _checked_extern(where, op.callee.data)
        try:
            externs.check_args(op.args.data, len(op.operands))
        except ExternError as e:
            raise ArtifactError(f"load: {where}: {e}; refusing to load it") from None
    exprs = [a.data for a in _string_attrs(op)]
    for t in [r.type for r in op.results] + [a.type for reg in op.regions for b in reg.blocks for a in b.args]:
        exprs += _type_exprs(t)
    ftype = op.properties.get("function_type") or op.attributes.get("function_type")
    if isinstance(ftype, FunctionType):
        exprs += [e for t in (*ftype.inputs.data, *ftype.outputs.data) for e in _type_exprs(t)]
    for e in exprs:
        if not _is_size_expression(e):
            raise ArtifactError(f"load: {where}: {op.name} holds the expression {e[:80]!r}, which is not "
                                "arithmetic over shape symbols; refusing to load it")


def _string_attrs(op) -> list:
    """The size expressions an op keeps as strings: `end_expr` of graph.slice, `graph.assumes` of a function."""
    out = []
    end = op.properties.get("end_expr")
    if isinstance(end, StringAttr):
        out.append(end)
    assumes = op.attributes.get("graph.assumes")
    if isinstance(assumes, ArrayAttr):
        out += [a for a in assumes.data if isinstance(a, StringAttr)]
    return out


def _type_exprs(t) -> list[str]:
    return [d for d in dims_of(t) if isinstance(d, str) and d != "?"] if is_dynamic(t) else []


def _is_size_expression(expr: str) -> bool:
    """Whether `expr` is size arithmetic (`2*s0`, `FloorDiv(s0, 2)`) as size_expr's parser admits it: numbers,
    symbol names, operators and the known functions; no attributes, subscripts, strings or other calls."""
    try:
        size_expr.parse(expr)
    except SizeExprError:
        return False
    return True


def _read_members(path: Path) -> dict[str, bytes]:
    if not path.exists():
        raise ArtifactError(f"load: {path} does not exist; save one with artifact.save(compiled, path)")
    try:
        with zipfile.ZipFile(path) as z:
            return {n: z.read(n) for n in z.namelist()}
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise ArtifactError(f"load: {path} is damaged or not a solder artifact ({type(e).__name__}: {e}); "
                            "expected a complete zip archive written by artifact.save. Save the model again.")


def _check_manifest(path: Path, members: dict[str, bytes], target: str | None) -> dict:
    if "manifest.json" not in members:
        raise ArtifactError(f"load: {path} has no manifest.json; it is not a solder artifact (or is damaged). "
                            "Save the model again with artifact.save.")
    try:
        m = json.loads(members["manifest.json"])
    except ValueError as e:
        raise ArtifactError(f"load: {path}: manifest.json is not valid JSON ({e}); the file is damaged. "
                            "Save the model again.") from None
    if not isinstance(m, dict):
        raise ArtifactError(f"load: {path}: manifest.json holds a JSON {type(m).__name__}, expected an object; "
                            "not a solder artifact (or damaged). Save the model again.")
    if m.get("format") != FORMAT:
        raise ArtifactError(f"load: {path}: expected format {FORMAT!r}, found {m.get('format')!r}; not a solder artifact")
    if m.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"load: {path} has artifact format version {m.get('format_version')} (written by solder "
            f"{m.get('solder_version')}); this solder ({solder_version()}) reads version {FORMAT_VERSION} only. "
            "Recompile the model with this solder and save it again.")
    _check_fields(path, m)
    if target is not None and target != m["target"]:
        raise ArtifactError(f"load: {path} was compiled for target {m['target']!r}, not {target!r}; "
                            f"compile the model for {target!r} and save it again, or load it without target=")
    for name, digest in m["sha256"].items():
        data = members.get(name)
        if data is None:
            raise ArtifactError(f"load: {path} is damaged: member {name} is missing. Save the model again.")
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            raise ArtifactError(f"load: {path} is damaged: {name} has sha256 {got[:16]}…, the manifest says "
                                f"{digest[:16]}…. Save the model again.")
    _check_runnable(path, m)
    if m.get("torch_version") != torch.__version__:
        _log.info("%s was saved with torch %s, running with %s", path, m.get("torch_version"), torch.__version__)
    return m


_FIELDS = {"name": str, "target": str, "backend": str, "pipeline": str, "specializations": list, "sha256": dict}
_SPEC_FIELDS = {"key": list, "in_spec": str, "out_spec": str, "args": list, "outputs": list, "externs": list,
                "input_positions": list, "graph": str, "source": str}


def _check_fields(path: Path, m: dict) -> None:
    """Refuse a manifest without the fields and types `save` writes, naming the first one that is wrong."""
    _check_types(path, "manifest", m, _FIELDS)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in m["sha256"].items()):
        _bad_field(path, "manifest", "sha256", "an object of member name -> hex digest")
    for i, sp in enumerate(m["specializations"]):
        where = f"specializations[{i}]"
        if not isinstance(sp, dict):
            _bad_field(path, "manifest", where, "an object")
        _check_types(path, where, sp, _SPEC_FIELDS)
        for field in ("graph", "source"):
            if sp[field] not in m["sha256"]:
                _bad_field(path, where, field, "a member listed in sha256")
        if not all(isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("kind"), str)
                   for a in sp["args"]):
            _bad_field(path, where, "args", "a list of {name, kind} objects")
        if not all(isinstance(o, dict) and ("result" in o or "constant" in o) for o in sp["outputs"]):
            _bad_field(path, where, "outputs", "a list of {result} or {constant} objects")
        if not all(isinstance(x, str) for x in sp["externs"]):
            _bad_field(path, where, "externs", "a list of operator names")
        if not all(isinstance(x, int) for x in sp["input_positions"]):
            _bad_field(path, where, "input_positions", "a list of integers")
        key = sp["key"]
        if len(key) != 2 or not isinstance(key[0], str) or not all(isinstance(k, list) and k for k in key[1]):
            _bad_field(path, where, "key", "[pytree spec, list of leaf keys]")


def _check_types(path: Path, where: str, obj: dict, fields: dict) -> None:
    for name, typ in fields.items():
        if not isinstance(obj.get(name), typ):
            _bad_field(path, where, name, f"a JSON {'object' if typ is dict else 'array' if typ is list else 'string'}")


def _bad_field(path: Path, where: str, name: str, expected: str):
    raise ArtifactError(f"load: {path}: {where} field {name!r} is missing or malformed; expected {expected}. "
                        "The file is damaged or not written by artifact.save; save the model again.")


def _check_runnable(path: Path, m: dict) -> None:

    tgt = TARGETS.get(m["target"])
    if tgt is None:
        raise ArtifactError(f"load: {path} was compiled for target {m['target']!r}, which this solder does not "
                            f"know (known: {', '.join(sorted(TARGETS))}); recompile for one of those")
    if tgt.backend != m.get("backend"):
        raise ArtifactError(f"load: {path} was lowered by backend {m.get('backend')!r} but target {tgt.name!r} now "
                            f"uses {tgt.backend!r}; recompile the model and save it again")
    if tgt.device == "cuda" and not torch.cuda.is_available():
        raise ArtifactError(f"load: {path} was compiled for target {tgt.name!r}, which needs a CUDA GPU, and none "
                            "is available here; load it on a GPU machine or compile for target='cpu'")


def _specialization(entry: dict, module, program, state: dict, source: str, path: Path):

    args = [ArgInfo(a["name"], a["kind"]) for a in entry["args"]]
    outputs = [OutputInfo(o["result"]) if "result" in o else OutputInfo(None, o["constant"]) for o in entry["outputs"]]
    imported = Imported(module, args, outputs, list(entry["externs"]), list(entry["input_positions"]))
    missing = [a.name for a in args if a.kind != "input" and a.name not in state]
    if missing:
        raise ArtifactError(f"load: {path} is damaged: state.pt lacks {', '.join(missing)}. Save the model again.")
    if not program.source:
        program.source = source
    key = (entry["key"][0], tuple(_leaf_from_json(k) for k in entry["key"][1]))

    return Specialization(key=key, imported=imported, program=program, in_spec=pytree.treespec_loads(entry["in_spec"]),
                          out_spec=pytree.treespec_loads(entry["out_spec"]),
                          state=[state[a.name] for a in args if a.kind != "input"], pipeline=PipelineRun("(loaded)"),
                          flat=entry.get("flat", False),
                          binding=input_binding(imported) if entry.get("dynamic") else None,
                          values={int(i): v for i, v in entry.get("values", [])})


class LoadedModule:
    """A callable rebuilt from an artifact: the saved specializations only (no model to re-export)."""

    def __init__(self, name: str, target, pipeline: str, path: Path):
        self.name, self.target, self.pipeline, self.path = name, target, pipeline, path
        self.specializations: dict[tuple, object] = {}

    def add(self, sp) -> None:
        self.specializations[sp.key] = sp

    def __call__(self, *args, **kwargs):

        leaves, spec = pytree.tree_flatten((args, kwargs))
        key = (str(spec), tuple(leaf_key(x) for x in leaves))
        sp = self.specializations.get(key) or self._dynamic_fit(leaves)
        if sp is None:
            raise CallError(f"{self.name} (loaded from {self.path}): no saved specialization for inputs "
                            f"{_describe(key)}; saved: {'; '.join(_describe(k) for k in self.specializations)}. "
                            "Call the compiled model with these inputs before saving it.")
        if not sp.values_hold(leaves):
            wanted = ", ".join(f"input {i} = {v!r}" for i, v in sp.values.items())
            raise CallError(f"{self.name} (loaded from {self.path}): the saved program was compiled for the values "
                            f"its model reads with .item() ({wanted}); this call passes others. Compile the model "
                            "with these values and save it again.")
        inputs = leaves if sp.flat else fx_pytree.tree_flatten_spec((args, kwargs), sp.in_spec)
        return CompiledModule._execute(sp, inputs)  # the compiled callable's own run, write-backs included

    def _dynamic_fit(self, leaves):
        """A saved dynamic specialization whose bounds and constraints these inputs meet, or None."""


        for sp in self.specializations.values():
            if sp.binding is None or len(leaves) != len(sp.key[1]):
                continue
            family = tuple(("T", len(k[1]), k[2], k[3]) if k[0] == "T" else k for k in sp.key[1])
            if family_key("", leaves)[1] == family and CompiledModule._fits(sp, leaves):
                return sp
        return None

    def explain(self) -> str:
        """The saved specializations and their IR."""
        lines = [f"== {self.name} loaded from {self.path}, target={self.target.name}, pipeline={self.pipeline}"]
        for key, sp in self.specializations.items():
            lines.append(f"-- {_describe(key)}")
            lines.append(ir.print_ir(sp.imported.module))
        return "\n".join(lines)


def _describe(key: tuple) -> str:
    parts = []
    for k in key[1]:
        parts.append(f"{tuple(k[1])}:{str(k[2]).removeprefix('torch.')}" if k[0] == "T" else f"{k[1]}={k[2]}")
    return "(" + ", ".join(parts) + ")"
