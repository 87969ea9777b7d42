"""The "Search quality" Markdown section (and its plot) from the quality.json that evaluate.py writes.

    python bench/quality/quality_report.py /tmp/alsatian-quality/quality-*.json [--write bench/notes/quality.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

PLOT = Path(__file__).resolve().parents[1] / "results" / "quality" / "quality.png"


def _zoo_lines(report: dict[str, Any]) -> list[str]:
    zoo = report["zoo"]
    lines = []
    for task, arch in (("image", "EfficientNet-Lite0 (ImageNet weights)"), ("text", "all-MiniLM-L6-v2")):
        variants = zoo.get(task, [])
        if not variants:
            continue
        tasks = sorted({v["task"] for v in variants})
        lines.append(f"- **{task}**: {len(variants)} variants of {arch}, each fine-tuned on one of {len(tasks)} "
                     f"source tasks ({', '.join(tasks)}); blocks trained "
                     f"{min(v['blocks'] for v in variants)}–{max(v['blocks'] for v in variants)}, "
                     f"{sum(v['parent'] >= 0 for v in variants)} derived from an earlier variant.")
    seconds = zoo["seconds"] if isinstance(zoo["seconds"], dict) else {"the zoo": zoo["seconds"]}
    built = ", ".join(f"{task} {s:.0f} s" for task, s in seconds.items())
    lines.append(f"- Built by `python bench/quality/build_zoo.py` ({built}; seconds on the machine of that run).")
    return lines


def _truth_table(task: str, data: dict[str, Any]) -> list[str]:
    truth = data["ground_truth"]
    accs = sorted(v["accuracy"] for v in truth.values())
    seconds = sum(v["seconds"] for v in truth.values())
    return [f"Ground truth ({data['target']}): fine-tuned accuracy {100 * accs[0]:.1f}–{100 * accs[-1]:.1f} % "
            f"(median {100 * statistics.median(accs):.1f} %) over {len(truth)} candidates; fine-tuning all of them "
            f"took {seconds:.0f} s."]


def _scorer_table(data: dict[str, Any]) -> list[str]:
    rows = ["| scorer | Spearman ρ | Kendall τ | top-1 regret (points) | best in top 3 | best in 90% set (size) | "
            "halving: best in set (size) | scoring s | halving ≠ exhaustive | halving regret vs exhaustive | "
            "robust ≠ exhaustive | robust regret vs exhaustive |",
            "|---|---:|---:|---:|:-:|:-:|:-:|---:|:-:|---:|:-:|---:|"]
    for name, row in data["scorers"].items():
        ex, paper = row["exhaustive"], row["schedules"]["paper"]
        robust = row["schedules"].get("robust")
        rb = ("yes" if robust["differs"] else "no", f"{robust['regret_vs_base']:.1f}") if robust else ("–", "–")
        differs = "yes" if paper["differs"] else "no"
        rows.append(f"| {name} | {ex['spearman']:.3f} | {ex['kendall']:.3f} | {ex['regret']:.1f} | "
                    f"{'✓' if ex['top3'] else '✗'} | {_in_set(ex)} | {_in_set(paper)} | {row['scoring_s']:.2f} | "
                    f"{differs} | "
                    f"{paper['regret_vs_base']:.1f} | {rb[0]} | {rb[1]} |")
    return rows


def _in_set(cell: dict[str, Any]) -> str:
    """✓/✗ and the size of a search's confident set holding the fine-tuned best ('–' where none was computed)."""
    if cell.get("in_set") is None:
        return "–"
    return f"{'✓' if cell['in_set'] else '✗'} ({cell['set_size']})"


def _schedule_summary(report: dict[str, Any]) -> list[str]:
    lines = []
    for kind in ("paper", "robust"):
        cells = [row["schedules"][kind] for d in report["tasks"].values() for row in d["scorers"].values()
                 if kind in row["schedules"]]
        if not cells:
            continue
        regrets = [c["regret_vs_base"] for c in cells]
        cost = sum(c["model_items"] for c in cells)
        exhaustive = sum(m * i for d in report["tasks"].values() for row in d["scorers"].values()
                         if kind in row["schedules"] for m, i in row["base_search"]["rounds"])
        secs = sum(c["seconds"] for c in cells)
        lines.append(f"- **{kind} schedule**: the winner differs from exhaustive scoring's in "
                     f"{sum(c['differs'] for c in cells)} of {len(cells)} cells (scorer × task); regret against "
                     f"exhaustive scoring: mean {statistics.mean(regrets):.2f}, max {max(regrets):.1f} points; "
                     f"{cost:,} model-items pushed ({cost / exhaustive:.2f}× of exhaustive scoring's {exhaustive:,}), "
                     f"{secs:.0f} s of search in all.")
    for task, data in report["tasks"].items():
        if data.get("robust"):
            lines.append(f"- Robust schedule on {task}: `{' '.join(data['robust'])}`.")
    lines.append("- Seconds are with every model's features of a round's items kept in the feature cache "
                 "(`search.feature_cache`) by the first search that computed them, so they mostly count scoring; "
                 "model-items (models × items pushed, summed over rounds) is the cost measure.")
    return lines


def goals(report: dict[str, Any]) -> list[str]:
    """Per scorer over every target: mean Spearman rho (exhaustive), how often the halving search's 90% confident
    set holds the fine-tuned best and its mean size, and the regret of the answer confirmed by short fine-tunes."""
    tasks = report["tasks"]
    scorers = list(next(iter(tasks.values()))["scorers"])
    rows = [f"Over {len(tasks)} targets ({', '.join(tasks)}):", "",
            "| scorer | mean ρ | min ρ | top-1 regret mean / max | 90% set holds the best | mean set size | "
            "confirmed regret mean / max | short fine-tunes (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in scorers:
        cells = [d["scorers"][name] for d in tasks.values() if name in d["scorers"]]
        rho = [c["exhaustive"]["spearman"] for c in cells]
        regret = [c["exhaustive"]["regret"] for c in cells]
        paper = [c["schedules"]["paper"] for c in cells]
        held = [p["in_set"] for p in paper if p.get("in_set") is not None]
        sizes = [p["set_size"] for p in paper if p.get("set_size")]
        conf = [p["confirmed"] for p in paper if "confirmed" in p]
        cr = [c["regret"] for c in conf]
        rows.append(f"| {name} | {statistics.mean(rho):.3f} | {min(rho):.3f} | {statistics.mean(regret):.2f} / "
                    f"{max(regret):.1f} | {sum(held)}/{len(held)} | "
                    f"{statistics.mean(sizes) if sizes else float('nan'):.1f} | "
                    + (f"{statistics.mean(cr):.2f} / {max(cr):.1f} | {sum(c['finetune_s'] for c in conf):.0f} |"
                       if cr else "– | – |"))
    everything = sum(v["seconds"] for d in tasks.values() for v in d["ground_truth"].values())
    cold = sum(d.get("cold_search_s", 0.0) for d in tasks.values())
    rows += ["", f"Fine-tuning every candidate on every target with the recipe (the ground truth) took "
                 f"{everything:.0f} s; the cold halving searches ({next(iter(tasks.values())).get('cold_scorer')} "
                 f"scorer, no feature cache) took {cold:.0f} s in all."]
    return rows


def plot(report: dict[str, Any], path: Path = PLOT) -> Path:
    """Spearman ρ of every scorer on each target, as bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(report["tasks"])
    scorers = list(next(iter(report["tasks"].values()))["scorers"])
    fig, ax = plt.subplots(figsize=(9, 3.2))
    width = 0.8 / len(tasks)
    for k, task in enumerate(tasks):
        cells = report["tasks"][task]["scorers"]
        rho = [cells[s]["exhaustive"]["spearman"] if s in cells else float("nan") for s in scorers]
        ax.bar([i + k * width for i in range(len(scorers))], rho, width, label=task)  # the targets are listed above
    ax.set_xticks([i + width * (len(tasks) - 1) / 2 for i in range(len(scorers))], scorers)
    ax.axhline(0.7, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("Spearman ρ (score vs fine-tuned accuracy)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, not over them
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def section(report: dict[str, Any]) -> str:
    """The Markdown section (bench/report.py adds it to BENCHMARKS.md's side benchmarks)."""
    lines = ["## Search quality on a real fine-tuned zoo", "",
             "Which proxy picks the model that fine-tunes best, and what successive halving costs in quality. "
             "Made by `python bench/quality/build_zoo.py` then `python bench/quality/evaluate.py` (see their "
             "docstrings); the numbers below are from one run of each.", "", *_zoo_lines(report), ""]
    for task, data in report["tasks"].items():
        lines += [f"### {task}: {data['target']}", "", *_truth_table(task, data), "", *_scorer_table(data), ""]
    lines += ["### Over all targets", "", *goals(report), "", "### The schedule", "", *_schedule_summary(report), "",
              f"![Spearman ρ per scorer](bench/results/quality/{PLOT.name})", ""]
    plot(report)
    return "\n".join(lines)


def rho_matrix(report: dict[str, Any]) -> list[str]:
    """Spearman rho of every scorer (rows) on every target (columns), exhaustive scoring against the ground truth;
    the first row gives each target's fine-tuned accuracy range."""
    tasks = report["tasks"]
    scorers = list(next(iter(tasks.values()))["scorers"])
    rows = ["| | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    spread = [sorted(v["accuracy"] for v in d["ground_truth"].values()) for d in tasks.values()]
    rows.append("| fine-tuned accuracy, % | " + " | ".join(f"{100 * a[0]:.1f}–{100 * a[-1]:.1f}" for a in spread)
                + " |")
    for name in scorers:
        rows.append(f"| ρ {name} | " + " | ".join(
            f"{d['scorers'][name]['exhaustive']['spearman']:.2f}" if name in d["scorers"] else "–"
            for d in tasks.values()) + " |")
    return rows


def compact(report: dict[str, Any], plot_path: Path) -> str:
    """The several-target section: the targets, rho per scorer and target, the goals, the schedule, a plot."""
    lines = [*(f"- **{t}**: {d['target']}" for t, d in report["tasks"].items()), "", *rho_matrix(report), "",
             *goals(report), "", *_schedule_summary(report), "",
             f"![Spearman ρ per scorer and target](bench/results/quality/{plot_path.name})", ""]
    plot(report, plot_path)
    return "\n".join(lines)


def merged(paths: list[Path]) -> dict[str, Any]:
    """One report from evaluate.py's per-target files (their targets side by side; the zoo is the last file's)."""
    reports = [json.loads(p.read_text()) for p in paths]
    for r in reports:
        for data in r["tasks"].values():
            data.setdefault("robust", r.get("robust", []))
    return {**reports[-1], "tasks": {t: d for r in reports for t, d in r["tasks"].items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("quality", type=Path, nargs="+")
    p.add_argument("--write", type=Path)
    p.add_argument("--compact", type=Path, help="the several-target section instead, its plot at this path")
    a = p.parse_args()
    text = compact(merged(a.quality), a.compact) if a.compact else section(merged(a.quality))
    if a.write:
        a.write.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
