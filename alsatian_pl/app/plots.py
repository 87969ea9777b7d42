"""Plots saved next to a search's results.json (matplotlib, no display needed): the ranking, each model's score
coloured by the round it was eliminated in, and the time breakdown."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

from ..io import atomic_write
from ..units import display_names

__all__ = ["PHASES", "ranking_plot", "time_plot"]

PHASES = ("prepare_data", "prepare_model", "inference", "proxy_scoring", "planning", "checkpoint")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def ranking_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Bars of every model's last score, best first, coloured by the round it was eliminated in (or kept)."""
    plt = _pyplot()
    ranking, rounds = report["ranking"], len(report["rounds"])
    names = display_names([r["model"] for r in ranking])
    colors = plt.get_cmap("viridis", max(rounds, 1))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(ranking) + 2), 4))
    for i, r in enumerate(ranking):
        out = r["eliminated_in_round"]
        ax.bar(i, r["score"], color="#d62728" if out is None else colors(out),
               label="kept" if out is None else f"out in round {out + 1}")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xticks(range(len(ranking)), [names[r["model"]] for r in ranking], rotation=90, fontsize=7)
    ax.set_ylabel("proxy score (last round scored)")
    ax.set_title(f"ranking ({report['strategy']}, {len(ranking)} models, {rounds} rounds)")
    return _save(fig, plt, path)


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
