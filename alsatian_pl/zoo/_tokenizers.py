"""Text models' tokenizers in the store: stored once as ``tokenizers/<key>.json`` (``key``: a hash of its content),
named on each model by the tag ``tokenizer:<key>``."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..store import BlockStore, ModelManifest


def tokenizer_tag(store: BlockStore, ref: str | None) -> list[str]:
    """``["tokenizer:<key>"]`` after storing the tokenizer ``ref`` in the store (``[]`` for None)."""
    from ..data import save_tokenizer
    return [] if ref is None else [f"tokenizer:{save_tokenizer(ref, store.root / 'tokenizers')}"]


def tokenizer_of(manifest: ModelManifest) -> str | None:
    """The content key of a text model's tokenizer (its ``tokenizer:<key>`` tag), else None."""
    return next((t.split(":", 1)[1] for t in manifest.tags if t.startswith("tokenizer:")), None)


def tokenizer_file(store: BlockStore, manifest: ModelManifest) -> Path | None:
    """The stored tokenizer of a text model (a ``SearchDataModule`` accepts it as ``tokenizer``), else None."""
    key = tokenizer_of(manifest)
    return None if key is None else store.root / "tokenizers" / f"{key}.json"


def model_tokenizer(store: BlockStore, manifest: ModelManifest, default_key: str | None) -> str | None:
    """The tokenizer file to prepare a model's items with; None when the dataset's own items serve it (no tokenizer
    tag, a non-text dataset, or the dataset's key ``default_key``). DataError if the stored tokenizer is missing or
    changed."""
    from ..data import tokenizer_key
    key, path = tokenizer_of(manifest), tokenizer_file(store, manifest)
    if path is None or default_key is None or key == default_key:
        return None
    if not path.is_file() or tokenizer_key(str(path)) != key:
        raise DataError(f"model {manifest.name} was stored with tokenizer {key}, but {path} is "
                        f"{'changed' if path.is_file() else 'missing'}: rebuild or re-import its zoo (that stores "
                        "the tokenizer again), or set dataset.tokenizer to that model's tokenizer")
    return str(path)
