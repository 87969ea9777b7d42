"""PNG figures in the paper's style from a benchmark summary (``summary.json``): grouped end-to-end bars (figure 10),
stacked time breakdowns (figure 11), cache-budget bars (figure 16) and scaling lines.

    python bench/plots.py bench/results/<run>     # redraw from a results folder
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PHASES = ("prepare_data", "prepare_model", "inference", "proxy_scoring", "planning")
PHASE_LABELS = {"prepare_data": "prepare data", "prepare_model": "prepare model", "inference": "inference",
                "proxy_scoring": "proxy scoring", "planning": "planning", "other": "other"}
PHASE_COLORS = {"prepare_data": "#4c72b0", "prepare_model": "#dd8452", "inference": "#55a868",
                "proxy_scoring": "#c44e52", "planning": "#8172b3", "other": "#bbbbbb"}
STRATEGY_COLORS = {"base": "#7f7f7f", "shift": "#1f77b4", "alsatian": "#d62728"}
STRATEGY_SHORT = {"base": "B", "shift": "S", "alsatian": "A"}
DIST_ORDER = ("top50", "top25", "top_layers")
DIST_LABELS = {"top_layers": "Top Layers", "top25": "Top 25%", "top50": "Top 50%"}
DIST_SHORT = {"top_layers": "top", "top25": "25", "top50": "50"}


def _plt():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def make_all(summary: dict[str, Any], out: Path) -> list[Path]:
    """Draw every figure the summary has data for; returns the files written ([] without matplotlib)."""
    plt = _plt()
    if plt is None:
        print("matplotlib is not installed: no PNG plots (pip install matplotlib)", file=sys.stderr)
        return []
    made = []
    summary = {**summary, "cells": [c for c in summary.get("cells") or [] if "error" not in c]}
    if summary["cells"]:
        made += [fig10(plt, summary, out / "fig10.png"), fig11(plt, summary, out / "fig11.png")]
    if summary.get("fig16") and summary["fig16"].get("rows"):
        made.append(fig16(plt, summary["fig16"], out / "fig16.png"))
    if summary.get("scaling") and (summary["scaling"]["models"] or summary["scaling"]["items"]):
        made.append(scaling(plt, summary["scaling"], out / "scaling.png"))
    return made


def fig10(plt, summary: dict[str, Any], path: Path) -> Path:
    cells = summary["cells"]
    dists = [d for d in DIST_ORDER if any(c["distribution"] == d for c in cells)]
    archs = list(dict.fromkeys(c["arch"] for c in cells))
    fig, axes = plt.subplots(len(dists), 1, figsize=(max(6, 2.2 * len(archs) + 2), 3.2 * len(dists)), squeeze=False)
    width = 0.26
    for ax, dist in zip(axes[:, 0], dists):
        for i, arch in enumerate(archs):
            cell = next((c for c in cells if c["arch"] == arch and c["distribution"] == dist), None)
            if cell is None:
                continue
            for j, s in enumerate(("base", "shift", "alsatian")):
                x = i + (j - 1) * width
                t = cell["time_s"][s]
                ax.bar(x, t, width, color=STRATEGY_COLORS[s], label=s if i == 0 else None)
                ax.text(x, t, f"{t:.0f}" if t >= 10 else f"{t:.1f}", ha="center", va="bottom", fontsize=7)
            xa = i + width
            ax.hlines(cell["bound"]["bound_s"], xa - width / 2, xa + width / 2, colors="black", linewidth=2,
                      label="lower bound" if i == 0 else None)
            ax.text(xa, cell["time_s"]["alsatian"] * 2.2, f"{cell['speedup']['base_over_alsatian']:.1f}x B\n"
                    f"{cell['speedup']['shift_over_alsatian']:.1f}x S", ha="center", va="bottom", fontsize=7,
                    color=STRATEGY_COLORS["alsatian"])
        ax.set_yscale("log")
        ax.set_xticks(range(len(archs)))
        ax.set_xticklabels([_arch_label(summary, a) for a in archs], fontsize=8)
        ax.set_ylabel("search time (s, log)")
        ax.set_title(f"{DIST_LABELS[dist]}: {summary['cells'][0]['num_models']} models", fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
        ymin, ymax = ax.get_ylim()
        ax.set_ylim(ymin, ymax * 4)
    axes[0, 0].legend(fontsize=8, ncol=4, loc="upper right")
    fig.suptitle("End-to-end search time (figure 10)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _size(c: dict[str, Any]) -> str:
    return c.get("size_label") or f"{c['image_size']}px"


def _arch_label(summary: dict[str, Any], arch: str) -> str:
    c = next(c for c in summary["cells"] if c["arch"] == arch)
    return f"{arch}\n{c['items']} items, {_size(c)}"


def fig11(plt, summary: dict[str, Any], path: Path) -> Path:
    cells = summary["cells"]
    archs = list(dict.fromkeys(c["arch"] for c in cells))
    fig, axes = plt.subplots(1, len(archs), figsize=(max(7.0, 3.4 * len(archs)), 4.8), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        ticks: list[tuple[float, str]] = []
        x = 0.0
        for dist in DIST_ORDER:
            cell = next((c for c in cells if c["arch"] == arch and c["distribution"] == dist), None)
            if cell is None:
                continue
            for s in ("base", "shift", "alsatian"):
                b = cell["breakdown_s"][s]
                bottom = 0.0
                other = max(0.0, b["total"] - sum(b[p] for p in PHASES))
                for p in (*PHASES, "other"):
                    v = other if p == "other" else b[p]
                    ax.bar(x, v, 0.7, bottom=bottom, color=PHASE_COLORS[p],
                           label=PHASE_LABELS[p] if (not ticks and ax is axes[0][0]) else None)
                    bottom += v
                ticks.append((x, f"{STRATEGY_SHORT[s]}-{DIST_SHORT[dist]}"))
                x += 1
            x += 0.5
        ax.set_xticks([t for t, _ in ticks])
        ax.set_xticklabels([lab for _, lab in ticks], rotation=90, fontsize=8)
        ax.set_ylabel("time (s)")
        ax.set_title(_arch_label(summary, arch).replace("\n", ", "), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=6, fontsize=8)
    fig.suptitle("Time breakdown (figure 11)\nB base, S shift, A alsatian; 50 / 25 / top = Top 50% / Top 25% / "
                 "Top Layers", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fig16(plt, f16: dict[str, Any], path: Path) -> Path:
    rows = [r for r in f16["rows"] if "error" not in r]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    names = []
    for i, r in enumerate(rows):
        bottom = 0.0
        other = max(0.0, r["time_s"] - sum(r["breakdown_s"].values()))
        for p in (*PHASES, "other"):
            v = other if p == "other" else r["breakdown_s"][p]
            ax.bar(i, v, 0.6, bottom=bottom, color=PHASE_COLORS[p], label=PHASE_LABELS[p] if i == 0 else None)
            bottom += v
        budget = "unlimited" if r["budget_bytes"] is None else f"{r['budget_bytes'] / 2**20:.0f} MiB"
        names.append(f"{r['budget']}\n{budget}\n{'x'.join(map(str, r['partitions']))} part.")
        ax.text(i, bottom, f"{r['time_s']:.1f}s", ha="center", va="bottom", fontsize=8)
        ax2.bar(i, r["peak_rss_bytes"] / 2**20, 0.6, color="#4c72b0", label="peak RSS (search)" if i == 0 else None)
        ax2.bar(i, r["rss_before_search_bytes"] / 2**20, 0.6, color="#a6bddb",
                label="RSS before the search" if i == 0 else None)
        ax2.bar(i, r["observed_peak_bytes"] / 2**20, 0.3, color="#dd8452",
                label="cache peak (observed)" if i == 0 else None)
        ax2.text(i, r["peak_rss_bytes"] / 2**20, f"{r['peak_rss_bytes'] / 2**20:.0f}", ha="center", va="bottom",
                 fontsize=8)
    for a in (ax, ax2):
        a.set_xticks(range(len(rows)))
        a.set_xticklabels(names, fontsize=7)
        a.grid(axis="y", alpha=0.3)
    ax.set_ylabel("time (s)")
    ax.set_title("alsatian time by cache budget", fontsize=9)
    ax.legend(fontsize=7)
    ax2.set_ylabel("MiB")
    ax2.set_title("peak host RSS (process) and cache peak", fontsize=9)
    ax2.legend(fontsize=7)
    fig.suptitle(f"Cache budgets (figure 16): {f16['num_models']} {f16['arch']} models, "
                 f"{DIST_LABELS[f16['distribution']]}, {f16['items']} items", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def scaling(plt, sc: dict[str, Any], path: Path) -> Path:
    if any("page_cache" in r for kind in ("models", "items") for r in sc[kind]):
        return scaling_cold_warm(plt, sc, path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind, xlabel in ((axes[0], "models", "models"), (axes[1], "items", "items")):
        rows = sorted(sc[kind], key=lambda r: r[kind])
        if not rows:
            ax.set_visible(False)
            continue
        xs = [r[kind] for r in rows]
        ax.plot(xs, [r["time_s"] for r in rows], "o-", color="black", label="total")
        for p in ("inference", "proxy_scoring", "prepare_model"):
            ax.plot(xs, [r["breakdown_s"][p] for r in rows], "o--", color=PHASE_COLORS[p], label=PHASE_LABELS[p])
        for x, r in zip(xs, rows):
            ax.annotate(f"{r['time_s']:.1f}s", (x, r["time_s"]), textcoords="offset points", xytext=(0, 5),
                        ha="center", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("alsatian search time (s)")
        fixed = f"{rows[0]['items']} items" if kind == "models" else f"{rows[0]['models']} models"
        ax.set_title(f"growing {kind} ({fixed})", fontsize=9)
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Scaling: alsatian, {sc['arch']} {DIST_LABELS[sc['distribution']]}, {_size(sc)}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def scaling_cold_warm(plt, sc: dict[str, Any], path: Path) -> Path:
    """Scaling rows measured cold and warm: total time per state (top) and time per distinct block x item
    (bottom), growing models (left) and items (right)."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    styles = {"cold": ("o-", "#1f77b4"), "warm": ("s--", "#d62728")}
    for col, kind in enumerate(("models", "items")):
        top, bottom = axes[0, col], axes[1, col]
        if not sc[kind]:
            top.set_visible(False)
            bottom.set_visible(False)
            continue
        for state in sc.get("page_cache_states", ["cold", "warm"]):
            rows = sorted((r for r in sc[kind] if r["page_cache"] == state), key=lambda r: r[kind])
            if not rows:
                continue
            xs = [r[kind] for r in rows]
            style, color = styles.get(state, ("o-", "black"))
            top.plot(xs, [r["time_s"] for r in rows], style, color=color, label=f"{state}: total")
            top.plot(xs, [r["breakdown_s"]["prepare_model"] for r in rows], ":", color=color,
                     label=f"{state}: prepare model")
            bottom.plot(xs, [r["us_per_block_item"] for r in rows], style, color=color, label=state)
            for x, r in zip(xs, rows):
                top.annotate(f"{r['time_s']:.1f}s" + (f"\n{r['items']} it." if kind == "models" else ""),
                             (x, r["time_s"]), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=6)
        ticks = sorted({r[kind] for r in sc[kind]})
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(x) for x in ticks])
            ax.minorticks_off()
            ax.set_xlabel(kind)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        top.set_ylabel("alsatian search time (s)")
        bottom.set_ylabel("µs per distinct block × item")
        bottom.set_ylim(bottom=0)
        fixed = "items as labelled" if kind == "models" else f"{sc[kind][0]['models']} models"
        top.set_title(f"growing {kind} ({fixed})", fontsize=9)
    fig.suptitle(f"Scaling: alsatian, {sc['arch']} {DIST_LABELS[sc['distribution']]}, {_size(sc)}, page cache "
                 "cold and warm", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    for p in make_all(json.loads((folder / "summary.json").read_text()), folder):
        print(p)
