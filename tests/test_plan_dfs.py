"""DFS+ on hand-made trees (paper §5.3, fig. 9), plan steps, the memory model and data partitions (§5.4)."""

import pytest

from alsatian_pl.errors import BudgetTooSmallError
from alsatian_pl.plan import (BlockSpec, InferenceStep, ReleaseStep, ScoreStep, StepTree, TaskTree, emit_steps,
                              min_cache_requirements, plan_round, simulate)
from alsatian_pl.units import format_bytes


def spec(name, out, weight=0):
    return BlockSpec(name, out_bytes=out, weight_bytes=weight)


# Fig. 9: intermediates 0..7 with the sizes the text implies: reaching 7 caches 1, 3, 7 = 9 + 4 + 2; releasing 1
# (9) after producing 2 brings 4 to 10; 4 and 5 accumulate 19 and 17. Node 6 must tie with 7 for the paper's
# order 7, 6 (3's requirement stays 15), so the tie is broken by the given child order.
FIG9_CHILDREN = {0: [1], 1: [2, 3], 2: [4, 5], 3: [7, 6]}
FIG9_MEM = {0: 0, 1: 9, 2: 3, 3: 4, 4: 7, 5: 5, 6: 2, 7: 2}


def test_fig9_three_passes_and_traversal():
    req = min_cache_requirements(FIG9_CHILDREN, FIG9_MEM, count_leaves=True)
    assert req.accumulated[7] == 9 + 4 + 2 == 15
    assert req.accumulated[4] == 19 and req.accumulated[5] == 17
    assert req.propagated[2] == 19 and req.propagated[1] == 19 and req.propagated[3] == 15
    assert req.adjusted[4] == 10  # 1 is released right after 2 is materialized
    assert req.traversal() == [0, 1, 3, 7, 6, 2, 5, 4]
    assert req.peak == max(req.adjusted.values()) == 15


def test_exact_need_beats_ordering_by_unadjusted_requirement():
    # v(5) has c1 = chain 5 -> 5 -> 5 (propagated 20) and c2 = 1 with two leaves of 12 (propagated 18).
    # Ordering by the unadjusted maximum processes c1 last: peak 5 + 13 = 18; c2 last: 15.
    children = {0: [1], 1: [2, 3], 2: [4], 4: [5], 3: [6, 7]}
    mem = {1: 5, 2: 5, 4: 5, 5: 5, 3: 1, 6: 12, 7: 12}
    req = min_cache_requirements(children, mem)
    assert req.propagated[2] > req.propagated[3]
    assert req.order[1] == (2, 3) and req.peak == 15


def test_weights_and_leaf_rule_in_abstract_tree():
    children = {0: [1], 1: [2, 3]}
    mem, weight = {1: 10, 2: 50, 3: 40}, {1: 5, 2: 1, 3: 100}
    counted = min_cache_requirements(children, mem, weight, count_leaves=True)
    assert counted.order[1] == (2, 3)  # need 51 < 140
    assert counted.peak == max(10 + 5, 10 + 50 + 1, 10 + 40 + 100) == 150
    free = min_cache_requirements(children, mem, weight, count_leaves=False)
    assert free.peak == 10 + 100 and free.need[2] == 1


def hand_tree():
    a, b, c, d, e = spec("a", 10, 100), spec("b", 20, 200), spec("c", 5, 50), spec("d", 7, 70), spec("e", 3, 30)
    tree = TaskTree()
    tree.add_model("A", [a, b, c])  # nodes a=1, b=2, c=3
    tree.add_model("B", [a, b, d])  # d=4
    tree.add_model("C", [a, e])  # e=5
    return tree, (a, b, c, d, e)


def test_hand_tree_steps_and_peak():
    tree, (a, b, c, d, e) = hand_tree()
    plan = plan_round(tree, num_items=2, batch_size=2, resident_bytes=1000)
    assert plan.steps == (
        InferenceStep((a,), 0, 1, frozenset("ABC")),
        InferenceStep((e,), 1, 5, frozenset("C"), cache_output=False), ScoreStep("C", 5),  # e needs 30 < b's 240
        InferenceStep((b,), 1, 2, frozenset("AB")), ReleaseStep(1),
        InferenceStep((c,), 2, 3, frozenset("A"), cache_output=False), ScoreStep("A", 3),  # leaves are never cached nor released
        InferenceStep((d,), 2, 4, frozenset("B"), cache_output=False), ScoreStep("B", 4), ReleaseStep(2),
    )
    # the heaviest moment: a (20) and b (40) cached while b's weights (200) are loaded; leaves count 0
    assert plan.peak_bytes == 1000 + 20 + 40 + 200 == simulate(plan.steps, tree, 2, 1000)
    assert (plan.partitions, plan.partition_items, plan.num_items) == (1, 2, 2)
    assert plan.ranges() == (range(0, 2),)


def test_chains_are_one_step_and_prefix_models_score_at_inner_nodes():
    tree = TaskTree()
    tree.add_model("long", [spec("a", 8), spec("b", 4), spec("c", 2), spec("d", 1)])
    tree.add_model("short", [spec("a", 8), spec("b", 4)])
    tree.add_model("side", [spec("a", 8), spec("b", 4), spec("x", 3)])
    ids = tree.path("long")
    plan = plan_round(tree, num_items=10, batch_size=4)
    inference = [s for s in plan.steps if isinstance(s, InferenceStep)]
    assert [tuple(b.hash for b in s.blocks) for s in inference] == [("a", "b"), ("c", "d"), ("x",)]
    assert inference[0].output == ids[1] and inference[1].output == ids[3]
    assert plan.steps[1] == ScoreStep("short", ids[1])  # right after the node is produced
    # b (4/item) is an intermediate although it ends "short"; the leaves d and x count 0
    assert plan.peak_bytes == 40 == simulate(plan.steps, tree, 10, 0)


def test_empty_tree_plan():
    plan = plan_round(TaskTree(), num_items=5, batch_size=2, resident_bytes=7, budget=7)
    assert plan.steps == () and plan.peak_bytes == 7 and plan.partitions == 1


def two_leaf_tree():
    tree = TaskTree()
    tree.add_model("a", [spec("r", 100), spec("x", 1)])
    tree.add_model("b", [spec("r", 100), spec("y", 1)])
    return tree  # peak = resident + 100 per item


def test_budget_split_even_whole_batches():
    tree = two_leaf_tree()  # 10 items in batches of 3: 3 + 3 + 3 + 1
    plan = plan_round(tree, num_items=10, batch_size=3, budget=50 + 600, resident_bytes=50)
    assert (plan.partitions, plan.partition_items, plan.peak_bytes) == (2, 6, 650)
    assert plan.ranges() == (range(0, 6), range(6, 10))
    plan = plan_round(tree, num_items=10, batch_size=3, budget=50 + 900, resident_bytes=50)
    assert (plan.partitions, plan.partition_items) == (2, 6)  # 9 + 1 would fit, 6 + 4 is as few and more even
    plan = plan_round(tree, num_items=10, batch_size=3, budget=50 + 300, resident_bytes=50)
    assert (plan.partitions, plan.partition_items) == (4, 3)
    plan = plan_round(tree, num_items=10, batch_size=3, budget=50 + 1000, resident_bytes=50)
    assert (plan.partitions, plan.partition_items) == (1, 10)


def test_budget_too_small_for_one_batch():
    tree = two_leaf_tree()
    with pytest.raises(BudgetTooSmallError) as info:
        plan_round(tree, num_items=10, batch_size=3, budget=349, resident_bytes=50)
    assert info.value.needed == 350
    assert format_bytes(350) in str(info.value) and "Raise the cache budget" in str(info.value)
    assert plan_round(tree, num_items=10, batch_size=3, budget=350, resident_bytes=50).partitions == 4
    with pytest.raises(BudgetTooSmallError, match="resident data alone"):
        plan_round(tree, num_items=10, batch_size=3, budget=10, resident_bytes=50)


def test_budget_error_counts_block_weights():
    tree = TaskTree()
    tree.add_model("a", [spec("big", 1, weight=10_000)])
    with pytest.raises(BudgetTooSmallError) as info:
        plan_round(tree, num_items=100, batch_size=10, budget=5_000)
    assert info.value.needed == 10_000  # a single leaf counts 0; its weights do not shrink with partitions


def test_simulate_rejects_invalid_plans():
    tree, _ = hand_tree()
    steps = emit_steps(StepTree.of(tree))
    with pytest.raises(ValueError, match="not in the cache"):
        simulate(steps[1:], tree, 1)  # input of the second step was never produced
    with pytest.raises(ValueError, match="not in the cache"):
        simulate(steps + (ReleaseStep(3),), tree, 1)  # a leaf is never cached
    with pytest.raises(ValueError, match="not in the cache"):
        simulate(steps + (ScoreStep("A", 3),), tree, 1)  # a leaf is readable only right after its step
    with pytest.raises(ValueError, match="leaves nodes"):
        simulate(steps[:-1], tree, 1)
    node_mem = {1: 10, 2: 20, 3: 5, 4: 7, 5: 3}  # a mapping counts leaves during their own step
    assert simulate(steps, node_mem, 1) == max(10 + 100, 10 + 20 + 200, 10 + 20 + 5 + 50, 10 + 20 + 7 + 70, 10 + 3 + 30)


def test_invalid_arguments():
    tree = two_leaf_tree()
    for kwargs in ({"num_items": 0, "batch_size": 1}, {"num_items": 1, "batch_size": 0},
                   {"num_items": 1, "batch_size": 1, "budget": -1}):
        with pytest.raises(ValueError):
            plan_round(tree, **kwargs)
