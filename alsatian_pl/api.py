"""The one-call Python API: ``alsatian_pl.search(models, data, store=...)``."""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

from .data import SearchDataModule
from .errors import ConfigError
from .halving import SearchCallback, SearchResult, SuccessiveHalving
from .store import BlockStore

__all__ = ["search"]


def search(models: Iterable[str] | Any, data: SearchDataModule, *, store: BlockStore | str | os.PathLike[str] | None = None,
           strategy: str = "alsatian", callbacks: Sequence[SearchCallback] | None = None,
           **options: Any) -> SearchResult:
    """Rank ``models`` (stored model names, or a zoo with ``.models`` and ``.store``) on ``data``; ``callbacks``:
    :class:`SearchCallback` instances called around every round; ``options`` are :class:`SuccessiveHalving`'s
    (``cache_budget="4GB"``, ``scorer="knn"``, ``result_size``, ``device``, ...)."""
    if isinstance(models, (str, bytes)) or not isinstance(getattr(models, "models", models), Iterable):
        raise ConfigError(f"search() takes a list of stored model names or a zoo, got {models!r}: pass [name] to "
                          "rank one model")
    if not isinstance(data, SearchDataModule):
        raise ConfigError(f"search() needs a SearchDataModule as data, got {type(data).__name__}: pass "
                          "SearchDataModule(...) (see alsatian_pl.SearchDataModule)")
    names = list(getattr(models, "models", models))
    store = getattr(models, "store", None) if store is None else store
    if store is None:
        raise ConfigError("search() needs the block store: pass store=BlockStore(root) (or a zoo, which knows its store)")
    store = store if isinstance(store, BlockStore) else BlockStore(store)
    return SuccessiveHalving(store, data, strategy=strategy, callbacks=callbacks, **options).run(names)
