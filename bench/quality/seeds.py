"""How noisy is the fine-tuned ground truth? Every candidate fine-tuned again with other seeds (the train.py recipe,
``finetune.seed``: the head's init and the batch order; the split stays), then per target:

- the seeds against each other: Spearman rho between two seeds' accuracies, and whether they name the same best model;
- the recipe's own top-1 regret: the best model of one seed, fine-tuned again, under another seed's accuracies (what
  a search that knew each model's fine-tuned accuracy under one seed would score against another);
- the ceiling: rho of one seed's accuracies against the mean of the other seeds', the agreement a perfect proxy of
  the mean could expect against a one-seed ground truth;
- every scorer (from ZOO/quality-<task>.json, made by evaluate.py) against the one-seed and the mean ground truth:
  rho, top-1 regret, and whether its 90% confident set holds the best model.

    python bench/quality/seeds.py [--zoo /tmp/alsatian-quality] [--tasks fashion-few10,animals-hoofed5]
                                  [--seeds 1,2] [--write bench/notes/quality_seeds.md]

Fine-tunes are cached in ZOO/ground_truth-<task>-seed<k>.json (seed 0 is evaluate.py's ZOO/ground_truth-<task>.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import evaluate as E  # noqa: E402


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rho of two equally long lists (average ranks for ties), via torchmetrics as evaluate.py does."""
    import torch
    from torchmetrics.functional import spearman_corrcoef
    return float(spearman_corrcoef(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)))


def accuracies(truths: list[dict[str, dict[str, float]]]) -> dict[str, list[float]]:
    """Each model's accuracy under every seed (the models every seed has)."""
    models = sorted(set.intersection(*(set(t) for t in truths)))
    return {m: [t[m]["accuracy"] for t in truths] for m in models}


def best(acc: dict[str, float]) -> set[str]:
    top = max(acc.values())
    return {m for m, a in acc.items() if a == top}


def regret(pick_by: dict[str, float], truth: dict[str, float]) -> float:
    """Top-1 regret in points under ``truth`` of the best model by ``pick_by`` (tied bests: their mean regret)."""
    picks = best(pick_by)
    return 100 * (max(truth.values()) - statistics.mean(truth[m] for m in picks))


def noise(acc: dict[str, list[float]]) -> dict[str, Any]:
    """The seeds against each other and the ceiling (one seed against the mean of the others)."""
    models, k = sorted(acc), len(next(iter(acc.values())))
    seed = [{m: acc[m][i] for m in models} for i in range(k)]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    rho = [spearman([seed[i][m] for m in models], [seed[j][m] for m in models]) for i, j in pairs]
    same_best = [bool(best(seed[i]) & best(seed[j])) for i, j in pairs]
    ceiling = [spearman([seed[i][m] for m in models],
                        [statistics.mean(acc[m][j] for j in range(k) if j != i) for m in models]) for i in range(k)]
    return {"seeds": k, "pair_rho": rho, "pair_same_best": same_best, "ceiling_rho": ceiling,
            "rerun_regret_points": [regret(seed[i], seed[j]) for i in range(k) for j in range(k) if i != j],
            "rerun_regret_vs_mean_points": [regret(seed[i], {m: statistics.mean(acc[m][j] for j in range(k) if j != i)
                                                             for m in models}) for i in range(k)],
            "model_sd_points": 100 * statistics.mean(statistics.stdev(v) for v in acc.values()),
            "spread_points": 100 * (max(map(statistics.mean, acc.values())) - min(map(statistics.mean, acc.values())))}


def against(quality: dict[str, Any], truth: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each scorer's exhaustive ranking (evaluate.py's base search) against ``truth``: rho, regret, set coverage."""
    from alsatian_pl.score import SCORERS
    out = {}
    top = best(truth)
    for name, row in quality["scorers"].items():
        found = row["base_search"]
        sign = 1 if SCORERS.get(name).higher_is_better else -1
        models = sorted(truth)
        pick = max(models, key=lambda m: sign * found["scores"][m])
        chosen = found.get("confident_set") or [pick]
        out[name] = {"rho": spearman([sign * found["scores"][m] for m in models], [truth[m] for m in models]),
                     "regret": 100 * (max(truth.values()) - truth[pick]),
                     "in_set": bool(top & set(chosen)), "set_size": len(chosen)}
    return out


def study(zoo: Path, task: str, seeds: list[int]) -> dict[str, Any]:
    t0 = time.perf_counter()
    truths = [E.ground_truth(zoo, task)] + [E.ground_truth(zoo, task, seed=s) for s in seeds]
    acc = accuracies(truths)
    quality = json.loads((zoo / f"quality-{task}.json").read_text())["tasks"][task]
    mean = {m: statistics.mean(v) for m, v in acc.items()}
    return {"task": task, "seeds": [0, *seeds], "models": len(acc), "noise": noise(acc),
            "scorers_one_seed": against(quality, {m: v[0] for m, v in acc.items()}),
            "scorers_mean": against(quality, mean), "seconds": round(time.perf_counter() - t0, 1),
            "finetune_s": sum(t[m]["seconds"] for t in truths[1:] for m in t)}


def section(results: list[dict[str, Any]], command: str) -> str:
    zoos = " and ".join(sorted({E.TARGETS[r["task"]].zoo for r in results}))
    models = " or ".join(str(n) for n in sorted({r["models"] for r in results}))
    rows = [f"### How noisy is the ground truth? {zoos.capitalize()} targets (`{command}`)\n",
            f"Each target's {models} candidates fine-tuned again with other seeds of the train.py recipe "
            "(`finetune.seed`: the head's init and the batch order; same split, same epochs). *Seed vs seed*: "
            "Spearman ρ between two seeds' accuracies and how often they name the same best model; *ceiling*: ρ of "
            "one seed against the mean of the others, what a perfect proxy could expect against a one-seed ground "
            "truth; *re-run regret*: the best model under one seed, scored by another seed's accuracies (top-1 regret in "
            "points over the ordered seed pairs, mean and max), what the recipe itself scores against the recipe; "
            "*sd*: a model's standard deviation over seeds, against the *spread* of the models' mean accuracies.\n",
            "| target | seeds | seed vs seed ρ | same best | ceiling ρ | re-run regret mean / max | sd (points) | "
            "spread (points) |",
            "|---|---:|---|---:|---|---:|---:|---:|"]
    for r in results:
        n = r["noise"]
        rows.append(f"| {r['task']} | {n['seeds']} | {', '.join(f'{x:.2f}' for x in n['pair_rho'])} | "
                    f"{sum(n['pair_same_best'])}/{len(n['pair_same_best'])} | "
                    f"{', '.join(f'{x:.2f}' for x in n['ceiling_rho'])} | "
                    f"{statistics.mean(n['rerun_regret_points']):.1f} / {max(n['rerun_regret_points']):.1f} | "
                    f"{n['model_sd_points']:.1f} | "
                    f"{n['spread_points']:.1f} |")
    rows += ["", "Every scorer's exhaustive ranking against seed 0 alone and against the mean over the seeds "
             "(ρ, top-1 regret in points, whether the 90% confident set holds the best model):\n",
             "| target | scorer | ρ seed 0 | ρ mean | regret seed 0 | regret mean | set holds best: seed 0 | mean | "
             "set size |", "|---|---|---:|---:|---:|---:|:-:|:-:|---:|"]
    for r in results:
        for name, one in r["scorers_one_seed"].items():
            m = r["scorers_mean"][name]
            rows.append(f"| {r['task']} | {name} | {one['rho']:.2f} | {m['rho']:.2f} | {one['regret']:.1f} | "
                        f"{m['regret']:.1f} | {'✓' if one['in_set'] else '✗'} | {'✓' if m['in_set'] else '✗'} | "
                        f"{m['set_size']} |")
    return "\n".join(rows + [""] + summary(results)) + "\n"


def summary(results: list[dict[str, Any]]) -> list[str]:
    """The study in a few lines: the seeds' agreement over all targets, and each scorer's mean rho and coverage
    against one seed and against the mean."""
    rho = sorted(x for r in results for x in r["noise"]["pair_rho"])
    same = [x for r in results for x in r["noise"]["pair_same_best"]]
    ceiling = [x for r in results for x in r["noise"]["ceiling_rho"]]
    out = [f"- **The ground truth against itself** ({len(results)} targets, {len(rho)} seed pairs): Spearman ρ "
           f"{rho[0]:.2f}–{rho[-1]:.2f} (median {statistics.median(rho):.2f}); the same best model in {sum(same)} of "
           f"{len(same)} pairs; the mean of the other seeds agrees with one seed at ρ {statistics.mean(ceiling):.2f} "
           f"on average ({min(ceiling):.2f}–{max(ceiling):.2f}), about what a perfect proxy could show against a "
           "one-seed ground truth."]
    worst = [max(r["noise"]["rerun_regret_points"]) for r in results]
    vs_mean = [max(r["noise"]["rerun_regret_vs_mean_points"]) for r in results]
    missed = sum(w > 0.5 for w in worst)
    out.append(f"- **The recipe against itself**: the best model of one seed, scored by another seed, has a top-1 "
               f"regret of {statistics.mean(x for r in results for x in r['noise']['rerun_regret_points']):.1f} "
               f"points on average; at most 0.5 points over every seed pair on {len(results) - missed} of "
               f"{len(results)} targets (worst {max(worst):.1f}); scored by the mean of the other seeds, "
               f"{statistics.mean(x for r in results for x in r['noise']['rerun_regret_vs_mean_points']):.1f} on "
               f"average, at most 0.5 on {sum(w <= 0.5 for w in vs_mean)} of {len(results)} targets."
               + (f" Fine-tuning every candidate again misses a goal of at most 0.5 points of regret on every target "
                  f"(on {missed} of {len(results)})." if missed else ""))
    for name in results[0]["scorers_mean"]:
        one = [r["scorers_one_seed"][name] for r in results if name in r["scorers_one_seed"]]
        mean = [r["scorers_mean"][name] for r in results if name in r["scorers_mean"]]
        out.append(f"- **{name}**: mean ρ {statistics.mean(o['rho'] for o in one):.2f} against seed 0, "
                   f"{statistics.mean(m['rho'] for m in mean):.2f} against the mean; its confident set holds the "
                   f"best on {sum(o['in_set'] for o in one)} / {sum(m['in_set'] for m in mean)} of {len(one)} "
                   f"targets (mean size {statistics.mean(m['set_size'] for m in mean):.1f}); mean regret "
                   f"{statistics.mean(o['regret'] for o in one):.1f} / "
                   f"{statistics.mean(m['regret'] for m in mean):.1f} points.")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--zoo", type=Path, default=Path("/tmp/alsatian-quality"))
    p.add_argument("--tasks", default="fashion-few10,animals-hoofed5")
    p.add_argument("--seeds", default="1,2", help="seeds besides 0 (evaluate.py's ground truth)")
    p.add_argument("--write", type=Path)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = [study(args.zoo, t, seeds) for t in args.tasks.split(",")]
    (args.zoo / "seeds.json").write_text(json.dumps(results, indent=1))
    text = section(results, "python bench/quality/seeds.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
