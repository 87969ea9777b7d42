"""Zoo records: a zoo is a named list of stored models, recorded as ``zoos/<id>.json`` with the configuration that
built it; :func:`cached_zoo` reuses the record while that configuration (and every model in it) stays the same."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rich.progress import Progress

from ..errors import ConfigError
from ..store import BlockStore, ModelManifest, StoreStats, _atomic_write


class Zoo:
    """A named set of models in a store, built from a configuration (``config``, as recorded) or imported."""

    def __init__(self, store: BlockStore, name: str, models: Sequence[str], config: dict[str, Any]):
        self.store, self.name, self.models, self.config = store, name, list(models), config

    def manifests(self) -> list[ModelManifest]:
        return [self.store.manifest(m) for m in self.models]

    def stats(self) -> StoreStats:
        return self.store.stats(self.models)

    @staticmethod
    def _record_path(store: BlockStore, zoo_id: str) -> Path:
        return store.root / "zoos" / f"{zoo_id}.json"

    @classmethod
    def load(cls, store: BlockStore, zoo_id: str, config: dict[str, Any]) -> "Zoo | None":
        """The recorded zoo if it exists with this config and all its models are present, else None."""
        path = cls._record_path(store, zoo_id)
        if not path.is_file():
            return None
        rec = json.loads(path.read_text())
        if rec.get("config") != json.loads(json.dumps(config, default=list)):
            return None
        if not all(store.has_model(m) for m in rec["models"]):
            return None
        return cls(store, zoo_id, rec["models"], rec["config"])

    def save(self) -> None:
        payload = {"name": self.name, "config": self.config, "models": self.models}
        _atomic_write(self._record_path(self.store, self.name), json.dumps(payload, indent=1, default=list).encode())


def digest(fields: dict[str, Any]) -> str:
    """The first 10 hex digits of the sha256 of the fields' JSON (keys sorted, tuples as lists)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()[:10]


def zoo_id(name: str, fields: dict[str, Any]) -> str:
    """``<name>-<digest of fields>``: the id a zoo is recorded under (its models' names start with it)."""
    return f"{name}-{digest(fields)}"


def file_stamps(folder: Path, files: Iterable[Path]) -> dict[str, list[int]]:
    """``{path relative to folder: [size, mtime_ns]}``: a recorded import is redone when its files change."""
    return {str(f.relative_to(folder)): [f.stat().st_size, f.stat().st_mtime_ns] for f in files}


def cached_zoo(store: BlockStore, zoo_id: str, config: dict[str, Any], build: Callable[[], Iterable[str]], *,
               task: str, total: int, progress: bool = True) -> Zoo:
    """The zoo recorded as ``zoo_id`` with ``config`` if it is complete; else the models ``build()`` stores (it
    yields each model's name once stored; a progress bar of ``total`` steps follows), recorded for next time."""
    if (zoo := Zoo.load(store, zoo_id, config)) is not None:
        return zoo
    names = []
    with Progress(disable=not progress, transient=True) as bar:
        bar_task = bar.add_task(task, total=total)
        for name in build():
            names.append(name)
            bar.advance(bar_task)
    zoo = Zoo(store, zoo_id, names, config)
    zoo.save()
    return zoo


def expect_kind(kind: str, wanted: str, target: str) -> None:
    """ConfigError unless a ``models`` config's ``kind`` is the one its ``_target_`` builds."""
    if kind != wanted:
        raise ConfigError(f"models.kind={kind!r} does not match models._target_={target} (a {wanted!r} zoo); "
                          "choose the models config of that kind (e.g. models=checkpoints, models=hf_dirs)")
