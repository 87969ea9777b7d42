"""Are the confidence statements true? Coverage of the intervals and of the confident set, by simulation.

    python bench/bench_confidence.py [--trials 40] [--scorers knn,linear,logme,hscore,ensemble] [--level 0.9]
                                     [--models 8] [--items 400] [--write bench/results/confidence.md]

Each trial draws a fresh target task from one generative model: ``--items`` train and as many test items of 5
Gaussian classes, and for each of ``--models`` candidates features ``centre[y] * sep_m + noise`` (dim 32) whose class
separation ``sep_m`` falls slowly from the first model to the last, so neighbours are hard to tell apart on one
sample. Every scorer scores every trial with jackknife replicates (what a search with ``search.confidence`` does in
its last round). The truth is each model's *expected* score on a task of that size, estimated from as many
independent trials again; the truly best model is the one with the highest expected score. Reported per scorer: the
share of intervals (all models, all trials) holding the expected score, the share of trials whose confident set
holds the truly best model, the set's mean size, and the share of trials whose point winner is the truly best.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alsatian_pl.score import JACKKNIFE_GROUPS, could_be_best, get_scorer, interval  # noqa: E402

CLASSES, DIM = 5, 32


def task(seed: int, models: int, items: int):
    """One trial's train and test features for every model, and the labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(0)) * 0.35
    y, yt = torch.randint(0, CLASSES, (items,), generator=g), torch.randint(0, CLASSES, (items,), generator=g)
    seps = [1.0 - 0.04 * i for i in range(models)]
    train = {f"m{i}": centres[y] * s + torch.randn(items, DIM, generator=g) for i, s in enumerate(seps)}
    test = {f"m{i}": centres[yt] * s + torch.randn(items, DIM, generator=g) for i, s in enumerate(seps)}
    return train, y, test, yt


def scored(name: str, seed: int, models: int, items: int, groups: int):
    options = {"epochs": 30} if name == "linear" else {}
    if name == "ensemble":
        options = {"members": {"linear": {"epochs": 30}, "logme": {}, "knn": {}}}
    scorer = get_scorer(name, seed=seed, **options)
    scorer.jackknife = groups
    train, y, test, yt = task(seed, models, items)
    return scorer, scorer.combine(scorer.score(train, y, test, yt, CLASSES))


def evaluate(name: str, trials: int, models: int, items: int, level: float) -> dict[str, float]:
    """Coverage figures of one scorer over ``trials`` trials (and as many trials again for the truth)."""
    truth_runs = [scored(name, 10_000 + t, models, items, 0)[1] for t in range(trials)]
    expected = {m: statistics.fmean(run[m].score for run in truth_runs) for m in truth_runs[0]}
    scorer = get_scorer(name) if name != "ensemble" else None
    higher = True if scorer is None else scorer.higher_is_better
    best = max(expected, key=expected.get) if higher else min(expected, key=expected.get)
    held, total, covered, sizes, right = 0, 0, 0, [], 0
    for t in range(trials):
        scorer, scores = scored(name, t, models, items, JACKKNIFE_GROUPS)
        for m, p in scores.items():
            lo, hi = interval(p, level, scorer.score_range)
            held, total = held + (lo <= expected[m] <= hi), total + 1
        chosen = could_be_best(scores, level, scorer.higher_is_better)
        covered, right = covered + (best in chosen), right + (chosen[0] == best)
        sizes.append(len(chosen))
    return {"interval_coverage": held / total, "set_coverage": covered / trials, "set_size": statistics.fmean(sizes),
            "point_right": right / trials, "best": best, "gap": _gap(expected, best, higher)}


def _gap(expected: dict[str, float], best: str, higher: bool) -> float:
    """The expected score's lead of the truly best model over the runner-up."""
    others = [v for m, v in expected.items() if m != best]
    return expected[best] - max(others) if higher else min(others) - expected[best]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--scorers", default="knn,linear,logme,hscore,ensemble")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    rows = []
    for name in args.scorers.split(","):
        r = evaluate(name, args.trials, args.models, args.items, args.level)
        rows.append(f"| {name} | {r['interval_coverage']:.2f} | {r['set_coverage']:.2f} | {r['set_size']:.1f} | "
                    f"{r['point_right']:.2f} | {r['gap']:.4f} |")
        print(rows[-1], flush=True)
    lines = [f"{args.trials} trials per scorer, {args.models} models, {args.items} train and {args.items} test items, "
             f"{CLASSES} classes, level {args.level:g}, {JACKKNIFE_GROUPS} jackknife groups "
             f"(`python bench/bench_confidence.py --trials {args.trials} --scorers {args.scorers}`).", "",
             "| scorer | intervals holding the expected score | confident sets holding the best | mean set size "
             "| point winner is the best | expected lead of the best |", "|---|---:|---:|---:|---:|---:|", *rows]
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
