"""The search engine end to end on a tiny zoo: strategy equivalence, cross-round reuse, budget splitting, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from alsatian_pl.app import run_search
from alsatian_pl.data import SearchDataModule
from alsatian_pl.errors import BudgetTooSmallError, ConfigError, DataError, StoreError
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.store import BlockStore

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY = ["models.arch=mobilenetv3_small_050", "models.num_models=6", "models.checkpoint=null",
        "dataset.num_items=300", "dataset.image_size=32", "++search.scorer.kwargs.epochs=10",
        "search.progress=false", "search.batch_size=32"]


@pytest.fixture(scope="module")
def data():
    dm = SearchDataModule(num_items=300, image_size=32, seed=0)
    dm.setup()
    return dm


def _search(zoo, data, strategy="alsatian", **kwargs):
    kwargs = {"batch_size": 32, "device": "cpu", "progress": False, "scorer_kwargs": {"epochs": 10}, **kwargs}
    return SuccessiveHalving(BlockStore(zoo.store.root), data, strategy=strategy, **kwargs).run(zoo.models)


@pytest.fixture(scope="module")
def results(zoo, data):
    return {s: _search(zoo, data, s) for s in ("alsatian", "shift", "base")}


def _scores(result):
    return {r.model: (r.score, r.test_loss, r.eliminated_in_round) for r in result.ranking}


def test_alsatian_and_shift_give_identical_scores_and_rankings(results):
    a, s = results["alsatian"], results["shift"]
    assert [r.model for r in a.ranking] == [r.model for r in s.ranking]
    for (sa, la, ra), (ss, ls, rs) in zip(_scores(a).values(), _scores(s).values()):
        assert (sa, la, ra) == (ss, ls, rs)  # bit for bit: the same blocks on the same items, shared or not
    assert len(a.rounds) == 3 and [r.models for r in a.rounds] == [6, 3, 2]


def test_running_steps_block_by_block_changes_no_score(results, zoo, data):
    """The default runs chains of blocks over groups of batches (search.block_batches=auto); batch-major gives the
    same scores, losses and rounds exactly."""
    assert _scores(_search(zoo, data, block_batches=1)) == _scores(results["alsatian"])


def test_base_scores_the_winner_like_alsatians_final_round(results):
    a, b = results["alsatian"], results["base"]
    base = _scores(b)
    assert len(b.rounds) == 1 and b.rounds[0].models == 6
    assert abs(base[a.winner][0] - a.ranking[0].score) <= 1e-5
    assert abs(base[a.winner][1] - a.ranking[0].test_loss) <= 1e-5


def test_each_distinct_block_runs_once_per_item_and_nothing_is_recomputed(results, zoo, data):
    a = results["alsatian"]
    alive_in = {r: {m.model for m in a.ranking if m.eliminated_in_round is None or m.eliminated_in_round >= r}
                for r in range(len(a.rounds))}
    manifests = {m.name: m for m in zoo.manifests()}
    expected: dict[str, int] = {}
    for r, rep in enumerate(a.rounds):
        for h in {h for m in alive_in[r] for h in manifests[m].hashes}:
            expected[h] = expected.get(h, 0) + rep.items
    assert a.block_items == expected
    data.setup_rounds(len(a.rounds))
    assert a.rounds[0].items == len(data.chunk(0)[0]) + len(data.test_items()[0])  # test items once, in round 1
    assert [r.items for r in a.rounds[1:]] == data.chunk_sizes[1:]
    shift = results["shift"]
    assert sum(shift.block_items.values()) > sum(a.block_items.values())
    # on the CPU a block is mapped from the store at most once per partition of each round it runs in, and dropped
    # after its last use there (WeightCache keep_done: its file's pages leave the resident memory)
    per_round = [len({h for m in alive_in[r] for h in manifests[m].hashes}) * rep.partitions
                 for r, rep in enumerate(a.rounds)]
    assert len(expected) <= a.cache["weight_loads"] <= sum(per_round)


def test_planned_and_observed_peaks_agree(results):
    for res in results.values():
        for rep in res.rounds:
            assert rep.observed_peak_bytes == rep.planned_peak_bytes


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """The tiny zoo's models at 64 px, where running a round (activations, intermediates) takes more than scoring
    it (at 32 px scoring the features takes the most, and no partitioning can lower that): zoo, data, ample run."""
    from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

    store = BlockStore(tmp_path_factory.mktemp("store64"))
    zoo = build_synthetic_zoo(store, ZooConfig("tiny64", "mobilenetv3_small_050", num_models=6, distribution="top25",
                                               seed=1, input_size=(3, 64, 64)), progress=False)
    dm = SearchDataModule(num_items=300, image_size=64, seed=0)
    dm.setup()
    return zoo, dm, _search(zoo, dm)


def test_a_tight_budget_splits_rounds_and_keeps_the_results(wide):
    """Below the ample run's peak the steps first run fewer batches block by block (search.block_batches); below
    batch-major's peak the rounds split. Every round within its budget, the scores unchanged."""
    zoo, data, ample = wide
    assert max(r.scoring_peak_bytes for r in ample.rounds) < max(r.planned_peak_bytes for r in ample.rounds)
    narrow = _search(zoo, data, cache_budget=max(r.planned_peak_bytes for r in ample.rounds) - 1)
    assert all(r.partitions == 1 and r.observed_peak_bytes == r.planned_peak_bytes for r in narrow.rounds)
    assert max(r.planned_peak_bytes for r in narrow.rounds) < max(r.planned_peak_bytes for r in ample.rounds)
    assert _scores(narrow) == _scores(ample)
    budget = max(r.planned_peak_bytes for r in _search(zoo, data, block_batches=1).rounds) - 1
    tight = _search(zoo, data, cache_budget=budget)
    assert any(r.partitions > 1 for r in tight.rounds)
    assert all(r.observed_peak_bytes == r.planned_peak_bytes <= budget for r in tight.rounds)
    assert _scores(tight) == _scores(ample)
    with pytest.raises(BudgetTooSmallError, match="Raise the cache budget") as err:
        _search(zoo, data, cache_budget=1024)
    assert err.value.needed > 1024


def test_a_budget_below_the_scoring_peak_is_refused_before_the_round_runs(results, zoo, data):
    """At 32 px scoring takes the most (kept features, the probes' stacked copies): a budget below it is refused
    at planning, naming the scorer's share, however the data would be split."""
    ample = results["alsatian"]
    peak = max(r.scoring_peak_bytes for r in ample.rounds)
    assert peak == max(r.planned_peak_bytes for r in ample.rounds)
    with pytest.raises(BudgetTooSmallError, match="scoring its features needs .* for the scorer's working") as err:
        _search(zoo, data, cache_budget=peak - 1)
    assert err.value.needed == peak
    within = _search(zoo, data, cache_budget=peak)
    assert _scores(within) == _scores(ample)
    assert all(r.scoring_peak_bytes <= r.observed_peak_bytes == r.planned_peak_bytes <= peak for r in within.rounds)


def test_bad_search_arguments(zoo, data):
    with pytest.raises(ConfigError, match="result_size"):
        _search(zoo, data, result_size=0)
    with pytest.raises(ConfigError, match="unknown search strategy"):
        _search(zoo, data, strategy="greedy")
    with pytest.raises(ConfigError, match="search.prefetch must be auto, true or false"):
        _search(zoo, data, prefetch="sometimes")
    with pytest.raises(ConfigError, match="no candidate models"):
        SuccessiveHalving(zoo.store, data, device="cpu", progress=False).run([])
    wrong_size = SearchDataModule(num_items=300, image_size=48)
    with pytest.raises(DataError, match="expects inputs of size"):
        _search(zoo, wrong_size)
    too_few = SearchDataModule(num_items=40, image_size=32)
    with pytest.raises(DataError, match="items"):
        _search(zoo, too_few)


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("search", overrides=[*TINY, *overrides])


def test_run_search_from_composed_config_writes_results(tmp_path):
    cfg = _compose(f"store.root={tmp_path / 'store'}")
    result, report = run_search(cfg, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["ranking"][0]["model"] == result.winner
    assert set(saved["timings_s"]) >= {"total", "prepare_data", "prepare_model", "inference", "proxy_scoring",
                                       "planning"}
    assert saved["config"]["search"]["strategy"] == "alsatian" and saved["store"]["models"] == 6
    assert {"models", "items", "inference_steps", "distinct_blocks", "planned_peak_bytes",
            "observed_peak_bytes"} <= set(saved["rounds"][0])
    assert saved["memory"]["peak_host_rss_bytes"] > 0 and "hits" in saved["cache"]


def _cli(tmp_path, *overrides):
    cmd = [sys.executable, str(ROOT / "search.py"), *TINY, f"store.root={tmp_path / 'store'}",
           f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_cli_user_error_prints_one_clear_message_and_exit_status_2(tmp_path):
    """search.py as a user runs it: a failure after the zoo was built ends in one line, nothing half-written."""
    proc = _cli(tmp_path, "search.cache_budget=1KB")
    assert proc.returncode == 2, proc.stderr
    assert "cache budget" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "store").rglob("*.tmp"))


@pytest.mark.parametrize("overrides,message", [
    (["search.cache_budget=lots"], "invalid byte size"),
    (["dataset.num_items=0"], "empty"),
    (["dataset=image_folder", f"dataset.path=/nonexistent/images"], "/nonexistent/images"),
    (["search.strategy=greedy"], "unknown search strategy"),
])
def test_user_errors_print_one_clear_message_under_the_entry_points_boundary(tmp_path, capsys, overrides, message):
    """What search.py runs (run_search under boundary.user_errors, in this process): one line, exit status 2."""
    from alsatian_pl.app import boundary

    with pytest.raises(SystemExit) as exited:
        boundary.user_errors(run_search)(_compose(f"store.root={tmp_path / 'store'}", *overrides), tmp_path / "out")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and "Traceback" not in err
    assert not list((tmp_path / "store").rglob("*.tmp"))


def test_cli_unknown_config_key_is_refused(tmp_path):
    proc = _cli(tmp_path, "search.cache_budgt=1GB")
    assert proc.returncode != 0 and "cache_budgt" in proc.stderr and "Traceback" not in proc.stderr


def test_spill_mode_keeps_results_and_the_budget(wide, tmp_path):
    zoo, data, ample = wide
    budget = max(r.planned_peak_bytes for r in ample.rounds)
    spilled = _search(zoo, data, cache_budget=budget, spill_dir=tmp_path / "spill")
    assert all(r.partitions == 1 and r.observed_peak_bytes <= budget for r in spilled.rounds)
    assert _scores(spilled) == _scores(ample)
    assert not list((tmp_path / "spill").rglob("*"))  # nothing left behind
    scoring = max(r.scoring_peak_bytes for r in ample.rounds)  # fits, but a step's input and output do not
    with pytest.raises(BudgetTooSmallError, match="even with spilling"):
        _search(zoo, data, cache_budget=scoring + 1, spill_dir=tmp_path / "spill")
    assert not list((tmp_path / "spill").rglob("*"))


def test_cache_service_spills_least_recently_used_outputs_to_disk(tmp_path):
    from alsatian_pl.cache import CacheService

    cache = CacheService(capacity=3000, spill_dir=tmp_path)
    cache.reserve(1000)
    a, b = torch.arange(200, dtype=torch.float32), torch.ones(200)  # 800 bytes each
    cache.put(1, a)
    cache.put(2, b)
    cache.make_room(800, keep=(2,))  # 1000 + 1600 + 800 > 3000: node 1 goes to disk
    assert cache.spilled_bytes == 800 and cache.intermediates == 800 and len(list(tmp_path.iterdir())) == 1
    torch.testing.assert_close(cache.get(1), a, rtol=0, atol=0)  # read back
    assert cache.peak <= 3000
    cache.release(1)
    cache.release(2)
    assert cache.intermediates == 0 and not list(tmp_path.iterdir())
    cache.put(3, torch.ones(400))
    with pytest.raises(BudgetTooSmallError, match="even with spilling") as err:
        cache.make_room(2500, keep=(3,))
    assert err.value.needed == 1000 + 1600 + 2500


def test_prefetching_weights_changes_nothing_but_when_blocks_are_read(results, zoo, data):
    on = _search(zoo, data, "alsatian", prefetch=True)  # auto is off on a CPU
    off = results["alsatian"]
    assert _scores(on) == _scores(off)
    assert on.cache["weight_prefetches"] > 0 and off.cache["weight_prefetches"] == 0
    assert on.cache["weight_loads"] == off.cache["weight_loads"]  # the same reads, only earlier
    assert on.cache["blocks_read"] == off.cache["blocks_read"]


def test_weight_prefetch_stays_within_capacity_and_reports_corrupt_blocks_on_use(zoo):
    from alsatian_pl.weights import WeightCache
    from alsatian_pl.errors import CorruptBlockError
    store = BlockStore(zoo.store.root)
    hashes = store.manifest(zoo.models[0]).hashes
    nbytes = [sum(t.numel() * t.element_size() for t in store.load_block(h).state_dict().values()) for h in hashes]
    cache = WeightCache(store, torch.device("cpu"), capacity=nbytes[0] + nbytes[1])
    assert cache.prefetch("a", hashes[0], nbytes[0]) and cache.prefetch("b", hashes[1], nbytes[1])
    assert not cache.prefetch("c", hashes[2], nbytes[2])  # would exceed the capacity: not started
    assert not cache.prefetch("a", hashes[0], nbytes[0])  # already on its way
    assert cache.get("a", hashes[0]) is cache.get("a", hashes[0]) and cache.loads == 1 and cache.hits == 1
    cache.get("b", hashes[1])
    assert cache.bytes <= nbytes[0] + nbytes[1] and cache.pending_bytes == 0
    cache.close()
    # a damaged block fails where it is used, with the store's message, even when it was read in the background
    path = store.block_path(hashes[2])
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    try:
        bad = WeightCache(BlockStore(zoo.store.root), torch.device("cpu"))
        assert bad.prefetch("c", hashes[2], nbytes[2])
        with pytest.raises(CorruptBlockError, match=hashes[2][:12]):
            bad.get("c", hashes[2])
        bad.close()
    finally:
        blob[-1] ^= 0xFF
        path.write_bytes(bytes(blob))


def test_weight_cache_drops_the_blocks_of_pruned_models_only(zoo):
    from alsatian_pl.weights import WeightCache
    store = BlockStore(zoo.store.root)
    a, b = (store.manifest(m).hashes for m in zoo.models[:2])
    cache = WeightCache(store, torch.device("cpu"))
    for h in a:
        cache.get((h, None), h)
    for h in b:
        cache.get((h, zoo.models[1]), h)  # a baseline's own copy, owned by model 1
    cache.retain({(h, None) for h in a})  # the keys model 0 (sharing its blocks) still runs
    assert set(cache._blocks) == {(h, None) for h in a}  # model 1's own copies go, though some share a's hashes
    assert cache.bytes == sum(nbytes for _, nbytes in cache._blocks.values())
    cache.retain({(h, None) for h in a[:2]})
    assert set(cache._blocks) == {(h, None) for h in a[:2]}
    assert cache.prefetch((a[3], None), a[3], 1)
    cache.retain(set())
    assert not cache._blocks and cache.bytes == 0 and cache.pending_bytes == 0
    cache.close()


def _cyclic_loads(schedule: bool) -> int:
    """Blocks read from the store for two passes over the same five blocks with room for three."""
    from alsatian_pl.weights import WeightCache

    class Store:  # stand-in: every block is one 4-byte weight
        def load_block(self, h):
            return torch.nn.Linear(1, 1, bias=False)

    cache = WeightCache(Store(), torch.device("cpu"), capacity=12, keep_done=True)  # held as on an accelerator
    for _ in range(2):  # two rounds (or partitions) running the same plan order
        if schedule:
            cache.schedule("abcde")
        for key in "abcde":
            cache.get(key, key)
    assert cache.bytes <= 12
    return cache.loads


def test_weight_cache_evicts_in_plan_order():
    # LRU evicts exactly the block the next pass needs first: every get misses. Plan order keeps two of the three.
    assert _cyclic_loads(schedule=False) == 10
    assert _cyclic_loads(schedule=True) == 7


def test_cpu_weight_cache_drops_blocks_after_their_last_scheduled_use(zoo):
    # On the CPU a block is a mapping of its file: after its last use in the plan it is no longer held (its pages
    # leave the process's resident memory); a block used again stays, and an accelerator's cache keeps both.
    from alsatian_pl.weights import WeightCache
    store = BlockStore(zoo.store.root)
    a, b, c = store.manifest(zoo.models[0]).hashes[:3]
    for keep, held in ((None, {c, a}), (True, {a, b, c})):
        cache = WeightCache(store, torch.device("cpu"), keep_done=keep)
        cache.schedule([a, b, c, a])
        first = cache.get(a, a)
        cache.get(b, b)
        cache.get(c, c)  # b is not used again
        assert set(cache._blocks) == held and cache.bytes == sum(n for _, n in cache._blocks.values())
        assert cache.get(a, a) is first and cache.loads == 3 and cache.hits == 1
        cache.close()


def test_cpu_block_placement_restrides_only_where_free_and_keeps_outputs():
    from alsatian_pl.weights import place_block
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
                                torch.nn.Conv2d(8, 16, 1)).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.inference_mode():
        expected = block(x)
    ptrs = [p.data_ptr() for p in block.parameters()]
    placed = place_block(block, torch.device("cpu"), channels_last=True)
    dense, depthwise, pointwise = (placed[i].weight for i in range(3))
    assert [p.data_ptr() for p in placed.parameters()] == ptrs  # no weight was copied
    assert dense.is_contiguous() and not dense.is_contiguous(memory_format=torch.channels_last)
    for w in (depthwise, pointwise):  # same bytes, channels-last strides
        assert w.stride() == (w.shape[1] * w.shape[2] * w.shape[3], 1, w.shape[3] * w.shape[1], w.shape[1])
    with torch.inference_mode():
        assert torch.allclose(placed(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-6)


def test_readahead_window_names_each_later_step_once_within_the_window():
    from types import SimpleNamespace

    from alsatian_pl.weights import readahead_windows
    steps = [SimpleNamespace(index=i, weight_bytes=w) for i, w in enumerate((100, 100, 300, 50, 50, 0))]
    windows = [[s.index for s in later] for later in readahead_windows(steps, 200)]
    assert windows == [[1], [], [3, 4, 5], [], [], []]  # the 300-byte step never fits: read when it runs
    assert [[s.index for s in later] for later in readahead_windows(steps, 10**9)] == [[1, 2, 3, 4, 5], [], [], [], [], []]
    assert list(readahead_windows([], 200)) == []


def test_budgeted_bytes_cover_the_data_in_memory(results, data):
    """The budget governs what is resident: the data the module holds in memory and the batch in flight count."""
    r = results["alsatian"]
    in_flight = data.test_items()[0].batch_bytes(32)  # a batch as read (uint8) and model-ready (float32)
    assert in_flight == 32 * data.item_bytes * 5
    assert r.rounds[0].planned_peak_bytes > data.held_bytes + in_flight
    assert all(x.planned_peak_bytes > data.held_bytes for x in r.rounds)
    assert all(x.observed_peak_bytes == x.planned_peak_bytes for x in r.rounds)


def test_host_tier_keeps_the_results(results, zoo, data):
    """A fake small accelerator tier on the CPU: outputs beyond it go to the host tier, scores stay the same."""
    ample = results["alsatian"]
    tiered = _search(zoo, data, device_capacity=1)
    assert tiered.cache["moved_to_host_bytes"] > 0 and ample.cache["moved_to_host_bytes"] == 0
    assert _scores(tiered) == _scores(ample)
    assert [r.observed_peak_bytes for r in tiered.rounds] == [r.planned_peak_bytes for r in ample.rounds]


@pytest.mark.parametrize("strategy", ["alsatian", "shift", "base"])
def test_search_group_instantiates_the_searcher_with_its_scorer(zoo, data, strategy):
    from hydra.utils import instantiate

    from alsatian_pl.score import KNNScorer
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=[f"search={strategy}", "search/scorer=knn", "search.scorer.kwargs.k=3",
                                           "search.cache_budget=512MB", "search.device=cpu"])
    searcher = instantiate(cfg.search)(store=zoo.store, data=data)
    assert searcher.strategy.name == strategy and isinstance(searcher.scorer, KNNScorer) and searcher.scorer.k == 3
    assert searcher.cache_budget == 512 * 2**20
