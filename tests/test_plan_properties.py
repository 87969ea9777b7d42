"""Property-based tests of the planner on random model zoos (hypothesis)."""

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from alsatian_pl.errors import BudgetTooSmallError
from alsatian_pl.plan import (BlockSpec, InferenceStep, ReleaseStep, ScoreStep, StepTree, TaskTree, emit_steps,
                              min_cache_requirements, plan_round, simulate)


@st.composite
def zoos(draw, max_models=6, max_len=5):
    """Models derived as in the paper: copy a random earlier model, keep a prefix, append new blocks."""
    specs: dict[str, BlockSpec] = {}

    def new_block():
        name = f"b{len(specs)}"
        specs[name] = BlockSpec(name, out_bytes=draw(st.integers(0, 40)), weight_bytes=draw(st.integers(0, 300)))
        return specs[name]

    models = [[new_block() for _ in range(draw(st.integers(1, max_len)))]]
    for _ in range(draw(st.integers(0, max_models - 1))):
        base = draw(st.sampled_from(models))
        keep = draw(st.integers(0, len(base)))
        tail = [new_block() for _ in range(draw(st.integers(0 if keep else 1, max_len - keep)))]
        models.append(base[:keep] + tail)
    return {f"m{i}": blocks for i, blocks in enumerate(models)}


def build(zoo, shared=True):
    tree = TaskTree(shared=shared)
    for model_id, blocks in zoo.items():
        tree.add_model(model_id, blocks)
    return tree


sizes = st.fixed_dictionaries({"num_items": st.integers(1, 40), "batch_size": st.integers(1, 16),
                               "resident_bytes": st.integers(0, 500)})


@settings(max_examples=150, deadline=None)
@given(zoos(), sizes, st.booleans())
def test_every_edge_once_scores_and_releases(zoo, args, shared):
    tree = build(zoo, shared)
    plan = plan_round(tree, **args)
    covered = []
    for step in (s for s in plan.steps if isinstance(s, InferenceStep)):
        chain, node = [], step.output
        while node != step.input:
            chain.append(node)
            node = tree.node(node).parent
        assert tuple(tree.node(n).block for n in reversed(chain)) == step.blocks
        assert step.models == tree.node(step.output).models
        covered += chain
    assert sorted(covered) == sorted(n.id for n in tree.nodes() if n.id != TaskTree.ROOT)

    scores = {s.model: s.features for s in plan.steps if isinstance(s, ScoreStep)}
    assert scores == {m: tree.path(m)[-1] for m in zoo}
    for i, step in enumerate(plan.steps):
        if isinstance(step, ScoreStep):  # right after the inference step (and score steps) producing the node
            j = i - 1
            while isinstance(plan.steps[j], ScoreStep):
                j -= 1
            assert plan.steps[j].output == step.features

    inner = [s.output for s in plan.steps if isinstance(s, InferenceStep) and tree.node(s.output).children]
    released = [s.node for s in plan.steps if isinstance(s, ReleaseStep)]
    assert sorted(inner) == sorted(released)  # intermediates once each, leaves (features) never
    for node in released:  # right after the inference step of its last child and that child's score steps
        r = plan.steps.index(ReleaseStep(node))
        last_read = max(i for i, s in enumerate(plan.steps) if isinstance(s, InferenceStep) and s.input == node)
        assert all(isinstance(s, ScoreStep) for s in plan.steps[last_read + 1:r])

    assert simulate(plan.steps, tree, args["num_items"], args["resident_bytes"]) == plan.peak_bytes
    assert plan.partitions == 1 and plan.partition_items == args["num_items"]


def all_orders(children):
    """Every depth-first child order: one permutation of the children of each branch node."""
    nodes = [v for v, kids in children.items() if len(kids) > 1]
    for perms in itertools.product(*(itertools.permutations(children[v]) for v in nodes)):
        yield {**children, **dict(zip(nodes, perms))}


@settings(max_examples=100, deadline=None)
@given(zoos(max_models=5), st.integers(1, 30), st.integers(0, 100))
def test_no_depth_first_order_has_a_lower_peak(zoo, num_items, resident):
    tree = build(zoo)
    plan = plan_round(tree, num_items=num_items, batch_size=num_items, resident_bytes=resident)
    step_tree = StepTree.of(tree)
    peaks = [simulate(emit_steps(step_tree, order), tree, num_items, resident)
             for order in all_orders(step_tree.children)]
    assert min(peaks) == plan.peak_bytes
    req = min_cache_requirements(step_tree.children, step_tree.mem(num_items), step_tree.weight(), count_leaves=False)
    assert resident + max(req.adjusted.values()) == resident + req.peak == plan.peak_bytes


def canonical(tree, steps):
    """Steps with node ids replaced by (block hashes from the root, model ids on the edge), comparable across trees."""
    def key(node_id):
        hashes = []
        n = tree.node(node_id)
        models = n.models
        while n.block is not None:
            hashes.append(n.block.hash)
            n = tree.node(n.parent)
        return tuple(reversed(hashes)), models
    out = []
    for s in steps:
        if isinstance(s, InferenceStep):
            out.append(("I", s.blocks, key(s.input), key(s.output), s.models))
        elif isinstance(s, ScoreStep):
            out.append(("S", s.model, key(s.features)))
        else:
            out.append(("R", key(s.node)))
    return out


@settings(max_examples=100, deadline=None)
@given(zoos(max_models=8), st.data(), sizes, st.booleans())
def test_prune_then_replan_equals_planning_from_scratch(zoo, data, args, shared):
    pruned = data.draw(st.sets(st.sampled_from(sorted(zoo)), max_size=len(zoo) - 1))
    tree = build(zoo, shared)
    tree.prune(pruned)
    fresh = build({m: b for m, b in zoo.items() if m not in pruned}, shared)
    assert tree.num_edges() == fresh.num_edges() and tree.models == fresh.models
    a, b = plan_round(tree, **args), plan_round(fresh, **args)
    assert canonical(tree, a.steps) == canonical(fresh, b.steps)
    assert a.peak_bytes == b.peak_bytes


@settings(max_examples=150, deadline=None)
@given(zoos(), sizes, st.floats(0, 1.2))
def test_budget_split_fits_and_covers_items(zoo, args, fraction):
    tree = build(zoo)
    n, bs, resident = args["num_items"], args["batch_size"], args["resident_bytes"]
    full = plan_round(tree, **args).peak_bytes
    one_batch = plan_round(tree, num_items=min(bs, n), batch_size=bs, resident_bytes=resident).peak_bytes
    budget = one_batch + int(fraction * (full - one_batch))
    plan = plan_round(tree, **args, budget=budget)
    ranges = plan.ranges()
    assert len(ranges) == plan.partitions and [i for r in ranges for i in r] == list(range(n))
    assert all(len(r) % bs == 0 for r in ranges[:-1]) and len(ranges[0]) == plan.partition_items
    assert plan.peak_bytes <= budget
    for r in ranges:
        assert simulate(plan.steps, tree, len(r), resident) <= plan.peak_bytes
    if plan.partitions > 1:  # fewest: one partition less needs larger partitions, which do not fit
        batches = math.ceil(n / bs)
        larger = min(math.ceil(batches / (plan.partitions - 1)) * bs, n)
        assert plan_round(tree, num_items=larger, batch_size=bs, resident_bytes=resident).peak_bytes > budget
    if one_batch > 0:
        try:
            plan_round(tree, **args, budget=one_batch - 1)
            raise AssertionError("expected BudgetTooSmallError")
        except BudgetTooSmallError as err:
            assert err.needed == one_batch


@settings(max_examples=50, deadline=None)
@given(zoos(max_models=8))
def test_unshared_tree_has_one_path_per_model(zoo):
    tree = build(zoo, shared=False)
    assert tree.num_edges() == sum(len(b) for b in zoo.values())
    assert len(tree.node(TaskTree.ROOT).children) == len(zoo)
    for model_id, blocks in zoo.items():
        path = tree.path(model_id)
        assert [tree.node(i).block for i in path] == blocks
        assert all(tree.node(i).models == {model_id} for i in path)
    plan = plan_round(tree, num_items=3, batch_size=2)
    assert sum(isinstance(s, InferenceStep) for s in plan.steps) == len(zoo)  # one chain per model
