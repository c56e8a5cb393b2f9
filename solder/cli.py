"""`solder-opt`: run a pass pipeline on a `.mlir` file (or a model from the zoo) and print the result.

    solder-opt model.mlir -p "canonicalize,cse,fuse-ops" --target h100
    solder-opt --from-torch examples/models.py:gpt2 -p canonicalize --print-ir-after-all
    solder-opt --list-passes
    solder-opt --list-ops

Its output parses back: `solder-opt x.mlir | solder-opt -` gives the same text. Bad input (a missing, binary
or unreadable file, a directory, an unwritable `-o`) exits with status 1 and one line `solder-opt: error: ...`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from solder.compiler.errors import SolderError

EMITS = ("graph", "linalg", "triton")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="solder-opt", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="input .mlir file in the graph dialect ('-' for stdin)")
    p.add_argument("-p", "--pipeline", "--passes", dest="pipeline", default="",
                   help='pass pipeline, e.g. "canonicalize,cse,fuse-ops{max-ops=16}"')
    p.add_argument("--target", default="cpu", help="target whose cost model and limits the passes use")
    p.add_argument("--from-torch", metavar="FILE.py:NAME",
                   help="import a model: a zoo entry in FILE (examples/models.py:gpt2) or a function returning "
                        "(model, args, kwargs)")
    p.add_argument("--from-torch-mlir", metavar="FILE.mlir", help="import torch-dialect MLIR from torch-mlir's FX importer")
    p.add_argument("--list-passes", action="store_true", help="list the registered passes and exit")
    p.add_argument("--list-ops", action="store_true",
                   help="list every graph op with its route (generated, library, eager) per target and exit")
    p.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass (to stderr)")
    p.add_argument("--emit", choices=EMITS, default="graph",
                   help="graph: the IR after the pipeline; linalg: the MLIR the CPU backend compiles; "
                        "triton: the generated Triton kernels")
    p.add_argument("--explain", action="store_true", help="print the fusion table after the pipeline (to stderr)")
    p.add_argument("--ignore-backend", action="store_true",
                   help="fusion decides by the passes' own rules alone, without asking the target's backend whether "
                        "a group is one launch (to study the passes; the kernels may then be split at lowering)")
    p.add_argument("-o", "--output", help="write the result here instead of stdout")
    return p


def _load_from_torch(spec: str):
    from solder.compiler.capture import capture
    from solder.compiler.aten_table import TABLE
    from solder.compiler.importer import import_program

    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise SolderError(f"--from-torch expects FILE.py:NAME, got {spec!r}")
    if not Path(path).exists():
        raise SolderError(f"--from-torch: no such file {path!r}")
    mod_name = f"_solder_from_torch_{Path(path).stem}"
    mod_spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(Path(path).resolve().parent.parent))
    mod_spec.loader.exec_module(module)
    zoo = getattr(module, "ZOO", {})
    if name in zoo:
        model, args, kwargs = zoo[name].build()
    elif callable(getattr(module, name, None)):
        model, args, kwargs = getattr(module, name)()
    else:
        raise SolderError(f"--from-torch: {path} has no zoo entry or builder {name!r}; "
                          f"zoo entries: {', '.join(sorted(zoo)) or 'none'}")
    cap = capture(model, args, kwargs, set(TABLE))
    return import_program(cap.program).module, (model, args if not kwargs else None)


def _read_input(args) -> object:
    from solder.compiler import ir

    if args.from_torch:
        module, args.torch_model = _load_from_torch(args.from_torch)
        return module
    if args.from_torch_mlir:
        from solder.compiler.torch_mlir_import import import_torch_mlir

        return import_torch_mlir(_read_text(args.from_torch_mlir))
    if not args.file:
        raise SolderError("no input: give a .mlir file, '-' for stdin, or --from-torch FILE.py:NAME")
    if args.file == "-":
        return ir.parse(_decode(sys.stdin.buffer.read(), "<stdin>"), "<stdin>")
    return ir.parse(_read_text(args.file), args.file)


def _read_text(name: str) -> str:
    """The text of the input file `name`, or a SolderError that says why it cannot be read."""
    path = Path(name)
    if not path.exists():
        raise SolderError(f"no such file: {name}")
    if path.is_dir():
        raise SolderError(f"{name} is a directory; expected a .mlir file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SolderError(f"cannot read {name}: {e.strerror or e}") from None
    return _decode(data, name)


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SolderError(f"{name} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); expected a "
                          ".mlir file in the graph dialect") from None


def _write_text(name: str, text: str) -> None:
    try:
        Path(name).write_text(text)
    except OSError as e:
        raise SolderError(f"cannot write -o {name}: {e.strerror or e}") from None


def _emit(module, kind: str, target) -> str:
    from solder.compiler import ir

    if kind == "graph":
        return ir.print_ir(module)
    if kind == "linalg":
        from solder.backends.cpu.backend import emit_module

        return emit_module(module, target)
    from solder.backends.triton.backend import emit_module

    return emit_module(module, target)


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from solder.compiler import ir
    from solder.passes.pipeline import run_pipeline
    from solder.compiler.targets import get_target
    from solder.passes import registry

    if args.list_passes:
        for name, doc in registry.describe():
            print(f"{name:<28} {doc}")
        return 0
    if args.list_ops:
        from solder.backends.coverage import coverage_table

        sys.stdout.write(coverage_table())
        return 0
    target = get_target(args.target)
    module = _read_input(args)
    after = None
    if args.print_ir_after_all:
        def after(spec, m):
            sys.stderr.write(f"// -----// IR Dump After {spec} //----- //\n{ir.print_ir(m)}\n")
    pipeline = registry.parse(args.pipeline)
    if getattr(args, "torch_model", None):  # a calibrate policy without a plan calibrates the model itself
        from solder.sparse_calibrate import calibrate_pipeline

        pipeline = calibrate_pipeline(pipeline, *args.torch_model, target=target)
    from solder.backends.registry import get_backend

    can_fuse = None if args.ignore_backend else get_backend(target.backend).can_fuse  # is a group one launch
    run_pipeline(module, pipeline, target=target, verify=True, after_each=after, can_fuse=can_fuse)
    if args.explain:
        from solder.report import kernel_table, kernels_of

        sys.stderr.write(kernel_table(kernels_of(module)) + "\n")
    text = _emit(module, args.emit, target)
    if args.output:
        _write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point: errors print one clear message and exit with status 1."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except SolderError as e:
        sys.stderr.write(f"solder-opt: error: {e}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
