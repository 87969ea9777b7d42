"""bench/quality's own logic on synthetic inputs: target folders, the multi-block rules, the goals summary, the
cross-target calibration of confident sets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "quality"))

import calibrate  # noqa: E402
import evaluate  # noqa: E402
import multiblock  # noqa: E402
import quality_report  # noqa: E402
import seeds  # noqa: E402


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


def test_text_csv_writes_even_classes_once_and_text_file_reads_it(tmp_path):
    from alsatian_pl.data._text import read_text_file
    texts = [f"post {i} about {'abc'[i % 3]}" for i in range(30)]
    make = evaluate.text_csv("t", lambda: (texts, ["abc"[i % 3] for i in range(30)]), ["a", "c"], 8)
    path = make(tmp_path)
    rows, labels = read_text_file(path, "text", "label")
    assert sorted(labels) == ["a"] * 4 + ["c"] * 4
    assert all(t in texts and t.endswith(lab) for t, lab in zip(rows, labels))  # each text keeps its own label
    path.write_text("text,label\nchanged,a\n")
    assert make(tmp_path) == path and path.read_text() == "text,label\nchanged,a\n"  # written once, then reused


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


@pytest.mark.parametrize("higher", [True, False])
def test_distances_from_the_top_in_every_unit(higher):
    sign = 1 if higher else -1
    scores = {"a": sign * 3.0, "b": sign * 1.0, "c": sign * 3.0, "d": sign * 2.0}
    assert calibrate.distances(scores, higher, "rank") == {"a": 0, "b": 3, "c": 0, "d": 2}  # ties share a rank
    assert calibrate.distances(scores, higher, "score") == {"a": 0, "b": 2, "c": 0, "d": 1}
    z = calibrate.distances(scores, higher, "z")
    assert z["b"] == pytest.approx(2 / np.std([3, 1, 3, 2])) and z["a"] == 0
    with pytest.raises(ValueError, match="unit must be one of"):
        calibrate.distances(scores, higher, "percent")


def test_best_distance_takes_the_nearest_of_tied_bests():
    assert calibrate.best_distance({"a": 0, "b": 2, "c": 1}, {"a": 0.5, "b": 0.9, "c": 0.9}) == 1


def test_leave_one_out_fits_the_margin_on_the_other_targets_only():
    truths = {t: {"a": 0.5, "b": 0.5, "c": 0.5} for t in "xyz"}
    truths["x"]["a"], truths["y"]["b"], truths["z"]["c"] = 0.9, 0.9, 0.9  # the best stands 0, 1, 2 from the top
    dists = {t: {"a": 0.0, "b": 1.0, "c": 2.0} for t in "xyz"}
    out = calibrate.leave_one_out(dists, truths)
    assert {t: o["margin"] for t, o in out.items()} == {"x": 2.0, "y": 2.0, "z": 1.0}
    assert {t: (o["covered"], o["size"]) for t, o in out.items()} == {"x": (True, 3), "y": (True, 3),
                                                                        "z": (False, 2)}  # z's own 2 is never used
    with pytest.raises(ValueError, match="at least 2 targets"):
        calibrate.leave_one_out({"x": dists["x"]}, truths)
    second = calibrate.leave_one_out(dists, truths, j=2)
    assert {t: (o["margin"], o["covered"], o["size"]) for t, o in second.items()} == {
        "x": (1.0, True, 2), "y": (0.0, False, 1), "z": (0.0, False, 1)}


def _searched(ranking, confident_set=None):
    return {"base_search": {"ranking": ranking, "confident_set": confident_set,
                            "scores": {m: float(len(ranking) - i) for i, m in enumerate(ranking)}}}


def test_fixed_rules_unite_the_members_picks_and_sets():
    truth = {"a": {"accuracy": 0.6}, "b": {"accuracy": 0.9}, "c": {"accuracy": 0.7}, "d": {"accuracy": 0.5}}
    report = {"tasks": {"t": {"ground_truth": truth, "scorers": {
        "p": _searched(["a", "c", "b", "d"], ["a"]), "q": _searched(["c", "b", "a", "d"], None)}}}}
    rules = calibrate.fixed_rules(report, ["p"], ["p", "q"])
    assert rules["p: its 90% confident set"]["t"] == {"covered": False, "size": 1}
    assert rules["p: top 3"]["t"] == {"covered": True, "size": 3}
    assert rules["union of the top-1 of p, q"]["t"] == {"covered": False, "size": 2}
    assert rules["union of the 90% sets of p, q"]["t"] == {"covered": False, "size": 2}  # q has none: its pick
    assert calibrate.fixed_table(rules)[2] == "| p: its 90% confident set | 0/1, 1.0 (1) |"


def test_fitted_rules_leave_each_target_out_in_every_unit():
    truth = {"a": {"accuracy": 0.9}, "b": {"accuracy": 0.5}, "c": {"accuracy": 0.5}}
    report = {"tasks": {t: {"ground_truth": truth, "scorers": {"p": _searched(order)}}
                        for t, order in (("x", ["a", "b", "c"]), ("y", ["b", "a", "c"]), ("z", ["b", "c", "a"]))}}
    rules = calibrate.fitted_rules(report, "p", higher=True)
    assert set(rules) == {(u, j) for u in calibrate.UNITS for j in calibrate.JS}
    rank = rules[("rank", 1)]
    assert {t: (o["covered"], o["size"]) for t, o in rank.items()} == {"x": (True, 3), "y": (True, 3),
                                                                       "z": (False, 2)}
    assert calibrate.fitted_table({"p": rules})[2].startswith("| p | 2/3, 2.7 (3) | ")


def test_split_size_and_the_ground_truths_own_noise():
    assert calibrate.split_size("Fashion-MNIST, 4,000 items (10 classes), 64 px") == 800
    assert calibrate.split_size("20 Newsgroups, 2,000 posts (20 classes)") == 400
    with pytest.raises(ValueError, match="no item count"):
        calibrate.split_size("a target")
    truth = {"a": {"accuracy": 0.9}, "b": {"accuracy": 0.88}, "c": {"accuracy": 0.5}}
    report = {"tasks": {"t": {"target": "T, 500 items", "ground_truth": truth}}}
    assert calibrate.truth_noise(report) == {"t": 2}  # 2 points on 100 test items is noise; 40 points is not


def test_a_perfect_proxy_covers_a_clear_best_and_not_a_coin_toss():
    clear = {"a": {"accuracy": 0.95}, "b": {"accuracy": 0.5}, "c": {"accuracy": 0.5}, "d": {"accuracy": 0.5}}
    toss = {m: {"accuracy": 0.5} for m in "abcdef"}
    report = {"tasks": {"clear": {"target": "T, 1,000 items", "ground_truth": clear},
                        "toss": {"target": "T, 50 items", "ground_truth": toss}}}
    out = calibrate.perfect_proxy(report, k=1, draws=500)
    assert out["clear"] == 1.0 and 0.1 < out["toss"] < 0.6  # six equal candidates on 10 items: about 1 in 6 plus ties
    assert calibrate.perfect_proxy(report, k=1, draws=500) == out  # seeded


def test_seed_noise_compares_the_seeds_and_one_seed_with_the_mean_of_the_others():
    acc = seeds.accuracies([{m: {"accuracy": a} for m, a in zip("abcd", row)}
                            for row in ([0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.6, 0.7], [0.8, 0.9, 0.7, 0.6])])
    n = seeds.noise(acc)
    assert n["seeds"] == 3 and [round(r, 2) for r in n["pair_rho"]] == [0.8, 0.8, 0.6]
    assert n["pair_same_best"] == [True, False, False]
    assert round(n["ceiling_rho"][0], 2) == 0.89  # seed 0 against the means of seeds 1 and 2 (0.85, 0.85, 0.65, 0.65)
    assert round(n["model_sd_points"], 2) == 5.77 and round(n["spread_points"], 1) == 23.3
    # each seed's best (a, a, b) scored by every other seed, then by the mean of the other two
    assert [round(r, 6) for r in n["rerun_regret_points"]] == [0.0, 10.0, 0.0, 10.0, 10.0, 10.0]
    assert [round(r, 6) for r in n["rerun_regret_vs_mean_points"]] == [0.0, 0.0, 10.0]


def test_regret_of_tied_picks_is_their_mean():
    assert seeds.regret({"a": 0.9, "b": 0.9, "c": 0.5}, {"a": 0.8, "b": 0.6, "c": 0.9}) == pytest.approx(20.0)


def test_scorers_are_judged_against_a_given_truth_with_ties_for_the_best():
    quality = {"scorers": {"knn": {"base_search": {"scores": {"a": 3.0, "b": 2.0, "c": 1.0}, "confident_set": ["a"]}},
                           "nce": {"base_search": {"scores": {"a": 1.0, "b": 2.0, "c": 3.0}, "confident_set": None}}}}
    out = seeds.against(quality, {"a": 0.8, "b": 0.8, "c": 0.7})
    assert out["knn"]["regret"] == 0.0 and out["knn"]["in_set"] and out["knn"]["set_size"] == 1
    assert out["nce"]["regret"] == pytest.approx(10.0) and not out["nce"]["in_set"]  # its pick c; no set: the pick
    assert out["knn"]["rho"] == pytest.approx(0.866, abs=1e-3)


def test_seed_summary_pools_the_targets():
    def result(rho, same, ceiling, knn_one, knn_mean, rerun=(0.0, 0.0), vs_mean=(0.0,)):
        return {"noise": {"pair_rho": rho, "pair_same_best": same, "ceiling_rho": ceiling,
                          "rerun_regret_points": list(rerun), "rerun_regret_vs_mean_points": list(vs_mean)},
                "scorers_one_seed": {"knn": knn_one}, "scorers_mean": {"knn": knn_mean}}
    hit = {"rho": 0.5, "regret": 0.0, "in_set": True, "set_size": 2}
    miss = {"rho": 0.3, "regret": 2.0, "in_set": False, "set_size": 4}
    lines = seeds.summary([result([0.4, 0.8], [True, False], [0.6, 0.8], miss, hit, (0.0, 2.0), (1.0,)),
                           result([0.6], [True], [0.7], hit, hit)])
    assert "(2 targets, 3 seed pairs): Spearman ρ 0.40–0.80 (median 0.60)" in lines[0]
    assert "the same best model in 2 of 3 pairs" in lines[0] and "ρ 0.70 on average (0.60–0.80)" in lines[0]
    assert lines[1] == ("- **The recipe against itself**: the best model of one seed, scored by another seed, has a "
                        "top-1 regret of 0.5 points on average; at most 0.5 points over every seed pair on 1 of 2 "
                        "targets (worst 2.0); scored by the mean of the other seeds, 0.5 on average, at most 0.5 on "
                        "1 of 2 targets. Fine-tuning every candidate again misses a goal of at most 0.5 points of "
                        "regret on every target (on 1 of 2).")
    assert lines[2] == ("- **knn**: mean ρ 0.40 against seed 0, 0.50 against the mean; its confident set holds the "
                        "best on 1 / 2 of 2 targets (mean size 2.0); mean regret 1.0 / 0.0 points.")


def test_seed_section_names_the_targets_zoo_and_candidate_count():
    cell = {"rho": 0.5, "regret": 0.0, "in_set": True, "set_size": 2}
    result = {"task": "tweets2", "seeds": [0, 1], "models": 12,
              "noise": {"seeds": 2, "pair_rho": [0.5], "pair_same_best": [True], "ceiling_rho": [0.5],
                        "rerun_regret_points": [0.0, 1.5], "rerun_regret_vs_mean_points": [0.0, 1.5],
                        "model_sd_points": 1.0, "spread_points": 5.0},
              "scorers_one_seed": {"knn": cell}, "scorers_mean": {"knn": cell}}
    text = seeds.section([result], "python bench/quality/seeds.py --tasks tweets2")
    assert text.startswith("### How noisy is the ground truth? Text targets (`python bench/quality/seeds.py")
    assert "Each target's 12 candidates fine-tuned again" in text and "16 candidates" not in text
    assert "| tweets2 | 2 | 0.50 | 1/1 | 0.50 | 0.8 / 1.5 | 1.0 | 5.0 |" in text
