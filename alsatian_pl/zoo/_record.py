"""Zoo records: a zoo is a named list of stored models, recorded as ``zoos/<id>.json`` (sealed with a checksum) with
the configuration that built it; :func:`cached_zoo` reuses the record while that configuration stays the same and
every model in it is intact, and otherwise builds (re-imports) the zoo again, which heals a damaged store."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rich.progress import Progress

from ..errors import AlsatianWarning, ConfigError, CorruptFileError, StoreError
from ..io import file_digest, read_json, write_json
from ..store import BlockStore, ModelManifest, StoreStats


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
        """The recorded zoo if it exists with this config and every model in it is intact (manifest readable, block
        files present and of their recorded size), else None; a damaged record or model is named in a warning."""
        path = cls._record_path(store, zoo_id)
        if not path.is_file():
            return None
        try:
            rec = read_json(path, "its record", "")
            models, recorded = rec["models"], rec["config"]
            if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
                raise TypeError("its models must be a list of names")
        except CorruptFileError as exc:
            return _rebuilding(zoo_id, str(exc).rstrip("; "))
        except (KeyError, TypeError) as exc:
            return _rebuilding(zoo_id, f"its record {path} is damaged ({exc!r})")
        if recorded != json.loads(json.dumps(config, default=list)):
            return None
        for name in models:
            try:
                damaged = store.damaged_blocks(store.manifest(name))
            except StoreError:
                return _rebuilding(zoo_id, f"the manifest of its model {name} is missing, damaged or was edited")
            if damaged:
                return _rebuilding(zoo_id, f"its model {name} misses {len(damaged)} block file(s) or has damaged ones")
        return cls(store, zoo_id, models, recorded)

    def save(self) -> None:
        write_json(self._record_path(self.store, self.name),
                   {"name": self.name, "config": self.config, "models": self.models}, sealed=True)


def _rebuilding(zoo_id: str, why: str) -> None:
    """Say that zoo ``zoo_id`` is built (imported) again, and why; None, the value of a zoo that cannot be reused."""
    warnings.warn(f"zoo {zoo_id} cannot be reused ({why}); building it again", AlsatianWarning, stacklevel=3)


def digest(fields: dict[str, Any]) -> str:
    """The first 10 hex digits of the sha256 of the fields' JSON (keys sorted, tuples as lists)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()[:10]


def zoo_id(name: str, fields: dict[str, Any]) -> str:
    """``<name>-<digest of fields>``: the id a zoo is recorded under (its models' names start with it)."""
    return f"{name}-{digest(fields)}"


def file_digests(folder: Path, files: Iterable[Path]) -> dict[str, str]:
    """``{path relative to folder: sha256 of its bytes}``: a recorded import is redone when a file's content changes
    (also when it is rewritten in place with the same size and modification time)."""
    return {str(f.relative_to(folder)): file_digest(f) for f in files}


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
