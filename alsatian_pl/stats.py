"""Counters and timings of one search, in one place (torchmetrics-style: the stages update, ``compute`` reads,
``reset`` starts over); every statistic of a :class:`~alsatian_pl.halving.SearchResult` comes from here."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch

__all__ = ["PHASES", "COUNTERS", "counter", "SearchStats"]

PHASES = ("prepare_data", "prepare_model", "inference", "proxy_scoring", "planning", "checkpoint", "communication")
COUNTERS = ("inference_steps", "block_runs", "cache_hits", "moved_to_host_bytes", "spilled_bytes", "weight_loads",
            "weight_hits", "weight_prefetches", "feature_cache_hits", "feature_cache_misses", "feature_cache_bytes_read",
            "feature_cache_bytes_written")


def counter(name: str, doc: str = "") -> property:
    """A read-only attribute of a stage (cache service, weight cache) that reads its ``stats`` counter ``name``."""
    return property(lambda self: self.stats.counts[name], doc=doc or f"the search's {name} counter")


class SearchStats:
    """Seconds per phase, event counters, and inference seconds and items per block hash."""

    def __init__(self, device: torch.device | None = None):
        self._sync = device is not None and device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        """Zero every timing and counter."""
        self.timings: dict[str, float] = {p: 0.0 for p in PHASES}
        self.counts: Counter[str] = Counter({c: 0 for c in COUNTERS})
        self.block_seconds: dict[str, float] = {}
        self.block_items: dict[str, int] = {}
        self.items_inferred = 0  # items through inference steps so far (a step over 100 items adds 100), per batch
        self.saved_seconds = 0.0  # inference seconds of the blocks only the feature cache's hits needed (spared)
        self.started = time.perf_counter()  # this run's start: a round checkpoint saves the seconds run so far
        self.earlier_seconds = 0.0  # a resumed search: the wall seconds of the runs before, up to their last round

    def elapsed(self) -> float:
        """Wall seconds of the search so far, the runs a resumed search continues included."""
        return self.earlier_seconds + time.perf_counter() - self.started

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to phase ``name`` (synchronising the accelerator first)."""
        if self._sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize()
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def blocks_ran(self, blocks: Iterable[tuple[str, float]], seconds: float, items: int) -> None:
        """One inference step ran ``blocks`` (hash, relative cost) over ``items`` items in ``seconds``; the time is
        attributed to the blocks by their relative cost."""
        blocks = list(blocks)
        total = sum(cost for _, cost in blocks) or 1.0
        for h, cost in blocks:
            self.block_seconds[h] = self.block_seconds.get(h, 0.0) + seconds * cost / total
            self.block_items[h] = self.block_items.get(h, 0) + items
        self.count("inference_steps")
        self.count("block_runs", len(blocks))

    def snapshot(self) -> Counter[str]:
        """The counters now, to take differences over a round (see :meth:`since`)."""
        return Counter(self.counts)

    def since(self, snapshot: Counter[str], name: str) -> int:
        return self.counts[name] - snapshot[name]

    def compute(self, *, prepare_data: float, total: float, blocks_read: int) -> dict[str, dict]:
        """``timings_s``, ``cache`` statistics and per-block times, as a SearchResult holds them."""
        timings = {**self.timings, "prepare_data": prepare_data, "total": total}
        c = self.counts
        cache = {"hits": c["cache_hits"], "moved_to_host_bytes": c["moved_to_host_bytes"],
                 "spilled_bytes": c["spilled_bytes"], "weight_loads": c["weight_loads"],
                 "weight_hits": c["weight_hits"], "weight_prefetches": c["weight_prefetches"],
                 "blocks_read": blocks_read}
        if c["feature_cache_hits"] or c["feature_cache_misses"]:
            cache.update({k: c[k] for k in COUNTERS if k.startswith("feature_cache")},
                         feature_cache_saved_s=self.saved_seconds)
        return {"timings_s": timings, "cache": cache, "block_seconds": dict(self.block_seconds),
                "block_items": dict(self.block_items)}
