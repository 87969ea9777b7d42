"""The round machinery on its own: the memory model, the feature store, the cache tiers, the strategies' plans."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from alsatian_pl.cache import CacheService
from alsatian_pl.features import FeatureStore
from alsatian_pl.plan import BlockSpec, InferenceStep, RoundMemory, TaskTree, plan_round
from alsatian_pl.errors import BudgetTooSmallError
from alsatian_pl.halving import STRATEGIES, get_strategy

REPO = Path(__file__).resolve().parents[1]


def test_feature_store_counts_what_the_memory_model_counts():
    store = FeatureStore({"a": 16, "b": 8})  # bytes per item: 4 and 2 float32 values
    assert store.memory(new_items=5, data_bytes=100, input_bytes=40) == RoundMemory(100, 40, 0, 5 * 24)
    store.open_round(3, 2)
    for m, dim in (("a", 4), ("b", 2)):
        store.write(m, 0, torch.ones(4, dim))
        store.write(m, 4, torch.zeros(1, dim))
    store.close_round()
    assert store.kept_items == 5 and store.kept_bytes() == store.memory(new_items=0, data_bytes=0).kept == 5 * 24
    assert store.train(["a"])["a"].shape == (3, 4) and store.test(["b"])["b"].tolist() == [[1, 1], [0, 0]]
    store.drop(["a"])
    assert store.models == ["b"] and store.kept_bytes() == 5 * 8
    store.open_round(2)
    with pytest.raises(RuntimeError, match="no features were computed"):
        store.close_round()


def test_budget_error_names_the_resident_parts():
    tree = TaskTree()
    tree.add_model("m", [BlockSpec("x", 10, weight_bytes=100)])
    memory = RoundMemory(data=3 * 2**20, inputs=0, kept=2**20, reserved=2**20)
    with pytest.raises(BudgetTooSmallError, match="3.0 MiB prepared data, 1.0 MiB kept features, 1.0 MiB feature "
                                                  "buffers") as err:
        plan_round(tree, num_items=10, batch_size=5, budget=2**20, resident_bytes=memory)
    assert err.value.needed == memory.resident + 100
    assert plan_round(tree, num_items=10, batch_size=5, resident_bytes=memory).resident_bytes == memory.resident
    assert RoundMemory.weight_capacity(None, 5) is None and RoundMemory.weight_capacity(10, 15) == 0


def test_host_tier_takes_outputs_beyond_the_device_capacity():
    cache = CacheService(device_capacity=1000)  # a fake small accelerator tier, on the CPU
    a, b = torch.arange(200, dtype=torch.float32), torch.ones(200)  # 800 bytes each
    cache.put(1, a)
    cache.put(2, b)  # 1600 > 1000: host tier
    assert cache.moved_to_host_bytes == 800 and cache.intermediates == 1600
    assert torch.equal(cache.get(2), b) and cache.hits == 1
    cache.release(1)
    cache.put(3, a)  # the device tier has room again
    assert cache.moved_to_host_bytes == 800
    cache.release(2)
    cache.release(3)
    assert cache.intermediates == 0 and cache.peak == 1600


def test_strategies_differ_in_their_plan_only():
    assert STRATEGIES.names() == ["alsatian", "base", "shift"]
    specs = {m: [BlockSpec("root", 4), BlockSpec(f"top-{m}", 4)] for m in ("a", "b")}
    trees = {name: get_strategy(name).make_tree(specs) for name in STRATEGIES}
    assert trees["alsatian"].num_edges() == 3 and trees["shift"].num_edges() == trees["base"].num_edges() == 4
    alsatian, shift = get_strategy("alsatian"), get_strategy("shift")
    assert alsatian.weight_keys([trees["alsatian"]]) == {("root", None), ("top-a", None), ("top-b", None)}
    assert shift.weight_keys([trees["shift"]]) == {("root", "a"), ("root", "b"), ("top-a", "a"), ("top-b", "b")}
    assert get_strategy("base").num_rounds(35, 1) == 1 and alsatian.num_rounds(35, 1) == shift.num_rounds(35, 1) == 6
    assert alsatian.survivors(list("abcde"), 0, 3, 1) == 3 and alsatian.survivors(list("ab"), 2, 3, 1) == 1


def _python_files(root: Path) -> list[Path]:
    """Every ``*.py`` of the repository (alsatian_pl/, bench/, tests/, scripts/, examples/, the entry points), not
    those in hidden folders, virtual environments or build and run outputs."""
    skip = {".venv", "venv", "outputs", "multirun", "build", "dist", "__pycache__"}
    return sorted(p for p in root.rglob("*.py")
                  if not any(part.startswith(".") or part in skip for part in p.relative_to(root).parts[:-1]))


def test_every_function_of_the_package_reads_at_once():
    """The architecture target: no function or method of the repository (the package, its benchmarks, tests,
    scripts and examples) is 60 lines or longer."""
    long = []
    for path in _python_files(REPO):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines >= 60:
                    long.append(f"{path.relative_to(REPO)}:{node.name} ({lines} lines)")
    assert not long, long


@pytest.mark.parametrize("n, batch_size, sizes", [(100, 64, [50, 50]), (64, 64, [64]), (65, 64, [32, 33]),
                                                   (7, 3, [2, 2, 3]), (0, 64, []), (128, 64, [64, 64])])
def test_a_step_runs_in_the_fewest_even_batches(n, batch_size, sizes):
    """No tiny last batch: the fewest batches of at most the batch size (the memory model's one-batch bound holds),
    their sizes within one of each other, covering every item once, in order."""
    from alsatian_pl.execute import even_batches

    batches = even_batches(n, batch_size)
    assert [b - a for a, b in batches] == sizes
    assert [i for a, b in batches for i in range(a, b)] == list(range(n))


def _features(zoo, channels_last: bool, block_batches: int, n: int = 45, batch_size: int = 8):
    """Every model's features of ``n`` random 32 px items from a plan run block by block over ``block_batches``."""
    from alsatian_pl.execute import Executor
    from alsatian_pl.halving import block_specs
    from alsatian_pl.stats import SearchStats
    from alsatian_pl.weights import WeightCache

    manifests = {m: zoo.store.manifest(m) for m in zoo.models}
    tree = get_strategy("alsatian").make_tree({m: block_specs(man, batch_size) for m, man in manifests.items()})
    plan = plan_round(tree, num_items=n, batch_size=batch_size, block_batches=block_batches)
    stats = SearchStats()
    executor = Executor(device=torch.device("cpu"), batch_size=batch_size, stats=stats, cache=CacheService(),
                        weights=WeightCache(zoo.store, torch.device("cpu"), channels_last=channels_last, stats=stats),
                        weight_key=lambda block, models: block)
    out: dict[str, list] = {m: [] for m in zoo.models}
    executor.run_round(plan, torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                       lambda m, start, y: out[m].append((start, y.clone())))
    return plan, {m: torch.cat([y for _, y in sorted(parts, key=lambda p: p[0])]) for m, parts in out.items()}


@pytest.fixture(scope="module", params=["mobilenetv3_small_050", "resnet18", "convnext_atto"])
def branching_zoo(request, tmp_path_factory):
    """Two models of one architecture sharing all but their last blocks (a cached branch point, two leaf steps)."""
    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

    store = BlockStore(tmp_path_factory.mktemp("branching"))
    return build_synthetic_zoo(store, ZooConfig("b", request.param, num_models=2, distribution="top_layers", seed=3,
                                                input_size=(3, 32, 32)), progress=False)


@pytest.mark.parametrize("channels_last", [True, False])
def test_block_major_groups_give_batch_majors_features_bit_for_bit(branching_zoo, channels_last):
    """Each block over a group of batches, then the next: every batch runs the same ops on the same shapes as
    batch-major, so the features are equal bit for bit (6 batches of 7-8 items: groups of 4 + 2, and 6)."""
    one, expected = _features(branching_zoo, channels_last, 1)
    assert max(len(s.blocks) for s in one.steps if isinstance(s, InferenceStep)) > 1  # a chain to run block by block
    for k in (4, 6):
        plan, got = _features(branching_zoo, channels_last, k)
        assert {s.block_batches for s in plan.steps if isinstance(s, InferenceStep)} == {k}
        assert all(torch.equal(got[m], expected[m]) for m in expected)
