"""Task types end to end: multilabel and regression labels through the data module, the scorers, the strategies
(alsatian = shift, base's winner score = alsatian's), search.py and train.py; bad targets in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from alsatian_pl.app import run_finetune, run_search
from alsatian_pl.data import SearchDataModule, register_dataset
from alsatian_pl.data._sources import ArraySource, DataSpec
from alsatian_pl.errors import ConfigError, DataError
from alsatian_pl.finetune import load_finetuned
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.score import check_task, get_scorer, replicating, scoring_task
from alsatian_pl.store import BlockStore

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["models.arch=mobilenetv3_small_050", "models.num_models=4", "models.checkpoint=null",
        "dataset.num_items=120", "dataset.image_size=32", "++search.scorer.kwargs.epochs=5", "search.progress=false",
        "search.batch_size=32", "dataset.num_workers=0"]

TARGETS: dict[str, tuple[np.ndarray, list[str], str]] = {}  # what the "_test_targets" source serves


@register_dataset("_test_targets")
def _test_targets(spec: DataSpec) -> ArraySource:
    """Noise images with the labels a test put in TARGETS[spec.path]."""
    labels, names, task = TARGETS[spec.path]
    images = np.random.default_rng(0).integers(0, 256, size=(len(labels), 8, 8), dtype=np.uint8)
    source = ArraySource(images, np.zeros(len(labels)), names, spec, task)
    source.labels = labels
    return source


def _module(labels: np.ndarray, names: list[str], source_task: str = "multiclass", key: str = "t",
            **kwargs) -> SearchDataModule:
    """A data module over the "_test_targets" source serving ``labels`` (``kwargs``: the module's, e.g. task)."""
    TARGETS[key] = (labels, names, source_task)
    return SearchDataModule(name="_test_targets", path=key, image_size=8, num_workers=0, **kwargs)


# ------------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("name, task, width", [("fashion_mnist", "multiclass", 0),
                                               ("fashion_mnist_mosaic", "multilabel", 10),
                                               ("fashion_mnist_rotation", "regression", 2)])
def test_built_in_sets_say_their_task_and_give_labels_of_its_shape(name, task, width):
    dm = SearchDataModule(name=name, num_items=150, image_size=32, num_workers=0)
    dm.setup(num_rounds=3)
    assert dm.task == task and dm.task_note.startswith(f"task: {task} (") and "dataset.task" in dm.task_note
    (_, y), (_, yt) = dm.chunk(0), dm.test_items()
    assert y.dtype == (torch.int64 if task == "multiclass" else torch.float32)
    assert tuple(y.shape[1:]) == tuple(yt.shape[1:]) == ((width,) if width else ())
    assert dm.num_targets == dm.num_classes == (width or 10) and dm.describe()["task"] == task


def test_built_in_sets_are_the_same_on_every_build():
    a, b = (SearchDataModule(name="fashion_mnist_mosaic", num_items=60, image_size=16, num_workers=0)
            for _ in range(2))
    assert torch.equal(a.test_items()[0].tensor(), b.test_items()[0].tensor())
    assert torch.equal(a.train_items()[1], b.train_items()[1])


def test_multilabel_first_chunk_holds_every_label_and_test_split_every_label():
    dm = SearchDataModule(name="fashion_mnist_mosaic", num_items=300, image_size=16, num_workers=0)
    dm.setup(num_rounds=4)
    first = dm.chunk(0)[1]
    assert len(first) == dm.chunk_sizes[0] < 30 and bool((first.sum(0) > 0).all())
    assert bool((dm.test_items()[1].sum(0) > 0).all())


def test_regression_first_chunk_spreads_over_the_target():
    targets = np.linspace(0, 1, 200, dtype=np.float32)[:, None] ** 3  # skewed: most values near 0
    dm = _module(targets, ["y"], "regression", key="skew")
    dm.setup(num_rounds=4)
    first, everything = dm.chunk(0)[1][:, 0], torch.from_numpy(targets[:, 0])
    assert dm.task == "regression" and len(first) == dm.chunk_sizes[0]
    assert float(first.min()) < float(everything.quantile(0.2)) and float(first.max()) > float(everything.quantile(0.8))
    test = dm.test_items()[1][:, 0]
    assert float(test.min()) < float(everything.quantile(0.1)) and float(test.max()) > float(everything.quantile(0.9))


def test_min_class_items_holds_that_many_of_every_label_in_the_first_chunk():
    dm = SearchDataModule(name="fashion_mnist_mosaic", num_items=300, image_size=16, num_workers=0)
    dm.setup(num_rounds=3, min_class_items=5)
    assert bool((dm.chunk(0)[1].sum(0) >= 5).all())


def test_class_ids_can_be_read_as_another_task():
    labels = np.repeat(np.arange(3), 10)
    as_labels = _module(labels, ["a", "b", "c"], key="ids", task="multilabel")
    assert as_labels.task == "multilabel" and as_labels.test_items()[1].sum(1).eq(1).all()
    as_number = _module(labels, ["a", "b", "c"], key="ids", task="regression")
    assert as_number.task == "regression" and as_number.class_names == ["target"]


def test_auto_infers_the_task_from_the_labels():
    rng = np.random.default_rng(0)
    assert _module(rng.integers(0, 2, (40, 3)).astype(np.float32), list("abc"), key="bits").task == "multilabel"
    assert _module(rng.normal(size=(40, 2)).astype(np.float32), list("ab"), key="reals").task == "regression"


def test_nan_targets_are_refused_or_dropped_and_counted():
    targets = np.random.default_rng(0).normal(size=(50, 1)).astype(np.float32)
    targets[[3, 7]] = np.nan
    with pytest.raises(DataError, match=r"2 item\(s\) have NaN or infinite targets \(first: item 3\).*skip_unreadable"):
        _module(targets, ["y"], "regression", key="nan").setup()
    dm = _module(targets, ["y"], "regression", key="nan", skip_unreadable=True)
    assert dm.describe()["prepared"]["skipped_nan_targets"] == 2 and dm.describe()["items"] == 48


def test_a_regression_target_with_one_value_is_refused():
    targets = np.stack([np.arange(30.0), np.full(30, 4.0)], 1).astype(np.float32)
    with pytest.raises(DataError, match="regression target 'flat' has one value \\(4\\) on every item"):
        _module(targets, ["fine", "flat"], "regression", key="flat").setup()


def test_multilabel_items_without_labels_are_allowed_and_counted():
    labels = np.zeros((40, 2), dtype=np.float32)
    labels[:15, 0], labels[10:25, 1] = 1, 1  # items 25..39 show no label
    dm = _module(labels, ["a", "b"], "multilabel", key="none")
    dm.setup(num_rounds=2)
    assert dm.describe()["prepared"]["items_without_labels"] == 15


def test_labels_that_do_not_fit_the_task_are_one_line():
    with pytest.raises(DataError, match="dataset.task must be auto, multiclass, multilabel or regression"):
        SearchDataModule(task="ranking")
    with pytest.raises(DataError, match="multiclass needs one whole-number class per item"):
        _module(np.linspace(0, 1, 30, dtype=np.float32)[:, None], ["y"], key="real", task="multiclass").setup()
    with pytest.raises(DataError, match="multilabel needs 0/1 labels"):
        _module(np.full((30, 2), 2.0, dtype=np.float32), ["a", "b"], key="two", task="multilabel").setup()
    rare = np.zeros((30, 2), dtype=np.float32)
    rare[:10, 0], rare[0, 1] = 1, 1
    with pytest.raises(DataError, match="every label needs at least 2 items.*'b' \\(1\\)"):
        _module(rare, ["a", "b"], "multilabel", key="rare").setup()


# ------------------------------------------------------------------------------------------------- scorers


def _features(task: str, n: int = 120, t: int = 60, seed: int = 0):
    """Train/test features of an informative model ('good': the targets plus noise) and of noise ('noise')."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n + t, 2, generator=gen)
    if task == "multilabel":
        y = (y > 0).float()
    good = torch.cat([y, torch.zeros(n + t, 6)], 1) * 3 + torch.randn(n + t, 8, generator=gen)
    noise = torch.randn(n + t, 8, generator=gen)
    train = {"good": good[:n], "noise": noise[:n]}
    test = {"good": good[n:], "noise": noise[n:]}
    return train, y[:n], test, y[n:]


@pytest.mark.parametrize("task", ["multilabel", "regression"])
@pytest.mark.parametrize("name", ["linear", "knn", "logme", "ensemble"])
def test_scorers_rank_the_informative_model_first_with_replicates(name, task):
    train, y, test, yt = _features(task)
    options = {"linear": {"epochs": 20}, "ensemble": {"members": {"linear": {"epochs": 20}, "logme": {}, "knn": {}}}}
    scorer = get_scorer(name, **options.get(name, {}))
    with scoring_task(scorer, task), replicating(scorer, 10):
        scores = scorer.combine(scorer.score(train, y, test, yt, 2))
    assert scores["good"].score > scores["noise"].score
    assert all(len(p.replicates) == 10 and math.isfinite(p.stderr) for p in scores.values())
    if name in ("linear", "knn"):
        assert scores["good"].score <= 1 and (task == "regression" or scores["noise"].score >= 0)


def test_linear_probe_scores_a_head_the_same_alone_or_with_others():
    for task in ("multilabel", "regression"):
        train, y, test, yt = _features(task)
        scorer = get_scorer("linear", epochs=10)
        with scoring_task(scorer, task):
            together = scorer.score(train, y, test, yt, 2)
            alone = scorer.score({"good": train["good"]}, y, {"good": test["good"]}, yt, 2)
        assert abs(together["good"].score - alone["good"].score) <= 1e-6
        assert abs(together["good"].test_loss - alone["good"].test_loss) <= 1e-6


def test_a_scorer_asked_for_a_task_it_cannot_score_says_so():
    with pytest.raises(ConfigError, match="proxy scorer 'hscore' cannot score a regression task .*search/scorer=linear"):
        check_task(get_scorer("hscore"), "regression")
    with pytest.raises(ConfigError, match="'ensemble' cannot score a multilabel task"):
        check_task(get_scorer("ensemble", members=["linear", "gbc"]), "multilabel")
    check_task(get_scorer("ensemble"), "regression")  # linear, logme and knn all score it


def test_the_search_refuses_an_unsupported_scorer_before_any_work(zoo):
    dm = SearchDataModule(name="fashion_mnist_rotation", num_items=120, image_size=32, num_workers=0)
    searcher = SuccessiveHalving(BlockStore(zoo.store.root), dm, scorer="transrate", device="cpu", progress=False)
    with pytest.raises(ConfigError, match="'transrate' cannot score a regression task"):
        searcher.run(zoo.models)
    assert dm._data is None  # nothing was decoded


# ------------------------------------------------------------------------------------------------- search


def _scores(result):
    return {r.model: (r.score, r.test_loss, r.eliminated_in_round) for r in result.ranking}


@pytest.mark.parametrize("name", ["fashion_mnist_mosaic", "fashion_mnist_rotation"])
def test_alsatian_equals_shift_and_base_scores_the_winner_alike(zoo, name):
    dm = SearchDataModule(name=name, num_items=120, image_size=32, num_workers=0)
    runs = {s: SuccessiveHalving(BlockStore(zoo.store.root), dm, strategy=s, batch_size=32, device="cpu",
                                 progress=False, scorer_kwargs={"epochs": 5}).run(zoo.models)
            for s in ("alsatian", "shift", "base")}
    a, s, b = (_scores(runs[k]) for k in ("alsatian", "shift", "base"))
    assert list(a) == list(s) and all(abs(a[m][0] - s[m][0]) <= 1e-5 and a[m][2] == s[m][2] for m in a)
    winner = runs["alsatian"].winner
    assert abs(b[winner][0] - a[winner][0]) <= 1e-5 and abs(b[winner][1] - a[winner][1]) <= 1e-5
    assert runs["alsatian"].task == dm.task


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=[*TINY, *overrides])


@pytest.mark.parametrize("dataset, task, metric", [("fashion_mnist_mosaic", "multilabel", "ap"),
                                                   ("fashion_mnist_rotation", "regression", "r2")])
def test_search_py_and_train_py_run_each_task(tmp_path, dataset, task, metric):
    cfg = _compose("search", f"dataset={dataset}", f"store.root={tmp_path / 'store'}")
    result, report = run_search(cfg, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["task"] == saved["dataset"]["task"] == task and saved["ranking"][0]["model"] == result.winner
    cfg = _compose("train", f"dataset={dataset}", f"store.root={tmp_path / 'store'}", f"output_dir={tmp_path}",
                   "trainer=smoke", f"finetune.results={tmp_path / 'out' / 'results.json'}")
    module, trainer, _ = run_finetune(cfg)
    assert module.task == task and module.provenance["task"] == task
    assert math.isfinite(float(trainer.callback_metrics[f"val/{metric}"]))
    loaded = load_finetuned(cfg.finetune.checkpoint)
    x = trainer.datamodule.test_items()[0][:4].tensor()
    assert loaded.task == task and torch.allclose(loaded(x), module.eval()(x), atol=1e-5)


def test_resume_continues_a_regression_search(zoo, tmp_path, ctrl_c_in_round, monkeypatch):
    from alsatian_pl.errors import SearchInterrupted

    dm = SearchDataModule(name="fashion_mnist_rotation", num_items=120, image_size=32, num_workers=0)
    kwargs = {"batch_size": 32, "device": "cpu", "progress": False, "scorer_kwargs": {"epochs": 5},
              "checkpoint_dir": tmp_path}
    whole = SuccessiveHalving(BlockStore(zoo.store.root), dm, **kwargs).run(zoo.models)
    ctrl_c_in_round(1)
    with pytest.raises(SearchInterrupted):
        SuccessiveHalving(BlockStore(zoo.store.root), dm, **kwargs).run(zoo.models)
    monkeypatch.undo()
    resumed = SuccessiveHalving(BlockStore(zoo.store.root), dm, resume=True, **kwargs).run(zoo.models)
    assert resumed.resumed_from_round == 1 and _scores(resumed) == _scores(whole)


@pytest.mark.parametrize("task", ["multilabel", "regression"])
@pytest.mark.parametrize("name", ["linear", "knn", "logme", "ensemble"])
@pytest.mark.parametrize("shape", [(3, 150, 40, 24, 5), (2, 24, 60, 150, 3)])
def test_a_scorers_working_set_bounds_what_it_holds_for_every_task(name, task, shape):
    """``working_bytes`` (the memory model's scoring term) bounds every tensor scoring holds at once, with
    jackknife replicates, for the label tables of the other tasks too."""
    from alsatian_pl.resources import TensorPeak

    models, n, t, d, c = shape
    g = torch.Generator().manual_seed(0)
    train = {f"m{i}": torch.randn(n, d, generator=g) * (i + 1) for i in range(models)}
    test = {f"m{i}": torch.randn(t, d, generator=g) for i in range(models)}
    y, yt = torch.randn(n, c, generator=g), torch.randn(t, c, generator=g)
    y, yt = ((y > 0).float(), (yt > 0).float()) if task == "multilabel" else (y, yt)
    options = {"linear": {"epochs": 2}, "ensemble": {"members": {"linear": {"epochs": 2}, "logme": {}, "knn": {}}}}
    scorer = get_scorer(name, **options.get(name, {}))
    with scoring_task(scorer, task), replicating(scorer, 10):
        with TensorPeak() as held:
            scorer.combine(scorer.score(train, y, test, yt, c))
        assert held.peak <= scorer.working_bytes(n, t, {m: d for m in train}, c)
