"""Confident sets that account for the gap between the proxy score and fine-tuning, measured across targets.

    python bench/quality/calibrate.py ZOO/quality-*.json [--scorers linear,logme,leep,knn,ensemble] [--write F]

The search's 90% confident set (search.confidence) covers the sampling noise of the proxy score on the scored items
only. Each rule here builds a set from a target's exhaustive scores (evaluate.py's ``base_search``). A fitted rule
(a margin from the top, in ranks, raw score or the score's standard deviation over the candidates) takes its margin
from the other targets only: the j-th largest distance from the top at which their fine-tuned best stood (j = 1: the
largest, which under exchangeable targets holds the held-out best with probability n/(n+1) for n fitted targets);
its coverage and size are measured on the held-out target, each target in turn (leave one target out). Rules with
nothing to fit (the union of several scorers' picks or sets) are measured on every target as they are.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # quality_report, then the package

UNITS = ("rank", "score", "z")
JS = (1, 2)  # the margin: the largest, the 2nd largest best-distance of the fitted targets
TOL = 1e-12  # float rounding of tied distances


def distances(scores: dict[str, float], higher: bool, unit: str) -> dict[str, float]:
    """Each model's distance from the top score: ``rank`` (models strictly better), ``score`` (the raw gap) or ``z``
    (the gap over the scores' standard deviation across the candidates)."""
    models = sorted(scores)
    v = np.array([scores[m] for m in models], dtype=np.float64) * (1 if higher else -1)
    if unit == "rank":
        d = (v[None, :] > v[:, None]).sum(axis=1).astype(np.float64)  # models strictly ahead (ties share a rank)
    elif unit == "score":
        d = v.max() - v
    elif unit == "z":
        d = (v.max() - v) / (v.std() or 1.0)
    else:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    return {m: float(x) for m, x in zip(models, d)}


def best_distance(dist: dict[str, float], truth: dict[str, float]) -> float:
    """How far from the top the fine-tuned best stands (the nearest of tied bests)."""
    best = max(truth.values())
    return min(dist[m] for m, a in truth.items() if a == best)


def judged(chosen: set[str], truth: dict[str, float]) -> dict[str, Any]:
    """A set against the ground truth: whether it holds the fine-tuned best (any of tied bests), and its size."""
    best = max(truth.values())
    return {"covered": any(truth[m] == best for m in chosen), "size": len(chosen)}


def leave_one_out(dists: dict[str, dict[str, float]], truths: dict[str, dict[str, float]],
                  j: int = 1) -> dict[str, dict[str, Any]]:
    """Per held-out target: the margin (the j-th largest best-distance of the other targets), and the set of models
    within it judged against the held-out ground truth."""
    if len(dists) < 2:
        raise ValueError(f"leaving one target out needs at least 2 targets, not {len(dists)}")
    out = {}
    for t in dists:
        others = sorted((best_distance(dists[u], truths[u]) for u in dists if u != t), reverse=True)
        margin = others[min(j, len(others)) - 1]
        out[t] = {"margin": margin, **judged({m for m, d in dists[t].items() if d <= margin + TOL}, truths[t])}
    return out


def truths(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each target's fine-tuned accuracy per candidate."""
    return {t: {m: v["accuracy"] for m, v in d["ground_truth"].items()} for t, d in report["tasks"].items()}


def fitted_rules(report: dict[str, Any], scorer: str, higher: bool, js: tuple[int, ...] = JS
                 ) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    """``{(unit, j): {target: outcome}}``: the scorer's margin rules in every unit and for each j, leave one target
    out."""
    gt = truths(report)
    out = {}
    for unit in UNITS:
        dists = {t: distances(d["scorers"][scorer]["base_search"]["scores"], higher, unit)
                 for t, d in report["tasks"].items()}
        for j in js:
            out[(unit, j)] = leave_one_out(dists, gt, j)
    return out


def fixed_rules(report: dict[str, Any], scorers: list[str], members: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{rule: {target: outcome}}`` for the rules with nothing to fit: each scorer's own 90% set and top 3, and the
    union of the members' top-1 picks and of their 90% sets."""
    gt = truths(report)
    search = {t: {s: d["scorers"][s]["base_search"] for s in {*scorers, *members}} for t, d in report["tasks"].items()}
    rules: dict[str, Callable[[dict[str, Any]], set[str]]] = {}
    for s in scorers:
        rules[f"{s}: its 90% confident set"] = lambda b, s=s: set(b[s]["confident_set"] or b[s]["ranking"][:1])
        rules[f"{s}: top 3"] = lambda b, s=s: set(b[s]["ranking"][:3])
    rules[f"union of the top-1 of {', '.join(members)}"] = lambda b: {b[s]["ranking"][0] for s in members}
    rules[f"union of the 90% sets of {', '.join(members)}"] = lambda b: set().union(
        *(b[s]["confident_set"] or b[s]["ranking"][:1] for s in members))
    return {name: {t: judged(rule(search[t]), gt[t]) for t in gt} for name, rule in rules.items()}


def split_size(description: str, test_fraction: float = 0.2) -> int:
    """A target's test split size, from its description ("…, 4,000 items …") and the datasets' test_fraction."""
    found = re.search(r"([\d,]+) (?:items|posts)", description)
    if not found:
        raise ValueError(f"no item count in the target description {description!r}")
    return round(int(found.group(1).replace(",", "")) * test_fraction)


def truth_noise(report: dict[str, Any], level: float = 0.9) -> dict[str, int]:
    """Per target, how many candidates' fine-tuned accuracy is within the one-sided ``level`` binomial margin of the
    best's (unpaired: each accuracy one draw over the test split), i.e. the ground truth's own could-be-best set."""
    out = {}
    for t, acc in truths(report).items():
        n, best = split_size(report["tasks"][t]["target"]), max(acc.values())
        z = statistics.NormalDist().inv_cdf(level)
        out[t] = sum(best - a <= z * np.sqrt((best * (1 - best) + a * (1 - a)) / n) + TOL for a in acc.values())
    return out


def perfect_proxy(report: dict[str, Any], k: int = 3, draws: int = 4000, seed: int = 0) -> dict[str, float]:
    """Per target, how often a proxy that knew each candidate's expected fine-tuned accuracy (taken as the measured
    one) would hold the measured best in its top ``k``, when each measurement is one binomial draw over the test split
    (unpaired: a rough ceiling on what any rule of size ``k`` can cover against one fine-tune per candidate)."""
    rng = np.random.default_rng(seed)
    out = {}
    for t, acc in truths(report).items():
        mu = np.array([acc[m] for m in sorted(acc)])
        n = split_size(report["tasks"][t]["target"])
        drawn = rng.binomial(n, mu, size=(draws, len(mu))) / n
        top = np.argsort(-mu, kind="stable")[:k]
        out[t] = float((drawn[:, top] == drawn.max(axis=1, keepdims=True)).any(axis=1).mean())
    return out


def _outcome(per: dict[str, dict[str, Any]]) -> str:
    """'covered/targets, mean size (max)' of a rule over the targets."""
    cells = list(per.values())
    return (f"{sum(c['covered'] for c in cells)}/{len(cells)}, "
            f"{statistics.mean(c['size'] for c in cells):.1f} ({max(c['size'] for c in cells)})")


def fixed_table(rules: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """A Markdown row per rule with nothing to fit: how often its set holds the fine-tuned best, mean (max) size."""
    return ["| rule (nothing fitted) | holds the best, mean size (max) |", "|---|---:|",
            *(f"| {name} | {_outcome(per)} |" for name, per in rules.items())]


def fitted_table(fitted: dict[str, dict[tuple[str, int], dict[str, dict[str, Any]]]]) -> list[str]:
    """A Markdown row per scorer, a column per margin unit and j: held-out coverage, mean (max) size."""
    keys = [(u, j) for u in UNITS for j in JS]
    head = " | ".join(f"{u}: {_ordinal(j)} largest" for u, j in keys)
    return [f"| scorer | {head} |", "|---|" + "---:|" * len(keys),
            *(f"| {s} | " + " | ".join(_outcome(rules[k]) for k in keys) + " |" for s, rules in fitted.items())]


def report_lines(report: dict[str, Any], scorers: list[str], members: list[str]) -> list[str]:
    """The calibration tables: the ground truth's own noise, the rules with nothing to fit, then the margins fitted
    on the other targets (leave one target out)."""
    from alsatian_pl.score import SCORERS
    tasks = report["tasks"]
    noise, ceiling = truth_noise(report), perfect_proxy(report)
    fitted = {s: fitted_rules(report, s, SCORERS.get(s).higher_is_better) for s in scorers}
    return ["| | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks),
            "| test items | " + " | ".join(str(split_size(d["target"])) for d in tasks.values()) + " |",
            "| candidates within the ground truth's noise of its best | "
            + " | ".join(str(noise[t]) for t in tasks) + " |",
            "| a perfect proxy's top 3 holds the best (simulated) | "
            + " | ".join(f"{ceiling[t]:.2f}" for t in tasks) + " |", "",
            *fixed_table(fixed_rules(report, scorers, members)), "", *fitted_table(fitted)]


def _ordinal(j: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(j, f"{j}th")


def main() -> None:
    from quality_report import merged
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("quality", type=Path, nargs="+")
    p.add_argument("--scorers", default="linear,logme,leep,knn,ensemble")
    p.add_argument("--members", default="linear,logme,leep,knn", help="the scorers whose picks and sets are united")
    p.add_argument("--write", type=Path)
    a = p.parse_args()
    text = "\n".join(report_lines(merged(a.quality), a.scorers.split(","), a.members.split(",")))
    if a.write:
        a.write.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
