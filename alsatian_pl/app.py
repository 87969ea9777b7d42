"""Glue between Hydra configs and the stages: instantiate the data module, the zoo and the searcher, run, report.

``search.py`` and ``train.py`` stay thin: they call :func:`run_search` with the composed config. The ``models`` group
instantiates a validated zoo spec (built into the store with ``spec.build(store)``), the ``search`` group is a partial
``_target_`` node that takes the store and the data module. Their error boundary is ``boundary.py``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from .data import SearchDataModule
from .errors import ConfigError
from .halving import SearchResult
from .io import write_json
from .store import BlockStore
from .units import format_bytes


def run_search(cfg: DictConfig, output_dir: str | Path | None = None, data: SearchDataModule | None = None
               ) -> tuple[SearchResult, dict[str, Any]]:
    """Run the search the config describes; write ``results.json`` into ``output_dir`` (if given, atomically) and
    return it. Every config value is checked before anything is prepared, built or written: the data module, the
    store, the searcher and the zoo spec check their part when constructed; then the data is prepared (checked
    against the rounds the zoo's size needs), and only then is the zoo built and searched.

    ``data``: an already built data module for ``cfg.dataset`` (its prepared items are reused), else one is made.
    """
    data = data if data is not None else instantiate(cfg.dataset)
    store = BlockStore(cfg.store.root)
    searcher = _call(instantiate(cfg.search), "search", store=store, data=data)
    spec = instantiate(cfg.models, _convert_="all")
    data.setup(num_rounds=searcher.strategy.num_rounds(spec.size, searcher.result_size))
    zoo = spec.build(store, progress=searcher.progress)
    result = searcher.run(zoo.models)
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
        write_json(Path(output_dir) / "results.json", report)
    return result, report


def _call(factory: Any, group: str, **kwargs: Any) -> Any:
    """``factory(**kwargs)`` (a config group's partial node); ConfigError naming the key when the group's config
    holds one the target does not take (e.g. a misspelt ``+search.<key>``)."""
    func = getattr(factory, "func", factory)
    params = inspect.signature(func).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(getattr(factory, "keywords", {})) - set(params))
        if unknown:
            raise ConfigError(f"{group}.{unknown[0]} is not an option of {func.__qualname__}: remove it or check "
                              f"its spelling (options: {', '.join(p for p in params if p not in kwargs)})")
    return factory(**kwargs)


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
