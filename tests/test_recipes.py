"""Every recipe command of the README and the guide (``python search.py``, ``python train.py``, ``alsatian``) is run
here on tiny data, or its line's comment says ``needs: <what>`` (data, weights or hardware that are not shipped).

Commands that differ only in the values of the same overrides are one kind: RUNS holds one command of each kind
that runs (copied from the pages), and a page's command is covered by a run whose group choices and keys hold its
own. A marked command may run too, on a stand-in for the user's data (STAND_INS). Each run appends TINY (a 3-model
MobileNet zoo, 60 items at 16 px, the smoke trainer) and runs in a temporary folder, in process (``run_search``,
``run_finetune``, the CLI's ``main``) to stay quick."""

from __future__ import annotations

import json
import os
import shlex

import pytest
from hydra import compose, initialize_config_dir

from test_data import write_images
from test_docs import RECIPES, ROOT, _expand

TINY = ["models.arch=mobilenetv3_small_050", "models.num_models=3", "models.checkpoint=null",
        "dataset.num_items=60", "dataset.image_size=16", "search.progress=false", "search.batch_size=32"]
RUNS = [  # one command of each kind that runs, as a page shows it
    "python search.py search=shift",
    "python search.py dataset=fashion_mnist_mosaic",
    "python search.py dataset=fashion_mnist_rotation search/scorer=logme",
    "python search.py search/scorer=ensemble",
    "python search.py search/scorer=knn search.scorer.kwargs.k=10",
    "python search.py search.scorer.kwargs.epochs=50 search.scorer.kwargs.lr=0.05",
    "python search.py search.cache_budget=512MB search.result_size=3",
    "python search.py search.resume=true",
    "python search.py search.feature_cache=.alsatian/features",
    "python search.py search.precision=bf16-mixed",
    "python search.py dataset.num_items=500 dataset.test_fraction=0.3",
    "python search.py models=resnet18_zoo models.num_models=12 models.distribution=top25",
    "python search.py +models.where.tags=[base] '+models.where.name=*-00?'",
    "python search.py dataset=image_folder dataset.path=$HOME/photos models=resnet18_zoo",  # marked; a stand-in folder
    "python train.py dataset=fashion_mnist_mosaic",
    "python train.py finetune.confirm_top_k=confident",
    "python train.py finetune.results=outputs/search/DATE/results.json",
    "alsatian store ls --json",
    "alsatian store info 009",
    "alsatian store du",
    "alsatian store verify",
    "alsatian store gc",
]
STAND_INS = {os.path.expandvars("$HOME/photos"): "photos"}  # a user's own data: a tiny stand-in in the temporary folder


def _split(command: str) -> tuple[str, list[str]]:
    """(script or 'alsatian', args) of a RUNS line."""
    words = [_expand(w) for w in shlex.split(command)]
    return ("alsatian", words[1:]) if words[0] == "alsatian" else (words[1], words[2:])


def _kind(script: str, args: list[str]) -> tuple[str, frozenset[str]]:
    """What a command exercises: its script, its group choices (``dataset=cars``) and its keys (``search.seed``)."""
    if script == "alsatian":
        return script, frozenset(args)
    overrides = [a for a in args if not a.startswith("-")]
    return script, frozenset(a if "." not in a.split("=")[0] else a.split("=")[0] for a in overrides)


def _covered(script: str, args: list[str]) -> bool:
    """A run of RUNS exercises all this command does."""
    own, parts = _kind(script, args)
    return any(k == own and parts <= p for k, p in (_kind(*_split(r)) for r in RUNS))


def test_every_recipe_runs_here_or_says_what_it_needs():
    uncovered = [f"{page}: {script} {' '.join(args)}" for page, script, args, needs in RECIPES
                 if needs is None and not _covered(script, args)]
    assert not uncovered, "add one to RUNS or mark its line '# needs: <what>':\n" + "\n".join(uncovered)
    shown = {(script, tuple(args)) for _, script, args, _ in RECIPES}
    assert all((s, tuple(a)) in shown for s, a in map(_split, RUNS)), "a RUNS command no page shows"


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A temporary folder with a store every run shares (the tiny zoos are built once) and the stand-in data."""
    place = tmp_path_factory.mktemp("recipes")
    write_images(place / "photos", {"cat": 30, "dog": 30})
    return place


def _compose(config: str, args: list[str], place) -> object:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config, overrides=[*args, *TINY, f"store.root={place / 'store'}"]
                       + ([f"output_dir={place / 'train'}", "trainer=smoke"] if config == "train" else []))


@pytest.mark.parametrize("command", [r for r in RUNS if not r.startswith("alsatian")])
def test_recipe_runs_on_tiny_data(command, place, monkeypatch):
    from alsatian_pl.app import run_finetune, run_search

    monkeypatch.chdir(place)  # relative paths (.alsatian/features, outputs/...) land in the temporary folder
    script, args = _split(command)
    args = [f"{a.split('=')[0]}={place / STAND_INS[a.split('=', 1)[1]]}" if a.split("=", 1)[-1] in STAND_INS else a
            for a in args]
    if script == "search.py":
        result, report = run_search(_compose("search", args, place), place / "out")
        assert report["ranking"][0]["model"] == result.winner
        return
    if any(a.startswith("finetune.results=") for a in args):  # a finished search's results.json where it says
        run_search(_compose("search", [], place), place / "outputs" / "search" / "DATE")
    module, trainer, _ = run_finetune(_compose("train", args, place))
    assert f"val/{module.metric_key}" in trainer.callback_metrics


@pytest.fixture(scope="module")
def ten(tmp_path_factory):
    """A store with a 10-model zoo, so that the short name 009 names a model."""
    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

    store = BlockStore(tmp_path_factory.mktemp("store"))
    build_synthetic_zoo(store, ZooConfig("tiny", "mobilenetv3_small_050", num_models=10, distribution="top_layers",
                                         seed=1, input_size=(3, 16, 16)), progress=False)
    return store.root


@pytest.mark.parametrize("command", [r for r in RUNS if r.startswith("alsatian")])
def test_store_recipe_runs(command, ten, capsys):
    from alsatian_pl.app.cli import main

    args = _split(command)[1]
    assert main([args[0], "--root", str(ten), *args[1:]]) == 0
    out = capsys.readouterr().out
    assert out.strip()
    if "--json" in args:
        assert len(json.loads(out)["models"]) == 10
