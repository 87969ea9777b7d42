"""Reusing work across searches: the persistent feature cache and resuming an interrupted search."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from alsatian_pl.data import SearchDataModule
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.halving import FeatureCache, items_key, verify_features
from alsatian_pl.stats import SearchStats
from alsatian_pl.store import BlockStore


@pytest.fixture(scope="module")
def data():
    dm = SearchDataModule(num_items=300, image_size=32, seed=0)
    dm.setup()
    return dm


def _search(zoo, data, models=None, strategy="alsatian", **kwargs):
    kwargs = {"batch_size": 32, "device": "cpu", "progress": False, "scorer_kwargs": {"epochs": 10}, **kwargs}
    return SuccessiveHalving(BlockStore(zoo.store.root), data, strategy=strategy, **kwargs).run(models or zoo.models)


def _scores(result):
    return [(r.model, r.score, r.test_loss, r.eliminated_in_round) for r in result.ranking]


@pytest.mark.parametrize("strategy", ["alsatian", "shift"])
def test_a_second_search_reuses_every_feature_and_scores_bit_identically(zoo, data, tmp_path, strategy):
    plain = _search(zoo, data, strategy=strategy)
    first = _search(zoo, data, strategy=strategy, feature_cache=tmp_path / "features")
    again = _search(zoo, data, strategy=strategy, feature_cache=tmp_path / "features")
    assert _scores(first) == _scores(plain) == _scores(again)  # exact, not within a tolerance
    assert first.cache["feature_cache_hits"] == 0 and first.cache["feature_cache_misses"] > 0
    assert again.cache["feature_cache_misses"] == 0 and again.cache["feature_cache_hits"] == first.cache[
        "feature_cache_misses"]
    assert sum(r.inference_steps for r in again.rounds) == 0 and again.cache["weight_loads"] == 0
    assert again.cache["feature_cache_saved_s"] > 0 and "feature_cache_hits" not in plain.cache


def test_adding_models_runs_only_the_new_ones(zoo, data, tmp_path):
    cache = tmp_path / "features"
    _search(zoo, data, models=zoo.models[:5], feature_cache=cache)  # 5 and 6 models: the same 3 rounds, same chunks
    both = _search(zoo, data, feature_cache=cache)
    assert _scores(both) == _scores(_search(zoo, data))
    assert both.cache["feature_cache_hits"] > 0 and both.cache["feature_cache_misses"] > 0
    assert both.rounds[0].inference_steps < _search(zoo, data).rounds[0].inference_steps


def test_feature_cache_is_bounded_content_addressed_and_heals(tmp_path):
    stats = SearchStats()
    cache = FeatureCache(tmp_path, max_bytes=1500, stats=stats, context={"batch_size": 32})
    x = torch.zeros(4, 3)
    assert items_key(x) != items_key(x + 1) != items_key(x.reshape(3, 4))  # new content or shape: a new key
    keys = [cache.key(["a", "b"], items_key(x + i)) for i in range(3)]
    for i, k in enumerate(keys):
        cache.put(k, torch.full((100,), float(i)), {"a": 0.25, "b": 0.5})  # ~600 bytes each with the header
    assert cache.get(keys[0]) is None
    hit = cache.get(keys[2])
    assert torch.equal(hit.features, torch.full((100,), 2.0)) and hit.block_seconds == {"a": 0.25, "b": 0.5}
    path = next(tmp_path.glob(f"*/{keys[2]}.safetensors"))
    path.write_bytes(path.read_bytes()[:40])  # damaged: deleted and reported as a miss
    with pytest.warns(UserWarning, match="damaged"):
        assert cache.get(keys[2]) is None
    assert not path.exists() and stats.counts["feature_cache_hits"] == 1


def _flip_a_bit(path: Path, back: int = 9) -> None:
    """One bit of a stored float flipped, ``back`` bytes before the file's end (inside the features)."""
    data = bytearray(path.read_bytes())
    data[-back] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_is_caught_healed_and_reported_by_verify(tmp_path):
    stats = SearchStats()
    cache = FeatureCache(tmp_path, max_bytes=None, stats=stats, context={})
    keys = [cache.key([f"b{i}"], "items") for i in range(3)]
    for i, k in enumerate(keys):
        cache.put(k, torch.randn(20, 8, generator=torch.Generator().manual_seed(i)), {f"b{i}": 1.0})
    assert verify_features(tmp_path) == (3, [])
    damaged = next(tmp_path.glob(f"*/{keys[1]}.safetensors"))
    _flip_a_bit(damaged)
    entries, bad = verify_features(tmp_path)
    assert entries == 3 and [p for p, _ in bad] == [damaged] and "checksum" in bad[0][1]
    with pytest.warns(UserWarning, match="do not match their checksum"):
        assert cache.get(keys[1]) is None  # never served: deleted, so the search computes it again
    assert not damaged.exists() and cache.get(keys[0]) is not None


def test_a_killed_writers_temporary_file_goes_once_an_hour_old(tmp_path):
    import os
    import time
    cache = FeatureCache(tmp_path, max_bytes=None, stats=SearchStats(), context={})
    young, old = tmp_path / "ab" / ".x.safetensors.1.tmp", tmp_path / "cd" / ".y.safetensors.2.tmp"
    for p in (young, old):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    cache.put(cache.key(["b"], "items"), torch.zeros(3), {"b": 0.1})
    assert young.exists() and not old.exists()


def test_a_search_over_damaged_entries_recomputes_them_and_scores_as_without_a_cache(zoo, data, tmp_path):
    cache = tmp_path / "features"
    first = _search(zoo, data, feature_cache=cache)
    entries = sorted(cache.glob("*/*.safetensors"))
    for path in entries[:5]:
        _flip_a_bit(path)
    with pytest.warns(UserWarning, match="do not match their checksum"):
        again = _search(zoo, data, feature_cache=cache)
    assert _scores(again) == _scores(first) == _scores(_search(zoo, data))
    assert again.cache["feature_cache_misses"] == 5
    assert verify_features(cache)[1] == []  # healed: the recomputed entries were written again


def test_the_seconds_saved_never_exceed_the_inference_that_filled_the_cache(zoo, data, tmp_path):
    first = _search(zoo, data, feature_cache=tmp_path / "features")
    again = _search(zoo, data, feature_cache=tmp_path / "features")
    assert 0 < again.cache["feature_cache_saved_s"] <= first.timings_s["inference"] * 1.0001


KILLED_RUN = """
import os, signal, sys
from alsatian_pl.data import SearchDataModule
from alsatian_pl.halving import RoundCheckpoint, SuccessiveHalving
from alsatian_pl.store import BlockStore

store_root, models, ckpt, kill_after = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4])
save = RoundCheckpoint.on_round_end
def save_then_die(self, search, state, report):
    save(self, search, state, report)
    if state.round + 1 == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
RoundCheckpoint.on_round_end = save_then_die
data = SearchDataModule(num_items=300, image_size=32, seed=0)
SuccessiveHalving(BlockStore(store_root), data, batch_size=32, device="cpu", progress=False,
                  scorer_kwargs={"epochs": 10}, checkpoint_dir=ckpt).run(models)
"""


@pytest.mark.parametrize("strategy", ["alsatian", "base"])
def test_resume_after_sigkill_between_rounds_gives_identical_results(zoo, data, tmp_path, strategy):
    import subprocess
    import sys
    reference = _search(zoo, data, strategy=strategy)
    ckpt = tmp_path / "searches"
    if strategy == "alsatian":  # killed after round 2 of 3 was saved
        proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(zoo.store.root), ",".join(zoo.models), str(ckpt),
                               "2"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == -9, proc.stderr[-2000:]
        assert len(list(ckpt.glob("search-*.safetensors"))) == 1
    nothing_saved = pytest.warns(UserWarning, match="no saved round") if strategy == "base" else nullcontext()
    with nothing_saved:
        resumed = _search(zoo, data, strategy=strategy, checkpoint_dir=ckpt, resume=True)
    # rounds 1-2 were scored in the killed subprocess, the reference in this process: same ranking and rounds,
    # scores within float rounding (the resumed round itself reads bit-identical saved features)
    assert [(m, r) for m, _, _, r in _scores(resumed)] == [(m, r) for m, _, _, r in _scores(reference)]
    assert all(abs(a[1] - b[1]) <= 1e-6 and abs(a[2] - b[2]) <= 1e-6
               for a, b in zip(_scores(resumed), _scores(reference)))
    assert [r.models for r in resumed.rounds] == [r.models for r in reference.rounds]
    if strategy == "alsatian":
        assert resumed.resumed_from_round == 2 and sum(r.inference_steps for r in resumed.rounds[2:]) > 0
        assert resumed.block_items == reference.block_items  # restored counters plus the last round's
    else:
        assert resumed.resumed_from_round is None  # nothing saved for a base search: it ran from round 1
    assert not list(ckpt.glob("*.safetensors"))  # a finished search removes its saved state


def test_ctrl_c_says_what_was_saved_and_how_to_resume(zoo, data, tmp_path, monkeypatch, ctrl_c_in_round):
    from alsatian_pl.errors import SearchInterrupted
    ctrl_c_in_round(1)
    with pytest.raises(SearchInterrupted, match=r"interrupted in round 2 of 3; round 1 is saved in .*"
                                                r"search.resume=true"):
        _search(zoo, data, checkpoint_dir=tmp_path)
    with pytest.raises(SearchInterrupted, match="nothing was saved"):
        _search(zoo, data)
    monkeypatch.undo()
    resumed = _search(zoo, data, checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from_round == 1 and _scores(resumed) == _scores(_search(zoo, data))
    t = resumed.timings_s  # the total counts the earlier run's saved round too: the phases add up within it
    assert sum(v for k, v in t.items() if k != "total") <= t["total"] * 1.05 + 0.05


def test_a_resumed_report_says_so():
    import io

    from rich.console import Console

    from alsatian_pl.app.report import print_report
    from test_output import fake_report
    buffer = io.StringIO()
    print_report({**fake_report(), "resumed_from_round": 1}, Console(file=buffer, width=80))
    assert "resumed after round 1: the times include the earlier run's rounds" in buffer.getvalue()
    buffer = io.StringIO()
    print_report(fake_report(), Console(file=buffer, width=80))
    assert "resumed" not in buffer.getvalue()


def test_rounds_are_logged_through_a_lightning_logger(zoo, data, tmp_path):
    import csv

    from lightning.pytorch.loggers import CSVLogger
    logger = CSVLogger(tmp_path, name="search", version=0)
    result = _search(zoo, data, logger=logger)
    rows = list(csv.DictReader(open(tmp_path / "search" / "version_0" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert [int(float(r["round/models"])) for r in rows] == [r.models for r in result.rounds]
    assert float(rows[-1]["score/best"]) == result.ranking[0].score
    assert float(rows[-1]["time/inference"]) > 0 and (tmp_path / "search" / "version_0" / "hparams.yaml").is_file()


@pytest.mark.parametrize("state", ['{"round": 1, "alive": [', '{"round": 1}', '[1, 2]'])
def test_a_checkpoint_with_a_damaged_state_is_a_warning_and_a_fresh_start(tmp_path, state):
    """Cut-off or incomplete saved state: round 1 again with a warning, never a crash half-way through restoring."""
    from safetensors.torch import save_file

    from alsatian_pl.halving.resume import CHECKPOINT_FORMAT, SearchCheckpoint

    path = tmp_path / "search-x.safetensors"
    save_file({"labels": torch.zeros(2)}, path, metadata={"format": CHECKPOINT_FORMAT, "fingerprint": "f",
                                                          "state": state})
    with pytest.warns(UserWarning, match=r"search checkpoint .*search-x\.safetensors is damaged .*starting from round 1"):
        assert SearchCheckpoint(path, "f").load() is None
