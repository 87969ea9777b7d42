"""Candidates that cannot be scored (issue 30 class 4): with ``models.on_invalid=error`` (the default) one line names
the model, the block or file and the tensor; with ``skip`` the candidate is left out with one warning line, listed
under ``skipped`` in the result, and the search ranks the rest as a search without it would, for every strategy."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from _harness import compose, in_process, one_error_line

STRATEGIES = ("alsatian", "shift", "base")


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """A store with 6 synthetic models at 32 px and one more, ``bad``, that shares all but the last block with one of
    them and holds a NaN in that last block: (store, the 6 good names, the bad model's NaN block hash)."""
    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

    store = BlockStore(tmp_path_factory.mktemp("candidates"))
    zoo = build_synthetic_zoo(store, ZooConfig("cand", "mobilenetv3_small_050", num_models=6, distribution="top25",
                                               seed=1, input_size=(3, 32, 32)), progress=False)
    man = store.manifest(zoo.models[3])
    last = store.load_block(man.hashes[-1])
    weight = next(p for p in last.parameters() if p.dim() > 1)
    with torch.no_grad():
        weight.view(-1)[0] = float("nan")
    bad = store.put_model("bad", [*man.hashes[:-1], last], recipe=man.recipe, input_size=man.input_size)
    return store, list(zoo.models), bad.hashes[-1]


def _search(store, names, strategy="alsatian", on_invalid="skip"):
    from alsatian_pl.data import SearchDataModule
    from alsatian_pl.halving import SuccessiveHalving

    data = SearchDataModule(num_items=300, image_size=32, seed=0)
    searcher = SuccessiveHalving(store, data, strategy=strategy, scorer={"name": "linear", "kwargs": {"epochs": 5}},
                                 progress=False, confidence=None, on_invalid=on_invalid)
    return searcher.run(names)


def _ranked(result):
    return [(r.model, round(r.score, 6), r.eliminated_in_round) for r in result.ranking]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_candidate_with_nan_weights_is_left_out_and_the_rest_ranked_as_without_it(candidates, strategy):
    store, good, _ = candidates
    with pytest.warns(Warning, match=r"left out 1 candidate\(s\) that cannot be scored \(bad\): block .* tensor "
                                     r".* NaN or infinite") as caught:
        result = _search(store, [*good[:4], "bad", *good[4:]], strategy)
    assert len([w for w in caught if "left out" in str(w.message)]) == 1
    assert [s["name"] for s in result.skipped] == ["bad"] and "NaN or infinite" in result.skipped[0]["reason"]
    assert "bad" not in [r.model for r in result.ranking]
    assert _ranked(result) == _ranked(_search(store, good, strategy))


def test_with_on_invalid_error_the_nan_block_is_one_line_naming_model_and_tensor(candidates, capsys):
    store, good, nan_block = candidates
    status, err = in_process(capsys, _search, store, [*good, "bad"], on_invalid="error")
    assert status == 2
    one_error_line(err, "model bad cannot be scored", f"({nan_block[:12]}) tensor", "NaN or infinite",
                   "models.on_invalid=skip")


class Broken(nn.Module):
    """A block whose forward fails (as a user's block with a bug would)."""

    def forward(self, x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x7 and 9x3)")


class Wider(nn.Module):
    """A block that gives outputs of another size than the store recorded."""

    def forward(self, x):
        return torch.cat([x, x], dim=1)


@pytest.mark.parametrize("block", [Broken, Wider], ids=["fails at forward", "wrong output shape"])
def test_a_block_that_cannot_run_leaves_out_every_model_sharing_it(candidates, block, monkeypatch):
    """The block is shared by several models (shared prefixes): all of them are left out, the round is planned
    again for the others, and their scores are the same whether the tree shares prefixes (alsatian) or not (shift).
    (The schedule stays the one cut for every candidate: the failure shows only once round 1 runs.)"""
    from alsatian_pl.store import BlockStore

    store, good, _ = candidates
    hashes = {m: store.manifest(m).hashes for m in good}
    depth = next(i for i in range(len(hashes[good[0]])) if 1 < len({h[i] for h in hashes.values()}))
    shared = hashes[good[-1]][depth]  # a block that the last model shares with at least one other
    users = [m for m in good if hashes[m][depth] == shared]
    load = BlockStore.load_block
    monkeypatch.setattr(BlockStore, "load_block", lambda self, h: block() if h == shared else load(self, h))
    ranked = {}
    for strategy in ("alsatian", "shift"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _search(store, good, strategy)
        lines = [str(w.message) for w in caught if "left out" in str(w.message)]
        assert len(lines) == 1 and f"block {shared[:12]}" in lines[0], lines
        assert sorted(s["name"] for s in result.skipped) == sorted(users) and len(users) > 1
        ranked[strategy] = _ranked(result)
    assert ranked["alsatian"] == ranked["shift"]
    assert sorted(m for m, _, _ in ranked["alsatian"]) == sorted(set(good) - set(users))


def test_a_bad_checkpoint_is_left_out_at_import_and_listed_in_results_json(tmp_path, capsys):
    """``models=checkpoints models.on_invalid=skip``: the NaN checkpoint is refused at import (before any search
    work), one warning line names the file and the tensor, results.json lists it; a rerun reuses the zoo and says
    it again. Without skip, the same folder is one error line that names the setting."""
    import io

    import timm
    from rich.console import Console

    from alsatian_pl.app import print_report, run_search

    folder = tmp_path / "ckpts"
    folder.mkdir()
    for i, name in enumerate(["a", "b", "c"]):
        torch.manual_seed(i)
        state = timm.create_model("mobilenetv3_small_050").state_dict()
        if name == "b":
            state[next(k for k in state if k.endswith("conv_stem.weight"))][0, 0] = float("inf")
        torch.save(state, folder / f"{name}.pth")
    overrides = ["models=checkpoints", f"models.path={folder}", "models.arch=mobilenetv3_small_050",
                 f"store.root={tmp_path / 'store'}", "search.checkpoint_dir=null", "dataset.num_items=300",
                 "dataset.image_size=32", "++search.scorer.kwargs.epochs=5", "search.progress=false"]
    status, err = in_process(capsys, run_search, compose(*overrides, tiny=False))
    assert status == 2
    one_error_line(err, "b.pth: tensor", "conv_stem.weight", "models.on_invalid=skip")
    for run in range(2):
        out = tmp_path / f"run{run}"
        with pytest.warns(Warning, match=r"left out b\.pth.*conv_stem\.weight holds 9 NaN or infinite"):
            _, report = run_search(compose(*overrides, "models.on_invalid=skip", tiny=False), output_dir=out)
        printed = io.StringIO()
        print_report(report, Console(file=printed, width=200))
        assert "left out 1 candidate(s) that cannot be scored (b.pth): skipped in" in printed.getvalue()
        saved = json.loads((out / "results.json").read_text())
        assert [s["name"] for s in saved["skipped"]] == ["b.pth"]
        assert len(saved["ranking"]) == 2 and not any(r["model"].endswith("-b") for r in saved["ranking"])
