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
def test_two_processes_give_the_single_process_ranking_and_scores(zoo, tmp_path, strategy):
    data = SearchDataModule(num_items=300, image_size=32, seed=0)
    single = SuccessiveHalving(BlockStore(zoo.store.root), data, strategy=strategy, batch_size=32, device="cpu",
                               progress=False, scorer_kwargs={"epochs": 10}).run(zoo.models).to_json()
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(zoo.store.root), ",".join(zoo.models), strategy, "2",
                           str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    multi = json.loads(out.read_text())
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


def test_a_dead_rank_stops_the_search_within_the_timeout_with_one_error(zoo, tmp_path):
    import time
    out = tmp_path / "result.json"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), str(zoo.store.root), ",".join(zoo.models), "alsatian", "2",
                           str(out), "1:1"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0 and not out.exists()  # no results from a broken search
    # the dead rank's connections close at once: rank 0 says a rank left (or, had it hung, that none answered)
    assert ("error: rank 0: another rank left the search (it died" in proc.stderr
            or "error: rank 0: the other ranks did not all answer" in proc.stderr), proc.stderr[-3000:]
    assert time.perf_counter() - start < 120


def test_a_rank_emptied_by_pruning_takes_a_subtree_and_its_features_and_scores_stay_exact(zoo, tmp_path):
    # of these four, LPT puts models 1 and 5 on one rank, and they are the two that survive round 1: the other rank
    # is left idle (balance 0.5), so model 5 moves over with its kept features
    models = [zoo.models[i] for i in (1, 2, 3, 5)]
    data = SearchDataModule(num_items=300, image_size=32, seed=0)
    single = SuccessiveHalving(BlockStore(zoo.store.root), data, batch_size=32, device="cpu", progress=False,
                               scorer_kwargs={"epochs": 10}).run(models).to_json()
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(zoo.store.root), ",".join(models), "alsatian", "2",
                           str(out), "rebalance=0.8"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    multi = json.loads(out.read_text())
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


def test_a_search_resumed_after_a_rebalancing_continues_on_the_moved_models_with_exact_scores(zoo, tmp_path):
    models = [zoo.models[i] for i in (1, 2, 3, 5)]
    out, ckpt = tmp_path / "result.json", tmp_path / "ckpt"
    args = [sys.executable, str(SCRIPT), str(zoo.store.root), ",".join(models), "alsatian", "2", str(out),
            f"checkpoints={ckpt}"]
    whole = subprocess.run(args[:-1], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    reference = json.loads(out.read_text())
    out.unlink()
    died = subprocess.run([*args, "1:1"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert died.returncode != 0 and not out.exists()  # rank 1 died in round 2, after the rebalancing was saved
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


def test_with_rebalancing_off_the_idle_rank_stays_idle(zoo, tmp_path):
    models = [zoo.models[i] for i in (1, 2, 3, 5)]
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(zoo.store.root), ",".join(models), "alsatian", "2",
                           str(out), "rebalance=null"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = json.loads(out.read_text())["distributed"]
    assert d["rebalancing"] == [] and d["rebalance_below"] is None
    assert [r["final_models"] for r in d["ranks"]] == [r["models"] for r in d["ranks"]]
