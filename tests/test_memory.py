"""What the memory model counts beyond the cached outputs: one batch's activations in each step (estimated from the
blocks' shapes on the meta device), and a group's run block by block, the scoring phase (kept features joined without a copy, the scorer's working
set) and the budget errors that name them."""

from __future__ import annotations

import pytest
import torch

from alsatian_pl.blocks import activation_bytes, timm_recipe
from alsatian_pl.errors import BudgetTooSmallError
from alsatian_pl.features import FeatureStore
from alsatian_pl.plan import BlockSpec, InferenceStep, RoundMemory, TaskTree, plan_block_batches, plan_round, simulate
from alsatian_pl.plan.steps import step_work_bytes
from alsatian_pl.resources import TensorPeak
from alsatian_pl.score import available_scorers, get_scorer


# -- measuring tensors

def test_tensor_peak_counts_new_storages_until_freed_and_not_views_or_inputs():
    x = torch.ones(1000)  # 4000 bytes, made before: not counted
    with TensorPeak() as p:
        x.view(10, 100).add_(1)    # a view, in place: nothing new
        y = x * 2                  # 4000
        z = y + 1                  # 8000 held at once
        del y, z
        w = x[:500].clone()        # 2000, after the others died
    assert (p.peak, p.live) == (8000, 2000) and w.numel() == 500


def test_tensor_peak_on_the_meta_device_sees_a_conv_and_its_batch_norm():
    conv, bn = torch.nn.Conv2d(3, 8, 3, 2, 1, device="meta"), torch.nn.BatchNorm2d(8, device="meta").eval()
    x = torch.empty(64, 3, 224, 224, device="meta")
    with torch.inference_mode(), TensorPeak() as p:
        bn(conv(x))
    out = 64 * 8 * 112 * 112 * 4
    assert p.peak == 2 * out  # the conv's output and the normalised copy, nothing allocated for real


# -- activations of a step

def test_activation_bytes_of_mobilenet_blocks_from_shapes():
    work = activation_bytes(timm_recipe("mobilenetv3_small_050"), (3, 224, 224), 64)
    assert len(work) == 14
    stem_out = 64 * 16 * 112 * 112 * 4  # conv_stem, then bn1 (BatchNormAct: a new tensor, activation in place)
    assert work[0] == 2 * stem_out  # 98 MiB: measured on CPU, 98.0 MiB of RSS (bench/bench_memory.py --blocks)
    assert work[2] > 60 * 2**20     # the first expanding block: 4.5x channels at 56 px, twice
    assert activation_bytes(timm_recipe("mobilenetv3_small_050"), (3, 224, 224), 32)[0] == stem_out


def test_a_step_holds_the_largest_block_working_set_plus_its_input_batch():
    a, b = BlockSpec("a", out_bytes=100, work_bytes=5000), BlockSpec("b", out_bytes=10, work_bytes=1000)
    assert step_work_bytes((a,), 8) == 5000
    assert step_work_bytes((a, b), 8) == max(5000, 1000 + 8 * 100)
    assert step_work_bytes((b, a), 8) == 5000 + 8 * 10
    assert step_work_bytes((BlockSpec("c", 100), BlockSpec("d", 100)), 8) == 0  # no activation model: none


def _tree(work):
    tree = TaskTree()
    tree.add_model("m", [BlockSpec("a", 100, 50, work_bytes=work), BlockSpec("b", 10, 20, work_bytes=work // 2)])
    tree.add_model("n", [BlockSpec("a", 100, 50, work_bytes=work), BlockSpec("c", 10, 20, work_bytes=work // 2)])
    return tree


def test_the_planned_peak_includes_one_batch_of_activations_per_step():
    without, with_work = (plan_round(_tree(w), num_items=40, batch_size=8, resident_bytes=1000) for w in (0, 3000))
    assert without.peak_bytes == 1000 + 40 * 100 + 50
    assert with_work.peak_bytes == 1000 + 40 * 100 + 50 + 3000  # the root step: cached output, weights, activations
    steps = [s for s in with_work.steps if isinstance(s, InferenceStep)]
    assert [s.work_bytes for s in steps] == [3000, 1500, 1500]  # b, c read the cached output of a
    assert simulate(with_work.steps, _tree(3000), 40, 1000) == with_work.peak_bytes


def test_a_budget_that_held_only_without_activations_now_splits_or_is_refused():
    old_peak = 1000 + 40 * 100 + 50  # what the round needed when activations were not counted
    split = plan_round(_tree(1000), num_items=40, batch_size=8, budget=old_peak, resident_bytes=1000)
    assert split.partitions > 1 and split.peak_bytes <= old_peak
    with pytest.raises(BudgetTooSmallError, match=r"block weights and activations \(the largest step's activations "
                                                  r"of one batch: 4.9 KiB\)") as err:
        plan_round(_tree(5000), num_items=40, batch_size=8, budget=old_peak, resident_bytes=1000)
    assert err.value.needed == 1000 + 8 * 100 + 50 + 5000 > old_peak


# -- block-major groups of batches

def test_a_group_of_batches_holds_the_outputs_between_its_blocks():
    a, b = BlockSpec("a", out_bytes=100, work_bytes=5000), BlockSpec("b", out_bytes=10, work_bytes=1000)
    c = BlockSpec("c", out_bytes=50, work_bytes=700)
    assert step_work_bytes((a,), 8, 4) == 5000  # one block: nothing held between blocks
    assert step_work_bytes((a, b), 8, 1) == step_work_bytes((a, b), 8)
    # a: its outputs of 3 batches done while the 4th runs; b: a's outputs of 4 batches waiting; c: b's 4 waiting
    assert step_work_bytes((a, b, c), 8, 4) == max(5000 + 3 * 800, 1000 + max(4 * 800, 800 + 3 * 80), 700 + 4 * 80)
    assert step_work_bytes((b, a, c), 8, 4) == max(1000 + 3 * 80, 5000 + max(4 * 80, 80 + 3 * 800), 700 + 4 * 800)


def _chains():
    """Two models sharing a chain of two blocks (40 items of 100 and 40 bytes out), then a block of their own."""
    tree, shared = TaskTree(), [BlockSpec("a", 100, 50, work_bytes=3000), BlockSpec("a2", 40, 30, work_bytes=2000)]
    tree.add_model("m", [*shared, BlockSpec("b", 10, 20, work_bytes=500)])
    tree.add_model("n", [*shared, BlockSpec("c", 10, 20, work_bytes=500)])
    return tree


@pytest.mark.parametrize(("budget", "room", "most", "chosen"), [
    (None, None, 4, 4), (None, None, 8, 5), (None, None, 1, 1), (7000, None, 4, 2), (6479, None, 4, 1),
    (None, 7000, 4, 2), (None, 5000, 4, 1)])
def test_the_widest_group_is_the_largest_the_budget_leaves_room_for(budget, room, most, chosen):
    """The shared chain over k batches of 8 holds max(3000 + (k-1) * 800, 2000 + k * 800): the plan's peak is
    1000 resident + 1600 cached + 80 weights + that, 6480 at k = 2 and 7280 at k = 3 (which would split the data).
    Without a budget the cap, at most the round's 5 batches; a spilling round's ``room`` bounds the peak alone (a
    room below one batch's peak leaves one batch, unsplit)."""
    plan = plan_block_batches(_chains(), num_items=40, batch_size=8, most=most, budget=budget, resident_bytes=1000,
                              room=room)
    assert plan.partitions == 1
    assert {s.block_batches for s in plan.steps if isinstance(s, InferenceStep)} == {chosen}
    assert plan.peak_bytes == 1000 + 1600 + 80 + max(3000 + (chosen - 1) * 800, 2000 + chosen * 800)
    assert simulate(plan.steps, _chains(), 40, 1000) == plan.peak_bytes


def test_a_step_over_a_group_holds_what_its_work_bytes_count(zoo):
    """Measured (TensorPeak) over one model's chain of blocks, weights loaded before: 6 batches of 8 run batch-major
    or block by block in groups of 4 allocate their channels-last input batch plus exactly the step's ``work_bytes``
    (on this CPU: the blocks' activations are measured the same way on the meta device)."""
    from alsatian_pl.cache import CacheService
    from alsatian_pl.execute import Executor
    from alsatian_pl.halving import block_specs
    from alsatian_pl.stats import SearchStats
    from alsatian_pl.weights import WeightCache

    model, n, batch = zoo.models[0], 48, 8
    tree = TaskTree()
    tree.add_model(model, block_specs(zoo.store.manifest(model), batch))
    stats, cpu = SearchStats(), torch.device("cpu")
    executor = Executor(device=cpu, batch_size=batch, stats=stats, cache=CacheService(), weight_key=lambda b, m: b,
                        weights=WeightCache(zoo.store, cpu, channels_last=True, stats=stats))
    x, out = torch.randn(n, 3, 32, 32), torch.empty(n, zoo.store.manifest(model).blocks[-1].out_bytes // 4)
    sink = lambda m, start, y: out[start:start + len(y)].copy_(y)  # noqa: E731 - into a buffer made before
    for k in (1, 4):
        plan = plan_round(tree, num_items=n, batch_size=batch, block_batches=k)
        executor.run_round(plan, x, sink)  # loads the weights
        with TensorPeak() as held:
            executor.run_round(plan, x, sink)
        step = plan.steps[0]
        assert len(step.blocks) > 1 and step.block_batches == k
        assert held.peak == x[:batch].numel() * 4 + step.work_bytes
    assert step.work_bytes > step_work_bytes(step.blocks, batch)


def test_a_budgeted_search_holds_no_more_than_its_budget_with_groups_of_batches(zoo, monkeypatch):
    """Measured (TensorPeak: every tensor the executor allocates) while each round's plan runs block by block over
    groups of batches: what the round allocates (inputs in flight, feature buffers, cached outputs, weights,
    activations) stays within the budget less the data and the kept features, resident before it."""
    from alsatian_pl.data import SearchDataModule
    from alsatian_pl.execute import Executor
    from alsatian_pl.halving import SearchCallback, SuccessiveHalving

    data = SearchDataModule(num_items=300, image_size=32, seed=0)
    data.setup()
    planned, measured, run_round = [], [], Executor.run_round

    class Plans(SearchCallback):
        def on_round_planned(self, search, state, plan):
            planned.append((plan, state.memory))

    def measuring(self, *args, **kwargs):
        with TensorPeak() as held:
            run_round(self, *args, **kwargs)
        measured.append(held.peak)

    def search(budget):
        planned.clear()
        return SuccessiveHalving(zoo.store, data, batch_size=8, device="cpu", progress=False, cache_budget=budget,
                                 block_batches=4, scorer_kwargs={"epochs": 2}, callbacks=[Plans()]).run(zoo.models)

    search(None)
    budget = max(p.round_peak_bytes for p, _ in planned)
    monkeypatch.setattr(Executor, "run_round", measuring)
    search(budget)
    assert {s.block_batches for p, _ in planned for s in p.steps if isinstance(s, InferenceStep)} >= {4}
    for (plan, memory), peak in zip(planned, measured, strict=True):
        assert plan.round_peak_bytes <= budget
        assert peak <= budget - memory.data - memory.kept, (peak, plan.peak_bytes, memory)


# -- the scoring phase

def test_scoring_must_fit_the_budget_and_its_error_names_the_scorer():
    memory = RoundMemory(data=100, inputs=50, kept=1000, reserved=500, scoring=2000)
    assert memory.scoring_peak == 100 + 1000 + 500 + 2000 and memory.resident == 1650
    plan = plan_round(_tree(0), num_items=4, batch_size=4, budget=3600, resident_bytes=memory)
    assert plan.scoring_peak_bytes == 3600 and plan.round_peak_bytes == 3600 > plan.peak_bytes
    assert RoundMemory.weight_capacity(4000, plan.round_peak_bytes) == 400
    with pytest.raises(BudgetTooSmallError, match=r"scoring its features needs 3.5 KiB \(3600 bytes\) = 100 B "
                                                  r"prepared data \+ 1.5 KiB features .* 2.0 KiB for the scorer") as err:
        plan_round(_tree(0), num_items=4, batch_size=4, budget=3599, resident_bytes=memory)
    assert err.value.needed == 3600


def test_kept_features_are_joined_as_rounds_close_and_read_without_a_copy():
    store = FeatureStore({"m": 4 * 3})
    rounds = [(torch.arange(12.).view(4, 3), torch.full((2, 3), -1.)), (torch.arange(12., 18.).view(2, 3), None)]
    for k, (train, test) in enumerate(rounds):
        store.open_round(len(train), 0 if test is None else len(test))
        store.write("m", 0, train if test is None else torch.cat([train, test]))
        assert store.close_bytes(len(train) + (0 if test is None else len(test))) == (0 if k == 0 else 12 * 8)
        store.close_round()
    joined = store.train(["m"])["m"]
    assert torch.equal(joined, torch.arange(18.).view(6, 3))
    assert store.train(["m"])["m"].data_ptr() == joined.data_ptr()  # the kept tensor itself
    test = store.test(["m"])["m"]
    assert torch.equal(test, torch.full((2, 3), -1.))
    assert test.untyped_storage().nbytes() == test.numel() * 4  # not a view of the first round's buffer
    assert store.kept_bytes() == 8 * 12


def _round(models, n, t, d, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    train = {f"m{i}": torch.randn(n, d, generator=g) * (i + 1) for i in range(models)}
    test = {f"m{i}": torch.randn(t, d, generator=g) for i in range(models)}
    return train, torch.arange(n) % c, test, torch.arange(t) % c


@pytest.mark.parametrize("name", available_scorers())
@pytest.mark.parametrize("shape", [(3, 150, 40, 24, 5), (2, 24, 60, 150, 5), (1, 200, 300, 16, 30)])
@pytest.mark.parametrize("groups", [0, 10])
def test_a_scorers_working_set_is_at_least_what_it_holds(name, shape, groups):
    """``working_bytes`` bounds what scoring holds at once (every tensor op's output, traced), also with jackknife
    replicates (``groups``: the search's last round); the linear probe's own estimate stays within twice the
    measured."""
    models, n, t, d, c = shape
    train, y, test, yt = _round(models, n, t, d, c)
    options = {"epochs": 2} if name == "linear" else {}
    if name in ("leep", "nce"):
        options = {"heads": {m: (torch.randn(7, d), torch.randn(7)) for m in train}}
    if name == "ensemble":
        options = {"members": {"linear": {"epochs": 2}, "logme": {}, "knn": {}}}
    scorer = get_scorer(name, **options)
    scorer.jackknife = groups
    with TensorPeak() as held:
        scorer.combine(scorer.score(train, y, test, yt, c))
    estimate = scorer.working_bytes(n, t, {m: d for m in train}, c)
    assert held.peak <= estimate
    if name == "linear":
        assert estimate <= 2 * held.peak
