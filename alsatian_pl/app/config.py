"""The ``models`` config group as validated zoo specs: :func:`spec_of` instantiates one node (its ``where`` filter
applied after the build), :func:`zoos_spec` is the ``models=zoos`` target (several zoo configs in one search)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..checks import text
from ..errors import ConfigError
from ..zoo import Filtered, StoreModels, Where, ZooList, expect_kind, expected_size

__all__ = ["spec_of", "zoos_spec", "expected_size"]


def spec_of(node: Any) -> Any:
    """The validated spec of one ``models`` config node (its ``where`` filter, if any, applied after the build)."""
    config = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    where = Where.of(config.pop("where", None))
    spec = instantiate(config, _convert_="all")
    if isinstance(spec, (StoreModels, ZooList)):
        return dataclasses.replace(spec, where=where)
    return Filtered(spec, where) if where else spec


def zoos_spec(*, zoos: Any, name: str = "zoos", where: Mapping[str, Any] | None = None, kind: str = "zoos") -> ZooList:
    """The ``models=zoos`` config, validated: ``zoos`` is a list of zoo configs, or a mapping label -> zoo config
    (e.g. composed with ``+models@models.zoos.<label>=resnet18_zoo``), each with its own optional ``where``."""
    expect_kind(kind, "zoos", "alsatian_pl.app.config.zoos_spec")
    if isinstance(zoos, (DictConfig, ListConfig)):
        zoos = OmegaConf.to_container(zoos, resolve=True)
    items = list(zoos.values()) if isinstance(zoos, Mapping) else zoos
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(z, Mapping) for z in items):
        raise ConfigError(f"models.zoos must be a non-empty list (or mapping) of zoo configs, got {zoos!r}")
    return ZooList(text("models.name", name), tuple(spec_of(z) for z in items), Where.of(where))
