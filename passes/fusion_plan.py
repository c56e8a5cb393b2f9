"""The fusion planner shared by `fuse-ops` and `fuse-blocks`: which ops run together as one kernel.

The planner sees a function body as a networkx DiGraph (one node per op, numbered in block order, one
edge per def-use), starts from given groups (one op each for fuse-ops, the existing kernels for
fuse-blocks) and merges pairs of groups greedily, the largest estimated saving first:

    saved(A, B) = est(A) + est(B) - est(A ∪ B)        (seconds, from costmodel.estimate_ops)

A merge is legal when the union stays convex (no path leaves the group and re-enters it: fusing
across such a path would create a cycle between kernels), has at most `max_ops` ops, and passes the
caller's `rule(a, b, ops) -> Verdict` (anchors, reduction shapes, on-chip limits, block patterns).
Mode `cost` merges only when saved > 0, `always` merges every legal candidate, `never` merges nothing.
After merging, `recompute` copies a cheap single-op producer into each consumer kernel when the cost
model says the recomputation beats writing and re-reading its result (work is duplicated only then).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Block, Operation

from solder.compiler.dialects import graph as g
from solder.compiler.dialects.symbolic import hint_shape
from solder.compiler.dialects.traits import Anchor, Elementwise, Layout, Reduction, Source
from solder.compiler.errors import SolderError

# ---------------------------------------------------------------------------------------------
# What each op is to the planner
# ---------------------------------------------------------------------------------------------


def op_kind(op: Operation) -> str:
    """source | layout | elementwise | reduction | anchor | conv | opaque (extern, gather, pool, ...),
    read off the op's traits (compiler/dialects/traits.py)."""
    if op.has_trait(Elementwise):
        return "elementwise"
    if op.has_trait(Layout):
        return "layout"
    if op.has_trait(Reduction):
        return "reduction"
    if op.has_trait(Anchor):
        return "anchor"
    if op.has_trait(Source):
        return "source"
    if isinstance(op, g.ConvOp):
        return "conv"
    return "opaque"


def is_source(op: object) -> bool:
    """Whether `op` is a source op (no operands, trivially cheap): cloned into every kernel that reads
    it, never planned. False for block arguments and anything that is not an op."""
    return isinstance(op, Operation) and op.has_trait(Source)


def short(op: Operation) -> str:
    """`graph.layer_norm` -> `layer-norm`: the op's name as kernel reasons print it."""
    return op.name.split(".", 1)[-1].replace("_", "-")


def itemsize(op: Operation) -> int:
    """Bytes per element of the op's first result (4 when it is not a tensor of a known type)."""
    t = op.results[0].type if op.results else None
    if not isinstance(t, TensorType):
        return 4
    w = getattr(t.element_type, "bitwidth", None) or getattr(t.element_type, "width", None)
    return max(1, int(getattr(w, "data", w) or 32) // 8)


def reduction_sig(op: Operation) -> tuple[int, int, int]:
    """(elements before, elements reduced, elements after) of a row-wise op's input: the row shape.

    Reductions share one kernel only when their rows agree; non-contiguous dims get a unique signature.
    """
    shape = hint_shape(op.operands[0].type)  # `?` dims at the example sizes
    if isinstance(op, g.ReduceOp):
        dims = sorted(op.dims.get_values())
    elif isinstance(op, (g.LayerNormOp, g.RmsNormOp)):
        n = op.normalized_ndim.value.data
        dims = list(range(len(shape) - n, len(shape)))
    else:
        dims = [op.dim.value.data]
    if not dims or dims != list(range(dims[0], dims[-1] + 1)):
        return (math.prod(shape), -1, id(op))
    return (math.prod(shape[:dims[0]]), math.prod(shape[dims[0]:dims[-1] + 1]), math.prod(shape[dims[-1] + 1:]))


# ---------------------------------------------------------------------------------------------
# The graph view
# ---------------------------------------------------------------------------------------------


class BodyGraph:
    """A networkx DiGraph over the non-source ops of one block: node i = i-th op in block order.

    Block order is a topological order, so every edge goes from a lower to a higher index; the
    convexity and reachability searches use that to stop early.
    """

    def __init__(self, block: Block):
        term = block.last_op
        self.block = block
        self.ops: list[Operation] = [op for op in block.ops if op is not term and not is_source(op)]
        self.index: dict[Operation, int] = {op: i for i, op in enumerate(self.ops)}
        self.kinds: list[str] = [op_kind(op) for op in self.ops]
        self.g = nx.DiGraph()
        self.g.add_nodes_from(range(len(self.ops)))
        self.readers: dict[object, list[int]] = {}  # value -> nodes reading it (block args and op results)
        for i, op in enumerate(self.ops):
            for v in op.operands:
                j = self.index.get(v.owner)  # type: ignore[arg-type]
                if j is not None:
                    self.g.add_edge(j, i)
                if not is_source(v.owner):
                    r = self.readers.setdefault(v, [])
                    if not r or r[-1] != i:
                        r.append(i)
        self.escapes: set[int] = set()  # nodes whose results the terminator returns
        if term is not None:
            self.escapes = {self.index[v.owner] for v in term.operands if v.owner in self.index}
        self._succ = self.g._succ  # plain dict-of-dicts: the searches below run per candidate

    def convex(self, members: set[int]) -> bool:
        """No path from a member through a non-member back to a member (fusing would make a cycle)."""
        hi = max(members)
        succ = self._succ
        stack = [s for m in members for s in succ[m] if s not in members and s < hi]
        seen = set(stack)
        while stack:
            for s in succ[stack.pop()]:
                if s in members:
                    return False
                if s < hi and s not in seen:
                    seen.add(s)
                    stack.append(s)
        return True

    def reaches(self, sources: set[int], target: int) -> bool:
        """Whether a path leads from any of `sources` to `target`."""
        stack = [s for s in sources if s < target]
        seen = set(stack)
        while stack:
            for s in self._succ[stack.pop()]:
                if s == target:
                    return True
                if s < target and s not in seen:
                    seen.add(s)
                    stack.append(s)
        return False


# ---------------------------------------------------------------------------------------------
# The cost oracle
# ---------------------------------------------------------------------------------------------


class CostOracle:
    """`solder.costmodel.estimate_ops` for node sets of one BodyGraph, cached by the set."""

    def __init__(self, graph: BodyGraph, target, model=None):
        try:
            from solder import costmodel
        except ImportError as e:  # pragma: no cover - the package ships with solder
            raise SolderError(f"fusion: the cost model package is missing ({e}); expected costmodel/ beside passes/") from None
        self._estimate_ops = costmodel.estimate_ops
        self.graph, self.target, self.model = graph, target, model
        self._cache: dict[frozenset[int], float] = {}
        self.calls = 0

    def __call__(self, nodes) -> float:
        key = frozenset(nodes)
        hit = self._cache.get(key)
        if hit is None:
            self.calls += 1
            ops = [self.graph.ops[i] for i in sorted(key)]
            hit = self._cache[key] = self._estimate_ops(ops, self.target, self.model)
        return hit

    def parts(self, nodes) -> float:
        """Seconds of the ops run one kernel each."""
        return sum(self(frozenset((i,))) for i in nodes)

    def with_copy(self, nodes: set[int], p: int) -> float:
        """Seconds of `nodes` plus a private copy of node `p` (its result read only inside the group).

        The copy is a real, temporary clone so that the cost model sees the right boundary; the IR is
        restored before returning.
        """
        gg = self.graph
        orig = gg.ops[p]
        copy = orig.clone()
        members = {gg.ops[i] for i in nodes}
        for r, rc in zip(orig.results, copy.results):
            r.replace_uses_with_if(rc, lambda use: use.operation in members)
        ops = [copy if i == p else gg.ops[i] for i in sorted(nodes | {p})]
        try:
            self.calls += 1
            return self._estimate_ops(ops, self.target, self.model)
        finally:
            for r, rc in zip(orig.results, copy.results):
                rc.replace_uses_with_if(r, lambda use: True)
            copy.erase()


# ---------------------------------------------------------------------------------------------
# Groups and the greedy merge
# ---------------------------------------------------------------------------------------------


@dataclass
class Group:
    """A set of nodes planned as one kernel; `tag` says how it formed, `notes` why neighbours stayed out."""

    gid: int
    nodes: set[int]
    tag: str = ""
    notes: list[tuple[str, frozenset[int]]] = field(default_factory=list)  # (why, the other group's nodes)
    version: int = 0
    dups: list[int] = field(default_factory=list)  # nodes recomputed inside this group (copies)
    attrs: dict | None = None  # kept attributes of an existing kernel that no merge touched
    merged: bool = False


@dataclass(frozen=True)
class Verdict:
    """A rule's answer: `ok`, and either the tag of the merged group or why the merge is illegal."""

    ok: bool
    text: str = ""


Rule = Callable[[Group, Group, list[Operation]], Verdict]


class Planner:
    """Greedy, cost-ranked merging of groups on a BodyGraph (see the module docstring)."""

    def __init__(self, graph: BodyGraph, groups: list[Group], est: CostOracle, rule: Rule, *, mode: str,
                 max_ops: int, horizontal: bool = True, log=None):
        if mode not in ("always", "never", "cost"):
            raise SolderError(f"fusion: unknown mode {mode!r}; expected always, never or cost")
        self.graph, self.est, self.rule, self.mode = graph, est, rule, mode
        self.max_ops, self.horizontal, self.log = max_ops, horizontal, log
        self.groups: dict[int, Group] = {gr.gid: gr for gr in groups}
        self.owner: dict[int, int] = {n: gr.gid for gr in groups for n in gr.nodes}
        self.merges = 0
        self._prior: dict[tuple[int, int], float] = {}

    # ---- candidates ---------------------------------------------------------------------------
    def convex(self, nodes: set[int]) -> bool:
        """No path from `nodes` back into them, where entering another group reaches all of it (it runs
        as one kernel): node-level convexity alone let two groups each depend on the other."""
        hi = max(nodes)
        succ, owner, groups = self.graph._succ, self.owner, self.groups
        stack: list[int] = []
        seen: set[int] = set()

        def visit(s: int) -> None:
            # a node past `hi` leads back only through its group's earlier members
            for m in ((s,) if s < hi else ()) + tuple(groups[owner[s]].nodes if s in owner else ()):
                if m < hi and m not in seen and m not in nodes:
                    seen.add(m)
                    stack.append(m)

        for m in nodes:
            for s in succ[m]:
                if s not in nodes:
                    visit(s)
        while stack:
            for s in succ[stack.pop()]:
                if s in nodes:
                    return False
                visit(s)
        return True

    def neighbours(self, gid: int) -> set[int]:
        """Groups joined to `gid` by an edge, or (horizontal) reading a value that `gid` reads next to it."""
        out: set[int] = set()
        gr, owner, gg = self.groups[gid], self.owner, self.graph
        for n in gr.nodes:
            for m in gg._succ[n]:
                out.add(owner.get(m, -1))
            for m in gg.g._pred[n]:
                out.add(owner.get(m, -1))
            if self.horizontal:  # the nearest readers of each shared value, not all of them (O(1) per value)
                for v in gg.ops[n].operands:
                    readers = gg.readers.get(v, ())
                    if len(readers) > 1:
                        at = readers.index(n)
                        out.update(owner.get(m, -1) for m in readers[max(0, at - 1):at + 2])
        out.discard(gid)
        out.discard(-1)
        return out

    def evaluate(self, a: Group, b: Group) -> tuple[float, Verdict]:
        """(seconds saved, verdict) of merging `a` and `b`."""
        nodes = a.nodes | b.nodes
        if len(nodes) > self.max_ops:
            return 0.0, Verdict(False, f"over max-ops={self.max_ops}")
        ops = [self.graph.ops[i] for i in sorted(nodes)]
        verdict = self.rule(a, b, ops)
        if not verdict.ok:
            return 0.0, verdict
        if not self.convex(nodes):
            return 0.0, Verdict(False, "would create a cycle")
        saved = self.est(a.nodes) + self.est(b.nodes) - self.est(nodes)
        if self.mode == "cost" and saved <= 0:
            return saved, Verdict(False, f"saves {saved * 1e6:.2f} us")
        return saved, verdict

    def _push(self, heap: list, a: Group, b: Group, prior: float | None = None) -> None:
        """Queue the pair: evaluated now (`prior` None) or later, when it reaches the top (lazy greedy)."""
        lo = min(min(a.nodes), min(b.nodes))
        if prior is not None:
            heapq.heappush(heap, (-prior, lo, a.gid, b.gid, a.version, b.version, None))
            return
        saved, verdict = self.evaluate(a, b)
        self._prior[(min(a.gid, b.gid), max(a.gid, b.gid))] = saved
        if not verdict.ok:
            self._note(a, b, verdict.text)
            return
        heapq.heappush(heap, (-saved, lo, a.gid, b.gid, a.version, b.version, verdict.text))

    def _note(self, a: Group, b: Group, why: str) -> None:
        for x, y in ((a, b), (b, a)):
            if not x.notes:
                x.notes.append((why, frozenset(y.nodes)))
        if self.log is not None and self.log.isEnabledFor(logging.INFO):
            self.log.info("reject %s + %s: %s", self.describe_nodes(a.nodes), self.describe_nodes(b.nodes), why)

    def note(self, gr: Group) -> str:
        """Why `gr` was kept apart from a neighbour ('' when nothing was rejected)."""
        if not gr.notes:
            return ""
        why, other = gr.notes[0]
        return f"not fused with {self.describe_nodes(other)}: {why}"

    def describe_nodes(self, nodes) -> str:
        ops = [self.graph.ops[i] for i in sorted(nodes)]
        names = [short(o) for o in ops if not o.has_trait(Layout)] or [short(ops[0])]
        return "+".join(names[:3]) + ("+..." if len(names) > 3 else "")

    # ---- layout ops --------------------------------------------------------------------------
    def attach_layout(self) -> None:
        """Put each one-operand layout op in its producer's group (else its only consumer's group).

        A view costs nothing inside a kernel and a full copy outside one, so this never loses and
        needs no estimate; it also halves the graph the greedy loop sees (transformers are ~45%
        reshapes, permutes and slices). Either join is convex: the op has one operand (one user).
        """
        if self.mode == "never":
            return
        gg, owner = self.graph, self.owner
        for n, kind in enumerate(gg.kinds):
            if kind != "layout" or n not in owner or len(gg.ops[n].operands) != 1:
                continue
            preds = list(gg.g._pred[n])
            if preds and preds[0] in owner and self._try_attach(owner[preds[0]], n):
                continue
            succs = list(gg._succ[n])
            if len(succs) == 1 and succs[0] in owner and n not in gg.escapes:
                self._try_attach(owner[succs[0]], n)

    def _try_attach(self, gid: int, n: int) -> bool:
        a, b = self.groups[gid], self.groups[self.owner[n]]
        if a is b or len(a.nodes) + len(b.nodes) > self.max_ops:
            return False
        if not self.rule(a, b, [self.graph.ops[i] for i in sorted(a.nodes | b.nodes)]).ok:
            return False
        self._merge(a, b, "", 0.0)
        return True

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        """Merge until no legal (and, with mode=cost, profitable) candidate is left.

        Lazy greedy: every adjacent pair is evaluated once up front; after a merge, the survivor's
        pairs are queued under their last known saving and re-evaluated only when they reach the top,
        so a pair whose groups keep growing is not re-estimated after every merge.
        """
        if self.mode == "never":
            return
        heap: list = []
        self._prior: dict[tuple[int, int], float] = {}
        done: set[tuple[int, int]] = set()
        for gid in sorted(self.groups):
            for other in self.neighbours(gid):
                key = (min(gid, other), max(gid, other))
                if key not in done:
                    done.add(key)
                    self._push(heap, self.groups[key[0]], self.groups[key[1]])
        while heap:
            neg, _, ga, gb, va, vb, tag = heapq.heappop(heap)
            a, b = self.groups.get(ga), self.groups.get(gb)
            if a is None or b is None or a.version != va or b.version != vb:
                continue  # superseded: every merge queues the survivor's pairs afresh
            if tag is None:
                self._push(heap, a, b)
                continue
            self._merge(a, b, tag, -neg)
            for other in self.neighbours(a.gid):
                c = self.groups[other]
                prior = max(self._prior.get((min(x, other), max(x, other)), 0.0) for x in (ga, gb))
                self._push(heap, a, c, prior)

    def undo_losers(self) -> None:
        """Never keep a kernel the cost model estimates slower than its ops run apart (mode=cost).

        Greedy merges each save time, so only layout ops attached without an estimate can make a group
        a loser: those go back to kernels of their own first; if the rest still loses (or would not be
        convex without them), every op of the group runs alone."""
        if self.mode != "cost":
            return
        for gr in list(self.groups.values()):
            if not gr.merged or self.est(gr.nodes) <= self.est.parts(gr.nodes) * (1 + 1e-9):
                continue
            before, apart, what = self.est(gr.nodes), self.est.parts(gr.nodes), self.describe_nodes(gr.nodes)
            rest = {n for n in gr.nodes if self.graph.kinds[n] != "layout"}
            keep = rest if rest and rest != gr.nodes and self.graph.convex(rest) and \
                self.est(rest) <= self.est.parts(rest) * (1 + 1e-9) else set()
            self._split(gr, keep)
            if self.log is not None and self.log.isEnabledFor(logging.INFO):
                self.log.info("unfuse %s: estimated %.2f us fused vs %.2f us apart", what, before * 1e6, apart * 1e6)

    def _split(self, gr: Group, keep: set[int]) -> None:
        """Every node of `gr` outside `keep` becomes a group of its own (`keep` empty: every node)."""
        alone = sorted(gr.nodes - keep) if keep else sorted(gr.nodes)[1:]
        gr.nodes = set(keep) if keep else {min(gr.nodes)}
        gr.merged = len(gr.nodes) > 1
        gr.version += 1
        gr.notes = []
        gr.attrs = None
        for n in alone:
            gid = max(self.groups) + 1
            self.groups[gid] = Group(gid, {n})
            self.owner[n] = gid

    def _merge(self, a: Group, b: Group, tag: str, saved: float) -> None:
        if self.log is not None and self.log.isEnabledFor(logging.INFO):
            self.log.info("fuse %s + %s (%s): saves %.2f us", self.describe_nodes(a.nodes),
                          self.describe_nodes(b.nodes), tag or "vertical", saved * 1e6)
        a.nodes |= b.nodes
        a.version += 1
        a.merged = True
        a.tag = tag or a.tag or b.tag
        a.notes = []
        a.attrs = None
        for n in b.nodes:
            self.owner[n] = a.gid
        del self.groups[b.gid]
        self.merges += 1

    # ---- recomputation ------------------------------------------------------------------------
    def recompute(self, can_copy: Callable[[int], bool]) -> None:
        """Copy single-op producers into every consumer group when that is estimated to be faster.

        The producer must be cheap to copy (`can_copy`), not returned by the function, and read only
        by nodes of other groups, each of which stays legal and acyclic with the copy inside.
        """
        if self.mode == "never":
            return
        gg = self.graph
        for gid in sorted(self.groups):
            gr = self.groups[gid]
            if len(gr.nodes) != 1 or gr.dups:
                continue
            (p,) = gr.nodes
            if p in gg.escapes or not can_copy(p):
                continue
            consumers = {self.owner.get(m, -1) for m in gg._succ[p]}
            if -1 in consumers or len(consumers) < 2 or any(self.groups[c].dups for c in consumers):
                continue
            self._try_copy(gr, p, [self.groups[c] for c in sorted(consumers)])

    def _try_copy(self, gr: Group, p: int, consumers: list[Group]) -> None:
        gg = self.graph
        producers = {gg.index[v.owner] for v in gg.ops[p].operands if v.owner in gg.index}
        saved = self.est(gr.nodes)
        for c in consumers:
            nodes = c.nodes | {p}
            ops = [gg.ops[i] for i in sorted(nodes)]
            if len(nodes) > self.max_ops or not self.rule(gr, c, ops).ok:
                return
            # the copy makes c read p's producers; the kernels holding them must not depend on c (a node of
            # such a kernel reachable from c would order the two kernels both ways)
            for q in producers:
                if q in c.nodes:
                    continue
                g = self.owner.get(q)
                held = (self.groups[g].nodes | set(self.groups[g].dups)) if g is not None and g in self.groups else {q}
                if any(n not in c.nodes and gg.reaches(c.nodes, n) for n in held):
                    return
            saved += self.est(c.nodes) - self.est.with_copy(c.nodes, p)
        if saved <= 0:
            if self.log is not None and self.log.isEnabledFor(logging.INFO):
                self.log.info("keep %s in its own kernel: recomputing it in %d kernels saves %.2f us",
                              self.describe_nodes(gr.nodes), len(consumers), saved * 1e6)
            return
        for c in consumers:
            c.dups.append(p)
            c.version += 1
        del self.groups[gr.gid]
        del self.owner[p]
        if self.log is not None and self.log.isEnabledFor(logging.INFO):
            self.log.info("recompute %s in %d kernels: saves %.2f us", self.describe_nodes(gr.nodes), len(consumers),
                          saved * 1e6)

    def result(self) -> list[Group]:
        """The groups in order of their first node."""
        return sorted(self.groups.values(), key=lambda gr: min(gr.nodes))
