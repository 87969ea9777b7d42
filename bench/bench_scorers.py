"""Seconds per proxy scorer to score one round: M models' random class-structured features ([N, D] train, [T, D]
test, float32 as the feature store holds them), every registered scorer, best of ``--repeat`` runs.

    python bench/bench_scorers.py [--models 24] [--items 1000] [--test-items 200] [--dim 1280] [--classes 10]
                                  [--device cpu] [--scorers logme,hscore,...]

The linear probe runs its default 100 epochs; the transferability scorers need no training. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alsatian_pl.score import available_scorers, get_scorer  # noqa: E402


def round_features(models: int, items: int, test_items: int, dim: int, classes: int, device: str):
    """Train/test features per model (class centres plus noise, more signal for later models) and the labels."""
    g = torch.Generator().manual_seed(0)
    y, yt = torch.randint(0, classes, (items,), generator=g), torch.randint(0, classes, (test_items,), generator=g)
    train, test = {}, {}
    for i in range(models):
        centres = torch.randn(classes, dim, generator=g) * (0.05 + 0.02 * i)
        train[f"m{i}"] = (centres[y] + torch.randn(items, dim, generator=g)).to(device)
        test[f"m{i}"] = (centres[yt] + torch.randn(test_items, dim, generator=g)).to(device)
    return train, y.to(device), test, yt.to(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=24)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--test-items", type=int, default=200)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--scorers", default=",".join(available_scorers()))
    a = p.parse_args()
    train, y, test, yt = round_features(a.models, a.items, a.test_items, a.dim, a.classes, a.device)
    print(f"{a.models} models x {a.items} train + {a.test_items} test items x {a.dim} dims, {a.classes} classes, "
          f"{a.device}, {torch.get_num_threads()} threads\n")
    print("| scorer | seconds | best model |\n|---|---:|---|")
    for name in a.scorers.split(","):
        scorer, best = get_scorer(name), float("inf")
        for _ in range(a.repeat):
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            scores = scorer.score(train, y, test, yt, a.classes)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        top = max(scores, key=lambda m: scores[m].score if scorer.higher_is_better else -scores[m].score)
        print(f"| {name} | {best:.2f} | {top} |")


if __name__ == "__main__":
    main()
