"""Glue between Hydra configs and the stages: instantiate the data module, the zoo, the callbacks and the searcher,
run, write the results.

``search.py`` and ``train.py`` stay thin: they call :func:`run_search` with the composed config. The ``models`` group
instantiates a validated zoo spec (built into the store with ``spec.build(store)``; its ``where`` filter cuts the
candidates), the ``search`` group is a partial ``_target_`` node that takes the store and the data module (its
``devices``, ``num_nodes`` and ``accelerator`` keys go to :func:`distributed.launch_search` instead), the ``logger``
group a Lightning logger, the ``callbacks`` group a mapping of :class:`SearchCallback` ``_target_`` nodes (as
lightning-hydra-template's). Their error boundary is ``boundary.py``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from rich.console import Console
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..checks import choice, text, whole
from ..data import SearchDataModule
from ..distributed import check_accelerator, check_launcher, launch_search, resolve_devices
from ..errors import ConfigError
from ..halving import SearchCallback, SearchResult, SuccessiveHalving
from ..io import check_folder
from ..store import BlockStore
from .config import describe_zoo, expected_size, on_invalid_of, spec_of
from .hints import check_run
from .output import Output
from .report import SearchReport

__all__ = ["ACCELERATORS", "SINGLE_PROCESS", "run_search", "LaunchedSuccessiveHalving", "make_callbacks", "make_logger"]

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
    check_run()  # search.scorer.name=logme and the like: the override to use, before anything runs
    data = data if data is not None else instantiate(cfg.dataset)
    store = BlockStore(cfg.store.root)
    spec = spec_of(cfg.models)
    logger = make_logger(cfg.get("logger"), output_dir)
    callbacks = make_callbacks(cfg.get("callbacks"))
    searcher = _call(instantiate(cfg.search), "search", store=store, data=data, logger=logger, callbacks=callbacks,
                     on_invalid=on_invalid_of(cfg.models))
    searcher.check_task()  # a scorer that cannot score the data's task says so before anything is decoded or built
    about = describe_zoo(spec)
    if searcher.progress:  # the task (what auto inferred) and what the zoo is, before a long build or search
        out = Output(Console(stderr=True))
        out.line(data.task_note)
        out.line(f"candidates: {about}")  # wrapped at spaces on a terminal, whole in a log
    size = expected_size(spec, store)
    searcher.strategy.cut_rounds(data, size, searcher.result_size)
    zoo = spec.build(store, progress=searcher.progress)
    if len(zoo.models) != size:  # a where filter kept fewer models than the zoos hold
        searcher.strategy.cut_rounds(data, len(zoo.models), searcher.result_size)
    report = SearchReport(cfg, zoo, output_dir, about=about)  # results.json and the plots, written as the search ends
    searcher.callbacks.append(report)
    result, rank = launch_search(searcher, zoo.models, **getattr(searcher, "launch_options", SINGLE_PROCESS))
    return (result, report.report) if rank == 0 else (result, None)


class LaunchedSuccessiveHalving(SuccessiveHalving):
    """:class:`SuccessiveHalving` (the ``search`` group's target) plus where it runs: ``devices`` processes on each of
    ``num_nodes`` machines over ``accelerator`` (Lightning Fabric DDP through :func:`distributed.launch`; 1 and 1: this
    process alone), checked when constructed like every other option."""

    def __init__(self, store: BlockStore, data: SearchDataModule, *, devices: int | str = 1, num_nodes: int = 1,
                 accelerator: str = "auto", **options: Any):
        if devices != "auto":
            whole("search.devices", devices, hint=" or auto")
        accelerator = choice("search.accelerator", accelerator, ACCELERATORS)
        self.launch_options = {"devices": resolve_devices(devices, accelerator),
                               "num_nodes": whole("search.num_nodes", num_nodes), "accelerator": accelerator}
        check_launcher(num_nodes)
        super().__init__(store, data, **options)
        check_accelerator(accelerator, self.device)


_own = inspect.signature(LaunchedSuccessiveHalving.__init__).parameters
_base = inspect.signature(SuccessiveHalving.__init__).parameters
LaunchedSuccessiveHalving.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [p for n, p in _own.items() if n not in ("self", "options")]
    + [p for n, p in _base.items() if n not in ("self", "store", "data")])


def make_callbacks(node: Any) -> list[SearchCallback]:
    """The ``callbacks`` config group: a mapping name -> ``_target_`` node (or a list of them), each instantiated;
    ConfigError naming the entry that cannot be built or is not a :class:`SearchCallback`."""
    if node is None:
        return []
    config = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
    entries = list(config.items()) if isinstance(config, dict) else list(enumerate(config))
    callbacks = []
    for name, entry in entries:
        if entry is None:  # an entry switched off with callbacks.<name>=null
            continue
        if not isinstance(entry, dict) or "_target_" not in entry:
            raise ConfigError(f"callbacks.{name} must be a config with a _target_ (a SearchCallback class), got "
                              f"{entry!r}")
        try:
            callback = instantiate(entry)
        except Exception as exc:  # noqa: BLE001 - Hydra wraps the import or constructor error
            raise ConfigError(f"callbacks.{name}: {entry['_target_']} cannot be built ({_first_line(exc)})") from None
        if not isinstance(callback, SearchCallback):
            raise ConfigError(f"callbacks.{name}: {entry['_target_']} is not a SearchCallback (subclass "
                              "alsatian_pl.SearchCallback and override its hooks)")
        callbacks.append(callback)
    return callbacks


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
