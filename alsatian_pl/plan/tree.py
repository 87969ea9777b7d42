"""The task tree of one successive-halving round (paper §5.1).

The root is the round's input data, every edge one block inference, and a node the output of the
block on the edge into it. Models that share a prefix of identical blocks share the path; the
node where a model's last block ends holds that model's features (its proxy score is computed there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterable, Iterator, Sequence

__all__ = ["BlockSpec", "Node", "TaskTree"]


@dataclass(frozen=True)
class BlockSpec:
    """What the planner knows of one block: its content hash, per-item output bytes, weight bytes, relative cost, and
    ``work_bytes``: what running it on one batch allocates beyond its input (its activations and the batch's
    output, at the search's batch size; see ``blocks.activation_bytes``)."""

    hash: str
    out_bytes: int
    weight_bytes: int = 0
    cost: float = 1.0
    work_bytes: int = 0

    def __post_init__(self) -> None:
        if not self.hash:
            raise ValueError("a block hash must be a non-empty string")
        if self.out_bytes < 0 or self.weight_bytes < 0 or self.cost < 0 or self.work_bytes < 0:
            raise ValueError(f"block {self.hash}: out_bytes, weight_bytes, cost and work_bytes must not be negative")


@dataclass(frozen=True)
class Node:
    """Snapshot of a task-tree node: ``models`` use the edge into it, ``ends`` are the models whose features it is."""

    id: int
    parent: int | None
    block: BlockSpec | None
    children: tuple[int, ...]
    models: frozenset[str]
    ends: frozenset[str]

    @property
    def mem(self) -> int:
        """Bytes per data item of this node's output (0 for the root, whose data is resident)."""
        return self.block.out_bytes if self.block is not None else 0


class _Node:
    __slots__ = ("id", "parent", "block", "key", "children", "models", "ends")

    def __init__(self, id: int, parent: int | None, block: BlockSpec | None, key: Hashable) -> None:
        self.id, self.parent, self.block, self.key = id, parent, block, key
        self.children: dict[Hashable, int] = {}  # edge key -> child id, in insertion order
        self.models: set[str] = set()
        self.ends: set[str] = set()


class TaskTree:
    """Mutable task tree: add models, prune models; node ids are never reused.

    ``shared=False`` disables prefix sharing (the SHiFT/Base baselines): each model gets its own path,
    the edge key is ``(model_id, hash)`` instead of ``hash``.
    """

    ROOT: int = 0

    def __init__(self, shared: bool = True) -> None:
        self.shared = shared
        self._nodes: dict[int, _Node] = {self.ROOT: _Node(self.ROOT, None, None, None)}
        self._paths: dict[str, tuple[int, ...]] = {}
        self._next_id = 1

    def add_model(self, model_id: str, blocks: Sequence[BlockSpec]) -> None:
        """Add a model as its ordered blocks, reusing the longest existing path of identical blocks (when shared)."""
        if model_id in self._paths:
            raise ValueError(f"model {model_id!r} is already in the task tree")
        blocks = tuple(blocks)
        if not blocks:
            raise ValueError(f"model {model_id!r} has no blocks")
        node, path = self._nodes[self.ROOT], []
        for spec in blocks:
            key = spec.hash if self.shared else (model_id, spec.hash)
            child_id = node.children.get(key)
            if child_id is None:  # from here on every node is new, so nothing below can fail half-way
                child = _Node(self._next_id, node.id, spec, key)
                self._next_id += 1
                self._nodes[child.id], node.children[key] = child, child.id
            else:
                child = self._nodes[child_id]
                if child.block != spec:
                    raise ValueError(f"model {model_id!r}: block {spec.hash} conflicts with the same hash already "
                                     f"in the tree ({child.block} != {spec})")
            path.append(child.id)
            node = child
        self._paths[model_id] = tuple(path)
        self._nodes[self.ROOT].models.add(model_id)
        for node_id in path:
            self._nodes[node_id].models.add(model_id)
        node.ends.add(model_id)

    def prune(self, model_ids: Iterable[str]) -> None:
        """Remove models and the edges no remaining model uses; unknown ids raise KeyError and remove nothing."""
        ids = list(dict.fromkeys(model_ids))
        unknown = [m for m in ids if m not in self._paths]
        if unknown:
            shown = ", ".join(map(repr, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
            raise KeyError(f"cannot prune {len(unknown)} model(s) not in the task tree: {shown}")
        for model_id in ids:
            path = self._paths.pop(model_id)
            self._nodes[self.ROOT].models.discard(model_id)
            self._nodes[path[-1]].ends.discard(model_id)
            for node_id in reversed(path):  # deepest first, so a parent outlives its deleted child
                node = self._nodes[node_id]
                node.models.discard(model_id)
                if not node.models:
                    del self._nodes[node_id]
                    del self._nodes[node.parent].children[node.key]

    @property
    def models(self) -> frozenset[str]:
        """Ids of the models in the tree."""
        return frozenset(self._paths)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._paths

    def path(self, model_id: str) -> tuple[int, ...]:
        """Node ids from the root's child to the node holding ``model_id``'s features."""
        return self._paths[model_id]

    def node(self, node_id: int) -> Node:
        """Snapshot of one node; KeyError if it does not exist (pruned or never created)."""
        try:
            n = self._nodes[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id} in the task tree (pruned or never created)") from None
        return Node(n.id, n.parent, n.block, tuple(n.children.values()), frozenset(n.models), frozenset(n.ends))

    def nodes(self) -> Iterator[Node]:
        """Snapshots of all nodes, root first, in creation order (parents before children)."""
        return (self.node(node_id) for node_id in list(self._nodes))

    def num_edges(self) -> int:
        """Number of block inferences (edges) per data item."""
        return len(self._nodes) - 1

    def chains(self) -> Iterator[tuple[int, int, tuple[BlockSpec, ...], frozenset[str], tuple[str, ...]]]:
        """The tree with non-branching chains merged: ``(parent, node, blocks, models, ends)`` per chain, depth first,
        children in edge-key order. A chain ends at a node holding features or with other than one child; ``models``
        use the chain, ``ends`` (sorted) are the models whose features its last node is."""
        stack = [self.ROOT]
        while stack:
            u = stack.pop()
            for _, first_id in sorted(self._nodes[u].children.items(), key=lambda kv: kv[0]):
                node = first = self._nodes[first_id]
                chain = [first.block]
                while len(node.children) == 1 and not node.ends:
                    node = self._nodes[next(iter(node.children.values()))]
                    chain.append(node.block)
                yield u, node.id, tuple(chain), frozenset(first.models), tuple(sorted(node.ends))
                stack.append(node.id)

    def distinct_blocks(self) -> frozenset[str]:
        """Hashes of the distinct blocks in the tree."""
        return frozenset(n.block.hash for n in self._nodes.values() if n.block is not None)

    def total_cost(self) -> float:
        """Sum of the per-item costs of all edges (the cost of any plan that runs each edge once)."""
        return sum(n.block.cost for n in self._nodes.values() if n.block is not None)
