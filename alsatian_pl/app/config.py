"""The ``models`` config group as validated zoo specs: :func:`spec_of` instantiates one node (its ``where`` filter
applied after the build), :func:`zoos_spec` is the ``models=zoos`` target (several zoo configs in one search)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..checks import choice, text
from ..errors import ConfigError
from ..halving.candidates import ON_INVALID
from ..zoo import (CheckpointFolder, Filtered, HFFolder, StoreModels, TimmNames, Where, ZooConfig, ZooList,
                   expect_kind, expected_size)

__all__ = ["spec_of", "on_invalid_of", "zoos_spec", "expected_size", "describe_zoo"]


def spec_of(node: Any) -> Any:
    """The validated spec of one ``models`` config node (its ``where`` filter, if any, applied after the build; its
    ``on_invalid``, ``skip`` also for every zoo of a ``models=zoos`` list, given to the specs that import files)."""
    config = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    where = Where.of(config.pop("where", None))
    on_invalid = choice("models.on_invalid", config.pop("on_invalid", "error"), ON_INVALID)
    spec = _skipping(instantiate(config, _convert_="all"), on_invalid == "skip")
    if isinstance(spec, (StoreModels, ZooList)):
        return dataclasses.replace(spec, where=where)
    return Filtered(spec, where) if where else spec


def _skipping(spec: Any, skip: bool) -> Any:
    """``spec`` with ``on_invalid=skip`` where it imports files (a checkpoint folder, Hugging Face folders, cached
    timm weights), and for every zoo of a list; unchanged when ``skip`` is false."""
    if not skip:
        return spec
    if isinstance(spec, ZooList):
        return dataclasses.replace(spec, zoos=tuple(_skipping(z, True) for z in spec.zoos))
    if isinstance(spec, Filtered):
        return Filtered(_skipping(spec.spec, True), spec.where)
    imports_files = dataclasses.is_dataclass(spec) and any(f.name == "on_invalid" for f in dataclasses.fields(spec))
    return dataclasses.replace(spec, on_invalid="skip") if imports_files else spec


def on_invalid_of(node: Any) -> str:
    """The ``models.on_invalid`` of a ``models`` config node (``error`` when it has none), checked."""
    value = node.get("on_invalid", "error") if hasattr(node, "get") else "error"
    return choice("models.on_invalid", value, ON_INVALID)


def zoos_spec(*, zoos: Any, name: str = "zoos", where: Mapping[str, Any] | None = None, kind: str = "zoos",
              on_invalid: str = "error") -> ZooList:
    """The ``models=zoos`` config, validated: ``zoos`` is a list of zoo configs, or a mapping label -> zoo config
    (e.g. composed with ``+models@models.zoos.<label>=resnet18_zoo``), each with its own optional ``where``."""
    expect_kind(kind, "zoos", "alsatian_pl.app.config.zoos_spec")
    choice("models.on_invalid", on_invalid, ON_INVALID)  # spec_of gives skip to every zoo of the list
    if isinstance(zoos, (DictConfig, ListConfig)):
        zoos = OmegaConf.to_container(zoos, resolve=True)
    items = list(zoos.values()) if isinstance(zoos, Mapping) else zoos
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(z, Mapping) for z in items):
        raise ConfigError(f"models.zoos must be a non-empty list (or mapping) of zoo configs, got {zoos!r}")
    return ZooList(text("models.name", name), tuple(spec_of(z) for z in items), Where.of(where))


def describe_zoo(spec: Any) -> str:
    """What the candidates are, in words, as a run says it before searching: e.g. ``24 synthetic
    tf_efficientnet_lite0 variants (top_layers) of the weights efficientnet_lite0`` or ``35 synthetic resnet152
    variants (top_layers), random init (seed 0)``."""
    if isinstance(spec, Filtered):
        return f"{describe_zoo(spec.spec)}, cut by models.where"
    if isinstance(spec, ZooList):
        return f"{len(spec.zoos)} zoos: " + "; ".join(describe_zoo(z) for z in spec.zoos)
    if isinstance(spec, ZooConfig):
        weights = f" of the weights {spec.checkpoint}" if spec.checkpoint else f", random init (seed {spec.seed})"
        return f"{spec.num_models} synthetic {spec.arch} variants ({spec.distribution}){weights}"
    if isinstance(spec, CheckpointFolder):
        return f"the {spec.arch} checkpoints in {spec.path}"
    if isinstance(spec, TimmNames):
        shown = ", ".join(spec.names[:3]) + (f" and {len(spec.names) - 3} more" if len(spec.names) > 3 else "")
        return f"{len(spec.names)} pretrained timm models ({shown})"
    if isinstance(spec, HFFolder):
        return f"Hugging Face models from {spec.path or 'the local hub cache'}"
    if isinstance(spec, StoreModels):
        return "the stored models" + (" that match models.where" if spec.where else "")
    return type(spec).__name__
