"""Glue between Hydra configs and the stages: instantiate the data module, the zoo and the searcher, run, report.

``search.py`` and ``train.py`` stay thin: they call :func:`run_search` with the composed config. The ``models`` group
instantiates a validated zoo spec (built into the store with ``spec.build(store)``; its ``where`` filter cuts the
candidates), the ``search`` group is a partial ``_target_`` node that takes the store and the data module (its
``devices``, ``num_nodes`` and ``accelerator`` keys go to :func:`distributed.launch` instead), the ``logger`` group a
Lightning logger. Their error boundary is ``boundary.py``.
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from .checks import choice, text, whole
from .data import SearchDataModule
from .errors import AlsatianWarning, ConfigError
from .halving import SearchResult, SuccessiveHalving
from .io import check_folder, write_json
from .store import BlockStore
from .units import display_names, format_bytes
from .zoo._record import expected_size, spec_of

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
SINGLE_PROCESS = {"devices": 1, "num_nodes": 1, "accelerator": "auto"}


def run_search(cfg: DictConfig, output_dir: str | Path | None = None, data: SearchDataModule | None = None
               ) -> tuple[SearchResult, dict[str, Any] | None]:
    """Run the search the config describes; write ``results.json`` (and the ranking and time plots) into
    ``output_dir`` (if given, atomically) and return it. Every config value is checked before anything is prepared,
    built or written: the data module, the store, the searcher, the zoo spec and the logger check their part when
    constructed; then the data is prepared (checked against the rounds the candidates need), and only then is the
    zoo built and searched. With ``search.devices`` (or ``num_nodes``) above 1 the search runs on every rank of a
    Fabric launch; rank 0 alone writes, and the other ranks return ``(result, None)``.

    ``data``: an already built data module for ``cfg.dataset`` (its prepared items are reused), else one is made.
    """
    data = data if data is not None else instantiate(cfg.dataset)
    store = BlockStore(cfg.store.root)
    spec = spec_of(cfg.models)
    logger = make_logger(cfg.get("logger"), output_dir)
    searcher = _call(instantiate(cfg.search), "search", store=store, data=data, logger=logger)
    size = expected_size(spec, store)
    searcher.strategy.cut_rounds(data, size, searcher.result_size)
    zoo = spec.build(store, progress=searcher.progress)
    if len(zoo.models) != size:  # a where filter kept fewer models than the zoos hold
        searcher.strategy.cut_rounds(data, len(zoo.models), searcher.result_size)
    result, rank = _run(searcher, zoo.models, getattr(searcher, "launch_options", SINGLE_PROCESS))
    if rank != 0:
        return result, None
    report = _report(cfg, zoo, data, result)
    if output_dir is not None:
        path = write_json(Path(output_dir) / "results.json", report)
        _plots(report, Path(output_dir))
        report = {**report, "results_file": str(path)}
    return result, report


def _report(cfg: DictConfig, zoo: Any, data: SearchDataModule, result: SearchResult) -> dict[str, Any]:
    """What results.json holds: strategy, config, the candidates (and the filter that chose them), the result."""
    stats = zoo.stats()
    return {
        "strategy": result.strategy,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "zoo": zoo.name,
        "candidates": list(zoo.models),
        "where": _where(zoo.config),
        "dataset": data.describe(),
        **{k: v for k, v in result.to_json().items() if k != "strategy"},
        "store": {"models": stats.models, "distinct_blocks": stats.distinct_blocks,
                  "logical_bytes": stats.logical_bytes, "physical_bytes": stats.physical_bytes},
    }


def _where(config: dict[str, Any]) -> dict[str, Any]:
    """The ``models.where`` conditions that chose the candidates (empty: every model of the zoo or zoos)."""
    return dict(config.get("where", {})) if isinstance(config, dict) else {}


class LaunchedSuccessiveHalving(SuccessiveHalving):
    """:class:`SuccessiveHalving` (the ``search`` group's target) plus where it runs: ``devices`` processes on each of
    ``num_nodes`` machines over ``accelerator`` (Lightning Fabric DDP through :func:`distributed.launch`; 1 and 1: this
    process alone), checked when constructed like every other option."""

    def __init__(self, store: BlockStore, data: SearchDataModule, *, devices: int | str = 1, num_nodes: int = 1,
                 accelerator: str = "auto", **options: Any):
        if devices != "auto":
            whole("search.devices", devices, hint=" or auto")
        self.launch_options = {"devices": devices, "num_nodes": whole("search.num_nodes", num_nodes),
                               "accelerator": choice("search.accelerator", accelerator, ACCELERATORS)}
        super().__init__(store, data, **options)


_own = inspect.signature(LaunchedSuccessiveHalving.__init__).parameters
_base = inspect.signature(SuccessiveHalving.__init__).parameters
LaunchedSuccessiveHalving.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [p for n, p in _own.items() if n not in ("self", "options")]
    + [p for n, p in _base.items() if n not in ("self", "store", "data")])


def _run(searcher: Any, models: list[str], options: dict[str, Any]) -> tuple[SearchResult, int]:
    """``searcher.run(models)`` in this process, or on every rank of a Fabric launch (:func:`distributed.launch`);
    returns the result and this process's rank. Only rank 0 logs."""
    if options["devices"] == 1 and options["num_nodes"] == 1:
        return searcher.run(models), 0
    from .distributed import launch

    rank = {"rank": 0}

    def search(group: Any) -> SearchResult:
        rank["rank"] = group.rank
        searcher.group = group
        if not group.is_global_zero:
            searcher.logger = None
        if searcher.checkpoint_dir is not None:  # each rank saves (and resumes) its own part of the state
            searcher.checkpoint_dir = searcher.checkpoint_dir / f"rank-{group.rank}-of-{group.world_size}"
        searcher.device = _rank_device(searcher.device, options["accelerator"])
        return searcher.run(models)

    result = launch(search, **options)
    return result, rank["rank"]


def _rank_device(device: Any, accelerator: str) -> Any:
    """A rank's compute device: the CPU under ``accelerator=cpu``, else its own GPU (``LOCAL_RANK``) on GPUs."""
    import torch

    if accelerator == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def make_logger(node: Any, output_dir: str | Path | None) -> Any:
    """The Lightning logger of the ``logger`` config group (None: no logger; ``save_dir: null``: the run folder,
    next to results.json; without a run folder, no logger). Checked and constructed; it writes nothing until the
    search logs. ConfigError when its package (tensorboard, mlflow) is not installed."""
    if node is None:
        return None
    config = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    target = text("logger._target_", config.get("_target_"))
    if "save_dir" in config:
        if config["save_dir"] is None and output_dir is None:
            return None
        config["save_dir"] = str(check_folder(config["save_dir"] or output_dir, "logger.save_dir"))
    if "name" in config:
        text("logger.name", config["name"])
    try:
        factory = instantiate({**config, "_partial_": True})
    except Exception as exc:  # noqa: BLE001 - Hydra's locate error: the target cannot be imported
        raise ConfigError(f"logger._target_={target} cannot be imported ({_first_line(exc)}); choose logger=csv, "
                          "logger=tensorboard or logger=mlflow, or give a Lightning logger class") from None
    try:
        return _call(factory, "logger")
    except ModuleNotFoundError as exc:
        raise ConfigError(f"logger: {target} needs a package that is not installed ({_first_line(exc)}). Install "
                          "it (pip install tensorboard, pip install mlflow) or choose logger=csv (the default) or "
                          "~logger") from None


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]


def _plots(report: dict[str, Any], out: Path) -> None:
    """The ranking and time-breakdown PNGs next to results.json (a warning, not a failure, without matplotlib)."""
    try:
        from .plots import ranking_plot, time_plot
        ranking_plot(report, out / "ranking.png")
        time_plot(report, out / "time.png")
    except ImportError as exc:
        warnings.warn(f"no plots: {exc} (pip install matplotlib)", AlsatianWarning, stacklevel=2)


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
    _print_times(report, console)


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
