"""Reusing features across searches: a persistent, content-addressed feature cache, and the loop's reuse stage
(cached features straight into the feature store; only the other models are planned and run).

A cached entry is one model's features of one round's inputs. Its key hashes the model's block chain (the content
hashes of all its blocks, so the same function), the identity of the round's prepared inputs (``Items.key``: the
prepared set's key, which covers every file's path, size and mtime for a set on disk and the bytes of a set in
memory, plus the rows and their normalisation), and what changes the arithmetic (batch size, device type,
channels-last layout, and ``search.precision`` when it is not ``32-true``). A file rewritten therefore never serves stale features: it makes a new prepared set.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from ..cache import tensor_bytes
from ..data import Items
from ..io import atomic_write
from ..plan import TaskTree
from ..stats import SearchStats

if TYPE_CHECKING:
    from .engine import Engine
    from .state import SearchState, TokenizerGroup
    from .strategies import Strategy

__all__ = ["FeatureCache", "items_key", "fingerprint", "reuse_features", "remember_features"]

FEATURE_FORMAT = "alsatian-features-v1"


def items_key(x: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes: the identity of a round's prepared inputs."""
    h = hashlib.sha256(f"{x.dtype}:{list(x.shape)}".encode())
    flat = x.detach().contiguous().cpu().reshape(-1)
    h.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Features on disk under ``root``, at most ``max_bytes`` (least recently used entries go first; None: no bound).

    ``context`` holds what, besides the model and the items, changes the features' bits (batch size, device type,
    layout, precision). Hits, misses, bytes read and the inference seconds the hits saved go to ``stats``.
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
        atomic_write(self._path(key), data)
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


def fingerprint(parts: Iterable[Any]) -> str:
    """A short hash of what defines a search's result (models, data, strategy, scorer, schedule)."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def reuse_features(state: SearchState, engine: Engine, strategy: Strategy, group: TokenizerGroup, inputs: Items,
                   device: torch.device) -> TaskTree:
    """With a feature cache: the cached features of this round go straight to the feature store, and the tree of
    the group's other models is returned (without one: the group's tree)."""
    assert group.tree is not None
    if engine.features is None:
        return group.tree
    state.inputs_key = inputs.key
    missing = {}
    for m in sorted(group.tree.models):
        feats = engine.features.get(engine.features.key(group.chain(m), state.inputs_key))
        if feats is None:
            missing[m] = group.specs[m]
        else:
            state.features.write(m, 0, feats.to(device))
    if len(missing) == len(group.tree.models):
        return group.tree
    with engine.stats.phase("planning"):
        return strategy.make_tree(missing)


def remember_features(state: SearchState, engine: Engine, group: TokenizerGroup, tree: TaskTree,
                      inputs: Items) -> None:
    """With a feature cache: store the features just computed (``tree``'s models), with their inference time."""
    if engine.features is None:
        return
    per_item = {h: s / engine.stats.block_items[h] for h, s in engine.stats.block_seconds.items()}
    for m in tree.models:
        hashes = group.chain(m)
        engine.features.put(engine.features.key(hashes, state.inputs_key), state.features.current(m),
                            compute_s=sum(per_item.get(h, 0.0) for h in hashes) * len(inputs))
