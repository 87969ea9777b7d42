"""DFS+ (paper §5.3): minimum cache requirements, the plan of one round, and data partitions (§5.4).

Memory model (shared with the executor, see docs/ARCHITECTURE.md): ``resident_bytes`` are held
throughout; an inference step from node u to node v holds mem(u)*items (u cached, unless u is the
root) + mem(v)*items + the weight bytes of its blocks + the activations of one batch through them
(``step_work_bytes``: per step, not per item, like the weights); afterwards v stays cached until its
ReleaseStep, which comes right after the inference step of v's last child (and its score steps).
A node without children only holds features: they go straight into the caller's reserved buffers
(part of ``resident_bytes``), are read by the score steps right after the inference step, are never
cached and never released, and count 0 bytes.

Optimality of the child order: with children c_1..c_k of v processed in this order, the peak of v's
subtree (ancestors excluded) is max(mem(v) + max_{i<k} need(c_i), mem(v) + mem(c_k) + w(c_k), inner(c_k)),
where need(c) = max(mem(c) + w(c), inner(c)) >= every term of c's own. Putting the child with the
largest need last makes every term <= mem(v) + max_i need(c_i), while any other last child leaves that
value itself as the first term; ties give the same value. Subtrees are independent and the parent's
peak is monotone in its children's, so choosing the best last child bottom-up is optimal among all
depth-first child orders at the planned item count, whatever the blocks' compute costs are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..errors import BudgetTooSmallError
from ..units import format_bytes
from .memory import RoundMemory
from .steps import InferenceStep, ReleaseStep, ScoreStep, Step, step_work_bytes
from .tree import BlockSpec, TaskTree

__all__ = ["ROOT", "StepTree", "Requirements", "min_cache_requirements", "emit_steps", "RoundPlan", "plan_round",
           "plan_block_batches", "simulate"]

ROOT = TaskTree.ROOT


@dataclass(frozen=True)
class StepTree:
    """The task tree with non-branching chains merged into one edge each (one inference step per edge).

    Its nodes are the root, branch points and feature nodes; ``children`` are in a canonical order
    (by edge key), so trees with the same models give the same plan whatever their history.
    """

    children: dict[int, tuple[int, ...]]
    parent: dict[int, int]
    blocks: dict[int, tuple[BlockSpec, ...]]  # the chain of blocks on the edge into the node
    models: dict[int, frozenset[str]]
    ends: dict[int, tuple[str, ...]]  # sorted ids of the models whose features the node is

    @classmethod
    def of(cls, tree: TaskTree) -> StepTree:
        """Compress ``tree`` (see :meth:`TaskTree.chains`)."""
        children: dict[int, list[int]] = {ROOT: []}
        parent, blocks, models, ends = {}, {}, {}, {ROOT: ()}
        for u, v, chain, users, done in tree.chains():
            children[u].append(v)
            children[v] = []
            parent[v], blocks[v], models[v], ends[v] = u, chain, users, done
        return cls({u: tuple(kids) for u, kids in children.items()}, parent, blocks, models, ends)

    def mem(self, num_items: int) -> dict[int, int]:
        """Bytes of each node's output for ``num_items`` items (root 0; leaves not yet zeroed)."""
        return {ROOT: 0, **{v: chain[-1].out_bytes * num_items for v, chain in self.blocks.items()}}

    def weight(self) -> dict[int, int]:
        """Weight bytes of the blocks on the edge into each node."""
        return {v: sum(b.weight_bytes for b in chain) for v, chain in self.blocks.items()}

    def work(self, batch_size: int, block_batches: int = 1) -> dict[int, int]:
        """The activations of ``block_batches`` batches through the blocks on the edge into each node, run block by
        block (:func:`step_work_bytes`)."""
        return {v: step_work_bytes(chain, batch_size, block_batches) for v, chain in self.blocks.items()}


@dataclass(frozen=True)
class Requirements:
    """Result of :func:`min_cache_requirements`; all values in the units of ``mem``."""

    order: dict[int, tuple[int, ...]]  # children of each node in DFS+ order (largest need last)
    need: dict[int, int]  # min cache to produce v and traverse its subtree, ancestors excluded
    accumulated: dict[int, int]  # pass 1: mem on the root path incl. v, + weights of the edge into v
    propagated: dict[int, int]  # pass 2: max accumulated in v's subtree (the paper's unadjusted requirement)
    adjusted: dict[int, int]  # pass 3: cache held while v is produced in DFS+ order, released parents removed
    peak: int  # the plan's minimum cache requirement: max(adjusted) == need[root]

    def traversal(self, root: int = ROOT) -> list[int]:
        """Nodes in DFS+ order (pre-order)."""
        out, stack = [], [root]
        while stack:
            v = stack.pop()
            out.append(v)
            stack.extend(reversed(self.order[v]))
        return out


def min_cache_requirements(children: Mapping[int, Sequence[int]], mem: Mapping[int, int],
                           weight: Mapping[int, int] | None = None, *, root: int = ROOT,
                           count_leaves: bool = True) -> Requirements:
    """DFS+ child order and cache requirements of an abstract tree (missing mem/weight entries are 0).

    The paper's three passes (top-down accumulate, bottom-up propagate, top-down adjust), with the
    bottom-up pass ordering children by the exact ``need`` recursion. The root is never released.
    ``count_leaves=False``: nodes without children hold 0 bytes (features go to reserved buffers).
    Ties keep the order of ``children``.
    """
    weight = weight or {}
    parent, topo = {}, [root]
    for v in topo:  # breadth-first; the list grows while iterating
        for c in children.get(v, ()):
            parent[c] = v
            topo.append(c)
    m = {v: mem.get(v, 0) if count_leaves or children.get(v) else 0 for v in topo}
    w = {v: weight.get(v, 0) if v != root else 0 for v in topo}

    path, accumulated = {root: m[root]}, {root: m[root]}
    for c in topo[1:]:
        path[c] = path[parent[c]] + m[c]
        accumulated[c] = path[c] + w[c]

    propagated, need, inner, order = {}, {}, {}, {}
    for v in reversed(topo):
        kids = children.get(v, ())
        propagated[v] = max([accumulated[v], *(propagated[c] for c in kids)])
        order[v] = tuple(sorted(kids, key=need.__getitem__))
        if not kids:
            inner[v] = m[v]
        elif v == root:
            inner[v] = m[v] + need[order[v][-1]]
        else:
            *first, last = order[v]
            inner[v] = max(m[v] + m[last] + w[last], inner[last], m[v] + max((need[c] for c in first), default=0))
        need[v] = max(m[v] + w[v], inner[v])

    base, adjusted = {root: m[root]}, {root: m[root]}  # base: cache held while v's children are produced
    for v in topo:
        for c in order[v]:
            adjusted[c] = base[v] + m[c] + w[c]
            base[c] = base[v] + m[c] - (m[v] if v != root and c == order[v][-1] else 0)
    return Requirements(order, need, accumulated, propagated, adjusted, need[root])


def emit_steps(step_tree: StepTree, order: Mapping[int, Sequence[int]] | None = None,
               work: Mapping[int, int] | None = None, block_batches: int = 1) -> tuple[Step, ...]:
    """Plan steps of a depth-first traversal visiting children in ``order`` (default: the canonical order);
    ``work``: each inference step's activation bytes (:meth:`StepTree.work`; default 0) for ``block_batches``.

    After each inference step: the score steps of the models it completes, then the release of the
    input node if this was its last child. Leaves are never cached, so never released.
    """
    order = step_tree.children if order is None else order
    work = work or {}
    steps: list[Step] = []
    stack = list(reversed(order.get(ROOT, ())))
    while stack:
        v = stack.pop()
        u = step_tree.parent[v]
        steps.append(InferenceStep(step_tree.blocks[v], u, v, step_tree.models[v], bool(step_tree.children[v]),
                                   work.get(v, 0), block_batches))
        steps.extend(ScoreStep(model, v) for model in step_tree.ends[v])
        if u != ROOT and order[u][-1] == v:
            steps.append(ReleaseStep(u))
        stack.extend(reversed(order.get(v, ())))
    return tuple(steps)


@dataclass(frozen=True)
class RoundPlan:
    """The plan of one round: run ``steps`` once per partition, each over the next ``partition_items`` items."""

    steps: tuple[Step, ...]
    partitions: int
    partition_items: int  # items per partition (the last may be smaller); a multiple of batch_size if partitions > 1
    num_items: int
    peak_bytes: int  # expected peak of one (the largest) partition, resident_bytes included
    resident_bytes: int
    scoring_peak_bytes: int = 0  # expected peak of scoring the round afterwards (RoundMemory.scoring_peak)

    @property
    def round_peak_bytes(self) -> int:
        """The round's expected peak: running the plan or scoring its features, whichever holds more."""
        return max(self.peak_bytes, self.scoring_peak_bytes)

    @property
    def models(self) -> frozenset[str]:
        """The models whose features this plan produces."""
        return frozenset(s.model for s in self.steps if isinstance(s, ScoreStep))

    def ranges(self) -> tuple[range, ...]:
        """Item index ranges of the partitions, in execution order."""
        return tuple(range(start, min(start + self.partition_items, self.num_items))
                     for start in range(0, self.num_items, self.partition_items))


def plan_round(tree: TaskTree, *, num_items: int, batch_size: int, budget: int | None = None,
               resident_bytes: int | RoundMemory = 0, block_batches: int = 1) -> RoundPlan:
    """DFS+ plan of ``tree`` over ``num_items`` items, split into the fewest partitions that fit ``budget``.

    ``resident_bytes``: held throughout (a :class:`RoundMemory` also names its parts in the budget error, and its
    ``scoring`` part gives the plan's ``scoring_peak_bytes``, which must fit the budget too). Each step also holds
    its blocks' weights and the activations of ``block_batches`` batches run block by block (``BlockSpec.work_bytes``
    at ``batch_size``; :func:`step_work_bytes`).

    Partitions are whole batches (except the last) and as even as possible. Raises BudgetTooSmallError
    (with ``needed``, the smallest budget for one batch and for scoring) if even one batch does not fit.
    """
    memory = resident_bytes if isinstance(resident_bytes, RoundMemory) else RoundMemory(data=resident_bytes)
    resident_bytes = memory.resident
    if num_items < 1 or batch_size < 1 or block_batches < 1:
        raise ValueError(f"num_items, batch_size and block_batches must be positive, got {num_items}, {batch_size} "
                         f"and {block_batches}")
    if resident_bytes < 0 or (budget is not None and budget < 0):
        raise ValueError("resident_bytes and budget must not be negative")
    step_tree = StepTree.of(tree)
    work = step_tree.work(batch_size, block_batches)
    running = {v: w + work[v] for v, w in step_tree.weight().items()}  # held while the step into v runs

    def requirements(items: int) -> Requirements:
        return min_cache_requirements(step_tree.children, step_tree.mem(items), running, count_leaves=False)

    batches = -(-num_items // batch_size)
    req, per_partition = requirements(num_items), batches
    if budget is not None and resident_bytes + req.peak > budget:
        one_batch = min(batch_size, num_items)
        needed = resident_bytes + requirements(one_batch).peak
        if needed > budget:
            largest = max(work.values(), default=0)
            raise BudgetTooSmallError(_too_small_message(budget, needed, memory, one_batch, largest, block_batches),
                                      needed=max(needed, memory.scoring_peak))
        lo, hi = 1, batches - 1  # the largest number of batches per partition that fits: lo fits, hi+1 does not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if resident_bytes + requirements(min(mid * batch_size, num_items)).peak <= budget:
                lo = mid
            else:
                hi = mid - 1
        per_partition = -(-batches // -(-batches // lo))  # same partition count, sizes as even as possible
        req = requirements(min(per_partition * batch_size, num_items))
    memory.check_scoring(budget)
    partition_items = min(per_partition * batch_size, num_items)
    return RoundPlan(steps=emit_steps(step_tree, req.order, work, block_batches),
                     partitions=-(-num_items // partition_items),
                     partition_items=partition_items, num_items=num_items,
                     peak_bytes=resident_bytes + req.peak, resident_bytes=resident_bytes,
                     scoring_peak_bytes=memory.scoring_peak)


def plan_block_batches(tree: TaskTree, *, num_items: int, batch_size: int, most: int, budget: int | None = None,
                       resident_bytes: int | RoundMemory = 0, room: int | None = None) -> RoundPlan:
    """:func:`plan_round` with its steps run block by block over the most batches at once, up to ``most``, that the
    budget leaves room for: the plan keeps the partitions it has with one batch (block-major groups never split the
    data further), and a group never exceeds a partition's batches; with ``room``, a wider plan's peak stays within
    it too (a round that spills plans without a budget, and groups batches only where it needs no spilling). Without
    chains of blocks, or ``most`` 1, the plan of one batch. Peaks grow with the group (:func:`step_work_bytes`), so
    the largest that fits is bisected."""
    plan = plan_round(tree, num_items=num_items, batch_size=batch_size, budget=budget, resident_bytes=resident_bytes)
    chains = any(len(s.blocks) > 1 for s in plan.steps if isinstance(s, InferenceStep))
    lo, hi, best = 1, min(most, -(-plan.partition_items // batch_size)) if chains else 1, plan
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            wider = plan_round(tree, num_items=num_items, batch_size=batch_size, budget=budget,
                               resident_bytes=resident_bytes, block_batches=mid)
        except BudgetTooSmallError:
            wider = None
        if wider is not None and wider.partitions == plan.partitions and (room is None or wider.peak_bytes <= room):
            lo, best = mid, wider
        else:
            hi = mid - 1
    return best


def _too_small_message(budget: int, needed: int, memory: RoundMemory, one_batch: int, work: int,
                       block_batches: int) -> str:
    resident = memory.resident
    text = (f"The cache budget {format_bytes(budget)} is too small for this round: even one batch of {one_batch} "
            f"items needs {format_bytes(needed)} ({needed} bytes) = {format_bytes(resident)} resident "
            f"({memory.describe()}) + {format_bytes(needed - resident)} for intermediate outputs, block weights and "
            f"activations (the largest step's activations of "
            f"{'one batch' if block_batches == 1 else f'{block_batches} batches'}: {format_bytes(work)}). ")
    if resident > budget:
        text += "The resident data alone exceeds the budget. "
    if memory.scoring_peak > needed:
        needed = memory.scoring_peak
        text += f"Scoring the round's features afterwards needs {format_bytes(needed)}. "
    return text + f"Raise the cache budget to at least {format_bytes(needed)}, or lower the batch size."


def simulate(plan_steps: Iterable[Step], tree_or_node_mem: TaskTree | Mapping[int, int], num_items: int,
             resident_bytes: int = 0) -> int:
    """Peak bytes of running ``plan_steps`` over ``num_items`` items, stepping through the memory model.

    ``tree_or_node_mem``: a TaskTree (leaves count 0) or bytes per item of each node output (leaves
    count during their own step). A leaf is a step's output that it does not cache (``cache_output`` False):
    only the score steps right after it may read it. Raises ValueError on a step that reads or releases
    an output not in the cache, recomputes a cached one, or if intermediates are left at the end.
    """
    plan_steps = list(plan_steps)
    if isinstance(tree_or_node_mem, TaskTree):
        per_item = {n.id: n.mem if n.children else 0 for n in tree_or_node_mem.nodes()}
    else:
        per_item = tree_or_node_mem
    cache: dict[int, int] = {}
    held = peak = resident_bytes
    leaf = None  # the leaf just produced, readable by the score steps that follow
    for step in plan_steps:
        if isinstance(step, InferenceStep):
            if step.input != ROOT and step.input not in cache:
                raise ValueError(f"{step}: input node {step.input} is not in the cache")
            if step.output in cache:
                raise ValueError(f"{step}: output node {step.output} is already in the cache")
            out = per_item[step.output] * num_items
            peak = max(peak, held + out + step.running_bytes)
            if step.cache_output:
                cache[step.output], held, leaf = out, held + out, None
            else:
                leaf = step.output
        elif isinstance(step, ScoreStep):
            if step.features not in cache and step.features != leaf:
                raise ValueError(f"{step}: features node {step.features} is not in the cache")
        elif isinstance(step, ReleaseStep):
            if step.node not in cache:
                raise ValueError(f"{step}: node {step.node} is not in the cache")
            held -= cache.pop(step.node)
        else:
            raise TypeError(f"not a plan step: {step!r}")
    if cache:
        raise ValueError(f"the plan leaves nodes {sorted(cache)} in the cache")
    return peak
