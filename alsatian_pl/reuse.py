"""Reusing work across searches: a persistent, content-addressed feature cache, and per-round search checkpoints
for ``search.resume``.

A cached entry is one model's features of one round's inputs. Its key hashes the model's block chain (the content
hashes of all its blocks, so the same function), the identity of the round's prepared inputs (``Items.key``: the
prepared set's key, which covers every file's path, size and mtime for a set on disk and the bytes of a set in
memory, plus the rows and their normalisation), and what changes the arithmetic (batch size, device type,
channels-last layout). A file rewritten therefore never serves stale features: it makes a new prepared set.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from .cache import tensor_bytes
from .stats import SearchStats
from .store import _atomic_write

FEATURE_FORMAT = "alsatian-features-v1"
CHECKPOINT_FORMAT = "alsatian-search-state-v1"


def items_key(x: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes: the identity of a round's prepared inputs."""
    h = hashlib.sha256(f"{x.dtype}:{list(x.shape)}".encode())
    flat = x.detach().contiguous().cpu().reshape(-1)
    h.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Features on disk under ``root``, at most ``max_bytes`` (least recently used entries go first; None: no bound).

    ``context`` holds what, besides the model and the items, changes the features' bits (batch size, device type,
    layout). Hits, misses, bytes read and the inference seconds the hits saved go to ``stats``.
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None, stats: SearchStats,
                 context: dict[str, Any]):
        self.root, self.max_bytes, self.stats = Path(root).expanduser(), max_bytes, stats
        self.context = json.dumps(context, sort_keys=True)

    def key(self, block_hashes: Sequence[str], inputs_key: str) -> str:
        return hashlib.sha256("\n".join([self.context, inputs_key, *block_hashes]).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        """The cached features under ``key``, or None (a damaged entry is deleted with a warning)."""
        path = self._path(key)
        if not path.is_file():
            self.stats.count("feature_cache_misses")
            return None
        try:
            entry = load_file(path)
            feats, saved = entry["features"], float(entry["compute_s"].item())
        except (SafetensorError, OSError, KeyError, RuntimeError, ValueError) as exc:
            warnings.warn(f"feature cache entry {path} is unreadable ({exc}); it is deleted and recomputed")
            path.unlink(missing_ok=True)
            self.stats.count("feature_cache_misses")
            return None
        os.utime(path)  # most recently used
        self.stats.count("feature_cache_hits")
        self.stats.count("feature_cache_bytes_read", tensor_bytes(feats))
        self.stats.saved_seconds += saved
        return feats

    def put(self, key: str, feats: torch.Tensor, compute_s: float) -> None:
        """Store ``feats`` (computed in about ``compute_s`` inference seconds), then evict down to ``max_bytes``."""
        data = st_save({"features": feats.detach().contiguous().cpu(),
                        "compute_s": torch.tensor(float(compute_s), dtype=torch.float64)},
                       metadata={"format": FEATURE_FORMAT})
        _atomic_write(self._path(key), data)
        self.stats.count("feature_cache_bytes_written", len(data))
        self._evict()

    def _evict(self) -> None:
        if self.max_bytes is None:
            return
        files = sorted(self.root.glob("*/*.safetensors"), key=lambda p: p.stat().st_mtime_ns)
        total = sum(p.stat().st_size for p in files)
        for p in files[:-1]:  # the newest entry stays even if it alone exceeds the bound
            if total <= self.max_bytes:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)


@dataclass
class SearchCheckpoint:
    """The state after a finished round, written atomically to ``path`` (a safetensors file: the kept features and
    labels as tensors, everything else as JSON metadata) and read back by ``search.resume``."""

    path: Path
    fingerprint: str
    family: str = ""  # the fingerprint without the schedule: the same search run with other schedule knobs

    def save(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        payload = {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "family": self.family,
                   "state": json.dumps(meta)}
        _atomic_write(self.path, st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                                         metadata=payload))

    def load(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """The saved state, or None when there is none for this search (another config, or nothing saved)."""
        if not self.path.is_file():
            return None
        try:
            from safetensors import safe_open
            with safe_open(self.path, framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(self.path)
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            warnings.warn(f"search checkpoint {self.path} is unreadable ({exc}); starting from round 1")
            return None
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("fingerprint") != self.fingerprint:
            return None
        return json.loads(meta["state"]), tensors

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def siblings(self) -> list[tuple[Path, dict[str, Any]]]:
        """``(path, saved state)`` of the other saved searches of this family (the same search, another schedule)."""
        from safetensors import safe_open
        found = []
        for path in sorted(self.path.parent.glob("search-*.safetensors")) if self.family else []:
            try:
                with safe_open(path, framework="pt") as f:
                    meta = f.metadata() or {}
                if meta.get("family") == self.family and meta.get("fingerprint") != self.fingerprint:
                    found.append((path, json.loads(meta["state"])))
            except (SafetensorError, OSError, RuntimeError, ValueError, KeyError):
                continue  # unreadable, or not a saved search: not a sibling
        return found


def fingerprint(parts: Iterable[Any]) -> str:
    """A short hash of what defines a search's result (models, data, strategy, scorer, schedule)."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]
