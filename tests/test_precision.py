"""search.precision: 32-true is today's search bit for bit, bf16-mixed is exact across strategies, the feature cache
and resume never mix precisions, and bad values are one clear line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from alsatian_pl.data import SearchDataModule
from alsatian_pl.errors import AlsatianWarning, ConfigError
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.precision import PRECISIONS, Precision
from alsatian_pl.store import BlockStore
from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """4 mobilenetv3_small_050 variants at 32 px (two rounds): bf16 on a CPU without bf16 instructions is slow."""
    store = BlockStore(tmp_path_factory.mktemp("store"))
    cfg = ZooConfig("small", "mobilenetv3_small_050", num_models=4, distribution="top25", seed=2,
                    input_size=(3, 32, 32))
    return build_synthetic_zoo(store, cfg, progress=False)


@pytest.fixture(scope="module")
def data():
    dm = SearchDataModule(num_items=60, image_size=32, seed=0)
    dm.setup()
    return dm


def _search(zoo, data, strategy="alsatian", **kwargs):
    kwargs = {"batch_size": 16, "device": "cpu", "progress": False, "scorer_kwargs": {"epochs": 5}, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AlsatianWarning)  # bf16 on a CPU without bf16 instructions: slow, says so
        return SuccessiveHalving(BlockStore(zoo.store.root), data, strategy=strategy, **kwargs).run(zoo.models)


def _scores(result):
    return [(r.model, r.score, r.test_loss, r.eliminated_in_round) for r in result.ranking]


@pytest.fixture(scope="module")
def bf16(small, data):
    return {s: _search(small, data, s, precision="bf16-mixed") for s in ("alsatian", "shift", "base")}


def test_32_true_is_the_default_search_bit_for_bit(small, data):
    default, explicit = _search(small, data), _search(small, data, precision="32-true")
    assert _scores(default) == _scores(explicit)  # exact, not within a tolerance
    assert default.precision == explicit.precision == "32-true"
    assert json.loads(json.dumps(default.to_json()))["precision"] == "32-true"  # results.json records it


def test_bf16_mixed_alsatian_shift_and_base_agree_exactly(bf16):
    a, s, b = bf16["alsatian"], bf16["shift"], bf16["base"]
    assert _scores(a) == _scores(s)  # the same bits: every block's output is cast to float32 at every block
    base = {r.model: (r.score, r.test_loss) for r in b.ranking}
    assert base[a.winner] == (a.ranking[0].score, a.ranking[0].test_loss)  # the same features, the same probe
    assert a.precision == s.precision == b.precision == "bf16-mixed"
    # float32 between blocks: the memory model counts bf16-mixed's intermediates and features as it counts 32-true's
    assert all(r.observed_peak_bytes == r.planned_peak_bytes for r in a.rounds)


def test_bf16_mixed_changes_the_features_but_they_reach_the_scorer_as_float32(small, data, bf16):
    fp32 = _search(small, data)
    assert [r.model for r in fp32.ranking] != [] and _scores(fp32) != _scores(bf16["alsatian"])
    block = BlockStore(small.store.root).load_block(small.manifests()[0].hashes[0])
    x = torch.rand(2, 3, 32, 32)
    p = Precision.on("32-true", torch.device("cpu"))
    with torch.inference_mode(), p.autocast():
        assert torch.equal(p.output(block(x)), block(x))  # 32-true: no autocast, no cast
    p = Precision("bf16-mixed", "cpu")
    with torch.inference_mode(), p.autocast():
        y = block(x)
        assert y.dtype == torch.bfloat16 and p.output(y).dtype == torch.float32


def test_features_cached_in_one_precision_are_never_served_to_another(small, data, tmp_path):
    cache = tmp_path / "features"
    first = _search(small, data, feature_cache=cache)
    other = _search(small, data, feature_cache=cache, precision="bf16-mixed")
    assert other.cache["feature_cache_hits"] == 0 and other.cache["feature_cache_misses"] > 0
    again = _search(small, data, feature_cache=cache, precision="bf16-mixed")
    assert again.cache["feature_cache_misses"] == 0 and _scores(again) == _scores(other)
    assert _scores(_search(small, data, feature_cache=cache)) == _scores(first)


def test_32_true_keeps_the_feature_cache_key_it_always_had(small, data):
    searcher = SuccessiveHalving(small.store, data, device="cpu", progress=False, feature_cache="/tmp/unused")
    with searcher._engine() as engine:
        assert "precision" not in json.loads(engine.features.context)


def test_a_checkpoint_of_another_precision_is_not_continued(small, data, tmp_path, ctrl_c_in_round, monkeypatch):
    from alsatian_pl.errors import SearchInterrupted
    ctrl_c_in_round(1)
    with pytest.raises(SearchInterrupted, match="round 1 is saved"):
        _search(small, data, checkpoint_dir=tmp_path, precision="bf16-mixed")
    monkeypatch.undo()
    saved = list(tmp_path.glob("search-*.safetensors"))
    assert len(saved) == 1
    searcher = SuccessiveHalving(small.store, data, device="cpu", progress=False, checkpoint_dir=tmp_path,
                                 resume=True, scorer_kwargs={"epochs": 5}, batch_size=16)
    with pytest.warns(UserWarning, match=rf"no saved round matches.*{saved[0].name} holds rounds of this search "
                                         r"run with .*search.precision=bf16-mixed"):
        result = searcher.run(small.models)
    assert result.resumed_from_round is None and result.precision == "32-true"


@pytest.mark.parametrize("value, words", [
    ("fp16", "search.precision must be one of 32-true, bf16-mixed, 16-mixed, got 'fp16'"),
    (32, "search.precision must be one of"),
    ("bf16-true", "search.precision=bf16-true: not offered"),
    ("16-mixed", "search.precision=16-mixed runs on an accelerator only"),
])
def test_a_bad_precision_is_one_clear_line(small, data, value, words):
    with pytest.raises(ConfigError, match=words) as exc:
        SuccessiveHalving(small.store, data, device="cpu", progress=False, precision=value)
    assert "\n" not in str(exc.value)


def test_the_config_and_the_api_take_it(small, data):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base=None):
        cfg = compose("search", overrides=["search.precision=bf16-mixed"])
    assert cfg.search.precision == "bf16-mixed" and PRECISIONS[0] == "32-true"
    import alsatian_pl as ap
    with pytest.raises(ConfigError, match="search.precision must be one of"):
        ap.search(small, data, device="cpu", progress=False, precision="half")
