"""Transform-dialect schedules for the kernel functions that lower.py builds, and the module text.

The schedules are text (xDSL 0.74 lacks most of these transform ops; mlir_builder.py lists what is not built
with xDSL), joined to the verified, printed functions by `mlir_builder.module_text`.

Each function gets its own schedule, matched through tags unique to the function
(`solder.<func>.<kind>` and `solder.<func>.<generic>`), so one module holds every kernel of a
model and one `transform-interpreter` run schedules them all:

- row kernels (reductions over the last dim of one domain, consumed by one root generic of the
  same domain or of the kept dims): `structured.fuse` the root over rows (producers fused in),
  `tile_reduction_using_for` the reductions by 32 lanes, tile the root and the temporaries by the
  same, vectorize, clean up, hoist (notes/cpu-backend-mlir.md; the same steps as schedule.py's
  `row_kernel_schedule`, at any rank);
- elementwise kernels: every generic tiled [1, ..., 1, 64] and vectorized;
- anything else: no schedule (loops, left to LLVM's vectorizer at -O3).

Size-generic kernels (symbolic dims, symdims.py) get the same schedules: outer dims are tiled by 1,
so where every innermost dim is static the vectorized tiles are static and the text is the static one.
A symbolic innermost dim (a softmax over a dynamic sequence, say) is tiled by the lane count all the
same; elementwise tiles are vectorized with masks (`vectorize ... vector_sizes`, masks lowered before
bufferization), and a row kernel's row loops are peeled (`transform.loop.peel`): full tiles vectorize
as static ones, the last, partial tile runs masked.

Threads: where `threads.worth_parallel` says a static kernel pays for it (the cost model, asked about the
function's graph ops, `FuncBuilder.graph_ops`), its outer loop runs on torch's OpenMP
pool (threads.py): a row kernel's row loop is `structured.fuse ... {use_forall}` (rows split into one contiguous
block per thread, each row's work unchanged), an elementwise generic is first tiled by `tile_using_forall` over its
outer dims (one row per iteration; rows cut into pieces of whole lane tiles where there are too few rows), then by
lanes as above. Size-generic kernels stay on one thread (their size is not known here).
"""

from __future__ import annotations

import math

from solder.backends.cpu import mlir_builder as M
from solder.backends.cpu import threads
from solder.backends.cpu.lower import FuncBuilder
from solder.backends.cpu.schedule import _cleanup, lane_tile

ANY = "!transform.any_op"


def schedule_lines(fb: FuncBuilder) -> tuple[list[str], str]:
    """Transform ops for `fb`'s function and the kind of schedule ("row", "elementwise" or "none")."""
    gs, p = fb.generics, f"%{fb.name}_"
    roots = [g for g in gs if g.kind == "root"]
    reds = [g for g in gs if g.kind == "red"]
    match = lambda h, kind: (f'{h} = transform.structured.match ops{{["linalg.generic"]}} '  # noqa: E731
                             f"attributes {{solder.{fb.name}.{kind}}} in %root : ({ANY}) -> {ANY}")
    tile = lambda h, sizes, n: (  # noqa: E731
        f"{h}_t" + "".join(f", {h}_l{i}" for i in range(n)) + f" = transform.structured.tile_using_for "
        f"{h} tile_sizes [{', '.join(map(str, sizes))}] : ({ANY}) -> ({', '.join([ANY] * (n + 1))})")
    masked = lambda h, rank, t: (f"transform.structured.vectorize {h} vector_sizes "  # noqa: E731
                                 f"[{', '.join(['1'] * (rank - 1) + [str(t)])}] : {ANY}")
    lines: list[str] = []
    symbolic_rows = any(g.domain and not isinstance(g.domain[-1], int) for g in gs)
    if not reds:
        for g in gs:
            if g.domain:
                row = g.domain[-1]
                sizes = [1] * (len(g.domain) - 1) + [lane_tile(row, 64) if isinstance(row, int) else 64]
                h, outer = f"{p}{g.uid}", len(sizes) - 1
                lines.append(match(h, g.uid))
                pieces = _elementwise_pieces(g.domain, sizes[-1], fb)
                if pieces:  # rows (or pieces of rows) across threads, a forall; then lanes as below
                    lines += [f"{h}_p, {h}_forall = transform.structured.tile_using_forall {h} tile_sizes "
                              f"[{', '.join(map(str, pieces))}] : ({ANY}) -> ({ANY}, {ANY})",
                              tile(f"{h}_p", [0] * outer + sizes[-1:], 1)]
                    h = f"{h}_p"
                else:
                    lines.append(tile(h, sizes, len(sizes)))
                if not isinstance(row, int):
                    lines.append(masked(f"{h}_t", len(sizes), 64))
        return lines + _finish(fb, symbolic_rows), "elementwise"
    dom = reds[0].domain
    rank = len(dom)
    if (rank < 2 or len(roots) != 1 or any(g.domain != dom or g.reduced != (rank - 1,) for g in reds)
            or any(g.domain != dom for g in gs if g.kind == "ew")):
        return [], "none"
    root = roots[0].domain
    if root not in (dom, dom[:-1], dom[:-1] + (1,)):
        return [], "none"
    t = lane_tile(dom[-1], 32) if isinstance(dom[-1], int) else 32
    fuse_sizes = [1] * (rank - 1) + [0] if root == dom else [1] * len(root)
    par = _parallel(dom, rank - 1, fb)
    n_loops = 1 if par else sum(1 for s in fuse_sizes if s)  # a forall is one loop over every tiled dim
    lines += [match(f"{p}root", "root"),
              f"{p}fused, {p}rows" + "".join(f", {p}rows{i}" for i in range(n_loops - 1))
              + f" = transform.structured.fuse {p}root tile_sizes [{', '.join(map(str, fuse_sizes))}]"
              + (" {use_forall}" if par else "") + f" : ({ANY}) -> ({', '.join([ANY] * (1 + n_loops))})",
              # fuse duplicates a producer per consumer (e.g. softmax's exp): CSE merges the copies
              _func(fb, "0"), *_cleanup(f"%{fb.name}_func0"),
              match(f"{p}red", "red"),
              f"{p}fill, {p}split, {p}comb, {p}rloop = transform.structured.tile_reduction_using_for "
              f"{p}red by tile_sizes = [{', '.join(['0'] * (rank - 1) + [str(t)])}] : "
              f"({ANY}) -> ({ANY}, {ANY}, {ANY}, {ANY})"]
    if root == dom:
        lines += [match(f"{p}root2", "root"), tile(f"{p}root2", [0] * (rank - 1) + [t], 1)]
    if any(g.kind == "ew" for g in gs):
        lines += [match(f"{p}ew", "ew"), tile(f"{p}ew", [0] * (rank - 1) + [t], 1)]
    symbolic_rows = not isinstance(dom[-1], int)
    if symbolic_rows:  # a symbolic row: full tiles vectorize as static ones, the peeled last tile masked
        loops = [f"{p}rloop"] + ([f"{p}root2_l0"] if root == dom else []) + \
            ([f"{p}ew_l0"] if any(g.kind == "ew" for g in gs) else [])
        for h in loops:
            loop = '!transform.op<"scf.for">'
            lines += [f"transform.foreach {h} : {ANY} {{", f"^bb0({h}_each: {ANY}):",
                      f"  {h}_for = transform.cast {h}_each : {ANY} to {loop}",
                      f"  {h}_full, {h}_rest = transform.loop.peel {h}_for : ({loop}) -> ({ANY}, {ANY})",
                      f"  {h}_ops = transform.structured.match interface{{LinalgOp}} in {h}_rest : ({ANY}) -> {ANY}",
                      "  " + masked(f"{h}_ops", rank, t), "}"]
    return lines + _finish(fb, symbolic_rows), "row"


def _parallel(domain: tuple, outer: int, fb: FuncBuilder) -> bool:
    """Whether a generic of `fb` over `domain` runs its first `outer` dims (its rows) across threads: static sizes
    only, where threads.worth_parallel says the kernel pays for it."""
    if outer < 1 or not all(isinstance(n, int) for n in domain):
        return False
    rows = elements = 1
    for k, n in enumerate(domain):
        rows *= n if k < outer else 1
        elements *= n
    return threads.worth_parallel(elements, rows, fb.graph_ops, fb.name)


def _elementwise_pieces(domain: tuple, lane: int, fb: FuncBuilder) -> list[int] | None:
    """The forall tile sizes of an elementwise generic on threads, or None (serial): one row per iteration, or,
    with too few rows for the threads (a [2, 10^6] add, a 1-d one), each row cut into equal pieces of whole
    lane tiles."""
    if not domain or not all(isinstance(n, int) for n in domain):
        return None
    *outer, cols = domain
    rows = math.prod(outer)
    want = threads.MIN_ROWS_PER_THREAD * threads.torch_threads()
    split, tiles = 1, cols // lane
    if rows < want:
        split = next((k for k in range(2, tiles + 1) if tiles % k == 0 and rows * k >= want), 0)
    if not split or not threads.worth_parallel(rows * cols, rows * split, fb.graph_ops, fb.name):
        return None
    return [1] * len(outer) + [0 if split == 1 else cols // split]


def _func(fb: FuncBuilder, suffix: str = "") -> str:
    return (f'%{fb.name}_func{suffix} = transform.structured.match ops{{["func.func"]}} '
            f'attributes {{sym_name = "{fb.name}"}} in %root : ({ANY}) -> {ANY}')


def _finish(fb: FuncBuilder, masks: bool = False) -> list[str]:
    f = f"%{fb.name}_func"
    cleanup = _cleanup(f)
    # masked transfers lowered to selects here: left for later, canonicalization may move a constant into a
    # vector.mask region, which must hold one op
    lower_masks = [f"transform.apply_patterns to {f} {{", "  transform.apply_patterns.vector.lower_masked_transfers",
                   "  transform.apply_patterns.vector.lower_masks", f"}} : {ANY}"] if masks else []
    return [
        _func(fb),
        *(cleanup if masks else []),  # peeled loops: their tiles' sizes fold to constants
        f"{f}_ops = transform.structured.match interface{{LinalgOp}} in {f} : ({ANY}) -> {ANY}",
        f"transform.structured.vectorize {f}_ops : {ANY}",
        *lower_masks,
        *cleanup,
        f'{f}_loops = transform.structured.match ops{{["scf.for"]}} in {f} : ({ANY}) -> {ANY}',
        f"transform.loop.hoist_loop_invariant_subsets {f}_loops : {ANY}",
        *cleanup,
    ]


def module_text(funcs: list[str], schedules: list[list[str]]) -> str:
    """One MLIR module holding `funcs` and (if any) one transform sequence running every schedule."""
    return M.module_text(funcs, [ln for s in schedules for ln in s])
