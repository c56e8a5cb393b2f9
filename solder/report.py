"""The fusion report: one row per `graph.kernel` — what it holds, why, and what it is estimated to cost.

    kid  ops  fused µs  parts µs  measured µs  body                  reason
      0    3      1.52      4.10            -  linear+gelu           epilogue: linear+gelu

A kernel is a dict with `kernel_id`, `ops` (op names, or one string), `reason`, `est_seconds`,
`est_parts_seconds` and optionally `measured_seconds` (a backend that timed the kernel adds it).
`kernels_of(module)` reads those dicts from the `graph.kernel` ops of a module; backends may pass
richer dicts of their own to `kernel_table`. `explain(compiled)` is the whole text of `CompiledModule.explain()`.
"""

from __future__ import annotations

from xdsl.ir import Operation

from solder.compiler import ir
from solder.compiler.dialects import graph as g

_SKIP = (g.YieldOp, g.ConstantOp)


def kernels_of(module: Operation) -> list[dict]:
    """The kernel dicts of every `graph.kernel` in `module`, in program order."""
    out = []
    for op in module.walk():
        if not isinstance(op, g.KernelOp):
            continue
        attrs = op.attributes
        body = [o.name.removeprefix(g.PREFIX) for o in op.regions[0].block.ops if not isinstance(o, _SKIP)]
        reason = attrs["reason"].data if "reason" in attrs else ""
        for o in op.regions[0].block.ops:  # merge-linears' decision, recorded on the stacked linear
            if "merged" in o.attributes:
                reason += (f"; {o.attributes['merged'].data} merged (merge-linears: est "
                           f"{_us(_num(o.attributes.get('merged_est_seconds'), None))} us vs "
                           f"{_us(_num(o.attributes.get('merged_parts_seconds'), None))} us apart)")
        out.append({
            "kernel_id": _num(attrs.get("kernel_id"), len(out)),
            "ops": body,
            "reason": reason,
            "est_seconds": _num(attrs.get("est_seconds"), None),
            "est_parts_seconds": _num(attrs.get("est_parts_seconds"), None),
        })
    return out


def _num(attr, default):
    if attr is None:
        return default
    return attr.value.data


def _us(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.2f}"


def _body(ops, width: int = 28) -> str:
    if isinstance(ops, str):
        text = ops
    else:
        shown = [o for o in ops if o not in ("reshape", "permute", "expand", "slice")] or list(ops)
        text = "+".join(dict.fromkeys(shown))
    return text if len(text) <= width else text[: width - 3] + "..."


def kernel_table(kernels: list[dict]) -> str:
    """A fixed-width table of `kernels` with a totals line; measured times appear where present."""
    if not kernels:
        return "kernels: none (no graph.kernel in the program)"
    measured = any(k.get("measured_seconds") is not None for k in kernels)
    head = f"{'kid':>4} {'ops':>4} {'fused us':>9} {'parts us':>9}"
    head += f" {'meas. us':>9}" if measured else ""
    head += f"  {'body':<28}  reason"
    rows = [head]
    for k in kernels:
        ops = k.get("ops", [])
        n = len(ops) if not isinstance(ops, str) else ops.count("+") + 1
        row = f"{k.get('kernel_id', '?'):>4} {n:>4} {_us(k.get('est_seconds')):>9} {_us(k.get('est_parts_seconds')):>9}"
        if measured:
            row += f" {_us(k.get('measured_seconds')):>9}"
        row += f"  {_body(ops):<28}  {k.get('reason', '')}"
        rows.append(row)
    fused = sum(k.get("est_seconds") or 0.0 for k in kernels)
    parts = sum(k.get("est_parts_seconds") or 0.0 for k in kernels)
    total = f"kernels: {len(kernels)}, estimated {fused * 1e6:.2f} us fused vs {parts * 1e6:.2f} us as separate ops"
    if measured:
        total += f", measured {sum(k.get('measured_seconds') or 0.0 for k in kernels) * 1e6:.2f} us"
    return "\n".join([total, *rows])


def backend_table(steps: list[dict]) -> str:
    """One line per step the backend runs: its route (generated kernel, template, library call, fallback)
    and, for autotuned steps, which candidate won and the measured times."""
    lines = [f"backend steps: {len(steps)}"]
    for k in steps:
        route = k.get("route") or k.get("kind", "?")
        name = k.get("name") or _body(k.get("ops", []), 40)
        line = f"  {k.get('id', '?'):>4}  {route:<14} {name}"
        tuned = k.get("autotune")
        if tuned is not None and getattr(tuned, "choice", None):
            times = ", ".join(f"{c} {t * 1e6:.1f} us" for c, t in tuned.timings.items())
            line += f"  [autotuned: {tuned.choice}{'; ' + times if times else ''}]"
        elif tuned is not None:
            line += "  [autotune: decided on the first CUDA call]"
        lines.append(line)
    return "\n".join(lines)


def explain(compiled) -> str:
    """`compiled.explain()`: the pipeline that ran, timings, fallbacks and the IR of every compiled input signature."""
    if not compiled.specializations:
        return f"{compiled.name}: not compiled yet (compilation happens on the first call)"
    lines = []
    for sp in compiled.specializations.values():
        shapes = ", ".join(f"{tuple('?' if n == -1 else n for n in k[1])}:{str(k[2]).removeprefix('torch.')}"
                           for k in sp.key[1] if k[0] == "T")
        lines.append(f"== {compiled.name} [{shapes}] target={compiled.options.target.name} "
                     f"backend={compiled.options.target.backend}")
        if sp.binding is not None and sp.binding.symbols:
            lines.append("dynamic: " + ", ".join(
                f"{s.name} in [{s.lo}, {'inf' if s.hi is None else s.hi}] (example {s.hint})"
                for s in sp.binding.symbols.values()))
            if sp.program.dynamic:
                lines.append(sp.program.dynamic)
            if sp.program.sizes is not None:
                lines.append(f"backend code compiled per size, for {len(sp.program.sizes)} size(s): "
                             + "; ".join(", ".join(f"{k}={v}" for k, v in e.items()) for e in sp.program.sizes))
        lines.append("compile: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in sp.seconds.items()))
        if sp.speed is not None:
            lines.append(sp.speed.describe())
        lines.append(f"pipeline: {sp.pipeline.pipeline}")
        models = sp.pipeline.cost_models
        if models:
            same = len(set(models.values())) == 1
            lines.append("cost model: " + (next(iter(models.values())) if same else
                                           "; ".join(f"{k}: {v}" for k, v in models.items())))
        for name, s in sp.pipeline.timings:
            lines.append(f"  {name:<28} {s * 1e3:8.2f} ms")
        if sp.decomposed:
            lines.append("decomposed at capture (no importer entry): " + ", ".join(sp.decomposed))
        if sp.imported.externs:
            lines.append("eager fallbacks (graph.extern): " + ", ".join(sp.imported.externs))
        if sp.writes:
            lines.append("written back after each call (in place, as eager does): " + ", ".join(
                f"result {r} -> {sp.imported.args[a].kind} {sp.imported.args[a].name}" for r, a in sp.writes)
                + "; verify=True runs the compiled and the eager call on the same starting values")
        if sp.program.fallbacks:
            lines.append("ops the backend did not lower (ran on the reference backend): " +
                         ", ".join(sp.program.fallbacks))
        lines.append(kernel_table(kernels_of(sp.imported.module)))
        if sp.program.kernels:
            lines.append(backend_table(sp.program.kernels))
        lines.append(sp.ir_text or ir.print_ir(sp.imported.module))
    return "\n".join(lines)
