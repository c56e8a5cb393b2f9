"""The pass table (sorted by name) and the pipeline-string parser.

A pipeline is MLIR/xDSL syntax: `canonicalize,cse,fuse-ops{max-ops=16 mode=cost}`. Passes are
imported lazily so that a pipeline pulls in only what it names.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError

from solder.compiler.errors import PipelineError

# name -> (module, class). Kebab-case name == snake_case file == CamelCase class + "Pass".
PASSES: dict[str, tuple[str, str]] = dict(sorted({
    "canonicalize": ("solder.passes.canonicalize", "CanonicalizePass"),
    "cse": ("solder.passes.cse", "CsePass"),
    "dce": ("solder.passes.dce", "DcePass"),
    "fuse-blocks": ("solder.passes.fuse_blocks", "FuseBlocksPass"),
    "fuse-ops": ("solder.passes.fuse_ops", "FuseOpsPass"),
    "merge-linears": ("solder.passes.merge_linears", "MergeLinearsPass"),
    "plan-memory": ("solder.passes.plan_memory", "PlanMemoryPass"),
    "recognize-attention": ("solder.passes.recognize_attention", "RecognizeAttentionPass"),
    "rewrite-sparse-attention": ("solder.passes.rewrite_sparse_attention", "RewriteSparseAttentionPass"),
}.items()))


def available() -> list[str]:
    """Names of the passes whose implementation is present."""
    return [n for n, (mod, _) in PASSES.items() if importlib.util.find_spec(mod) is not None]


def pass_class(name: str) -> type[ModulePass]:
    if name not in PASSES or name not in available():
        raise PipelineError(f"unknown pass {name!r}; known passes: {', '.join(available())}")
    module, cls = PASSES[name]
    return getattr(importlib.import_module(module), cls)


def parse(pipeline: str) -> list[ModulePass]:
    """The passes of a pipeline string, with their options; errors name the pass and the problem."""
    if not pipeline.strip():
        return []
    try:
        specs = list(parse_pipeline(quote_option_values(pipeline)))
    except (Exception, ArgSpecParseError) as e:  # xDSL's parse error derives from BaseException
        msg = " ".join(str(e).split())
        raise PipelineError(f"malformed pipeline {pipeline!r}: {msg}. Expected e.g. 'canonicalize,cse,fuse-ops{{max-ops=16}}'") from None
    out = []
    for spec in specs:
        cls = pass_class(spec.name)
        try:
            out.append(cls.from_pass_spec(spec))
        except Exception as e:
            fields = ", ".join(f.replace("_", "-") for f in getattr(cls, "__dataclass_fields__", {}) if f != "name")
            raise PipelineError(f"bad options for pass {spec.name!r}: {e}. Its options: {fields or 'none'}") from None
        out[-1] = _with_checked_cost_model(out[-1])
    return out


def _with_checked_cost_model(p: ModulePass) -> ModulePass:
    """`p` with its cost-model path made absolute; PipelineError when the path names no model that loads."""
    model = getattr(p, "cost_model", "")
    if not isinstance(model, str) or model in ("", "roofline"):
        return p
    problem = cost_model_problem(model)
    if problem:
        raise PipelineError(f"{p.name}: cost-model={model!r}: {problem}. Pass a model file or folder written by "
                            "`solder-costmodel train`, or cost-model=roofline")
    return dataclasses.replace(p, cost_model=str(Path(model).expanduser().resolve()))


_BARE_VALUE = re.compile(r"[A-Za-z0-9_-]+|[-+]?[0-9]+(\.[0-9]*([eE][-+]?[0-9]+)?)?")


def quote_option_values(pipeline: str) -> str:
    """`pipeline` with option values that xDSL's lexer cannot read bare (a path: `cost-model=/m/model.pkl`)
    put in double quotes; quoted values and every other character stay as they are."""
    out, depth, i = [], 0, 0
    while i < len(pipeline):
        c = pipeline[i]
        if c == '"':  # a quoted value: copied through its closing quote
            end = pipeline.find('"', i + 1)
            end = len(pipeline) - 1 if end < 0 else end
            out.append(pipeline[i:end + 1])
            i = end + 1
            continue
        depth += (c == "{") - (c == "}")
        out.append(c)
        i += 1
        if c == "=" and depth > 0:
            m = re.compile(r'[^\s,{}="]+').match(pipeline, i)
            if m and not _BARE_VALUE.fullmatch(m.group()):
                out.append(f'"{m.group()}"')
                i = m.end()
    return "".join(out)


def cost_model_problem(spec) -> str | None:
    """Why the cost model `spec` (a path to a model file or folder) cannot be used, or None when it loads."""
    from solder import costmodel

    path = Path(spec).expanduser()
    if not path.exists():
        return "no such file or folder"
    try:
        model = costmodel.load_model(path)
    except Exception as e:  # noqa: BLE001 - any loader failure is the answer to "why not"
        return f"it does not load ({type(e).__name__}: {e})"
    return None if model is not None else "it does not load as a solder cost model"


def describe() -> list[tuple[str, str]]:
    """(name, first docstring line) of each available pass, for `solder-opt --list-passes`."""
    rows = []
    for name in available():
        doc = (pass_class(name).__doc__ or "").strip().splitlines()
        rows.append((name, doc[0] if doc else ""))
    return rows


Callback = Callable[[ModulePass, object], None]
