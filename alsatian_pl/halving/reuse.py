"""Reusing features across searches: a persistent, content-addressed feature cache, and the loop's reuse stage
(cached features straight into the feature store; only the other models are planned and run).

A cached entry is one model's features of one round's inputs. Its key hashes the model's block chain (the content
hashes of all its blocks, so the same function), the identity of the round's prepared inputs (``Items.key``: the
prepared set's key, which covers every file's path, size and mtime for a set on disk and the bytes of a set in
memory, plus the rows and their normalisation), and what changes the arithmetic (batch size, device type,
channels-last layout, and ``search.precision`` when it is not ``32-true``). A file rewritten therefore never serves
stale features: it makes a new prepared set.

Every entry carries the xxh3 checksum of its features' bytes and the inference seconds of each block of its chain:
an entry whose bytes no longer match (a flipped bit, a truncated file) is deleted with a warning and recomputed, and
:func:`verify_features` checks a whole cache (``alsatian store verify``). The seconds a round's hits saved are those
of the blocks only the hit models needed (a block the round still runs for another model saved nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple, Sequence

import torch
import xxhash
from safetensors import SafetensorError, safe_open
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

__all__ = ["FeatureCache", "Cached", "items_key", "fingerprint", "reuse_features", "remember_features",
           "verify_features"]

FEATURE_FORMAT = "alsatian-features-v2"  # v2: a checksum of the features and each block's seconds


class Cached(NamedTuple):
    """A feature-cache hit: the features and the inference seconds each block of the model's chain took for them."""

    features: torch.Tensor
    block_seconds: dict[str, float]


def _checksum(feats: torch.Tensor) -> str:
    flat = feats.detach().contiguous().cpu().reshape(-1)
    return xxhash.xxh3_64_hexdigest(flat.view(torch.uint8).numpy().data if flat.numel() else b"")


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

    def get(self, key: str) -> Cached | None:
        """The cached features under ``key``, or None (a damaged entry is deleted with a warning)."""
        path = self._path(key)
        if not path.is_file():
            self.stats.count("feature_cache_misses")
            return None
        try:
            hit = read_entry(path)
        except (SafetensorError, OSError, KeyError, RuntimeError, ValueError) as exc:
            warnings.warn(f"feature cache entry {path} is damaged ({exc}); it is deleted and recomputed")
            path.unlink(missing_ok=True)
            self.stats.count("feature_cache_misses")
            return None
        os.utime(path)  # most recently used
        self.stats.count("feature_cache_hits")
        self.stats.count("feature_cache_bytes_read", tensor_bytes(hit.features))
        return hit

    def put(self, key: str, feats: torch.Tensor, block_seconds: Mapping[str, float], evict: bool = True) -> None:
        """Store ``feats`` (their chain's blocks took ``block_seconds`` to compute them), then (unless ``evict`` is
        False: the caller evicts once after several puts) evict down to ``max_bytes``."""
        feats = feats.detach().contiguous().cpu()
        data = st_save({"features": feats}, metadata={"format": FEATURE_FORMAT, "xxh3": _checksum(feats),
                                                      "block_seconds": json.dumps(dict(block_seconds))})
        atomic_write(self._path(key), data)
        self.stats.count("feature_cache_bytes_written", len(data))
        if evict:
            self.evict()

    def evict(self) -> None:
        """Least recently used entries out until the cache holds ``max_bytes``; a killed writer's temporary files
        go once an hour old. One listing and one ``stat`` per entry."""
        stale = time.time() - 3600
        for tmp, st in _stats(self.root.glob("*/.*.tmp")):
            if st.st_mtime < stale:
                tmp.unlink(missing_ok=True)
        if self.max_bytes is None:
            return
        entries = sorted(_stats(self.root.glob("*/*.safetensors")), key=lambda e: e[1].st_mtime_ns)
        total = sum(st.st_size for _, st in entries)
        for p, st in entries[:-1]:  # the newest entry stays even if it alone exceeds the bound
            if total <= self.max_bytes:
                break
            total -= st.st_size
            p.unlink(missing_ok=True)


def _stats(paths: Iterable[Path]) -> list[tuple[Path, os.stat_result]]:
    """Each path with its ``stat``, leaving out those another process deleted meanwhile."""
    out = []
    for p in paths:
        try:
            out.append((p, p.stat()))
        except FileNotFoundError:
            continue
    return out


def read_entry(path: Path) -> Cached:
    """A feature-cache file, checked: ValueError when its format is not this version's or its bytes do not match
    their checksum (SafetensorError, OSError when it is not a readable safetensors file)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FEATURE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, not {FEATURE_FORMAT!r}")
        feats = f.get_tensor("features")
    if _checksum(feats) != meta.get("xxh3"):
        raise ValueError("its features do not match their checksum")
    return Cached(feats, {str(k): float(v) for k, v in json.loads(meta["block_seconds"]).items()})


def verify_features(root: str | os.PathLike[str]) -> tuple[int, list[tuple[Path, str]]]:
    """Every entry of the feature cache under ``root`` checked: (entries, [(damaged entry, why)])."""
    files = sorted(Path(root).expanduser().glob("*/*.safetensors"))
    bad = []
    for path in files:
        try:
            read_entry(path)
        except (SafetensorError, OSError, KeyError, RuntimeError, ValueError) as exc:
            bad.append((path, str(exc)))
    return len(files), bad


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
    state.block_seconds_before = dict(engine.stats.block_seconds)
    missing, hit_blocks = {}, {}
    for m in sorted(group.tree.models):
        hit = engine.features.get(engine.features.key(group.chain(m), state.inputs_key))
        if hit is None:
            missing[m] = group.specs[m]
        else:
            state.features.write(m, 0, hit.features.to(device))
            hit_blocks.update(hit.block_seconds)
    still_run = {b.hash for specs in missing.values() for b in specs}
    engine.stats.saved_seconds += sum(s for h, s in hit_blocks.items() if h not in still_run)
    if len(missing) == len(group.tree.models):
        return group.tree
    with engine.stats.phase("planning"):
        return strategy.make_tree(missing)


def remember_features(state: SearchState, engine: Engine, group: TokenizerGroup, tree: TaskTree,
                      inputs: Items) -> None:
    """With a feature cache: store the features just computed (``tree``'s models), with the seconds each block of
    their chains took on these inputs (what running them again would cost)."""
    if engine.features is None:
        return
    before, now = state.block_seconds_before, engine.stats.block_seconds
    took = {h: now[h] - before.get(h, 0.0) for h in now}
    for m in tree.models:
        hashes = group.chain(m)
        engine.features.put(engine.features.key(hashes, state.inputs_key), state.features.current(m),
                            {h: took.get(h, 0.0) for h in hashes}, evict=False)
    engine.features.evict()  # once for the round's entries, not once per model
