"""The search's report for people and for files: :class:`SearchReport` (a :class:`SearchCallback`) writes
``results.json`` and the ranking and time plots as the search ends; :func:`print_report` prints the ranking, the
time breakdown and the rounds as tables."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from ..errors import AlsatianWarning
from ..halving import SearchCallback, SearchResult, SearchState, SuccessiveHalving
from ..io import write_json
from ..units import display_names, format_bytes

__all__ = ["SearchReport", "print_report"]


class SearchReport(SearchCallback):
    """What results.json holds (strategy, config, zoo and candidates, the filter that chose them, the dataset, the
    result, the store), kept in :attr:`report` and, with an ``output_dir``, written there with the plots (rank 0)."""

    def __init__(self, cfg: Any, zoo: Any, output_dir: str | Path | None = None):
        self.cfg, self.zoo = cfg, zoo
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.report: dict[str, Any] | None = None

    def on_search_end(self, search: SuccessiveHalving, state: SearchState, result: SearchResult) -> None:
        report = results_json(self.cfg, self.zoo, search.data.describe(), result)
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
        "store": {"models": stats.models, "distinct_blocks": stats.distinct_blocks,
                  "logical_bytes": stats.logical_bytes, "physical_bytes": stats.physical_bytes},
    }


def _where(config: dict[str, Any]) -> dict[str, Any]:
    """The ``models.where`` conditions that chose the candidates (empty: every model of the zoo or zoos)."""
    return dict(config.get("where", {})) if isinstance(config, dict) else {}


def _plots(report: dict[str, Any], out: Path) -> None:
    """The ranking and time-breakdown PNGs next to results.json (a warning, not a failure, without matplotlib)."""
    try:
        from .plots import ranking_plot, time_plot
        ranking_plot(report, out / "ranking.png")
        time_plot(report, out / "time.png")
    except ImportError as exc:
        warnings.warn(f"no plots: {exc} (pip install matplotlib)", AlsatianWarning, stacklevel=2)


def print_report(report: dict[str, Any], console: Console | None = None, top: int = 10,
                 results: str | Path | None = None) -> None:
    """The ranking as a table (short model names: the part that tells them apart) and the time breakdown, as a
    person reads them; when only the top rows are shown, how many more there are and where (``results``, else the
    report's ``results_file``)."""
    console = console or Console()
    ranking = report["ranking"]
    names = display_names([row["model"] for row in ranking])
    table = Table(title=f"ranking ({report['strategy']}, zoo {report['zoo']})")
    for col in ("#", "model", "score", "test loss", "eliminated in round"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for i, row in enumerate(ranking[:top]):
        out = "-" if row["eliminated_in_round"] is None else str(row["eliminated_in_round"] + 1)
        table.add_row(str(i + 1), names[row["model"]], f"{row['score']:.4f}", f"{row['test_loss']:.4f}", out)
    console.print(table)
    if len(ranking) > top:
        where = results or report.get("results_file") or "results.json"
        console.print(f"{len(ranking) - top} more rows in {where}", highlight=False)
    for line in confidence_lines(report, names):
        console.print(line, highlight=False)
    _print_times(report, console)


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


def _print_times(report: dict[str, Any], console: Console) -> None:
    """The time breakdown, the per-round table and the store line."""
    t = report["timings_s"]
    times = Table(title="time (s)")
    for k in ("prepare_data", "prepare_model", "inference", "proxy_scoring", "planning", "total"):
        times.add_column(k, justify="right")
    times.add_row(*(f"{t[k]:.2f}" for k in ("prepare_data", "prepare_model", "inference", "proxy_scoring",
                                             "planning", "total")))
    console.print(times)
    rounds = Table(title="rounds")
    for col in ("round", "models", "items", "partitions", "inference steps", "distinct blocks", "planned peak",
                "observed peak"):
        rounds.add_column(col, justify="right")
    for r in report["rounds"]:
        rounds.add_row(str(r["round"] + 1), str(r["models"]), str(r["items"]), str(r["partitions"]),
                       str(r["inference_steps"]), str(r["distinct_blocks"]), format_bytes(r["planned_peak_bytes"]),
                       format_bytes(r["observed_peak_bytes"]))
    console.print(rounds)
    st = report["store"]
    console.print(f"store: {st['models']} models, {st['distinct_blocks']} distinct blocks, "
                  f"{format_bytes(st['logical_bytes'])} logical, {format_bytes(st['physical_bytes'])} on disk; "
                  f"peak host RSS {format_bytes(report['memory']['peak_host_rss_bytes'])}")
