"""Distributing a task tree over workers: subtrees by LPT (alsatian) and a model queue (SHiFT), property-tested."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from alsatian_pl.plan import BlockSpec, TaskTree
from alsatian_pl.plan.partition import (_renumbered, lpt, model_queue, moved_bytes, partition_subtrees, rebalance,
                                        subtree_parts)


def zoo_tree(parents: list[int], reinit: list[int], blocks: int = 6) -> tuple[TaskTree, dict[str, list[float]]]:
    """Model i copies model parents[i] and replaces its last reinit[i] blocks (as M_syn zoos do)."""
    chains: list[list[str]] = [[f"b{j}" for j in range(blocks)]]
    for i, (p, k) in enumerate(zip(parents, reinit), start=1):
        chain = list(chains[p % i])
        for j in range(blocks - k, blocks):
            chain[j] = f"m{i}-b{j}"
        chains.append(chain)
    tree, paths = TaskTree(), {}
    for i, chain in enumerate(chains):
        specs = [BlockSpec(h, 4, cost=1.0 + j) for j, h in enumerate(chain)]
        tree.add_model(f"m{i:03d}", specs)
        paths[f"m{i:03d}"] = [s.cost for s in specs]
    return tree, paths


zoos = st.integers(1, 25).flatmap(lambda n: st.tuples(st.lists(st.integers(0, 100), min_size=n, max_size=n),
                                                      st.lists(st.integers(1, 6), min_size=n, max_size=n)))


@settings(max_examples=60, deadline=None)
@given(zoos, st.integers(1, 12))
def test_every_model_goes_to_exactly_one_worker_and_lpt_keeps_grahams_bound(zoo, workers):
    tree, paths = zoo_tree(*zoo)
    for assignment in (partition_subtrees(tree, workers), model_queue(paths, workers)):
        assert len(assignment.models) == workers
        assert sorted(m for ms in assignment.models for m in ms) == sorted(tree.models)
    costs = [p.cost for p in subtree_parts(tree, workers)]
    makespan = partition_subtrees(tree, workers).makespan
    assert makespan <= sum(costs) / workers + max(costs) * (1 - 1 / workers) + 1e-9  # any greedy list schedule
    if workers <= 3 and len(costs) <= 8:  # Graham's LPT bound against the best assignment, found by brute force
        best = min(max(sum(c for c, w in zip(costs, ws) if w == k) for k in range(workers))
                   for ws in itertools.product(range(workers), repeat=len(costs)))
        assert makespan <= (4 / 3 - 1 / (3 * workers)) * best + 1e-9
    # one worker runs the whole tree once: exactly the tree's cost, never more than the models run alone
    one = partition_subtrees(tree, 1)
    assert abs(one.makespan - tree.total_cost()) < 1e-9 and one.makespan <= model_queue(paths, 1).makespan + 1e-9


def test_a_shared_trunk_is_split_below_its_branch_point():
    tree, _ = zoo_tree([0, 0, 0], [1, 1, 1], blocks=4)  # 4 models share blocks 0-2, each its own last block
    parts = subtree_parts(tree, 4)
    assert len(parts) == 4 and {p.prefix for p in parts} == {1.0 + 2.0 + 3.0}  # the trunk is repeated per part
    assert lpt([(3.0, frozenset("a")), (2.0, frozenset("b")), (2.0, frozenset("c"))], 2).loads == (3.0, 4.0)


@settings(max_examples=60, deadline=None)
@given(zoos, st.integers(1, 6), st.data())
def test_rebalancing_keeps_lpts_makespan_covers_every_model_once_and_moves_no_more_than_renumbered_lpt(zoo, workers,
                                                                                                       data):
    tree, _ = zoo_tree(*zoo)
    jobs = [(p.cost, p.models) for p in subtree_parts(tree, workers)]
    models = sorted(tree.models)
    owner = dict(zip(models, data.draw(st.lists(st.integers(0, workers - 1), min_size=len(models),
                                                max_size=len(models)))))
    sizes = dict(zip(models, data.draw(st.lists(st.integers(0, 1000), min_size=len(models), max_size=len(models)))))
    new, best = rebalance(jobs, owner, sizes, workers), lpt(jobs, workers)
    assert sorted(m for ms in new.models for m in ms) == models and len(new.models) == workers
    assert new.makespan <= best.makespan * (1 + 1e-9)
    assert moved_bytes(new, owner, sizes) <= moved_bytes(_renumbered(best, owner, sizes), owner, sizes)
    # parts already where LPT puts them: nothing moves
    settled = {m: w for w, ms in enumerate(best.models) for m in ms}
    assert moved_bytes(rebalance(jobs, settled, sizes, workers), settled, sizes) == 0


def test_rebalancing_moves_one_of_two_models_off_a_rank_that_holds_both():
    jobs = [(2.0, frozenset({"a"})), (2.0, frozenset({"b"}))]
    new = rebalance(jobs, {"a": 1, "b": 1}, {"a": 10, "b": 30}, 2)
    assert new.loads == (2.0, 2.0) and new.models == (frozenset({"a"}), frozenset({"b"}))  # the smaller one moves


def test_rebalancing_never_leaves_a_rank_holding_more_features_than_the_fullest_holds_now():
    from alsatian_pl.halving.rebalance import _heavier
    owner, per_item = {"a": 0, "b": 0, "c": 1}, {"a": 10, "b": 10, "c": 5}  # ranks hold 20 and 5 bytes per item
    assert not _heavier([{"a"}, {"b", "c"}], owner, per_item)  # 10 and 15: no rank above 20
    assert _heavier([set(), {"a", "b", "c"}], owner, per_item)  # 25 on rank 1: more than any rank held
