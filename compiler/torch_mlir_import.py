"""Reading torch-dialect MLIR (as torch-mlir's FX importer writes it) into the `graph` dialect.

`torch_mlir.fx.export_and_import(model, *args, decomposition_table={})` prints a `func.func` of
`torch.aten.*` ops on `!torch.vtensor<[shape],dtype>` values, with scalars and lists as
`torch.constant.*` / `torch.prim.ListConstruct` ops and the weights frozen into
`torch.vtensor.literal` ops (usually `dense_resource<...>` blobs at the end of the file).

xDSL does not know the torch dialect, so the text is parsed with torch-mlir's own MLIR bindings
(`torch_mlir.ir`) and walked once into an FX graph whose `call_function` nodes carry the same ATen
overloads and `meta["val"]` that `torch.export` produces. That graph is then lowered by the importer's
own table (`solder.compiler.aten_table.TABLE`), so an op means exactly the same thing whichever way it came
in, and an ATen op without an entry becomes `graph.extern` as usual.

Weights become leading function arguments (like parameters in `compiler/importer.py`), named after
their resource key; `import_torch_mlir_with_state` also returns their values.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Region

from solder.compiler.errors import ImportError_, IRParseError
from solder.compiler.importer import ArgInfo, Imported, OutputInfo, _hint, _import_call, start_function

_VTENSOR = re.compile(r"^!torch\.vtensor<\[([^\]]*)\],([a-z0-9]+)>$")
_ELEMENT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64,
            "si64": torch.int64, "si32": torch.int32, "si16": torch.int16, "si8": torch.int8, "ui8": torch.uint8,
            "i1": torch.bool}
_RESOURCE = re.compile(r"^\s*([\w.\-$]+)\s*:\s*\"0x([0-9A-Fa-f]*)\"", re.M)


@dataclass
class TorchMlirImport:
    """The imported module, its argument/output maps, and the values of the frozen weights by name."""

    imported: Imported
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def module(self) -> ModuleOp:
        return self.imported.module


def import_torch_mlir(text: str, filename: str = "<torch-mlir>") -> ModuleOp:
    """torch-dialect MLIR text → a `builtin.module` with `func.func @forward` in the `graph` dialect."""
    return import_torch_mlir_with_state(text, filename).module


def import_torch_mlir_with_state(text: str, filename: str = "<torch-mlir>") -> TorchMlirImport:
    """Like `import_torch_mlir`, also returning the weights (the `torch.vtensor.literal` values) by name."""
    _ctx, _module, fn = _parse_func(text, filename)
    walker = _Walker(filename, _resource_blobs(text))
    walker.walk(fn)
    return walker.lower()


def _parse_func(text: str, filename: str):
    from torch_mlir import ir
    from torch_mlir.dialects import torch as torch_d

    if not text.strip():
        raise IRParseError(f"{filename}: the input is empty; expected torch-dialect MLIR from torch-mlir's FX importer")
    ctx = ir.Context()
    torch_d.register_dialect(ctx)
    try:
        module = ir.Module.parse(text, ctx)
    except Exception as e:  # MLIRError carries the diagnostics
        raise IRParseError(f"{filename}: cannot parse torch-dialect MLIR:\n{e}") from None
    funcs = [op for op in module.body.operations if op.operation.name == "func.func"]
    if len(funcs) != 1:
        raise ImportError_(f"{filename}: expected exactly one func.func (torch-mlir's FX importer writes one), "
                           f"found {len(funcs)}")
    return ctx, module, funcs[0]  # the caller holds context and module while the ops are walked


def _resource_blobs(text: str) -> dict[str, bytes]:
    """`dense_resource` blobs of the `{-# dialect_resources ... #-}` section: name → raw bytes."""
    start = text.rfind("{-#")
    if start < 0:
        return {}
    return {m.group(1): bytes.fromhex(m.group(2))[4:] for m in _RESOURCE.finditer(text, start)}  # 4 = alignment


def _meta(type_str: str, where: str) -> torch.Tensor:
    m = _VTENSOR.match(type_str)
    if m is None:
        raise ImportError_(f"{where}: expected a value tensor type !torch.vtensor<[dims],dtype>, got {type_str}")
    dims, et = m.group(1), m.group(2)
    if "?" in dims:
        raise ImportError_(f"{where}: dynamic dimension in {type_str}; solder imports static shapes only "
                           "(export without dynamic_shapes)")
    if et not in _ELEMENT:
        raise ImportError_(f"{where}: element type {et} is not supported; supported: {', '.join(_ELEMENT)}")
    shape = [int(d) for d in dims.split(",")] if dims.strip() else []
    return torch.empty(shape, dtype=_ELEMENT[et], device="meta")


def _overload(name: str, where: str):
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != "torch" or parts[1] != "aten":
        raise ImportError_(f"{where}: op {name} is not supported; expected torch.aten.* ops, torch.constant.*, "
                           "torch.prim.ListConstruct and torch.vtensor.literal")
    packet = getattr(torch.ops.aten, parts[2], None)
    overload = getattr(packet, parts[3] if len(parts) > 3 else "default", None) if packet is not None else None
    if overload is None:
        raise ImportError_(f"{where}: {name} names no ATen overload known to torch {torch.__version__}")
    return overload


def _dtype_of_int(code: int) -> torch.dtype:
    from torch_mlir.extras.fx_importer import TORCH_DTYPE_TO_INT

    for dt, c in TORCH_DTYPE_TO_INT.items():
        if c == code:
            return dt
    raise ImportError_(f"torch ScalarType code {code} is unknown")


def _enum_of_int(table_name: str, code: int):
    from torch_mlir.extras import fx_importer

    return {v: k for k, v in getattr(fx_importer, table_name).items()}[code]


def _convert(value, arg_type: str):
    """A Python value as the schema argument type wants it (enums arrive as ints)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    if "ScalarType" in arg_type:
        return _dtype_of_int(value)
    if "MemoryFormat" in arg_type:
        return _enum_of_int("TORCH_MEMORY_FORMAT_TO_INT", value)
    if "Layout" in arg_type:
        return _enum_of_int("TORCH_LAYOUT_TO_INT", value)
    return value


def _is_default(value, arg) -> bool:
    if not arg.has_default_value():
        return False
    default = arg.default_value
    if isinstance(value, torch.fx.Node) or isinstance(default, torch.Tensor):
        return False
    try:
        return type(value) is type(default) and value == default or (value is None and default is None)
    except Exception:  # noqa: BLE001  (odd types compare oddly; keep the argument)
        return False


class _Walker:
    """Walks one torch-dialect function into an FX graph (placeholders: weights, then inputs)."""

    def __init__(self, filename: str, blobs: dict[str, bytes]):
        self.filename, self.blobs = filename, blobs
        self.graph = torch.fx.Graph()
        self.values: dict = {}  # MLIR value -> Python value or fx.Node
        self.state: dict[str, torch.Tensor] = {}
        self.weights: list[torch.fx.Node] = []
        self.inputs: list[torch.fx.Node] = []
        self.calls: list[torch.fx.Node] = []
        self.outputs: list = []

    def walk(self, fn) -> None:
        block = fn.regions[0].blocks[0]
        for i, a in enumerate(block.arguments):
            node = self.graph.placeholder(f"arg{i}")
            node.meta["val"] = _meta(str(a.type), f"{self.filename}: argument {i}")
            self.values[a] = node
            self.inputs.append(node)
        for op in block.operations:
            self._op(op.operation)

    def _where(self, op) -> str:
        return f"{self.filename}: {op.name} at {op.location}"

    def _op(self, op) -> None:
        name = op.name
        if name.startswith("torch.constant."):
            self.values[op.results[0]] = self._constant(op)
        elif name == "torch.prim.ListConstruct":
            self.values[op.results[0]] = [self.values[v] for v in op.operands]
        elif name == "torch.vtensor.literal":
            self.values[op.results[0]] = self._literal(op)
        elif name == "torch.prim.ListUnpack":
            self._unpack(op)
        elif name == "func.return":
            self.outputs = [self.values[v] for v in op.operands]
        elif name == "torch.operator":
            self._call(op, _overload(str(op.attributes["name"].value), self._where(op)))
        else:
            self._call(op, _overload(name, self._where(op)))

    def _constant(self, op):
        if op.name == "torch.constant.none":
            return None
        if op.name == "torch.constant.device":
            return torch.device(op.attributes["value"].value)
        return op.attributes["value"].value

    def _literal(self, op) -> torch.fx.Node:
        from torch_mlir import ir

        meta = _meta(str(op.results[0].type), self._where(op))
        attr = op.attributes["value"]
        m = re.match(r"dense_resource<([^>]+)>", str(attr))
        if m:
            blob = self.blobs.get(m.group(1))
            if blob is None:
                raise ImportError_(f"{self._where(op)}: resource {m.group(1)} has no blob in the file's "
                                   "dialect_resources section (was the text printed with large elements elided?)")
            name = m.group(1)
            raw = torch.frombuffer(bytearray(blob), dtype=torch.uint8 if meta.dtype == torch.bool else meta.dtype)
            value = raw.to(meta.dtype).reshape(meta.shape).clone()
        else:
            import numpy as np

            name = f"literal_{len(self.state)}"
            arr = np.array(attr) if not (isinstance(attr, ir.DenseElementsAttr) and attr.is_splat) else \
                np.full(list(meta.shape), float(str(attr.get_splat_value()).split(":")[0]))
            value = torch.as_tensor(arr).to(meta.dtype).reshape(meta.shape).clone()
        node = self.graph.placeholder(_hint(name))
        node.meta["val"] = meta
        self.state[name] = value
        node.meta["solder_name"] = name
        self.weights.append(node)
        return node

    def _call(self, op, overload) -> None:
        schema = overload._schema
        args, kwargs = [], {}
        operands = [self.values[v] for v in op.operands]
        if len(operands) > len(schema.arguments):
            raise ImportError_(f"{self._where(op)}: {len(operands)} operands, but {overload} takes "
                               f"{len(schema.arguments)} ({schema})")
        for value, arg in zip(operands, schema.arguments):
            value = _convert(value, str(arg.type))
            if arg.kwarg_only:
                if not _is_default(value, arg):
                    kwargs[arg.name] = value
            else:
                args.append((value, arg))
        while args and _is_default(*args[-1]):  # torch.export leaves defaulted trailing arguments out too
            args.pop()
        args = [v for v, _ in args]
        node = self.graph.call_function(overload, tuple(args), kwargs)
        self.calls.append(node)
        if len(op.results) == 1 and str(op.results[0].type) == "!torch.list<vtensor>":
            self.values[op.results[0]] = node  # its element types come with the torch.prim.ListUnpack
            return
        metas = [_meta(str(r.type), self._where(op)) for r in op.results]
        node.meta["val"] = metas[0] if len(metas) == 1 else tuple(metas)
        if len(metas) == 1:
            self.values[op.results[0]] = node
            return
        self._items(node, list(op.results), metas)

    def _unpack(self, op) -> None:
        node = self.values[op.operands[0]]
        if not isinstance(node, torch.fx.Node) or "val" in node.meta:
            raise ImportError_(f"{self._where(op)}: expected to unpack the tensor list result of an ATen op")
        metas = [_meta(str(r.type), self._where(op)) for r in op.results]
        node.meta["val"] = tuple(metas)
        self._items(node, list(op.results), metas)

    def _items(self, node: torch.fx.Node, results: list, metas: list) -> None:
        """One `operator.getitem` node per result, as torch.export writes multi-result ops."""
        for i, (r, meta) in enumerate(zip(results, metas)):
            item = self.graph.call_function(operator.getitem, (node, i))
            item.meta["val"] = meta
            self.calls.append(item)
            self.values[r] = item

    def lower(self) -> TorchMlirImport:
        """Lower the FX graph with the importer's table into `func.func @forward`."""
        from solder.compiler.aten_table import TABLE

        placeholders = self.weights + self.inputs
        args = [ArgInfo(n.meta["solder_name"], "constant") for n in self.weights] + \
               [ArgInfo(n.name, "input") for n in self.inputs]
        ctx = start_function(placeholders, args)
        block = ctx.block
        arg_types = list(block.arg_types)
        externs: list[str] = []
        for node in self.calls:
            ctx.node = node
            _import_call(ctx, node, TABLE, externs)
        results, outputs = [], []
        for out in self.outputs:
            if isinstance(out, torch.fx.Node):
                outputs.append(OutputInfo(len(results)))
                results.append(ctx.value(out))
            else:
                outputs.append(OutputInfo(None, out))
        block.add_op(func.ReturnOp(*results))
        arg_attrs = ArrayAttr([DictionaryAttr({"graph.name": StringAttr(a.name)}) for a in args])
        fn = func.FuncOp("forward", (arg_types, [r.type for r in results]), Region(block), arg_attrs=arg_attrs)
        imported = Imported(ModuleOp([fn]), args, outputs, externs, list(range(len(self.inputs))))
        return TorchMlirImport(imported, self.state)
