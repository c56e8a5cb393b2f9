"""Importer: an exported FX graph → a `builtin.module` holding `func.func @forward` in the `graph` dialect.

Parameters, buffers and lifted constants become leading function arguments named by their
state_dict key (`{graph.name = "h.0.attn.c_attn.weight"}`), user inputs follow; nothing is inlined.
Each ATen op is lowered by one entry in `solder.compiler.aten_table.TABLE`; an op without an entry becomes a
`graph.extern` that runs the ATen op eagerly, with one warning naming the op.
"""

from __future__ import annotations

import operator
import re
import warnings

import torch
from torch.export.graph_signature import InputKind, OutputKind
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Region, SSAValue

from solder.compiler import log, write_back
from solder.compiler.aten_table import TABLE
from solder.compiler.dialects import symbolic
from solder.compiler.errors import ImportError_
from solder.compiler.import_context import (  # noqa: F401  (re-exported: the importer's public names)
    ArgInfo,
    ImportContext,
    Imported,
    OutputInfo,
    UnsupportedOpWarning,
    check_on_data,
    decode_extern_args,
    extern,
    is_symbolic_scalar,
    op_name,
    scalar_attr,
    torch_dtype_name,
    type_of_meta,
)

_log = log.get("import")


def _input_name(spec) -> tuple[str, str]:
    kind = {InputKind.PARAMETER: "param", InputKind.BUFFER: "buffer", InputKind.CONSTANT_TENSOR: "constant",
            InputKind.USER_INPUT: "input"}.get(spec.kind)
    if kind is None:
        raise ImportError_(f"input kind {spec.kind} ({spec.arg.name}) is not supported for inference")
    return (spec.target if kind != "input" else spec.arg.name), kind


def import_program(ep: torch.export.ExportedProgram, table: dict | None = None, strip_prefix: str = "",
                   same_as_input: dict[int, int] | None = None) -> Imported:
    """Turn `ep` into the `graph` dialect; ops without a table entry become `graph.extern`.

    Symbolic input sizes (export with `dynamic_shapes`) become `?` dims; their symbols, renamed `s0`,
    `s1`, ... in argument order, get their bounds from `ep.range_constraints`. `strip_prefix` is taken
    off state names (capture wraps a model as the submodule `m.` to export it with flat inputs).

    A functionalized program's BUFFER_MUTATION / USER_INPUT_MUTATION outputs become leading results
    marked `graph.writes = <argument index>` (compiler/write_back.py). `same_as_input` (user output index
    -> input spec index, `Captured.same_as_input`) names the outputs that eager returns as a mutated
    input or buffer itself: they map to that write-back result, so the caller gets the tensor itself.
    """
    table = TABLE if table is None else table
    sig = ep.graph_signature
    placeholders, args, positions, user_index = [], [], [], 0
    for node, spec in zip([n for n in ep.graph.nodes if n.op == "placeholder"], sig.input_specs):
        info = ArgInfo(*_input_name(spec))
        if strip_prefix and info.kind != "input":
            info.name = info.name.removeprefix(strip_prefix)
        if info.kind == "input":
            user_index += 1
            if not isinstance(node.meta.get("val"), torch.Tensor):
                continue  # a Python value export specialized on: part of the cache key, not an argument
            positions.append(user_index - 1)
        placeholders.append(node)
        args.append(info)
    ctx = start_function(placeholders, args)
    block = ctx.block
    arg_types = list(block.arg_types)
    externs: list[str] = []
    results: list[SSAValue] = []
    outputs: list[OutputInfo] = []
    res_attrs: list[DictionaryAttr] = []
    for node in ep.graph.nodes:
        ctx.node = node
        if node.op == "call_function":
            _import_call(ctx, node, table, externs)
        elif node.op == "output":
            arg_of = {n.name: i for i, n in enumerate(placeholders)}
            _import_outputs(ctx, ep, node, arg_of, same_as_input or {}, (results, outputs, res_attrs))
        elif node.op != "placeholder":
            raise ImportError_(f"FX node kind {node.op} ({node.name}) is not supported")
    block.add_op(func.ReturnOp(*results))
    arg_attrs = [DictionaryAttr({"graph.name": StringAttr(a.name)}) for a in args]
    fn = func.FuncOp("forward", (arg_types, [r.type for r in results]), Region(block), arg_attrs=ArrayAttr(arg_attrs),
                     res_attrs=ArrayAttr(res_attrs) if any(d.data for d in res_attrs) else None)
    module = ModuleOp([fn])
    _record_symbols(module, fn, ep, placeholders, ctx.assumes)
    return Imported(module, args, outputs, externs, positions)


def _import_outputs(ctx: ImportContext, ep, node: torch.fx.Node, arg_of: dict[str, int],
                    same_as_input: dict[int, int], into: tuple[list, list, list]) -> None:
    """The function's results from export's outputs: a write-back result per mutated buffer or input (in
    export's order), then the user outputs, each a result of its own unless eager returns the mutated
    input itself."""
    results, outputs, res_attrs = into
    sig = ep.graph_signature
    placeholder_of = {s.target: s.arg.name for s in sig.input_specs if s.kind == InputKind.BUFFER}
    placeholder_of.update({s.arg.name: s.arg.name for s in sig.input_specs if s.kind == InputKind.USER_INPUT})
    spec_arg = [arg_of.get(s.arg.name) for s in sig.input_specs]
    written: dict[int, int] = {}  # argument index -> its write-back result
    user = 0
    for spec, out in zip(sig.output_specs, node.args[0]):
        if spec.kind in (OutputKind.BUFFER_MUTATION, OutputKind.USER_INPUT_MUTATION):
            arg = arg_of.get(placeholder_of.get(spec.target, ""))
            if arg is None or not isinstance(out, torch.fx.Node):
                raise ImportError_(f"output {spec.arg.name} writes {spec.target}, which is not a tensor argument "
                                   "of the compiled function; keep the in-place update outside the model")
            written[arg] = len(results)
            results.append(ctx.value(out))
            res_attrs.append(write_back.writes_attr(arg))
        elif spec.kind != OutputKind.USER_OUTPUT:
            raise ImportError_(f"output {spec.arg} of kind {spec.kind} is not supported for inference")
        else:
            same = same_as_input.get(user)
            user += 1
            if same is not None and spec_arg[same] in written:
                outputs.append(OutputInfo(written[spec_arg[same]]))
            elif isinstance(out, torch.fx.Node):
                outputs.append(OutputInfo(len(results)))
                results.append(ctx.value(out))
                res_attrs.append(DictionaryAttr({}))
            else:
                outputs.append(OutputInfo(None, out))


def _record_symbols(module: ModuleOp, fn: func.FuncOp, ep, placeholders, assumes: list[str]) -> None:
    """Name the input sizes' symbols s0, s1, ... and record their bounds and example sizes on `fn`."""
    found: dict[str, tuple[object, int]] = {}  # torch symbol name -> (sympy symbol, example size)
    fixed: dict[str, str] = {}  # symbols export specialized to a number after some types named them (s27 -> 32)
    for node in placeholders:
        val = node.meta.get("val")
        for d in val.shape if isinstance(val, torch.Tensor) else ():
            if not isinstance(d, torch.SymInt):
                continue
            env = d.node.shape_env
            fixed.update({str(k): str(int(v)) for k, v in env.replacements.items() if v.is_Integer})
            if d.node.maybe_as_int() is None and d.node.expr.is_Symbol:
                found.setdefault(str(d.node.expr), (d.node.expr, int(d.node.hint)))
    if not found:
        symbolic.rename(module, fixed)
        return
    every = [n for n in ep.graph.nodes if n.op == "placeholder"]
    assumes = assumes + _size_guards(ep, [n for n, a in zip(every, args_of(every, ep)) if a])
    names = {old: f"s{i}" for i, old in enumerate(found)}
    syms = []
    for old, (expr, hint) in found.items():
        vr = ep.range_constraints.get(expr)
        lo = _finite(vr.lower) if vr is not None else None
        hi = _finite(vr.upper) if vr is not None else None
        lo = 0 if lo is None else lo
        syms.append(symbolic.Symbol(names[old], lo, hi, hint))
    symbolic.set_symbols(fn, syms, assumes)
    symbolic.rename(module, {**fixed, **names})


_GUARD_SIZE = re.compile(r"L\['leaves'\]\[(\d+)\]\.size\(\)\[(\d+)\]")


def args_of(placeholders, ep) -> list[bool]:
    """For each placeholder, whether it is a user input."""
    kinds = {s.arg.name: s.kind for s in ep.graph_signature.input_specs}
    return [kinds.get(n.name) == InputKind.USER_INPUT for n in placeholders]


def _size_guards(ep, user: list[torch.fx.Node]) -> list[str]:
    """Export's guards on input sizes (`ep._guards_code`, over `L['leaves'][i].size()[d]` for a flat capture)
    as expressions over the size symbols; guards on anything but sizes are left to export's own checks."""
    out = []
    for code in getattr(ep, "_guards_code", None) or []:
        def size(m):
            i, d = int(m.group(1)), int(m.group(2))
            dim = user[i].meta["val"].shape[d]
            return f"({dim.node.expr})" if isinstance(dim, torch.SymInt) and dim.node.maybe_as_int() is None \
                else str(int(dim))
        try:
            expr = _GUARD_SIZE.sub(size, code)
        except (IndexError, KeyError, AttributeError):
            expr = code
        if "L[" in expr:
            _log.info("guard not on input sizes, not checked by solder: %s", code)
            continue
        out.append(expr)
    return out


def _finite(bound) -> int | None:
    """A sympy bound of a symbol's range as an int, None for (int_)oo."""
    try:
        return int(bound) if bound.is_number and bound.is_finite is not False and abs(bound) < 2**62 else None
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


def start_function(placeholders: list[torch.fx.Node], args: list[ArgInfo]) -> ImportContext:
    """A block with one argument per placeholder (typed from its metadata, named after `args`), and its context."""
    block = Block(arg_types=[type_of_meta(n.meta["val"]) for n in placeholders])
    ctx = ImportContext(block)
    for node, barg, info in zip(placeholders, block.args, args):
        ctx.values[node] = barg
        barg.name_hint = _hint(info.name)
    return ctx


def _hint(name: str) -> str:
    h = "".join(c if c.isalnum() else "_" for c in name)
    return h if h and not h[0].isdigit() else f"v{h}"


def _import_call(ctx: ImportContext, node: torch.fx.Node, table: dict, externs: list[str]) -> None:
    val = node.meta.get("val")
    if str(node.target) in ("aten._assert_scalar.default",) and isinstance(node.args[0], torch.fx.Node):
        cond = node.args[0].meta.get("val")
        if isinstance(cond, torch.SymBool) and cond.node.maybe_as_bool() is None:
            if {str(x) for x in cond.node.expr.free_symbols} & set(ctx.unbacked):
                check_on_data(ctx, cond, str(node.args[1]) if len(node.args) > 1 else "run-time assertion failed")
            else:
                ctx.assumes.append(str(cond.node.expr))
        return
    if str(node.target) in ("aten._local_scalar_dense.default", "aten.item.default") \
            and isinstance(val, (torch.SymInt, torch.SymFloat)) \
            and isinstance(node.args[0], torch.fx.Node) and node.args[0] in ctx.values:
        # `x.item()`: kept as the 0-d tensor it reads. Run-time assertions on it become graph ops; an op that
        # takes the value as a scalar operand (`torch.full(shape, v)`, `t * v`) reads the 0-d tensor; a size
        # computed from it reads a symbol no tensor type carries, and the import fails there.
        ctx.unbacked[str(val.node.expr)] = ctx.values[node] = ctx.value(node.args[0])
        return
    if str(node.target).startswith("aten.sym_") or (not isinstance(node.target, torch._ops.OpOverload)
                                                     and node.target is not operator.getitem
                                                     and is_symbolic_scalar(val)):
        return  # a size computation (sym_size, SymInt arithmetic): consumers read sizes from metadata
    if node.target is operator.getitem:
        src, idx = node.args
        ctx.values[node] = ctx.values[src][idx]
        return
    name = op_name(node.target)
    entry = table.get(name)
    if entry is not None:
        out = entry(ctx, *node.args, **node.kwargs)
        if out is NotImplemented:  # the entry handles only some argument forms
            entry = None
        else:
            if out is not None:
                ctx.values[node] = out
            return
    if not isinstance(node.target, torch._ops.OpOverload):
        raise ImportError_(f"{ctx.where()}: call of {node.target!r} is not an ATen op and cannot run eagerly either")
    if name not in externs:
        externs.append(name)
        warnings.warn(f"solder: {name} is not lowered by the compiler; it runs through eager PyTorch "
                      "(graph.extern)", UnsupportedOpWarning, stacklevel=4)
    ctx.values[node] = extern(ctx, node)
