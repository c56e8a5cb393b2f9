"""The fusion report: one row per `graph.kernel` — what it holds, why, and what it is estimated to cost.

    kid  ops  fused µs  parts µs  measured µs  body                  reason
      0    3      1.52      4.10            -  linear+gelu           epilogue: linear+gelu

A kernel is a dict with `kernel_id`, `ops` (op names, or one string), `reason`, `est_seconds`,
`est_parts_seconds` and optionally `measured_seconds` (a backend that timed the kernel adds it).
`kernels_of(module)` reads those dicts from the `graph.kernel` ops of a module; backends may pass
richer dicts of their own to `kernel_table`.
"""

from __future__ import annotations

from xdsl.ir import Operation

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
