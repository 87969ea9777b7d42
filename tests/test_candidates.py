"""Choosing the candidates: store filters, models.where, models=store, several zoos in one search, the no-match
error, and the candidate list and filter in results.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from alsatian_pl.app import run_search
from alsatian_pl.errors import ConfigError
from alsatian_pl.store import BlockStore
from alsatian_pl.app.config import zoos_spec
from alsatian_pl.zoo import Where, store_spec

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL = ["dataset.num_items=300", "dataset.image_size=32", "++search.scorer.kwargs.epochs=5", "search.progress=false",
         "search.checkpoint_dir=null", "~logger"]
TINY_ZOO = {"_target_": "alsatian_pl.zoo.synthetic_spec", "name": "tiny", "arch": "mobilenetv3_small_050",
            "num_models": 6, "distribution": "top25", "seed": 1, "image_size": 32}  # the shared fixture's zoo


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("search", overrides=[*SMALL, *overrides])


@pytest.fixture
def copied(zoo, tmp_path):
    """A copy of the shared tiny zoo's store that a test may add models to."""
    shutil.copytree(zoo.store.root, tmp_path / "store")
    return BlockStore(tmp_path / "store")


def test_store_filters_min_params_name_and_source_globs(zoo):
    store, names = zoo.store, zoo.models
    params = sorted(m.num_params for m in store.models())
    assert [m.name for m in store.models(min_params=params[0], max_params=params[-1])] == sorted(names)
    assert store.models(min_params=params[-1] + 1) == []
    assert [m.name for m in store.models(name="*-00[12]")] == [names[1], names[2]]
    assert [m.name for m in store.models(source="timm:mobilenetv3_small_050*")] == sorted(names)
    assert store.models(source="*/ckpts/*") == [] and store.models(name="*-00[12]", arch="resnet18") == []
    assert [m.name for m in store.models(tags=["base"], name="tiny-*")] == [names[0]]


def test_where_checks_its_values_and_selects_in_order(zoo):
    assert Where.of({"min_params": "1K", "tags": "zoo:tiny"}).as_dict() == {"min_params": 1000, "tags": ["zoo:tiny"]}
    assert Where().select(zoo.store, list(reversed(zoo.models))) == list(reversed(zoo.models))
    for bad, key in [({"min_params": "abc"}, "min_params"), ({"max_params": -1}, "max_params"),
                     ({"tags": [1, 2]}, "tags"), ({"name": ["a"]}, "name"), ({"colour": "red"}, "colour"),
                     ({"min_params": 10, "max_params": 5}, "min_params")]:
        with pytest.raises(ConfigError, match=f"models.where.{key}"):
            Where.of(bad)


def test_a_filter_that_matches_nothing_says_what_the_store_holds(zoo, tmp_path):
    with pytest.raises(ConfigError) as err:
        store_spec(where={"arch": "resnet50", "max_params": "5M"}).build(zoo.store)
    message = str(err.value)
    assert "matches none of the 6 models" in message and "arch=resnet50" in message
    assert "mobilenetv3_small_050 (6)" in message and "zoo:tiny (6)" in message and "alsatian store ls" in message
    with pytest.raises(ConfigError, match="holds no models"):
        store_spec().build(BlockStore(tmp_path / "empty"))


def test_models_store_searches_the_matching_models_and_records_them(zoo, tmp_path):
    cfg = _compose("models=store", f"store.root={zoo.store.root}", "models.where.name='*-00[0-3]'",
                   "models.where.arch=mobilenetv3_small_050")
    result, report = run_search(cfg, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["candidates"] == zoo.models[:4] and sorted(r["model"] for r in saved["ranking"]) == zoo.models[:4]
    assert saved["where"] == {"arch": "mobilenetv3_small_050", "name": "*-00[0-3]"} and saved["zoo"] == "store"
    assert report["results_file"] == str(tmp_path / "out" / "results.json")


def test_no_match_through_the_config_is_one_error_before_anything_is_written(zoo, tmp_path):
    cfg = _compose("models=store", f"store.root={zoo.store.root}", "models.where.tags=[finetuned]")
    with pytest.raises(ConfigError, match="matches none of the 6 models.*tags=.*finetuned"):
        run_search(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_several_zoos_in_one_search_with_a_filter_over_all(copied, zoo):
    other = {**TINY_ZOO, "name": "tiny2", "num_models": 2, "seed": 2}
    spec = zoos_spec(zoos=[TINY_ZOO, other], where={"name": "*-00[01]"})
    assert spec.expected_size(copied) == 8
    both = spec.build(copied, progress=False)
    assert both.models[:2] == zoo.models[:2] and len(both.models) == 4 and both.models[2].startswith("tiny2-")
    assert both.name.startswith("tiny-") and "+tiny2-" in both.name and both.config["where"] == {"name": "*-00[01]"}
    each = zoos_spec(zoos={"a": {**TINY_ZOO, "where": {"tags": ["base"]}}, "b": other}).build(copied, progress=False)
    assert each.models[0] == zoo.models[0] and len(each.models) == 3  # a's base, then both of b's models
    with pytest.raises(ConfigError, match="models.zoos must be a non-empty list"):
        zoos_spec(zoos=[])


def test_models_zoos_from_the_config(copied, tmp_path):
    overrides = [f"models.zoos.{z}.{k}={v}" for z in ("effnet", "resnet18") for k, v in
                 [("name", "tiny"), ("arch", "mobilenetv3_small_050"), ("num_models", 6), ("distribution", "top25"),
                  ("seed", 1), ("checkpoint", "null")]]
    cfg = _compose("models=zoos", f"store.root={copied.root}", *overrides, "models.zoos.resnet18.seed=1",
                   "+models.zoos.resnet18.where.tags=[base]", "models.where.min_params=1")
    _, report = run_search(cfg, tmp_path / "out")
    assert len(report["candidates"]) == 6 and report["where"] == {"min_params": 1}  # the same zoo twice: once


def test_a_where_filter_on_a_zoo_config(zoo, tmp_path):
    tiny = [f"models.{k}={v}" for k, v in [("name", "tiny"), ("arch", "mobilenetv3_small_050"), ("num_models", 6),
                                            ("distribution", "top25"), ("seed", 1), ("checkpoint", "null")]]
    cfg = _compose(f"store.root={zoo.store.root}", *tiny, "+models.where.tags=[zoo:tiny]", "+models.where.name=*-00?",
                   "+models.where.max_params=100M")
    _, report = run_search(cfg, tmp_path / "out")
    assert report["candidates"] == zoo.models and report["where"] == {"max_params": 100_000_000,
                                                                      "tags": ["zoo:tiny"], "name": "*-00?"}


@pytest.mark.parametrize("override", ["+models.where.min_params=abc", "+models.where.max_params=-1",
                                      "+models.where.tags=[1,2]", "+models.where.name=[a]", "+models.where.arch=''",
                                      "+models.where.colour=red", "models=store", "+models.where=abc"])
def test_bad_where_values_are_refused_before_anything_is_touched(tmp_path, override):
    store = tmp_path / "store"
    with pytest.raises(ConfigError, match="models.where|holds no models"):
        run_search(_compose(f"store.root={store}", override), tmp_path / "out")
    assert not store.exists() and not (tmp_path / "out").exists()
