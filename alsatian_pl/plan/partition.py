"""Spreading a round's task tree over workers (paper §6.6's future work: whole subtrees to each worker, so no
intermediate or block weight is held twice), and SHiFT's alternative, a queue of whole models. Pure Python.

:func:`partition_subtrees` cuts the tree into subtrees, starting from the root's children and splitting the most
expensive one into its children while it costs more than an even share of the work (a split part repeats its
prefix, so each split costs that prefix once more), then assigns them with LPT (longest processing time first, each to the least
loaded worker): Graham's bound gives a makespan of at most (4/3 - 1/(3m)) times the best assignment of those parts.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .tree import TaskTree

__all__ = ["Part", "Assignment", "subtree_parts", "lpt", "partition_subtrees", "model_queue", "rebalance",
           "moved_bytes"]


@dataclass(frozen=True)
class Part:
    """A subtree rooted at ``node``: its models, and its cost per item (its edges plus the repeated ``prefix``)."""

    node: int
    models: frozenset[str]
    cost: float
    prefix: float = 0.0


@dataclass(frozen=True)
class Assignment:
    """Which models each worker runs, and each worker's predicted cost per item."""

    models: tuple[frozenset[str], ...]
    loads: tuple[float, ...]

    @property
    def makespan(self) -> float:
        return max(self.loads, default=0.0)

    @property
    def balance(self) -> float:
        """Mean over max load: 1.0 is perfectly even."""
        return sum(self.loads) / len(self.loads) / self.makespan if self.makespan else 1.0


def _subtree_costs(tree: TaskTree) -> dict[int, float]:
    """Each node's subtree cost per item: its own block plus everything below it."""
    cost: dict[int, float] = {}
    for node in reversed(list(tree.nodes())):  # children after parents in creation order, so reversed: bottom-up
        cost[node.id] = (node.block.cost if node.block else 0.0) + sum(cost[c] for c in node.children)
    return cost


def subtree_parts(tree: TaskTree, workers: int) -> list[Part]:
    """The root's subtrees, the costliest split into its children (its prefix then repeated in each) while it costs
    more than an even share of the work (total / ``workers``) and can be split."""
    cost = _subtree_costs(tree)
    parts = [Part(c, tree.node(c).models, cost[c]) for c in tree.node(TaskTree.ROOT).children]
    while parts:
        big = max(parts, key=lambda p: (p.cost, -p.node))
        node = tree.node(big.node)
        if not node.children or big.cost <= sum(p.cost for p in parts) / workers:
            break
        prefix = big.prefix + (node.block.cost if node.block else 0.0)
        parts.remove(big)
        if node.ends:  # models whose features are this node: their own part, of the prefix alone
            parts.append(Part(big.node, frozenset(node.ends), prefix, prefix))
        parts += [Part(c, tree.node(c).models, prefix + cost[c], prefix) for c in node.children]
    return parts


def lpt(jobs: Iterable[tuple[float, frozenset[str]]], workers: int, *, in_order: bool = False) -> Assignment:
    """Assign jobs (cost, models) to ``workers``: each to the least loaded worker, costliest first (LPT), or in the
    given order (``in_order``: a queue that idle workers pull from, as SHiFT's)."""
    jobs = list(jobs) if in_order else sorted(jobs, key=lambda j: (-j[0], sorted(j[1])))
    heap = [(0.0, w) for w in range(workers)]
    models: list[set[str]] = [set() for _ in range(workers)]
    loads = [0.0] * workers
    for cost, ms in jobs:
        load, w = heapq.heappop(heap)
        loads[w], models[w] = load + cost, models[w] | ms
        heapq.heappush(heap, (loads[w], w))
    return Assignment(tuple(frozenset(m) for m in models), tuple(loads))


def partition_subtrees(tree: TaskTree, workers: int) -> Assignment:
    """Alsatian's distribution: subtrees of ``tree`` to ``workers`` by LPT."""
    return lpt(((p.cost, p.models) for p in subtree_parts(tree, workers)), workers)


def model_queue(paths: dict[str, Sequence[float]], workers: int) -> Assignment:
    """SHiFT's distribution: every model's whole path (block costs, nothing shared) from a queue, in model order."""
    return lpt(((sum(costs), frozenset([m])) for m, costs in paths.items()), workers, in_order=True)


def rebalance(jobs: Iterable[tuple[float, frozenset[str]]], owner: Mapping[str, int], sizes: Mapping[str, int],
              workers: int) -> Assignment:
    """Jobs (cost, models) to ``workers`` within LPT's makespan, moving few bytes (``owner``: each model's worker
    now, ``sizes``: its bytes): LPT's order with every job kept on the worker that holds most of its bytes while
    that stays within LPT's makespan, or LPT's assignment renumbered to keep the most bytes where that moves less."""
    jobs = sorted(jobs, key=lambda j: (-j[0], sorted(j[1])))
    target = lpt(jobs, workers)
    loads, models = [0.0] * workers, [set() for _ in range(workers)]
    for cost, ms in jobs:
        home = _home(ms, owner, sizes)
        w = home if loads[home] + cost <= target.makespan * (1 + 1e-9) else min(range(workers), key=loads.__getitem__)
        loads[w] += cost
        models[w] |= ms
    sticky = Assignment(tuple(frozenset(m) for m in models), tuple(loads))
    renumbered = _renumbered(target, owner, sizes)
    fits = sticky.makespan <= target.makespan * (1 + 1e-9)
    return sticky if fits and moved_bytes(sticky, owner, sizes) <= moved_bytes(renumbered, owner, sizes) else renumbered


def moved_bytes(assignment: Assignment, owner: Mapping[str, int], sizes: Mapping[str, int]) -> int:
    """Bytes of the models ``assignment`` puts on another worker than ``owner`` does."""
    return sum(sizes.get(m, 0) for w, ms in enumerate(assignment.models) for m in ms if owner.get(m, w) != w)


def _home(models: frozenset[str], owner: Mapping[str, int], sizes: Mapping[str, int]) -> int:
    """The worker holding most of ``models``' bytes (the lowest such worker on a tie)."""
    held: dict[int, int] = {}
    for m in models:
        if m in owner:
            held[owner[m]] = held.get(owner[m], 0) + sizes.get(m, 0) + 1  # +1: a model of no bytes still counts
    return min(held, key=lambda w: (-held[w], w)) if held else 0


def _renumbered(assignment: Assignment, owner: Mapping[str, int], sizes: Mapping[str, int]) -> Assignment:
    """``assignment`` with its workers renumbered, greedily, so that each takes the number that keeps most bytes."""
    n = len(assignment.models)
    kept = sorted(((sum(sizes.get(m, 0) + 1 for m in ms if owner.get(m) == w), i, w)
                   for i, ms in enumerate(assignment.models) for w in range(n)), key=lambda t: (-t[0], t[1], t[2]))
    label: dict[int, int] = {}
    for _, i, w in kept:
        if i not in label and w not in label.values():
            label[i] = w
    order = sorted(range(n), key=lambda i: label[i])
    return Assignment(tuple(assignment.models[i] for i in order), tuple(assignment.loads[i] for i in order))
