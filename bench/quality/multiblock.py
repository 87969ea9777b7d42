"""Issue #26 item 4, measured before anything ships: does scoring a model on more than its last block's output pick
better models? Each candidate of the quality zoo is scored on the outputs of its last ``--depth`` blocks (4-D
outputs average-pooled over space, as the head's own global pool does), and four rankings are compared with the
fine-tuned ground truth of bench/quality/evaluate.py:

- ``last``: the search's features today (the last block: the head's pooled output);
- ``block -k``: the output k blocks before the last, alone;
- ``best of k``: each model's best score over its last k outputs (the option the issue proposes).

    python bench/quality/multiblock.py [--zoo /tmp/alsatian-quality] [--tasks fashion-tops4,animals10]
                                       [--scorers linear,logme,knn] [--depth 3]

Scorers that read the features alone (not LEEP or NCE, which apply each model's source head to its last output).
Needs ZOO/ground_truth-<task>.json (evaluate.py writes it). Writes ZOO/multiblock.json and prints a Markdown table.
Everything is scored exhaustively on the target's whole training split and its test split, as search=base does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluate import TARGETS, agreement, candidates, compose  # noqa: E402


def block_outputs(model: torch.nn.Sequential, x: torch.Tensor, depth: int, batch: int = 128) -> list[torch.Tensor]:
    """The outputs of ``model``'s last ``depth`` blocks for items ``x`` ([N, D] each; 4-D outputs mean-pooled),
    the last block's first."""
    outs: list[list[torch.Tensor]] = [[] for _ in range(depth)]
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            y = x[i:i + batch]
            seen = []
            for blk in model:
                y = blk(y)
                seen.append(y)
            for k in range(depth):
                out = seen[-1 - k]
                outs[k].append(out.mean(dim=(2, 3)) if out.dim() == 4 else out.flatten(1))
    return [torch.cat(o) for o in outs]


def features(zoo: Path, task: str, depth: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor],
                                                         torch.Tensor, int]:
    """``(train, train_y, test, test_y, classes)``: features keyed ``"<model>|<k>"`` (k blocks before the last)."""
    from hydra.utils import instantiate
    from alsatian_pl.store import BlockStore
    cfg = compose("search", zoo, task)
    data = instantiate(cfg.dataset)
    data.setup_rounds(1)
    (train_x, train_y), (test_x, test_y) = data.train_items(), data.test_items()
    xs = torch.cat([train_x.tensor(), test_x.tensor()])
    store = BlockStore(zoo / "store")
    train, test = {}, {}
    for name in candidates(zoo, task):
        t = time.perf_counter()
        model = store.load_model(name).eval()
        for k, out in enumerate(block_outputs(model, xs, depth)):
            train[f"{name}|{k}"], test[f"{name}|{k}"] = out[:len(train_y)], out[len(train_y):]
        print(f"{task} {name}: {time.perf_counter() - t:.1f} s", flush=True)
    return train, train_y, test, test_y, data.num_classes


def rankings(scores: dict[str, float], models: list[str], depth: int, higher: bool) -> dict[str, dict[str, float]]:
    """Per ranking rule, ``{model: score}``: the last block, each earlier block alone, the best of the last k."""
    best = max if higher else min
    out = {"last": {m: scores[f"{m}|0"] for m in models}}
    for k in range(1, depth):
        out[f"block -{k}"] = {m: scores[f"{m}|{k}"] for m in models}
        out[f"best of {k + 1}"] = {m: best(scores[f"{m}|{j}"] for j in range(k + 1)) for m in models}
    return out


def evaluate(zoo: Path, task: str, scorers: list[str], depth: int) -> dict[str, Any]:
    from alsatian_pl.score import SCORERS
    truth = json.loads((zoo / f"ground_truth-{task}.json").read_text())
    train, train_y, test, test_y, classes = features(zoo, task, depth)
    models = sorted(truth)
    out: dict[str, Any] = {"target": TARGETS[task].description, "scorers": {}}
    for name in scorers:
        cls = SCORERS.get(name)
        scored = cls().score(train, train_y, test, test_y, classes)
        rules = rankings({m: s.score for m, s in scored.items()}, models, depth, cls.higher_is_better)
        out["scorers"][name] = {rule: agreement(s, truth, cls.higher_is_better) for rule, s in rules.items()}
        print(task, name, {r: round(v["spearman"], 3) for r, v in out["scorers"][name].items()}, flush=True)
    return out


def table(report: dict[str, Any]) -> str:
    """Markdown: Spearman rho and top-1 regret per task, scorer and rule."""
    rules = list(next(iter(next(iter(report.values()))["scorers"].values())))
    lines = ["| target | scorer | " + " | ".join(f"{r}: ρ / regret" for r in rules) + " |",
             "|---|---|" + "---:|" * len(rules)]
    for task, data in report.items():
        for name, cells in data["scorers"].items():
            lines.append(f"| {task} | {name} | " + " | ".join(
                f"{cells[r]['spearman']:.3f} / {cells[r]['regret']:.1f}" for r in rules) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--zoo", type=Path, default=Path("/tmp/alsatian-quality"))
    p.add_argument("--tasks", default="fashion-tops4,animals10")
    p.add_argument("--scorers", default="linear,logme,knn")
    p.add_argument("--depth", type=int, default=3)
    a = p.parse_args()
    report = {t: evaluate(a.zoo, t, a.scorers.split(","), a.depth) for t in a.tasks.split(",")}
    (a.zoo / "multiblock.json").write_text(json.dumps(report, indent=1))
    print(table(report))


if __name__ == "__main__":
    main()
