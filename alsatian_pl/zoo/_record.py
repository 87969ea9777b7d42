"""Zoo records: a zoo is a named list of stored models, recorded as ``zoos/<id>.json`` (sealed with a checksum) with
the configuration that built it; :func:`cached_zoo` reuses the record while that configuration stays the same and
every model in it is intact, and otherwise builds (re-imports) the zoo again, which heals a damaged store."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from rich.console import Console
from rich.progress import Progress

from ..checks import choice, text
from ..errors import AlsatianWarning, ConfigError, CorruptBlockError, CorruptFileError, StoreError
from ..io import file_digest, read_json, write_json
from ..store import BlockStore, ModelManifest, StoreLock, StoreStats


class Zoo:
    """A named set of models in a store, built from a configuration (``config``, as recorded) or imported;
    ``skipped``: the candidates left out at import (``models.on_invalid=skip``), each with the reason."""

    def __init__(self, store: BlockStore, name: str, models: Sequence[str], config: dict[str, Any],
                 skipped: Mapping[str, str] | None = None):
        self.store, self.name, self.models, self.config = store, name, list(models), config
        self.skipped = dict(skipped or {})

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
            models, recorded, skipped = rec["models"], rec["config"], dict(rec.get("skipped", {}))
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
                return _rebuilding(zoo_id, f"its model {name} misses {len(damaged)} block or head file(s) or has damaged ones")
        if skipped:
            _say_skipped(zoo_id, skipped, "recorded when it was imported")
        return cls(store, zoo_id, models, recorded, skipped)

    def save(self) -> None:
        record = {"name": self.name, "config": self.config, "models": self.models}
        if self.skipped:
            record["skipped"] = self.skipped
        with StoreLock(self.store.root, exclusive=False):  # gc waits for it (BlockStore.gc)
            write_json(self._record_path(self.store, self.name), record, sealed=True)


def import_each(items: Iterable[tuple[str, Callable[[], str]]], on_invalid: str,
                skipped: dict[str, str]) -> Iterator[str]:
    """Each ``(label, import)``'s model name as ``import()`` stores it; a candidate whose files cannot be read or do
    not fit (a StoreError) stops the build (``on_invalid=error``) or is left out with a warning and recorded in
    ``skipped`` as ``label -> reason`` (``skip``)."""
    for label, load in items:
        try:
            yield load()
        except CorruptBlockError:  # the store's damage, not the candidate's
            raise
        except StoreError as exc:
            if on_invalid != "skip":
                raise StoreError(f"{exc} (models.on_invalid=skip leaves such a candidate out)") from None
            skipped[label] = str(exc)
            _say_skipped(label, {label: str(exc)}, "models.on_invalid=skip")


def _say_skipped(where: str, skipped: Mapping[str, str], why: str) -> None:
    """One warning line: the candidates left out at import (results.json lists them under skipped)."""
    first, reason = next(iter(skipped.items()))
    more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
    head = f"left out {first}" if first == where else f"zoo {where}: left out {first}{more}"
    warnings.warn(f"{head} ({why}): {reason}; results.json lists it under skipped", AlsatianWarning, stacklevel=3)


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
               task: str, total: int, progress: bool = True, skipped: dict[str, str] | None = None) -> Zoo:
    """The zoo recorded as ``zoo_id`` with ``config`` if it is complete; else the models ``build()`` stores (it
    yields each model's name once stored; a progress bar of ``total`` steps follows), recorded for next time with
    the candidates it left out (``skipped``, which ``build()`` fills; see :func:`import_each`). Builders take turns
    (:meth:`BlockStore.building`): one that waited finds the zoo recorded and reuses it."""
    with store.building():
        if (zoo := Zoo.load(store, zoo_id, config)) is not None:
            return zoo
        return _build_zoo(store, zoo_id, config, build, task=task, total=total, progress=progress,
                          skipped={} if skipped is None else skipped)


def _build_zoo(store: BlockStore, zoo_id: str, config: dict[str, Any], build: Callable[[], Iterable[str]], *,
               task: str, total: int, progress: bool, skipped: dict[str, str]) -> Zoo:
    """The models ``build()`` stores, with a progress bar, recorded as zoo ``zoo_id``."""
    names = []
    console = Console(stderr=True)  # the bar on a terminal; in a log one line (standard output keeps the report)
    if progress and not console.is_terminal:
        print(f"{task}: {total} steps", file=sys.stderr, flush=True)
    with Progress(disable=not progress or not console.is_terminal, transient=True, console=console) as bar:
        bar_task = bar.add_task(task, total=total)
        for name in build():
            names.append(name)
            bar.advance(bar_task)
    if not names and skipped:
        raise StoreError(f"zoo {zoo_id}: every candidate was left out (models.on_invalid=skip); the first: "
                         f"{next(iter(skipped.values()))}")
    zoo = Zoo(store, zoo_id, names, config, skipped)
    zoo.save()
    return zoo


def expect_kind(kind: str, wanted: str, target: str) -> None:
    """ConfigError unless a ``models`` config's ``kind`` is the one its ``_target_`` builds."""
    if kind != wanted:
        raise ConfigError(f"models.kind={kind!r} does not match models._target_={target} (a {wanted!r} zoo); "
                          "choose the models config of that kind (e.g. models=checkpoints, models=hf_dirs)")


# ------------------------------------------------------------------------------------------ choosing the candidates
WHERE_KEYS = ("arch", "family", "min_params", "max_params", "tags", "name", "source")
_SUFFIX = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


def _count(key: str, value: Any) -> int | None:
    """A parameter bound: a whole number of parameters, or a string such as ``25M``, ``1.5B``, ``800K``."""
    if value is None:
        return None
    if isinstance(value, str) and value[-1:].upper() in _SUFFIX:
        try:
            value = round(float(value[:-1]) * _SUFFIX[value[-1].upper()])
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"models.where.{key} must be a number of parameters (e.g. 25000000 or 25M), got {value!r}")
    return value


def _pattern(key: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"models.where.{key} must be a non-empty string (a glob for name and source: "
                          f"* ? [...]) or null, got {value!r}")
    return value


@dataclass(frozen=True)
class Where:
    """The ``models.where`` filter over stored models' metadata: architecture, family, parameter bounds (inclusive),
    tags (all of them), and globs over the model name and its source. Every given condition must hold; an empty
    filter keeps everything."""

    arch: str | None = None
    family: str | None = None
    min_params: int | None = None
    max_params: int | None = None
    tags: tuple[str, ...] = ()
    name: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        for key in ("arch", "family", "name", "source"):
            _pattern(key, getattr(self, key))
        lo, hi = _count("min_params", self.min_params), _count("max_params", self.max_params)
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"models.where.min_params={lo} is above models.where.max_params={hi}: no model can "
                              "match; lower min_params or raise max_params")
        tags = (self.tags,) if isinstance(self.tags, str) else () if self.tags is None else self.tags
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) and t for t in tags):
            raise ConfigError(f"models.where.tags must be a list of tags (e.g. [zoo:mine, base]), got {self.tags!r}")
        object.__setattr__(self, "min_params", lo)
        object.__setattr__(self, "max_params", hi)
        object.__setattr__(self, "tags", tuple(tags))

    @classmethod
    def of(cls, value: Any) -> "Where":
        """The filter of a ``models.where`` config (a mapping, a Where or None); ConfigError for an unknown key."""
        if value is None or isinstance(value, Where):
            return value or cls()
        if not isinstance(value, Mapping):
            raise ConfigError(f"models.where must be a mapping of conditions ({', '.join(WHERE_KEYS)}), got {value!r}")
        unknown = sorted(set(value) - set(WHERE_KEYS))
        if unknown:
            raise ConfigError(f"models.where.{unknown[0]} is not a filter: use {', '.join(WHERE_KEYS)}")
        return cls(**value)

    def as_dict(self) -> dict[str, Any]:
        """The conditions that are set (as results.json records them: tags as a list)."""
        return {k: list(v) if k == "tags" else v for k, v in ((k, getattr(self, k)) for k in WHERE_KEYS)
                if v not in (None, ())}

    def __bool__(self) -> bool:
        return bool(self.as_dict())

    def select(self, store: BlockStore, names: Sequence[str] | None = None) -> list[str]:
        """The models (of ``names``, in their order; default: the whole store) that match."""
        kept = {m.name for m in store.models(names=names, tags=self.tags, arch=self.arch, family=self.family,
                                             min_params=self.min_params, max_params=self.max_params,
                                             name=self.name, source=self.source)}
        return [n for n in (store.model_names() if names is None else names) if n in kept]


def no_match(store: BlockStore, where: Where, among: str, names: Sequence[str] | None = None) -> ConfigError:
    """The one error of a filter that keeps no model: the filter, and what the store (or zoo) holds."""
    conditions = ", ".join(f"{k}={v}" for k, v in where.as_dict().items()) or "(none)"
    manifests = store.models(names=names)
    if not manifests:
        return ConfigError(f"{among} holds no models (store {store.root}): build a zoo into it first (e.g. "
                           "python search.py models=resnet18_zoo) or set store.root to the store that holds them")

    def counted(values: Iterable[str], most: int = 8) -> str:
        top = Counter(values).most_common()
        return ", ".join(f"{v or '-'} ({n})" for v, n in top[:most]) + (f", … {len(top) - most} more"
                                                                         if len(top) > most else "")

    params = sorted(m.num_params for m in manifests)
    return ConfigError(
        f"models.where matches none of the {len(manifests)} models in {among} ({conditions}). It holds: "
        f"arch {counted(m.arch for m in manifests)}; family {counted(m.family for m in manifests)}; "
        f"{params[0]:,} to {params[-1]:,} parameters; tags {counted(t for m in manifests for t in m.tags)}; "
        f"source {counted((m.source for m in manifests), 3)}. Loosen the filter (alsatian store ls lists the models)")


def select(zoo: Zoo, where: Where, among: str | None = None) -> Zoo:
    """``zoo`` cut to the models ``where`` keeps (the zoo itself when the filter is empty); the no-match error when
    it keeps none."""
    if not where and zoo.models:
        return zoo
    kept = where.select(zoo.store, zoo.models)
    if not kept:
        raise no_match(zoo.store, where, among or f"zoo {zoo.name}", zoo.models)
    return Zoo(zoo.store, zoo.name, kept, {**zoo.config, "where": where.as_dict()}, zoo.skipped)


@dataclass(frozen=True)
class StoreModels:
    """``models=store``: every model already in the store that matches ``where`` (nothing is built)."""

    name: str = "store"
    where: Where = field(default_factory=Where)

    def expected_size(self, store: BlockStore) -> int:
        """How many models match (the no-match error when none do)."""
        return len(self.build(store).models)

    def build(self, store: BlockStore, *, progress: bool = True) -> Zoo:
        zoo = Zoo(store, self.name, store.model_names(), {"kind": "store"})
        return select(zoo, self.where, f"the store at {store.root}")


@dataclass(frozen=True)
class ZooList:
    """``models=zoos``: several zoo specs searched together (their models in order, each once), then ``where``
    over all of them."""

    name: str
    zoos: tuple[Any, ...]
    where: Where = field(default_factory=Where)

    def expected_size(self, store: BlockStore) -> int:
        """The models of all zoos (before ``where``: a zoo not yet built cannot be filtered)."""
        return sum(expected_size(z, store) for z in self.zoos)

    def build(self, store: BlockStore, *, progress: bool = True) -> Zoo:
        built = [z.build(store, progress=progress) for z in self.zoos]
        names = list(dict.fromkeys(m for z in built for m in z.models))
        zoo = Zoo(store, "+".join(z.name for z in built), names,
                  {"kind": "zoos", "zoos": [z.name for z in built]}, {k: v for z in built for k, v in z.skipped.items()})
        return select(zoo, self.where, f"zoos {zoo.name}")


def expected_size(spec: Any, store: BlockStore) -> int:
    """How many candidates a spec gives, known before it is built (zoos: their size, a store filter: its matches)."""
    return spec.expected_size(store) if hasattr(spec, "expected_size") else spec.size


@dataclass(frozen=True)
class Filtered:
    """A zoo spec whose built models are cut by a ``where`` filter."""

    spec: Any
    where: Where

    def expected_size(self, store: BlockStore) -> int:
        return expected_size(self.spec, store)

    def build(self, store: BlockStore, *, progress: bool = True) -> Zoo:
        return select(self.spec.build(store, progress=progress), self.where)


def store_spec(*, name: str = "store", where: Mapping[str, Any] | None = None, kind: str = "store",
               on_invalid: str = "error") -> StoreModels:
    """The ``models=store`` config, validated: every stored model matching ``where``."""
    expect_kind(kind, "store", "alsatian_pl.zoo.store_spec")
    choice("models.on_invalid", on_invalid, ("error", "skip"))  # read by the search (SuccessiveHalving)
    return StoreModels(text("models.name", name), Where.of(where))
