"""A run never writes into another run's folder: :class:`RunFolderGuard` (a Hydra callback of ``search.py`` and
``train.py``, conf/hydra/default.yaml) refuses, before Hydra writes anything there, a run folder that already holds
a run's output (``results.json``, ``finetuned.safetensors``), e.g. a ``hydra.run.dir`` fixed by the user; a search
resumed with ``search.resume=true`` may go on in its own folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError

__all__ = ["RunFolderGuard", "OUTPUTS", "check_run_folder"]

OUTPUTS = ("results.json", "finetuned.safetensors")  # what a finished run leaves in its folder


def check_run_folder(folder: str | Path, key: str, resume: bool) -> None:
    """ConfigError naming ``key`` when ``folder`` already holds a run's output (unless ``resume``)."""
    held = [name for name in OUTPUTS if (Path(folder) / name).is_file()]
    if held and not resume:
        raise ConfigError(f"{key}={folder} already holds another run's {held[0]}: a run never overwrites another's "
                          f"output. Choose another {key} (or leave it out: each run gets a folder of its own), "
                          "or move that run's files away; a search continued with search.resume=true may reuse "
                          "its folder")


class RunFolderGuard(Callback):
    """Refuses a run (or a sweep) folder that holds a finished run's output, before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refusing(lambda: check_run_folder(config.hydra.run.dir, "hydra.run.dir", _resuming(config)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        for job in sorted(sweep.iterdir()) if sweep.is_dir() else []:
            if job.is_dir():
                _refusing(lambda: check_run_folder(job, "hydra.sweep.dir", _resuming(config)))


def _refusing(check: Any) -> None:
    """``check()``; its ConfigError ends the process in one ``error:`` line, exit status 2 (Hydra turns an exception
    of a callback into a warning and goes on writing into the folder, so the boundary cannot be left to it)."""
    try:
        check()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _resuming(config: DictConfig) -> bool:
    return OmegaConf.select(config, "search.resume", default=False) is True
