"""Plots saved next to a search's results.json (matplotlib, no display needed): the ranking, each model's score
coloured by the round it was eliminated in, and the time breakdown."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

from ..io import atomic_write
from ..units import display_names

__all__ = ["PHASES", "ranking_plot", "time_plot", "score_range", "scorer_name"]

PHASES = ("prepare_data", "prepare_model", "inference", "proxy_scoring", "planning", "checkpoint")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def ranking_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Bars of every model's last score, best first, coloured by the round it was eliminated in (or kept), on an
    axis that spans the scores (not from 0: a 0.55-0.83 spread stays visible); the title names the scorer."""
    plt = _pyplot()
    ranking, rounds = report["ranking"], len(report["rounds"])
    names = display_names([r["model"] for r in ranking])
    colors = plt.get_cmap("viridis", max(rounds, 1))
    low, high = score_range([r["score"] for r in ranking])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(ranking) + 2), 4))
    for i, r in enumerate(ranking):
        out = r["eliminated_in_round"]
        ax.bar(i, r["score"] - low, bottom=low, color="#d62728" if out is None else colors(out),
               label="kept" if out is None else f"out in round {out + 1}")
    ax.set_ylim(low, high)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xticks(range(len(ranking)), [names[r["model"]] for r in ranking], rotation=90, fontsize=7)
    ax.set_ylabel(f"{scorer_name(report)} score (last round scored)")
    ax.set_title(ranking_title(report))
    return _save(fig, plt, path)


def scorer_name(report: dict[str, Any]) -> str:
    """The proxy scorer of the report's config (``search.scorer.name``), else ``proxy``."""
    scorer = ((report.get("config") or {}).get("search") or {}).get("scorer") or {}
    return str(scorer.get("name", "proxy")) if isinstance(scorer, dict) else "proxy"


def ranking_title(report: dict[str, Any]) -> str:
    return (f"ranking by {scorer_name(report)} score ({report['strategy']}, {len(report['ranking'])} models, "
            f"{len(report['rounds'])} rounds)")


def score_range(scores: list[float]) -> tuple[float, float]:
    """The axis limits: the scores' range with 10% room either side (a lone or tied score gets room too)."""
    low, high = min(scores, default=0.0), max(scores, default=1.0)
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 0.05
    return low - pad, high + pad


def time_plot(report: dict[str, Any], path: str | Path) -> Path:
    """One stacked bar of the search's time by phase, the rest of the total shown as 'other'."""
    plt = _pyplot()
    t = report["timings_s"]
    parts = {p: t.get(p, 0.0) for p in PHASES}
    parts["other"] = max(0.0, t["total"] - sum(parts.values()))
    fig, ax = plt.subplots(figsize=(7, 2.6))
    left = 0.0
    for name, seconds in parts.items():
        ax.barh(0, seconds, left=left, label=f"{name.replace('_', ' ')} {seconds:.2f} s")
        left += seconds
    ax.set_yticks([])
    ax.set_title(f"time breakdown ({report['strategy']}), seconds: {t['total']:.2f} s in all")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    """The figure as a PNG at ``path``, written atomically (``io.atomic_write``)."""
    buffer = BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())
