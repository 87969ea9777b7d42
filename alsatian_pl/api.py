"""The one-call Python API: ``alsatian_pl.search(models, data, store=...)``."""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

from .data import SearchDataModule
from .halving import SearchCallback, SearchResult, SuccessiveHalving
from .store import BlockStore

__all__ = ["search"]


def search(models: Iterable[str] | Any, data: SearchDataModule, *, store: BlockStore | str | os.PathLike[str] | None = None,
           strategy: str = "alsatian", callbacks: Sequence[SearchCallback] | None = None,
           **options: Any) -> SearchResult:
    """Rank ``models`` (stored model names, or a zoo with ``.models`` and ``.store``) on ``data``; ``callbacks``:
    :class:`SearchCallback` instances called around every round; ``options`` are :class:`SuccessiveHalving`'s
    (``cache_budget="4GB"``, ``scorer="knn"``, ``result_size``, ``device``, ...)."""
    names = list(getattr(models, "models", models))
    store = getattr(models, "store", None) if store is None else store
    if store is None:
        raise TypeError("search() needs the block store: pass store=BlockStore(root) (or a zoo, which knows its store)")
    store = store if isinstance(store, BlockStore) else BlockStore(store)
    return SuccessiveHalving(store, data, strategy=strategy, callbacks=callbacks, **options).run(names)
