"""What the memory model counts beyond the cached outputs: one batch's activations in each step (estimated from the
blocks' shapes on the meta device), the scoring phase (kept features joined without a copy, the scorer's working
set) and the budget errors that name them."""

from __future__ import annotations

import pytest
import torch

from alsatian_pl.blocks import activation_bytes, timm_recipe
from alsatian_pl.errors import BudgetTooSmallError
from alsatian_pl.features import FeatureStore
from alsatian_pl.plan import BlockSpec, InferenceStep, RoundMemory, TaskTree, plan_round, simulate
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
