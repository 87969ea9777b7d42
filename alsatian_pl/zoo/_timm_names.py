"""Pretrained timm models by name (``resnet50.a1_in1k``, ``convnext_tiny.fb_in1k``, ``timm/vit_tiny_patch16_224...``)
from the local Hugging Face hub cache, as a zoo: nothing is downloaded (``HF_HUB_OFFLINE=1`` semantics).

The cache has the layout ``huggingface_hub`` writes: ``<cache>/models--timm--<name>/refs/main`` holds the revision,
``snapshots/<revision>/`` its files (``model.safetensors`` or ``pytorch_model.bin``, and ``config.json`` with timm's
``architecture``, ``model_args`` and ``pretrained_cfg``). ``cache_dir``: ``models.cache_dir``, else
``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``. Each model's extractor is matched
strictly and its classifier head is stored with it (``BlockStore.read_head``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..checks import choice, mapping, text, whole
from ..errors import ConfigError, StoreError
from ..store import BlockStore
from ._checkpoints import import_timm
from ._record import Zoo, cached_zoo, expect_kind, file_digests, import_each, zoo_id

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_cache(cache_dir: str | None = None) -> Path:
    """The hub cache folder: ``cache_dir``, else huggingface_hub's (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ...)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")  # read now, not at import
    if env:
        return Path(env).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def hub_id(name: str) -> tuple[str, str]:
    """``(repo id, timm architecture)`` of a timm model name (``arch.tag``, ``arch`` for timm's default tag, or a
    repo id ``timm/arch.tag``); ConfigError for a name timm does not know."""
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    text("models.names", name)
    if "/" in name:
        repo = name
        arch = split_model_name_tag(name.split("/", 1)[1])[0]
    else:
        arch = split_model_name_tag(name)[0]
        cfg = get_pretrained_cfg(name) if timm.is_model(arch) else None
        repo = getattr(cfg, "hf_hub_id", None) or f"timm/{name}"
    if not timm.is_model(arch):
        raise ConfigError(f"models.names: {name!r} is not a timm model (e.g. resnet50.a1_in1k, convnext_tiny.fb_in1k; "
                          "see timm.list_pretrained())")
    return repo, arch


def cached_files(repo: str, cache_dir: Path) -> tuple[Path, Path | None] | list[str]:
    """``(weights, config.json or None)`` of ``repo``'s cached main revision, or the paths looked for."""
    from huggingface_hub import try_to_load_from_cache

    found = {f: try_to_load_from_cache(repo, f, cache_dir=cache_dir) for f in (*WEIGHT_FILES, "config.json")}
    found = {f: Path(p) for f, p in found.items() if isinstance(p, str)}
    weights = next((found[f] for f in WEIGHT_FILES if f in found), None)
    if weights is not None:
        return weights, found.get("config.json")
    folder = cache_dir / f"models--{repo.replace('/', '--')}"
    return [str(folder / "snapshots" / "<refs/main>" / f) for f in (*WEIGHT_FILES, "config.json")]


def _not_cached(missing: dict[str, tuple[str, list[str]]], cache_dir: Path) -> StoreError:
    names = ", ".join(missing)
    first, (repo, paths) = next(iter(missing.items()))
    fetch = " && ".join(f"huggingface-cli download {r}" for r, _ in list(missing.values())[:3])
    return StoreError(
        f"{len(missing)} timm model(s) are not in the Hugging Face cache at {cache_dir} ({names}); for {first} "
        f"alsatian-pl looked for {paths[0]} (or {Path(paths[1]).name}) and {Path(paths[2]).name}, resolving "
        f"<refs/main> from {Path(paths[0]).parents[2] / 'refs' / 'main'}. Nothing is downloaded at search time: on a "
        f"machine with internet access run `{fetch}` (or timm.create_model(name, pretrained=True)) and copy its "
        "hub cache here, or point models.cache_dir at a cache that holds them")


def model_config(config: Path | None) -> dict[str, Any]:
    """A cached timm ``config.json`` (architecture, num_classes, model_args, pretrained_cfg); {} when absent."""
    if config is None:
        return {}
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {config} ({exc}); remove the model from the hub cache and fetch it "
                         "again") from None
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class TimmNames:
    """Pretrained timm models by name from the local hub cache, as a zoo to import (validated on construction; the
    cache is read by :meth:`build`)."""

    name: str
    names: tuple[str, ...]
    input_size: tuple[int, ...] = (3, 224, 224)
    cache_dir: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    on_invalid: str = "error"  # cached weights that cannot be read or do not fit: stop (error) or leave out (skip)

    def __post_init__(self) -> None:
        text("models.name", self.name)
        choice("models.on_invalid", self.on_invalid, ("error", "skip"))
        if isinstance(self.names, str) or not isinstance(self.names, (list, tuple)) or not self.names:
            raise ConfigError(f"models.names must be a non-empty list of timm model names (e.g. "
                              f"[resnet50.a1_in1k, convnext_tiny.fb_in1k]), got {self.names!r}")
        object.__setattr__(self, "names", tuple(self.names))
        twice = sorted({n for n in self.names if self.names.count(n) > 1})
        if twice:
            raise ConfigError(f"models.names lists {', '.join(twice)} more than once; list each model once")
        text("models.cache_dir", self.cache_dir, optional=True)
        mapping("models.model_kwargs", self.model_kwargs)
        for n in self.names:
            hub_id(n)

    @property
    def size(self) -> int:
        return len(self.names)

    def files(self) -> dict[str, tuple[str, str, Path, Path | None]]:
        """``{name: (repo id, architecture, weights, config.json)}``; one StoreError naming every missing model."""
        cache, out, missing = hub_cache(self.cache_dir), {}, {}
        for n in self.names:
            repo, arch = hub_id(n)
            found = cached_files(repo, cache)
            if isinstance(found, list):
                missing[n] = (repo, found)
            else:
                out[n] = (repo, arch, *found)
        if missing:
            raise _not_cached(missing, cache)
        return out

    def build(self, store: BlockStore, *, progress: bool = True) -> Zoo:
        """Import the cached models (reused while the cached files' contents stay the same)."""
        files, cache = self.files(), hub_cache(self.cache_dir)
        paths = [p for _, _, w, c in files.values() for p in (w, c) if p is not None]
        cfg = {"kind": "timm_names", "names": list(self.names), "input_size": list(self.input_size),
               "model_kwargs": dict(self.model_kwargs), "cache_dir": str(cache.resolve()),
               "files": file_digests(cache, paths)}
        if self.on_invalid == "skip":  # only then: a zoo built without skipping keeps its id
            cfg["on_invalid"] = "skip"
        zid = zoo_id(self.name, cfg)
        skipped: dict[str, str] = {}

        def one(n: str, repo: str, arch: str, weights: Path, config: Path | None):
            def load() -> str:
                info = model_config(config)
                kwargs = {**(info.get("model_args") or {}), **self.model_kwargs}
                model = f"{zid}-{re.sub(r'[^A-Za-z0-9._-]', '_', n.split('/')[-1])}"
                return import_timm(store, model, info.get("architecture", arch), checkpoint=weights,
                                   model_kwargs=kwargs, input_size=self.input_size,
                                   source=f"hf-hub:{repo} ({weights.parent.name})",
                                   tags=[f"zoo:{self.name}", f"timm:{n}"], overwrite=True).name
            return load
        return cached_zoo(store, zid, cfg, lambda: import_each(((n, one(n, *f)) for n, f in files.items()),
                                                               self.on_invalid, skipped),
                          task=f"importing {len(files)} cached timm models", total=len(files), progress=progress,
                          skipped=skipped)


def timm_names_spec(*, name: str, names: Sequence[str], cache_dir: str | None = None,
                    model_kwargs: dict[str, Any] | None = None, image_size: int = 224,
                    kind: str = "timm_names", on_invalid: str = "error") -> TimmNames:
    """The ``models=timm_names`` config, validated: a :class:`TimmNames` of ``(3, image_size, image_size)`` images."""
    expect_kind(kind, "timm_names", "alsatian_pl.zoo.timm_names_spec")
    size = whole("models.image_size", image_size)
    names = list(names) if isinstance(names, Sequence) and not isinstance(names, str) else names
    return TimmNames(name, names, (3, size, size), cache_dir, mapping("models.model_kwargs", model_kwargs),
                     on_invalid)


def timm_names_zoo(store: BlockStore, *, progress: bool = True, **options: Any) -> Zoo:
    """The zoo of a ``models=timm_names`` config (``options``: :func:`timm_names_spec`'s), imported or reused."""
    return timm_names_spec(**options).build(store, progress=progress)
