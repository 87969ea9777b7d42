"""The search's report for people and for files: :class:`SearchReport` (a :class:`SearchCallback`) writes
``results.json`` and the ranking and time plots as the search ends; :func:`print_report` prints the ranking, the
time breakdown and the rounds as tables."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console

from ..errors import AlsatianWarning
from ..halving import SearchCallback, SearchResult, SearchState, SuccessiveHalving
from ..io import write_json
from ..units import display_names, format_bytes
from .output import Column, Output

__all__ = ["SearchReport", "print_report"]


class SearchReport(SearchCallback):
    """What results.json holds (strategy, config, zoo and candidates, the filter that chose them, the dataset, the
    result, the store), kept in :attr:`report` and, with an ``output_dir``, written there with the plots (rank 0)."""

    def __init__(self, cfg: Any, zoo: Any, output_dir: str | Path | None = None, about: str | None = None):
        self.cfg, self.zoo, self.about = cfg, zoo, about
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.report: dict[str, Any] | None = None

    def on_search_end(self, search: SuccessiveHalving, state: SearchState, result: SearchResult) -> None:
        report = results_json(self.cfg, self.zoo, search.data.describe(), result)
        if self.about:
            report["zoo_description"] = self.about
        if self.output_dir is not None:
            path = write_json(self.output_dir / "results.json", report)
            _plots(report, self.output_dir)
            report = {**report, "results_file": str(path)}
        self.report = report


def results_json(cfg: Any, zoo: Any, dataset: dict[str, Any], result: SearchResult) -> dict[str, Any]:
    """What results.json holds: strategy, config, the candidates (and the filter that chose them), the result."""
    stats = zoo.stats()
    return {
        "strategy": result.strategy,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "zoo": zoo.name,
        "candidates": list(zoo.models),
        "where": _where(zoo.config),
        "dataset": dataset,
        **{k: v for k, v in result.to_json().items() if k != "strategy"},
        "skipped": [{"name": n, "reason": why} for n, why in getattr(zoo, "skipped", {}).items()] + result.skipped,
        "store": {"models": stats.models, "distinct_blocks": stats.distinct_blocks,
                  "logical_bytes": stats.logical_bytes, "physical_bytes": stats.physical_bytes},
    }


def _where(config: dict[str, Any]) -> dict[str, Any]:
    """The ``models.where`` conditions that chose the candidates (empty: every model of the zoo or zoos)."""
    return dict(config.get("where", {})) if isinstance(config, dict) else {}


def _plots(report: dict[str, Any], out: Path) -> None:
    """The ranking and time-breakdown PNGs next to results.json: a warning, not a failure, when they cannot be drawn
    or written (no matplotlib, a full disk): results.json is already written and the ranking is still printed."""
    try:
        from .plots import ranking_plot, time_plot
        ranking_plot(report, out / "ranking.png")
        time_plot(report, out / "time.png")
    except ImportError as exc:
        warnings.warn(f"no plots: {exc} (pip install matplotlib)", AlsatianWarning, stacklevel=2)
    except Exception as exc:  # noqa: BLE001 - a plot is a view of results.json, never worth the run's ending
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        warnings.warn(f"no plots: {reason}; results.json holds everything they show", AlsatianWarning, stacklevel=2)


def print_report(report: dict[str, Any], console: Console | None = None, top: int = 10,
                 results: str | Path | None = None) -> None:
    """The ranking as a table (short model names: the part that tells them apart), the time breakdown and the
    rounds, as a person reads them: rich tables that fit an 80-column terminal (short headers, units in the
    headers), plain full-width rows when the console is not a terminal (a pipe, a log file). When only the top rows
    are shown, how many more there are and where (``results``, else the report's ``results_file``)."""
    out = Output(console or Console())
    ranking = report["ranking"]
    names = display_names([row["model"] for row in ranking])
    rows = [[str(i + 1), names[row["model"]], f"{row['score']:.4f}", f"{row['test_loss']:.4f}",
             "-" if row["eliminated_in_round"] is None else str(row["eliminated_in_round"] + 1)]
            for i, row in enumerate(ranking[:top])]
    out.table(f"ranking ({report['strategy']})", [
        Column("#", right=True), Column("model", fold=True), Column("score", right=True),
        Column("test loss", right=True), Column("out in", right=True)], rows)
    more = len(ranking) - top
    where = results or report.get("results_file") or "results.json"
    about = report.get("zoo_description")
    out.line(f"zoo {report['zoo']}" + (f": {about}" if about else ""))
    out.line("out in: the round a model was eliminated in (-: kept to the end)")
    skipped = report.get("skipped") or []
    if skipped:
        shown = ", ".join(names.get(s["name"], s["name"]) for s in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        out.line(f"left out {len(skipped)} candidate(s) that cannot be scored ({shown}): skipped in {where}")
    if more > 0:
        out.line(f"{more} more rows in {where}")
    for line in confidence_lines(report, names):
        out.line(line)
    _print_times(report, out)


def confidence_lines(report: dict[str, Any], names: dict[str, str]) -> list[str]:
    """How sure the ranking is, in a line or three: the models that could be best at the search's level, those
    halving pruned though they could have been, and an ensemble's agreement (nothing when the search has no level)."""
    level, best = report.get("confidence"), report.get("confident_set")
    lines = []
    if level is not None:
        shown = ", ".join(names.get(m, m) for m in best) if best else "unknown (the scores carry no uncertainty)"
        lines.append(f"could be best ({level:.0%}): {shown}")
    pruned = report.get("pruned_contenders") or []
    if pruned:
        rounds = sorted({r["eliminated_in_round"] + 1 for r in report["ranking"] if r["model"] in pruned})
        lines.append(f"halving pruned {len(pruned)} model(s) its round could not yet rule out (round(s) "
                     f"{', '.join(map(str, rounds))}: pruned_contenders in results.json); search.noise_margin=1 "
                     "keeps such models longer")
    if report.get("agreement"):
        lines.append(f"agreement of the ensemble's scorers (Kendall tau, all candidates): "
                     f"{report['agreement']['mean']:.2f}")
    return lines


TIMES = {"prepare_data": "data", "prepare_model": "models", "inference": "inference", "proxy_scoring": "scoring",
         "planning": "planning", "total": "total"}


def _unit(values: list[int]) -> tuple[str, float]:
    """The byte unit (and its size) that writes the largest of ``values`` with at most four digits."""
    top = max(values, default=0)
    for name, size in (("KiB", 1024.0), ("MiB", 1024.0 ** 2), ("GiB", 1024.0 ** 3)):
        if top < 1000 * size:
            return name, size
    return "TiB", 1024.0 ** 4


def _print_times(report: dict[str, Any], out: Output) -> None:
    """The time breakdown, the per-round table and the store line."""
    t = report["timings_s"]
    out.table("time (s)", [Column(h, right=True) for h in TIMES.values()], [[f"{t[k]:.2f}" for k in TIMES]])
    rounds = report["rounds"]
    unit, size = _unit([r[k] for r in rounds for k in ("planned_peak_bytes", "observed_peak_bytes")])
    columns = ("round", "models", "items", "parts", "steps", "blocks", "planned", "observed")
    out.table(f"rounds (peak memory in {unit})", [Column(c, right=True) for c in columns], [
        [str(r["round"] + 1), str(r["models"]), str(r["items"]), str(r["partitions"]), str(r["inference_steps"]),
         str(r["distinct_blocks"]), f"{r['planned_peak_bytes'] / size:.1f}", f"{r['observed_peak_bytes'] / size:.1f}"]
        for r in rounds])
    out.line("parts: partitions of the data; steps: inference steps; blocks: distinct blocks")
    if report.get("resumed_from_round"):  # 0-based: the first round this run ran
        out.line(f"resumed after round {report['resumed_from_round']}: the times include the earlier run's rounds")
    st = report["store"]
    out.line(f"store: {st['models']} models, {st['distinct_blocks']} distinct blocks, "
             f"{format_bytes(st['logical_bytes'])} logical, {format_bytes(st['physical_bytes'])} on disk; "
             f"peak host RSS {format_bytes(report['memory']['peak_host_rss_bytes'])}")
