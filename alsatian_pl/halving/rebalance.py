"""A distributed search's share of the work: each rank's subtrees at the start (:func:`partition`), and rebalancing
(paper §6.6's future work) when pruning leaves one rank with most of the work (:func:`after_pruning`).

At the start every rank computes the same assignment: the task trees' subtrees spread over the ranks by LPT on the
planner's cost; each rank keeps its share of the trees and of the feature store.

After a round's (global) pruning every rank computes the same thing: the survivors' predicted load per rank, the
planner's cost per item of the task trees of the models each rank runs (every rank pushes the same items). When the
balance (mean over max) is below ``search.rebalance_below``, the survivors' subtrees are assigned again
(:func:`~alsatian_pl.plan.partition.rebalance`: LPT's makespan, parts kept where they are when that costs nothing),
and if that is more even, each moved model's kept features (training rows so far, test rows) go from its old rank to
its new one point to point, bit for bit, and every rank rebuilds its task trees for the models it now runs. A score
depends only on a model's features, so the ranking stays exactly the single process's.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from ..checks import number
from ..distributed import Group
from ..errors import ConfigError
from ..plan.partition import Assignment, lpt, moved_bytes, rebalance, subtree_parts
from .strategies import Strategy

if TYPE_CHECKING:
    from ..stats import SearchStats
    from .state import SearchState

__all__ = ["Migration", "check_threshold", "partition", "after_pruning", "plan", "migrate", "restored", "summary"]


@dataclass
class Migration:
    """One rebalancing after round ``round``: predicted balance before and after, each moved model's old and new
    rank and bytes (predicted, then the tensors' as sent), and this rank's seconds moving them."""

    round: int
    balance_before: float
    balance_after: float
    moves: dict[str, tuple[int, int]]
    bytes: dict[str, int]
    seconds: float = 0.0

    def rank_record(self, rank: int) -> dict[str, Any]:
        """What moved in and out of ``rank``."""
        ins = sorted(m for m, (_, b) in self.moves.items() if b == rank)
        outs = sorted(m for m, (a, _) in self.moves.items() if a == rank)
        return {"rank": rank, "models_in": ins, "models_out": outs, "bytes_in": sum(self.bytes[m] for m in ins),
                "bytes_out": sum(self.bytes[m] for m in outs)}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["moved_bytes"] = sum(self.bytes.values())
        out["moves"] = {m: list(v) for m, v in self.moves.items()}
        return out


def partition(state: SearchState, group: Group) -> None:
    """Keep this rank's share: the task trees' subtrees spread over the ranks by LPT on the planner's cost (every
    rank computes the same assignment)."""
    parts = [(p.cost, p.models) for g in state.groups for p in subtree_parts(g.tree, group.world_size)]
    assignment = lpt(parts, group.world_size)
    mine = assignment.models[group.rank]
    for g in state.groups:
        g.tree.prune([m for m in g.tree.models if m not in mine])
    state.features.drop([m for m in state.features.models if m not in mine])
    state.assignment = state.first_assignment = assignment


def after_pruning(state: SearchState, strategy: Strategy, group: Group, threshold: float | None,
                  device: torch.device, stats: SearchStats) -> None:
    """When pruning left the ranks' predicted loads uneven (below ``threshold``), move subtrees and their kept
    features to even them (the same decision on every rank)."""
    with stats.phase("planning"):
        migration = plan(state, strategy, group.world_size, threshold)
    if migration is None:
        return
    with stats.phase("communication"):
        migrate(state, strategy, group, migration, device)
    state.migrations.append(migration)


def check_threshold(value: Any) -> float | None:
    """``search.rebalance_below``: None (never rebalance) or a balance in (0, 1]; ConfigError otherwise."""
    if value is None:
        return None
    hint = " (null: never rebalance)"
    threshold = number("search.rebalance_below", value, above=0.0, hint=hint)
    if threshold > 1:
        raise ConfigError(f"search.rebalance_below must be a balance, above 0 and at most 1{hint}, got {value!r}")
    return threshold


def rank_loads(state: SearchState, strategy: Strategy, owned: Sequence[Iterable[str]]) -> tuple[float, ...]:
    """Each rank's predicted cost per item: the task trees (one per input group) of the survivors it runs."""
    alive = set(state.alive)
    loads = []
    for models in owned:
        mine = set(models) & alive
        loads.append(sum(strategy.make_tree({m: g.specs[m] for m in g.models if m in mine}).total_cost()
                         for g in state.groups))
    return tuple(loads)


def _balance(loads: Sequence[float]) -> float:
    return Assignment((), tuple(loads)).balance if loads else 1.0


def plan(state: SearchState, strategy: Strategy, workers: int, threshold: float | None) -> Migration | None:
    """The rebalancing after this round's pruning (the same on every rank), or None where the survivors' balance is
    at least ``threshold``, no assignment of their subtrees is more even, or the more even one would leave a rank
    holding more kept features than the fullest rank holds now (it might not fit that rank's budget)."""
    if threshold is None or state.assignment is None or not state.alive:
        return None
    alive = set(state.alive)
    owner = {m: w for w, ms in enumerate(state.assignment.models) for m in ms if m in alive}
    before = _balance(rank_loads(state, strategy, state.assignment.models))
    if before >= threshold:
        return None
    jobs = [(p.cost, p.models) for g in state.groups
            for p in subtree_parts(strategy.make_tree({m: g.specs[m] for m in g.models if m in alive}), workers)]
    per_item = {m: state.features.feature_bytes[m] for m in alive}
    new = rebalance(jobs, owner, per_item, workers)
    after = _balance(rank_loads(state, strategy, new.models))
    if after <= before + 1e-12 or not moved_bytes(new, owner, per_item) or _heavier(new.models, owner, per_item):
        return None
    moves = {m: (owner[m], w) for w, ms in enumerate(new.models) for m in sorted(ms) if owner[m] != w}
    kept = state.features.kept_items
    state.assignment = Assignment(new.models, rank_loads(state, strategy, new.models))
    return Migration(state.round, before, after, moves, {m: per_item[m] * kept for m in moves})


def _heavier(models: Sequence[Iterable[str]], owner: dict[str, int], per_item: dict[str, int]) -> bool:
    """Whether an assignment leaves some rank holding more kept features than the fullest rank holds now: every rank
    plans under the same budget, so a rank that ends up holding no more than some rank already held still fits."""
    now = [0] * len(models)
    for m, w in owner.items():
        now[w] += per_item[m]
    return max(sum(per_item[m] for m in ms) for ms in models) > max(now)


def migrate(state: SearchState, strategy: Strategy, group: Group, migration: Migration, device: torch.device) -> None:
    """Move the features of ``migration``'s models to their new ranks (shapes and dtypes all-gathered first, then
    the tensors point to point, unchanged, into ``device`` memory) and rebuild this rank's task trees for the models
    it now runs."""
    start = time.perf_counter()
    moving = sorted(migration.moves)
    outgoing = [m for m in moving if migration.moves[m][0] == group.rank]
    train, test = state.features.train(outgoing), state.features.test(outgoing)
    shapes = {m: (tuple(train[m].shape), train[m].dtype, tuple(test[m].shape), test[m].dtype) for m in outgoing}
    known = {m: s for part in group.all_gather(shapes) for m, s in part.items()}
    migration.bytes = {m: math.prod(a) * b.itemsize + math.prod(c) * d.itemsize for m, (a, b, c, d) in known.items()}
    sends, recvs, received = [], [], {}
    for i, m in enumerate(moving):
        src, dst = migration.moves[m]
        if src == group.rank:
            sends += [(dst, 2 * i, train[m]), (dst, 2 * i + 1, test[m])]
        elif dst == group.rank:
            tr_shape, tr_dtype, te_shape, te_dtype = known[m]
            received[m] = (torch.empty(tr_shape, dtype=tr_dtype, device=device),
                           torch.empty(te_shape, dtype=te_dtype, device=device))
            recvs += [(src, 2 * i, received[m][0]), (src, 2 * i + 1, received[m][1])]
    group.exchange(sends, recvs)
    del train, test
    state.features.drop(outgoing)
    for m, (tr, te) in received.items():
        state.features.adopt(m, tr, te)
    assert state.assignment is not None
    own(state, strategy, state.assignment.models[group.rank])
    migration.seconds = time.perf_counter() - start


def own(state: SearchState, strategy: Strategy, models: Iterable[str]) -> None:
    """Rebuild this rank's task trees for the survivors among ``models`` (the models it runs from now on)."""
    mine = set(models) & set(state.alive)
    for g in state.groups:
        g.tree = strategy.make_tree({m: g.specs[m] for m in g.models if m in mine})


def restored(state: SearchState, strategy: Strategy, group: Group, models: Sequence[str]) -> None:
    """After a resume: this rank runs ``models`` (those whose features its checkpoint kept); every rank learns the
    others' and the assignment follows."""
    own(state, strategy, models)
    owned = [frozenset(part) for part in group.all_gather(sorted(models))]
    state.assignment = Assignment(tuple(owned), rank_loads(state, strategy, owned))


def summary(migrations: list[Migration], seconds: list[list[float]]) -> list[dict[str, Any]]:
    """The rebalancings of a search, each with every rank's part (``seconds[rank][i]``: its time on the i-th)."""
    out = []
    for i, mig in enumerate(migrations):
        ranks = [{**mig.rank_record(r), "seconds": s[i]} for r, s in enumerate(seconds)]
        out.append({**mig.to_json(), "seconds": max(s[i] for s in seconds), "ranks": ranks})
    return out
