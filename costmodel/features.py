"""Features of a candidate kernel on a target: analytic facts, an op histogram, and hashed IR tokens.

`ops_features(ops, target)` is the fast path (the fusion planner calls it for every candidate group,
no region is built, no text printed); `kernel_features(kernel, target)` is the same for a built
`graph.kernel`; `ir_token_features(text)` hashes the printed MLIR into `TOKEN_BUCKETS` counts, with SSA
names stripped and every number turned into a power-of-two bucket so that shapes generalize.
All of them return plain `dict[str, float]`; `vector(f, names)` orders one for a model.

On the CPU a kernel's time depends on how it runs as well as on what it computes: `THREAD_NAMES` are the
team size it runs with (torch's thread count), whether it was compiled with its outer loop across threads
(a fork and join per call, the work split), and its bytes per thread. `ops_features` takes them as
arguments (default: one thread, serial, which is what a kernel costs on the GPU targets too); a dataset
row keeps them beside its IR (`threads`, `parallel`), since the printed IR does not say how it was run.
"""

from __future__ import annotations

import math
import re
import zlib

from xdsl.ir import Operation
from xdsl.traits import IsTerminator

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.graph import Graph
from solder.compiler.dialects.traits import Activation, Reduction, Source
from solder.costmodel import analytic
from solder.costmodel.analytic import CONTRACTIONS, is_layout, is_transcendental, type_info

TOKEN_BUCKETS = 64
OP_NAMES = tuple(sorted(op.name for op in Graph.operations if op not in (g.YieldOp, g.KernelOp)))

ANALYTIC_NAMES = (
    "log_flops", "log_bytes", "log_bytes_read", "log_bytes_written", "log_intensity", "log_roofline",
    "log_roofline_parts", "log_bytes_parts", "log_flops_trans", "n_ops", "n_compute_ops", "n_layout_ops",
    "n_inputs", "n_outputs", "launches", "log_out_numel", "log_max_numel", "rank", "inner_dim", "log_inner_dim",
    "align16", "align64", "align128", "log_reduce_size", "log_reduce_outer", "n_reductions", "log_mm_m",
    "log_mm_n", "log_mm_k", "log_mm_batch", "frac_bf16", "frac_compute_bytes_bf16", "causal", "log_regs", "log_smem",
    "log_bytes_internal", "log_max_buffer", "n_contractions", "att_mask", "log_att_mask_rows", "att_gqa",
)
THREAD_NAMES = ("threads", "parallel", "log_bytes_per_thread")
HIST_NAMES = tuple("n_" + n.removeprefix(g.PREFIX) for n in OP_NAMES)
TOKEN_NAMES = tuple(f"tok{i}" for i in range(TOKEN_BUCKETS))
FEATURE_NAMES = ANALYTIC_NAMES + THREAD_NAMES + HIST_NAMES
ALL_NAMES = FEATURE_NAMES + TOKEN_NAMES


def _log2(x: float) -> float:
    return math.log2(x + 1.0)


def body_ops(kernel: Operation) -> list[Operation]:
    """The ops of a `graph.kernel` body without its terminator."""
    return [o for o in kernel.regions[0].block.ops if not o.has_trait(IsTerminator)]


def the_kernel(module) -> Operation:
    """The single `graph.kernel` of a generated module (or its first graph op)."""
    for op in module.walk():
        if op.dialect_name() == Graph.name:
            return op
    raise ValueError("module holds no graph op")


def kernel_features(op: Operation, target, tokens: bool = False, threads: int = 1,
                    parallel: bool = False) -> dict[str, float]:
    """Features of one `graph.kernel` (its body as one group) or of one op as its own kernel."""
    ops = body_ops(op) if isinstance(op, g.KernelOp) else [op]
    f = ops_features(ops, target, threads, parallel)
    if tokens:
        from solder.compiler.ir import print_ir

        f.update(ir_token_features(print_ir(op)))
    return f


def part_features(ops: list[Operation], target, threads: int = 1,
                  parallel: bool = False) -> list[dict[str, float]] | None:
    """The features of each op of `ops` run as its own kernel (sources, which every reader clones, left
    out); None when fewer than two ops remain."""
    parts = [ops_features([o], target, threads, parallel) for o in ops if o.operands]
    return parts if len(parts) > 1 else None


def ops_features(ops: list[Operation], target, threads: int = 1, parallel: bool = False) -> dict[str, float]:
    """Analytic features and op histogram of `ops` fused into one kernel (no region built), run on a team
    of `threads` (torch's thread count), with its outer loop across them when `parallel`."""
    trans = analytic.transcendental_weight(target)
    nread, nwritten, ins, outs = analytic.group_io(ops)
    f: dict[str, float] = {}
    flops = flops_trans = parts_s = parts_bytes = 0.0
    n_layout = n_red = bf16 = 0
    red_size = red_outer = max_numel = max_buffer = 0
    mm = (0, 0, 0, 0)
    causal = 0.0
    n_contract = 0
    att = (0.0, 0.0, 0.0)
    dtype = analytic.main_dtype(ops)
    for op in ops:
        key = "n_" + op.name.removeprefix(g.PREFIX)
        f[key] = f.get(key, 0.0) + 1.0
        of = analytic.op_flops(op, trans)
        flops += of
        if is_transcendental(op):
            flops_trans += of
        if is_layout(op):
            n_layout += 1
        pb = sum(type_info(v.type).nbytes for v in op.operands) + sum(type_info(r.type).nbytes for r in op.results)
        parts_bytes += pb
        parts_s += analytic.roofline(of, pb, dtype, target)
        if op.results:
            info = type_info(op.results[0].type)
            max_numel = max(max_numel, info.numel)
            max_buffer = max(max_buffer, info.nbytes)
            bf16 += info.elem == "bf16"
        if op.has_trait(Reduction):
            n_red += 1
            rs, ro = _reduce_sizes(op)
            if rs > red_size:
                red_size, red_outer = rs, ro
        if isinstance(op, CONTRACTIONS):
            n_contract += 1
            mm = max(mm, _contraction_dims(op))
            causal = max(causal, 1.0 if "causal" in op.properties else 0.0)
            if isinstance(op, g.AttentionOp):
                att = _attention_facts(op)
    nbytes = nread + nwritten
    out = type_info(outs[0].type) if outs else type_info(ops[-1].results[0].type)
    inner = out.shape[-1] if out.shape else 1
    regs, smem = _triton_tile(mm, red_size, out, target)
    f.update({
        "log_flops": _log2(flops), "log_bytes": _log2(nbytes), "log_bytes_read": _log2(nread),
        "log_bytes_written": _log2(nwritten), "log_intensity": math.log2((flops + 1.0) / (nbytes + 1.0)),
        "log_roofline": math.log2(analytic.roofline(flops, nbytes, dtype, target)),
        "log_roofline_parts": math.log2(parts_s or target.launch_overhead or 1e-9),
        "log_bytes_parts": _log2(parts_bytes), "log_flops_trans": _log2(flops_trans),
        "n_ops": float(len(ops)), "n_compute_ops": float(len(ops) - n_layout - f.get("n_constant", 0.0)),
        "n_layout_ops": float(n_layout), "n_inputs": float(len(ins)), "n_outputs": float(len(outs)),
        "launches": float(launches(ops)),
        "log_out_numel": _log2(out.numel), "log_max_numel": _log2(max_numel), "rank": float(len(out.shape)),
        "inner_dim": float(inner), "log_inner_dim": _log2(inner), "align16": float(inner % 16 == 0),
        "align64": float(inner % 64 == 0), "align128": float(inner % 128 == 0), "log_reduce_size": _log2(red_size),
        "log_reduce_outer": _log2(red_outer), "n_reductions": float(n_red), "log_mm_m": _log2(mm[1]),
        "log_mm_n": _log2(mm[2]), "log_mm_k": _log2(mm[3]), "log_mm_batch": _log2(mm[0]),
        "frac_bf16": bf16 / len(ops) if ops else 0.0, "frac_compute_bytes_bf16": float(dtype == "bfloat16"),
        "causal": causal, "log_regs": _log2(regs), "log_smem": _log2(smem),
        "log_bytes_internal": _log2(max(0.0, parts_bytes - nbytes)), "log_max_buffer": _log2(max_buffer),
        "n_contractions": float(n_contract), "att_mask": att[0], "log_att_mask_rows": att[1], "att_gqa": att[2],
    })
    return with_threads(f, threads, parallel)


def with_threads(f: dict[str, float], threads: int, parallel: bool) -> dict[str, float]:
    """`f` (updated in place) run on a team of `threads`, compiled parallel or not: the THREAD_NAMES."""
    team = max(1, threads) if parallel else 1
    f["threads"] = float(max(1, threads))
    f["parallel"] = float(bool(parallel))
    f["log_bytes_per_thread"] = _log2((2.0 ** f["log_bytes"] - 1.0) / team)
    return f


def launches(ops: list[Operation]) -> int:
    """Kernels the backends launch for `ops` as one group: one per contraction (a library or template
    call), plus one per connected run of the other compute ops between them (layout ops join runs and
    launch nothing alone). A GEMM, its activation and a second GEMM grouped together are three launches:
    grouping them saves no launch, which is what lets the model see that such a "fusion" is a tie."""
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    contractions = 0
    compute: set[int] = set()
    members = {id(o) for o in ops}
    for op in ops:
        if isinstance(op, CONTRACTIONS):
            contractions += 1
            continue
        if op.has_trait(Source):
            continue
        me = id(op)
        parent.setdefault(me, me)
        if not is_layout(op):
            compute.add(me)
        for v in op.operands:
            owner = v.owner
            if isinstance(owner, Operation) and id(owner) in members and id(owner) in parent:
                a, b = find(me), find(id(owner))
                if a != b:
                    parent[a] = b
    comps: dict[int, list[Operation]] = {}
    for op in ops:
        if id(op) in compute:
            comps.setdefault(find(id(op)), []).append(op)
    if contractions == 1 and len(comps) == 1 and _gemm_epilogue(next(iter(comps.values())), members):
        return 1
    return contractions + len(comps)


def _gemm_epilogue(comp: list[Operation], members: set[int]) -> bool:
    """Whether a run of ops is an activation/bias/residual epilogue of a 16-bit GEMM, the group's only
    other compute (the GPU matmul template then runs it inside the GEMM kernel)."""
    if len(comp) > 3 or not all(o.has_trait(Activation) or isinstance(o, g.AddOp) for o in comp):
        return False
    head = comp[0].operands
    for v in head:
        owner = v.owner
        if (isinstance(owner, Operation) and id(owner) in members and isinstance(owner, (g.MatmulOp, g.LinearOp))
                and type_info(owner.results[0].type).elem in ("bf16", "f16") and sum(1 for _ in owner.results[0].uses) == 1):
            return True
    return False


def _attention_facts(op: Operation) -> tuple[float, float, float]:
    """(mask kind: 0 none, 1 boolean, 2 additive; log2 of the mask's distinct rows B·H·T it varies over;
    query heads per key/value head) of a `graph.attention`."""
    kind = rows = 0.0
    if len(op.operands) > 3:
        m = type_info(op.operands[3].type)
        kind = 1.0 if m.elem == "i1" else 2.0
        rows = _log2(math.prod(m.shape[:-1]) if m.shape else 1)
    hq, hkv = type_info(op.operands[0].type).shape[1], type_info(op.operands[1].type).shape[1]
    return kind, rows, float(hq // max(1, hkv))


def _reduce_sizes(op: Operation) -> tuple[int, int]:
    """(elements reduced per output, number of outputs) of a reduction or row op."""
    info = type_info(op.operands[0].type)
    if isinstance(op, g.ReduceOp):
        dims = op.properties["dims"].get_values()
        size = math.prod(info.shape[d] for d in dims) if info.shape else 1
    elif isinstance(op, (g.LayerNormOp, g.RmsNormOp)):
        n = op.properties["normalized_ndim"].value.data
        size = math.prod(info.shape[-n:])
    else:
        size = info.shape[op.properties["dim"].value.data] if info.shape else 1
    return size, max(1, info.numel // max(1, size))


def _contraction_dims(op: Operation) -> tuple[int, int, int, int]:
    """(batch, M, N, K) of a matmul/linear/conv/attention (attention: heads·batch, T, S, D)."""
    a = type_info(op.operands[0].type).shape
    out = type_info(op.results[0].type)
    if isinstance(op, g.AttentionOp):
        s = type_info(op.operands[1].type).shape[2]
        return (a[0] * a[1], a[2], s, a[3])
    if isinstance(op, g.ConvOp):
        w = type_info(op.operands[1].type).shape
        return (out.shape[0], math.prod(out.shape[2:]), w[0], math.prod(w[1:]))
    m, k, n = (a[-2] if len(a) > 1 else 1), a[-1], out.shape[-1]
    return (max(1, out.numel // max(1, m * n)), m, n, k)


def _triton_tile(mm, red_size: int, out, target) -> tuple[float, float]:
    """Rough registers per thread and shared memory bytes of the Triton tile such a kernel would use."""
    elem = out.nbytes // out.numel if out.numel else 4
    if mm[3]:
        bm, bn, bk = min(128, _pow2(mm[1])), min(128, _pow2(mm[2])), min(64, _pow2(mm[3]))
        smem = 3 * (bm * bk + bk * bn) * elem  # three pipeline stages
        regs = bm * bn / (4 * 32)  # accumulator spread over 4 warps
        return regs, min(smem, target.shared_mem_per_block or smem)
    block = _pow2(red_size or (out.shape[-1] if out.shape else 1))
    return block / (4 * 32) + 8, 0.0


def _pow2(n: int) -> int:
    return 1 << max(0, (max(1, n) - 1).bit_length())


_SSA = re.compile(r"[%^][\w.$-]+")
_TENSOR = re.compile(r"tensor<((?:\d+x)*)(\w+)>")
_NUM = re.compile(r"(?<![\w#.])\d+(?:\.\d+)?(?:e[+-]?\d+)?")
_TOKEN = re.compile(r"[A-Za-z_][\w.]*|[<>(){}\[\]:,=\-]+")


def ir_tokens(text: str) -> list[str]:
    """Tokens of printed MLIR: SSA names dropped, numbers replaced by power-of-two buckets (`#b7`)."""
    text = _SSA.sub("%", text)
    text = _TENSOR.sub(lambda m: "tensor< " + m.group(1).replace("x", " ") + " " + m.group(2) + " >", text)
    text = _NUM.sub(lambda m: f" #b{_log2(float(m.group())):.0f} ", text)
    return [t.group() for t in re.finditer(r"#b\d+|" + _TOKEN.pattern, text)]


def ir_token_features(text: str, buckets: int = TOKEN_BUCKETS) -> dict[str, float]:
    """Counts of hashed unigram and bigram tokens of `text`, in `buckets` buckets (crc32: stable across runs)."""
    counts = [0.0] * buckets
    toks = ir_tokens(text)
    for a, b in zip(["<s>"] + toks, toks):
        counts[zlib.crc32(b.encode()) % buckets] += 1.0
        counts[zlib.crc32(f"{a} {b}".encode()) % buckets] += 0.5
    return {f"tok{i}": math.log2(1.0 + c) for i, c in enumerate(counts)}


def vector(f: dict[str, float], names: tuple[str, ...]) -> list[float]:
    """`f` in the order of `names` (absent features are 0)."""
    get = f.get
    return [get(n, 0.0) for n in names]
