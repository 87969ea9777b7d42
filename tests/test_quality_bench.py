"""bench/quality's own logic on synthetic inputs: target folders, the multi-block rules, the goals summary."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "quality"))

import evaluate  # noqa: E402
import multiblock  # noqa: E402
import quality_report  # noqa: E402


def _fake(n: int = 60, classes: int = 4):
    rng = np.random.default_rng(1)
    return lambda: (rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), np.arange(n) % classes)


def test_class_folder_writes_even_classes_once(tmp_path):
    make = evaluate.class_folder("t", _fake(), ["a", "b", "c", "d"], [1, 3], 20)
    folder = make(tmp_path)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["b", "d"]
    assert [len(list((folder / c).glob("*.png"))) for c in ("b", "d")] == [10, 10]
    (folder / "b" / "00000.png").unlink()
    assert make(tmp_path) == folder and not (folder / "b" / "00000.png").exists()  # written once, then reused


def test_every_target_names_its_zoo_and_dataset():
    assert len(evaluate.TARGETS) >= 8
    for name, target in evaluate.TARGETS.items():
        assert target.zoo in ("image", "text"), name
        assert any(o.startswith("dataset=") for o in target.overrides), name


@pytest.mark.parametrize("higher", [True, False])
def test_best_of_k_takes_each_models_best_block(higher):
    scores = {"m|0": 1.0, "m|1": 3.0, "m|2": 2.0, "n|0": 5.0, "n|1": 0.0, "n|2": 4.0}
    rules = multiblock.rankings(scores, ["m", "n"], 3, higher)
    assert rules["last"] == {"m": 1.0, "n": 5.0} and rules["block -2"] == {"m": 2.0, "n": 4.0}
    pick = max if higher else min
    assert rules["best of 2"] == {"m": pick(1.0, 3.0), "n": pick(5.0, 0.0)}
    assert rules["best of 3"] == {"m": pick(1.0, 3.0, 2.0), "n": pick(5.0, 0.0, 4.0)}


def test_block_outputs_pool_maps_and_keep_vectors():
    import torch
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.Conv2d(2, 3, 1),
                                torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()))
    x = torch.randn(5, 1, 4, 4)
    last, before = multiblock.block_outputs(model, x, 2, batch=2)
    torch.testing.assert_close(last, model(x))
    torch.testing.assert_close(before, model[1](model[0](x)).mean(dim=(2, 3)))


def _cell(rho, regret, in_set, size, confirmed):
    paper = {"in_set": in_set, "set_size": size, "confirmed": {"regret": confirmed, "finetune_s": 10.0}}
    return {"exhaustive": {"spearman": rho, "regret": regret}, "schedules": {"paper": paper}}


def test_goals_summarise_every_target():
    report = {"tasks": {
        "a": {"ground_truth": {"m": {"seconds": 100.0}}, "cold_search_s": 4.0, "cold_scorer": "linear",
              "scorers": {"linear": _cell(0.8, 0.0, True, 2, 0.0)}},
        "b": {"ground_truth": {"m": {"seconds": 50.0}}, "cold_search_s": 6.0, "cold_scorer": "linear",
              "scorers": {"linear": _cell(0.6, 1.0, False, 4, 0.5)}}}}
    text = "\n".join(quality_report.goals(report))
    assert "| linear | 0.700 | 0.600 | 0.50 / 1.0 | 1/2 | 3.0 | 0.25 / 0.5 | 20 |" in text
    assert "took 150 s" in text and "took 10 s in all" in text


def test_rho_matrix_has_a_row_per_scorer_and_a_dash_where_a_target_lacks_it():
    truth = {"m": {"accuracy": 0.5, "seconds": 1.0}, "n": {"accuracy": 0.75, "seconds": 1.0}}
    report = {"tasks": {"a": {"ground_truth": truth, "scorers": {"linear": _cell(0.8, 0, True, 1, 0),
                                                                 "hscore": _cell(0.1, 0, True, 1, 0)}},
                        "b": {"ground_truth": truth, "scorers": {"linear": _cell(-0.25, 0, True, 1, 0)}}}}
    rows = quality_report.rho_matrix(report)
    assert rows[2] == "| fine-tuned accuracy, % | 50.0–75.0 | 50.0–75.0 |"
    assert rows[3:] == ["| ρ linear | 0.80 | -0.25 |", "| ρ hscore | 0.10 | – |"]
