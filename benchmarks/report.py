"""Markdown tables and PNG bar charts of a harness run."""

from __future__ import annotations

import math
from pathlib import Path


def _ms(v) -> str:
    return "" if v is None else f"{v * 1e3:.3f}"


def _x(v) -> str:
    return "" if v is None else f"{v:.2f}x"


def write_markdown(meta: dict, rows: list[dict], path: Path) -> str:
    head = (f"solder benchmarks — target `{meta['target']}` on {meta['device']}, {meta['date']}, commit "
            f"{meta['commit']}, torch {meta['torch']}; medians of {meta['repeats']} interleaved calls. "
            "Speed-ups > 1 mean solder is faster.\n\n")
    cols = ["case", "threads", "solder ms", "eager ms", "inductor ms", "inductor-ro ms", "vs eager", "vs inductor",
            "vs inductor-ro",
            "% of copy (median / best round)",
            "compile cold s", "cold, no prebuilt attention s", "compile warm s", "inductor cold s",
            "peak MB (solder/eager/inductor)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r.get('threads', '')} | error: {r['error'][:80]} |" + " |" * (len(cols) - 3))
            continue
        peak = "n/a" if r.get("solder_peak_bytes") is None else \
            " / ".join(f"{r[k] / 2**20:.1f}" if r.get(k) is not None else "-"
                       for k in ("solder_peak_bytes", "eager_peak_bytes", "inductor_peak_bytes"))
        lines.append("| " + " | ".join([
            r["case"], str(r.get("threads", "")), _ms(r.get("solder_s")), _ms(r.get("eager_s")), _ms(r.get("inductor_s")),
            _ms(r.get("inductor_ro_s")), _x(r.get("speedup_vs_eager")), _x(r.get("speedup_vs_inductor")),
            _x(r.get("speedup_vs_inductor_ro")),
            (f"{r['pct_of_copy']:.0f}% / {r['pct_of_copy_best']:.0f}%" if "pct_of_copy_best" in r
             else f"{r['pct_of_copy']:.0f}%") if "pct_of_copy" in r else "",
            f"{r.get('solder_compile_cold_s', 0):.2f}",
            f"{r['solder_compile_cold_nolib_s']:.2f}" if "solder_compile_cold_nolib_s" in r else "",
            f"{r.get('solder_compile_warm_s', 0):.2f}",
            f"{r['inductor_compile_cold_s']:.2f}" if "inductor_compile_cold_s" in r else "", peak]) + " |")
    models = [r for r in rows if r.get("kind") == "model" and "speedup_vs_eager" in r]
    tail = ""
    for n in sorted({r.get("threads") for r in models}, key=str):
        sel = [r for r in models if r.get("threads") == n]
        ge = math.exp(sum(math.log(r["speedup_vs_eager"]) for r in sel) / len(sel))
        gi_s = ""
        for peer, label in (("inductor", "inductor"), ("inductor_ro", "inductor reduce-overhead")):
            gi = [r[f"speedup_vs_{peer}"] for r in sel if f"speedup_vs_{peer}" in r]
            gi_s += f", vs {label} {math.exp(sum(map(math.log, gi)) / len(gi)):.2f}x ({len(gi)})" if gi else ""
        tail += f"\nModel geomean at threads={n}: vs eager {ge:.2f}x{gi_s} over {len(sel)} models."
    kept = [r for r in rows if "solder_unguarded_s" in r]
    if kept:
        tail += "\n\nThe speed guard kept eager PyTorch for: " + "; ".join(
            f"{r['case']} (threads={r.get('threads')}): compiled alone {r['solder_unguarded_s'] * 1e3:.3f} ms, "
            f"{r['unguarded_speedup_vs_eager']:.2f}x eager" for r in kept) + "."
    text = head + "\n".join(lines) + "\n" + tail + "\n"
    path.write_text(text)
    return text


def write_plots(meta: dict, rows: list[dict], stem: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # the GPU machine may lack it: the JSON and markdown still carry every number
        print("matplotlib is not installed: no PNG charts written")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for n in sorted({r.get("threads") for r in rows}, key=str):
        sel = [r for r in rows if r.get("threads") == n and "speedup_vs_eager" in r]
        if not sel:
            continue
        fig, ax = plt.subplots(figsize=(max(6, len(sel) * 0.7), 4))
        xs = range(len(sel))
        ax.bar([x - 0.2 for x in xs], [r["speedup_vs_eager"] for r in sel], 0.4, label="vs eager")
        ax.bar([x + 0.2 for x in xs], [r.get("speedup_vs_inductor", 0) for r in sel], 0.4, label="vs torch.compile")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(list(xs), [r["case"] for r in sel], rotation=45, ha="right")
        ax.set_ylabel("solder speed-up")
        ax.set_title(f"{meta['target']} threads={n} — {meta['device'][:40]}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{stem}-threads{n}.png", dpi=90)
        plt.close(fig)
