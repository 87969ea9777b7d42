"""The execution side of one search: statistics, cache service, weight cache, executor and feature cache."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..cache import CacheService
from ..execute import Executor
from ..precision import Precision
from ..stats import SearchStats
from ..store import BlockStore
from ..weights import WeightCache
from .reuse import FeatureCache

__all__ = ["Engine", "open_engine"]


@dataclass
class Engine:
    """The services one search runs on."""

    stats: SearchStats
    cache: CacheService
    weights: WeightCache
    executor: Executor
    features: FeatureCache | None = None  # the persistent feature cache, when the search has one


@contextmanager
def open_engine(store: BlockStore, stats: SearchStats, *, device: torch.device, batch_size: int, channels_last: bool,
                prefetch: bool, weight_key: Callable[..., Any], cache_budget: int | None, spill_dir: Path | None,
                feature_cache: Path | None, feature_cache_bytes: int | None,
                feature_context: dict[str, Any], precision: Precision | None = None) -> Iterator[Engine]:
    """Cache service, weight cache, executor and feature cache for one search (and a spill folder, removed after)."""
    spill = None if spill_dir is None else Path(tempfile.mkdtemp(prefix="spill-", dir=_mkdir(spill_dir)))
    cache = CacheService(device=device, capacity=cache_budget if spill else None, spill_dir=spill, stats=stats)
    weights = WeightCache(store, device, channels_last=channels_last, stats=stats)
    executor = Executor(device=device, batch_size=batch_size, stats=stats, cache=cache, weights=weights,
                        weight_key=weight_key, prefetch=prefetch, precision=precision)
    features = None if feature_cache is None else FeatureCache(feature_cache, feature_cache_bytes, stats,
                                                               feature_context)
    try:
        yield Engine(stats, cache, weights, executor, features)
    finally:
        weights.close()
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
