"""The store's JSON records: a model's manifest (its ordered blocks, its head, the metadata a query filters on) and
the store's size."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BlockEntry:
    """One block of a model: its hash, size on disk, parameter count and per-item output shape at the model's input."""

    hash: str
    nbytes: int
    params: int
    out_shape: tuple[int, ...]
    out_dtype: str = "float32"

    @property
    def out_bytes(self) -> int:
        """Bytes of this block's output per data item."""
        import torch  # the records stay torch-free for the store's catalogue commands (alsatian store ls)

        n = 1
        for s in self.out_shape:
            n *= s
        return n * getattr(torch, self.out_dtype).itemsize


@dataclass(frozen=True)
class HeadEntry:
    """A model's classifier head, stored apart from its feature blocks: ``heads/<h[:2]>/<hash>.safetensors``.

    ``in_features``: the size of the features it reads (the model's last block's output); ``out_features``: its
    class count; ``keys``: its tensors' names in the original model (e.g. ``fc.weight``, ``fc.bias``)."""

    hash: str
    nbytes: int
    in_features: int
    out_features: int
    keys: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "HeadEntry":
        return cls(d["hash"], int(d["nbytes"]), int(d["in_features"]), int(d["out_features"]),
                   tuple(d.get("keys", ())))


@dataclass(frozen=True)
class ModelManifest:
    """A stored model: ordered block hashes plus the metadata a search query filters on (§4.1)."""

    name: str
    arch: str
    family: str
    recipe: dict[str, Any]
    input_size: tuple[int, ...]
    blocks: tuple[BlockEntry, ...]
    source: str = ""
    tags: tuple[str, ...] = ()
    created: str = ""
    parent: str | None = None
    head: HeadEntry | None = None  # the classifier head it was imported with (manifests without one still load)

    @property
    def head_hash(self) -> str | None:
        return self.head.hash if self.head is not None else None

    @property
    def num_params(self) -> int:
        return sum(b.params for b in self.blocks)

    @property
    def nbytes(self) -> int:
        """Logical bytes: the sum of this model's block files."""
        return sum(b.nbytes for b in self.blocks)

    @property
    def hashes(self) -> tuple[str, ...]:
        return tuple(b.hash for b in self.blocks)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(format=1, num_params=self.num_params, nbytes=self.nbytes)
        if self.head is None:  # headless manifests are written exactly as before heads existed
            d.pop("head")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelManifest":
        blocks = tuple(BlockEntry(b["hash"], b["nbytes"], b["params"], tuple(b["out_shape"]), b["out_dtype"])
                       for b in d["blocks"])
        return cls(d["name"], d["arch"], d["family"], d["recipe"], tuple(d["input_size"]), blocks,
                   d.get("source", ""), tuple(d.get("tags", ())), d.get("created", ""), d.get("parent"),
                   HeadEntry.from_json(d["head"]) if d.get("head") else None)


@dataclass(frozen=True)
class StoreStats:
    """Store size: models, distinct blocks, logical bytes (sum over models) and physical bytes on disk."""

    models: int
    distinct_blocks: int
    logical_bytes: int
    physical_bytes: int

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.physical_bytes if self.physical_bytes else 1.0
