"""Generators of transform-dialect schedules for the CPU kernels (see kernels.py for the tags).

The schedule is text appended to the kernel module and run by `transform-interpreter` inside
compile_mlir. Two shapes:

- row kernels (reductions over the last dim): `structured.fuse` the `solder.root` generic with
  tile sizes [1, 0] (one row per iteration, producers fused in), `tile_reduction_using_for` [0, T]
  on each `solder.reduce` generic, `tile_using_for` [0, T] on the elementwise ones, vectorize, then
  cleanup patterns, CSE and hoisting of loop-invariant subsets;
- elementwise kernels: tile [1, T] and vectorize.

With `parallel=True` the row loop is an scf.forall (OpenMP threads, see jit.PARALLEL).

T is 32 lanes (two AVX-512 vectors) when it divides the row, else the largest power of two that
does (odd rows run narrow vectors; masked vectorization is future work).
"""

from __future__ import annotations

ANY = "!transform.any_op"


def lane_tile(cols: int, preferred: int = 32) -> int:
    """The largest power of two <= preferred that divides cols."""
    t = preferred
    while t > 1 and cols % t:
        t //= 2
    return t


def _cleanup(target: str) -> list[str]:
    return [
        f"transform.apply_patterns to {target} {{",
        "  transform.apply_patterns.vector.cast_away_vector_leading_one_dim",
        "  transform.apply_patterns.vector.drop_unit_dims_with_shape_cast",
        "  transform.apply_patterns.tensor.fold_tensor_subset_ops_into_vector_transfers",
        "  transform.apply_patterns.tensor.fold_tensor_empty",
        "  transform.apply_patterns.canonicalization",
        f"}} : {ANY}",
        f"transform.apply_cse to {target} : {ANY}",
    ]


def _wrap(lines: list[str]) -> str:
    body = "\n".join("    " + ln for ln in lines)
    return ("  transform.named_sequence @__transform_main(%root: !transform.any_op "
            "{transform.consumed}) {\n" + body + "\n    transform.yield\n  }")


def _match(name: str, tag: str) -> str:
    return (f'{name} = transform.structured.match ops{{["linalg.generic"]}} '
            f"attributes {{{tag}}} in %root : ({ANY}) -> {ANY}")


def _vectorize_and_finish() -> list[str]:
    return [
        f'%func = transform.structured.match ops{{["func.func"]}} in %root : ({ANY}) -> {ANY}',
        f"%vec_ops = transform.structured.match interface{{LinalgOp}} in %func "
        f": ({ANY}) -> {ANY}",
        f"transform.structured.vectorize %vec_ops : {ANY}",
        *_cleanup("%func"),
        f"%loops = transform.structured.match ops{{[\"scf.for\"]}} in %func : ({ANY}) -> {ANY}",
        f"transform.loop.hoist_loop_invariant_subsets %loops : {ANY}",
        *_cleanup("%func"),
    ]


def _fuse_rows(parallel: bool) -> list[str]:
    # `use_forall` makes the row loop an scf.forall, which compile_mlir runs with OpenMP.
    attr = " {use_forall}" if parallel else ""
    return [
        _match("%root_op", "solder.root"),
        f"%fused, %row_loop = transform.structured.fuse %root_op tile_sizes [1, 0]{attr} "
        f": ({ANY}) -> ({ANY}, {ANY})",
    ]


def row_kernel_schedule(cols: int, *, n_reduce: int, n_ew: int, tile: int = 32,
                        parallel: bool = False) -> str:
    """Schedule for a kernel whose `solder.root` generic consumes row reductions."""
    t = lane_tile(cols, tile)
    lines = [
        *_fuse_rows(parallel),
        f'%func0 = transform.structured.match ops{{["func.func"]}} in %root : ({ANY}) -> {ANY}',
        *_cleanup("%func0"),
        _match("%reds", "solder.reduce"),
        f"%fill, %split, %comb, %red_loop = transform.structured.tile_reduction_using_for "
        f"%reds by tile_sizes = [0, {t}] : ({ANY}) -> ({ANY}, {ANY}, {ANY}, {ANY})",
        _match("%root2", "solder.root"),
        f"%tiled_root, %root_loop = transform.structured.tile_using_for %root2 "
        f"tile_sizes [0, {t}] : ({ANY}) -> ({ANY}, {ANY})",
    ]
    if n_ew:
        lines += [
            _match("%ews", "solder.ew"),
            f"%tiled_ew, %ew_loop = transform.structured.tile_using_for %ews "
            f"tile_sizes [0, {t}] : ({ANY}) -> ({ANY}, {ANY})",
        ]
    return _wrap(lines + _vectorize_and_finish())


def elementwise_schedule(cols: int, *, tile: int = 64, parallel: bool = False) -> str:
    """Schedule for a kernel of elementwise generics: tile [1, T] and vectorize."""
    t = lane_tile(cols, tile)
    if parallel:
        lines = _fuse_rows(True) + [
            _match("%root2", "solder.root"),
            f"%tiled, %l1 = transform.structured.tile_using_for %root2 tile_sizes [0, {t}] "
            f": ({ANY}) -> ({ANY}, {ANY})",
        ]
        return _wrap(lines + _vectorize_and_finish())
    lines = [
        _match("%root_op", "solder.root"),
        f"%tiled, %l0, %l1 = transform.structured.tile_using_for %root_op tile_sizes [1, {t}] "
        f": ({ANY}) -> ({ANY}, {ANY}, {ANY})",
    ]
    return _wrap(lines + _vectorize_and_finish())
