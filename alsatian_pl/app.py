"""Glue between Hydra configs and the stages: instantiate the data module, the zoo and the searcher, run, report.

``search.py`` and ``train.py`` stay thin: they call :func:`run_search` with the composed config. The ``models`` and
``search`` config groups are partial ``_target_`` nodes: the zoo factory takes the store, the searcher the store and
the data module.
"""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Any, Callable

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from .data import SearchDataModule
from .errors import AlsatianError
from .halving import SearchResult
from .store import BlockStore
from .units import format_bytes


def run_search(cfg: DictConfig, output_dir: str | Path | None = None, data: SearchDataModule | None = None
               ) -> tuple[SearchResult, dict[str, Any]]:
    """Run the search the config describes; write ``results.json`` into ``output_dir`` (if given) and return it.

    ``data``: an already built data module for ``cfg.dataset`` (its prepared items are reused), else one is made.
    """
    data = data if data is not None else instantiate(cfg.dataset)
    data.setup()  # prepare (and validate) the data before anything is written to the store
    store = BlockStore(cfg.store.root)
    zoo = instantiate(cfg.models, _convert_="all")(store=store, progress=bool(cfg.search.progress))
    result = instantiate(cfg.search)(store=store, data=data).run(zoo.models)
    stats = zoo.stats()
    report = {
        "strategy": result.strategy,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "zoo": zoo.name,
        "dataset": data.describe(),
        **{k: v for k, v in result.to_json().items() if k != "strategy"},
        "store": {"models": stats.models, "distinct_blocks": stats.distinct_blocks,
                  "logical_bytes": stats.logical_bytes, "physical_bytes": stats.physical_bytes},
    }
    if output_dir is not None:
        path = Path(output_dir) / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
    return result, report


def print_report(report: dict[str, Any], console: Console | None = None, top: int = 10) -> None:
    """The ranking as a table and the time breakdown, as a person reads them."""
    console = console or Console()
    table = Table(title=f"ranking ({report['strategy']}, zoo {report['zoo']})")
    for col in ("#", "model", "score", "test loss", "eliminated in round"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for i, row in enumerate(report["ranking"][:top]):
        out = "-" if row["eliminated_in_round"] is None else str(row["eliminated_in_round"] + 1)
        table.add_row(str(i + 1), row["model"], f"{row['score']:.4f}", f"{row['test_loss']:.4f}", out)
    console.print(table)
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


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Entry-point decorator: an AlsatianError prints one clear message (no traceback) and exits with status 2."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            cause = exc
            while cause is not None and not isinstance(cause, AlsatianError):
                cause = cause.__cause__  # hydra's instantiate wraps errors raised in constructors
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(2)
    return wrapper
