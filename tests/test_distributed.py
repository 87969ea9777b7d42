"""A search over 2 CPU processes (Lightning Fabric, gloo) ranks and scores exactly as one process does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alsatian_pl.data import SearchDataModule
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.store import BlockStore

SCRIPT = Path(__file__).with_name("_distributed_search.py")


@pytest.mark.parametrize("strategy", ["alsatian", "shift", "base"])
def test_two_processes_give_the_single_process_ranking_and_scores(zoo, two_ranks, strategy):
    data = SearchDataModule(num_items=300, image_size=32, seed=0)
    single = SuccessiveHalving(BlockStore(zoo.store.root), data, strategy=strategy, batch_size=32, device="cpu",
                               progress=False, scorer_kwargs={"epochs": 10}).run(zoo.models).to_json()
    multi = two_ranks[strategy]
    assert [r["model"] for r in multi["ranking"]] == [r["model"] for r in single["ranking"]]
    for a, b in zip(multi["ranking"], single["ranking"]):
        assert abs(a["score"] - b["score"]) <= 1e-6 and abs(a["test_loss"] - b["test_loss"]) <= 1e-6
        assert a["eliminated_in_round"] == b["eliminated_in_round"]
    d = multi["distributed"]
    assert d["world_size"] == 2 and sorted(m for r in d["ranks"] for m in r["models"]) == sorted(zoo.models)
    assert all(r["models"] for r in d["ranks"]) and 0 < d["load_balance"] <= 1
    assert [r["models"] for r in multi["rounds"]] == [r["models"] for r in single["rounds"]]
    if strategy != "alsatian":  # nothing is shared, so the ranks together run exactly the single process's blocks
        assert sum(r["inference_steps"] for r in multi["rounds"]) == sum(r["inference_steps"] for r in single["rounds"])


def test_a_rank_emptied_by_pruning_takes_a_subtree_and_its_features_and_scores_stay_exact(zoo, two_ranks):
    # of these four, LPT puts models 1 and 5 on one rank, and they are the two that survive round 1: the other rank
    # is left idle (balance 0.5), so model 5 moves over with its kept features
    models = [zoo.models[i] for i in (1, 2, 3, 5)]
    data = SearchDataModule(num_items=300, image_size=32, seed=0)
    single = SuccessiveHalving(BlockStore(zoo.store.root), data, batch_size=32, device="cpu", progress=False,
                               scorer_kwargs={"epochs": 10}).run(models).to_json()
    multi = two_ranks["emptied"]
    assert [(r["model"], r["eliminated_in_round"]) for r in multi["ranking"]] == [
        (r["model"], r["eliminated_in_round"]) for r in single["ranking"]]
    for a, b in zip(multi["ranking"], single["ranking"]):
        assert abs(a["score"] - b["score"]) <= 1e-6 and abs(a["test_loss"] - b["test_loss"]) <= 1e-6
    d = multi["distributed"]
    (move,) = d["rebalancing"]
    assert move["round"] == 0 and move["balance_before"] == 0.5 and move["balance_after"] > move["balance_before"]
    (moved,) = move["moves"]
    src, dst = move["moves"][moved]
    assert move["moved_bytes"] > 0 and d["ranks"][dst]["bytes_moved_in"] == d["ranks"][src]["bytes_moved_out"] > 0
    assert moved in d["ranks"][src]["models"] and moved in d["ranks"][dst]["final_models"]
    assert d["ranks"][dst]["models_in"] == d["ranks"][src]["models_out"] == 1
    # the kept features moved: round 1's training rows and the test rows, at the bytes per item of its last block
    dims = BlockStore(zoo.store.root).manifest(moved).blocks[-1].out_bytes
    assert move["moved_bytes"] == dims * single["rounds"][0]["items"]
    assert d["ranks"][src]["bytes_sent"] >= move["moved_bytes"]


def test_a_dead_rank_stops_the_search_in_one_error_and_the_resumed_search_continues_exactly(zoo, two_ranks,
                                                                                          tmp_path):
    """Rank 1 dies in round 2, after a rebalancing was saved: rank 0 stops within the timeout with one error and
    writes nothing; resumed, the ranks continue on the moved models with the uninterrupted search's scores."""
    models = [zoo.models[i] for i in (1, 2, 3, 5)]
    out, ckpt = tmp_path / "result.json", tmp_path / "ckpt"
    args = [sys.executable, str(SCRIPT), str(zoo.store.root), ",".join(models), "alsatian", "2", str(out),
            f"checkpoints={ckpt}"]
    reference = two_ranks["emptied"]  # the same search, not interrupted
    died = subprocess.run([*args, "1:1"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert died.returncode != 0 and not out.exists()  # no results from a broken search
    # the dead rank's connections close at once: rank 0 says a rank left (or, had it hung, that none answered)
    assert ("error: rank 0: another rank left the search (it died" in died.stderr
            or "error: rank 0: the other ranks did not all answer" in died.stderr), died.stderr[-3000:]
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["resumed_from_round"] == 1
    assert [(r["model"], r["eliminated_in_round"]) for r in result["ranking"]] == [
        (r["model"], r["eliminated_in_round"]) for r in reference["ranking"]]
    for a, b in zip(result["ranking"], reference["ranking"]):
        assert abs(a["score"] - b["score"]) <= 1e-6 and abs(a["test_loss"] - b["test_loss"]) <= 1e-6
    moved = reference["distributed"]["rebalancing"][0]["moves"]
    final = {r["rank"]: r["final_models"] for r in result["distributed"]["ranks"]}
    assert all(m in final[dst] for m, (_, dst) in moved.items())  # the resumed ranks run the moved models


def test_with_rebalancing_off_the_idle_rank_stays_idle(two_ranks):
    d = two_ranks["idle"]["distributed"]
    assert d["rebalancing"] == [] and d["rebalance_below"] is None
    assert [r["final_models"] for r in d["ranks"]] == [r["models"] for r in d["ranks"]]
