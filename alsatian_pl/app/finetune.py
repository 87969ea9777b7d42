"""The ``train.py`` pipeline from its Hydra config: search (or read ``finetune.results``), hand the winner to a
Lightning ``Trainer`` through :class:`~alsatian_pl.finetune.FinetuneCallback`, fit, and save the checkpoint."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..checks import number, text, whole
from ..errors import ConfigError
from ..finetune import FinetuneCallback, FinetuneModule, SafetensorsCheckpoint, confirm, confirm_candidates, read_results
from ..io import check_folder
from ..store import BlockStore
from .hints import check_run

__all__ = ["run_finetune"]


def run_finetune(cfg: DictConfig, callbacks: list[L.Callback] | None = None,
                 on_search: Callable[[dict[str, Any]], None] | None = None) -> tuple[FinetuneModule, L.Trainer,
                                                                                    FinetuneCallback]:
    """Fine-tune as the ``train.yaml`` config says: search (or read ``finetune.results``), install the winner, fit.

    Data: ``cfg.dataset`` (same module and preprocessing as the search) with ``finetune.batch_size``; returns the
    fitted module, the trainer (``callback_metrics`` hold ``val/acc``, ``val/ap`` or ``val/r2``: ``module.metric_key``) and the callback (``report``: the search).
    """
    f = cfg.finetune
    check_run()
    _check_training(cfg)
    L.seed_everything(whole("finetune.seed", f.seed, at_least=0), workers=True, verbose=False)
    data = instantiate(cfg.dataset)
    data.batch_size = whole("finetune.batch_size", f.batch_size)
    module = _module(f)
    if f.get("checkpoint"):  # refuse a checkpoint path under a file now, not after training
        check_folder(Path(text("finetune.checkpoint", f.checkpoint)).parent, "finetune.checkpoint")
    extra = [SafetensorsCheckpoint(f.checkpoint)] if f.get("checkpoint") else []
    with _quiet():
        bar = _progress_bar(cfg, callbacks)
        trainer = _trainer(cfg.trainer, callbacks=[*extra, *bar, *(callbacks or [])])  # a bad trainer.* fails first
        hand_off = _hand_off(cfg, data, on_search)
        trainer.callbacks.insert(0, hand_off)  # first: it installs the model that the others see
        try:
            trainer.fit(module, datamodule=data)
        except SystemExit:  # Lightning ends a Ctrl-C in fit with sys.exit(1): hand the entry point an interruption
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
    return module, trainer, hand_off


def _trainer(node: DictConfig, **kwargs: Any) -> L.Trainer:
    """The ``trainer`` group's Trainer; a value Lightning refuses (``trainer.precision=7``, an accelerator without
    its package) is one ConfigError quoting Lightning's reason."""
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if not isinstance(cause, (ValueError, TypeError, ImportError, MisconfigurationException)):
            raise
        reason = " ".join(str(cause).split())[:400]
        raise ConfigError(f"the trainer group refused a value: {reason} (fix that trainer.* override; "
                          "conf/trainer/default.yaml lists the keys)") from None


def _module(f: DictConfig) -> FinetuneModule:
    return FinetuneModule(instantiate(f.optimizer), instantiate(f.scheduler) if f.get("scheduler") else None,
                          f.train_blocks)


def _hand_off(cfg: DictConfig, data: Any, on_search: Callable[[dict[str, Any]], None] | None) -> FinetuneCallback:
    """The callback that installs the model to fine-tune: ``finetune.model``, else the search's winner (a search
    run now on ``data``, or ``finetune.results``), or with ``finetune.confirm_top_k`` the best of short fine-tunes of
    the search's top models."""
    f, config = cfg.finetune, OmegaConf.to_container(cfg, resolve=True)
    model = f.get("model")
    if model is not None:  # a short name as a ranking prints it (009) names the one stored model ending in -009
        from .cli import resolve_model
        model = resolve_model(BlockStore(cfg.store.root), text("finetune.model", model))
    results, search = f.get("results"), None
    if results is None and f.get("model") is None:  # search now, on the same data; its results.json: output_dir
        search = partial(_search, cfg, cfg.output_dir)
        results = None if cfg.output_dir is None else Path(cfg.output_dir) / "results.json"
    if f.get("confirm_top_k") is None or f.get("model") is not None:
        return FinetuneCallback(search, results=results, model=model, store_root=cfg.store.root,
                                on_search=on_search, config=config)
    report = search(data) if search is not None else read_results(results)
    if search is not None and on_search is not None:
        on_search(report)
    epochs = whole("finetune.confirm_epochs", f.get("confirm_epochs", 1))
    record = confirm(confirm_candidates(report, f.confirm_top_k), partial(_short_finetune, cfg, data, epochs),
                     report, epochs)
    return FinetuneCallback(results=results, model=record["winner"], store_root=cfg.store.root, config=config,
                            report=report, confirmation=record)


def _short_finetune(cfg: DictConfig, data: Any, epochs: int, model: str) -> float:
    """The validation metric (accuracy, average precision or R², by task) of ``model`` after ``epochs`` of the
    recipe (its schedule follows the shorter run), from the recipe's seed, with no logger or checkpoint."""
    short = OmegaConf.merge(cfg, {"trainer": {"max_epochs": epochs}})
    L.seed_everything(cfg.finetune.seed, workers=True, verbose=False)
    with _quiet():
        trainer = _trainer(short.trainer, callbacks=[FinetuneCallback(model=model, store_root=cfg.store.root)],
                           logger=False, enable_checkpointing=False, enable_model_summary=False)
        module = _module(short.finetune)
        trainer.fit(module, datamodule=data)
    return float(trainer.callback_metrics.get(f"val/{module.metric_key}", float("nan")))


NOISE = (r".*module\(s\) in eval mode.*",  # frozen blocks are in eval mode on purpose
         r".*isinstance\(treespec, LeafSpec\).*",  # a deprecation inside Lightning, not the user's to act on
         r".*smaller than the logging interval.*")  # small data: each epoch is still logged


@contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's output reduced to what the user needs: no accelerator inventory ("GPU available: ...", "TPU
    available: ..."), no advertisement, no warnings about its own internals; the progress bar and errors stay."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero",
                                               "lightning.fabric.utilities.rank_zero")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for message in NOISE:
            warnings.filterwarnings("ignore", message=message)
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _progress_bar(cfg: DictConfig, callbacks: list[L.Callback] | None) -> list[L.Callback]:
    """Lightning's rich bar without ``v_num`` (the logger's version, not a metric), when the trainer shows one and
    the caller gave none."""
    from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

    if not cfg.trainer.get("enable_progress_bar", True) or any(isinstance(c, ProgressBar) for c in callbacks or []):
        return []

    class Bar(RichProgressBar):
        def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
            metrics = super().get_metrics(trainer, pl_module)
            metrics.pop("v_num", None)
            return metrics
    return [Bar()]


def _check_training(cfg: DictConfig) -> None:
    """ConfigError naming ``trainer.max_epochs`` (a positive whole number: 0 trains nothing, -1 never ends),
    ``finetune.optimizer.lr`` (a positive number) or the confirmation's ``finetune.confirm_top_k`` and
    ``confirm_epochs`` when they are not, before anything runs."""
    whole("trainer.max_epochs", cfg.trainer.get("max_epochs"),
          hint=" (0 would train nothing and -1 would never end: give the number of epochs)")
    lr = cfg.finetune.get("optimizer", {}).get("lr")
    if lr is not None:
        number("finetune.optimizer.lr", lr, above=0)
    top_k = cfg.finetune.get("confirm_top_k")
    if top_k is not None and top_k != "confident":
        whole("finetune.confirm_top_k", top_k, hint=" or confident (the search's confident set), or null")
    whole("finetune.confirm_epochs", cfg.finetune.get("confirm_epochs", 1))


def _search(cfg: DictConfig, output_dir: str | Path | None, data: Any) -> dict[str, Any]:
    """The report of ``app.run_search`` over ``cfg`` on the data module ``data`` (results.json into output_dir)."""
    from .search import run_search  # imported late: it imports the whole search engine

    return run_search(cfg, output_dir, data=data)[1]
