"""Copy a slice of the public corpus into a git-ignored folder of the checkout, for a machine that cannot
read ../shared (the GPU machine receives the checkout and the paths it is told to carry, 64 MiB a call).

    python -m benchmarks.corpus_pack --out build/corpus-gpu [--only timm,level1] [--limit 60] [--subset]
        [--max-mib 56]

The folder gets the picked samples, GraphNet's loader, both LICENSE files, the README and a manifest of
just those entries, so `python -m benchmarks.corpus --corpus build/corpus-gpu` runs there unchanged.
Samples are taken in `benchmarks.corpus`'s stratified order (`--subset`: the CI subset's samples first)
until `--max-mib` is reached; larger samples are skipped, not truncated.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from benchmarks import corpus_load
from benchmarks.corpus import select
from benchmarks.corpus_subset import OUT as SUBSET_FILE


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def pack(corpus: Path, out: Path, entries: list[dict], max_bytes: int) -> tuple[list[dict], list[str]]:
    """Copy `entries` (in order) while they fit in `max_bytes`; the copied entries and the names skipped."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for rel in ("README.md", "GraphNet/LICENSE", "KernelBench/LICENSE", "GraphNet/graph_net_bench"):
        src = corpus / rel
        if src.exists():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, out / rel)
    used = _size(out)
    kept, skipped = [], []
    for e in entries:
        src = corpus / e["path"]
        n = _size(src)
        if used + n > max_bytes:
            skipped.append(e["name"])
            continue
        (out / e["path"]).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, out / e["path"])
        used += n
        kept.append(e)
    raw = json.loads((corpus / "manifest.json").read_text())
    names = {e["name"] for e in kept}
    raw["entries"] = [e for e in raw["entries"] if corpus_load.sample_name(e) in names]
    raw["about"] = f"{raw.get('about', '')} (a slice of {len(kept)} entries copied by benchmarks.corpus_pack)"
    (out / "manifest.json").write_text(json.dumps(raw, indent=1))
    return kept, skipped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(corpus_load.DEFAULT_CORPUS))
    p.add_argument("--out", required=True, help="a git-ignored folder of the checkout (e.g. build/corpus-gpu)")
    p.add_argument("--only", default="", help="as benchmarks.corpus --only")
    p.add_argument("--limit", type=int, default=None, help="at most this many samples")
    p.add_argument("--subset", action="store_true", help="the CI subset's samples first")
    p.add_argument("--max-mib", type=float, default=56.0, help="size limit of the folder")
    args = p.parse_args(argv)
    corpus = Path(args.corpus)
    entries = select(corpus_load.manifest(corpus), args.only, None)
    if args.subset:
        first = {s["name"] for s in json.loads(SUBSET_FILE.read_text())["samples"]}
        entries = [e for e in entries if e["name"] in first] + [e for e in entries if e["name"] not in first]
    if args.limit:
        entries = entries[: args.limit]
    kept, skipped = pack(corpus, Path(args.out), entries, int(args.max_mib * 2**20))
    print(f"packed {len(kept)} samples into {args.out} ({_size(Path(args.out)) / 2**20:.1f} MiB); "
          f"{len(skipped)} skipped for size")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
