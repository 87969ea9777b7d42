"""``SearchDataModule``: the target dataset of a model search (paper §2.2, §4.2), prepared once, split into a
stratified test set and doubling training chunks D1..Dl (one per successive-halving round)."""

from __future__ import annotations

import time

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from ..checks import number, text, whole
from ..errors import DataError
from ._sources import DATASETS, DataSpec, make_source
from ._text import TextSource, tokenizer_key
from ._split import balanced_subset, chunk_bounds, stratified_split


@dataclass
class _Prepared:
    train_x: torch.Tensor  # training items in round-robin order: chunk i is the slice bounds[i]:bounds[i+1]
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    order: np.ndarray  # source indices of the items: training items (round-robin order), then test items


MIN_IMAGE_SIZE = 8  # smaller images carry no shape to rank models on (a 1x1 image is one colour)


def _spec(name: str, path: str | None, num_items: Any, image_size: Any, test_fraction: Any, seed: Any,
          mean: Sequence[float], std: Sequence[float], max_length: Any = 128, tokenizer: str | None = None,
          text_column: str = "text", label_column: str = "label") -> DataSpec:
    """A validated :class:`DataSpec`; bad values raise ``DataError`` saying which value to change."""
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"unknown dataset name {name!r}: use one of {', '.join(sorted(DATASETS))}")
    image_size = whole("dataset.image_size", image_size, at_least=MIN_IMAGE_SIZE,
                       hint=" (pixels per side, e.g. 64 or 224)", error=DataError)
    test_fraction = number("dataset.test_fraction", test_fraction, above=0, below=1, hint=" (e.g. 0.2)",
                           error=DataError)
    if num_items is not None and (isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1):
        raise DataError(f"dataset.num_items must be a positive number of items, or null for all items; got "
                        f"{num_items!r} (an empty dataset cannot be searched)")
    max_length = whole("dataset.max_length", max_length, at_least=2, hint=" (tokens, e.g. 64 or 128)",
                       error=DataError)
    seed = whole("dataset.seed", seed, at_least=0, hint=" (it follows search.seed unless set)", error=DataError)
    path = text("dataset.path", path, optional=True, error=DataError)
    tokenizer = text("dataset.tokenizer", tokenizer, optional=True, error=DataError)
    for key, col in (("dataset.text_column", text_column), ("dataset.label_column", label_column)):
        text(key, col, error=DataError)
    stats = []
    for key, values in (("dataset.mean", mean), ("dataset.std", std)):
        values = list(values) if isinstance(values, Iterable) and not isinstance(values, (str, bytes)) else None
        if values is None or len(values) != 3:
            raise DataError(f"{key} needs three numbers (one per RGB channel), e.g. [0.5, 0.5, 0.5]")
        stats.append(tuple(number(f"{key}[{i}]", v, above=0 if key.endswith("std") else None,
                                  hint=" (std > 0)" if key.endswith("std") else "", error=DataError)
                           for i, v in enumerate(values)))
    return DataSpec(name, path, num_items, image_size, test_fraction, seed, stats[0], stats[1],  # type: ignore
                    max_length, tokenizer, text_column, label_column)


class SearchDataModule(LightningDataModule):
    """Target dataset of a model search: a stratified test set and training chunks D1..Dl with |D_{i+1}| ≈ 2|D_i|.

    Items are prepared once (on the first ``setup`` or access) into one tensor that all rounds and models reuse
    (images: float32 pixels; text: int64 token ids and masks, once per tokenizer); accessors return views of it (do
    not modify them in place).

    name: a registered dataset (``fashion_mnist``, ``image_folder``, ``stanford_cars``, ``text_file``,
    ``rotten_tomatoes``, ``reuters_r8``); path: its folder (image folders; for fashion_mnist an optional folder of IDX
    files) or file (text_file); num_items: a seeded class-balanced subset (None: all; fashion_mnist: the 3,000 embedded
    items); image_size: side of the square model input; test_fraction: share of each class held out for D_test; seed:
    drives subset, split and chunk order; mean/std: per-channel normalisation. Text: max_length tokens per item,
    tokenizer (a tokenizer.json, a model folder or ``all-MiniLM-L6-v2``), text_column/label_column of text files.
    """

    def __init__(self, name: str = "fashion_mnist", path: str | None = None, num_items: int | None = None,
                 image_size: int = 64, test_fraction: float = 0.2, seed: int = 0,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 max_length: int = 128, tokenizer: str | None = None, text_column: str = "text",
                 label_column: str = "label"):
        super().__init__()
        self.spec = _spec(name, path, num_items, image_size, test_fraction, seed, mean, std, max_length, tokenizer,
                          text_column, label_column)
        self.save_hyperparameters(asdict(self.spec))
        self.batch_size = 64
        self._data: _Prepared | None = None
        self._rounds = 1
        self.prepare_seconds = 0.0  # wall time spent preparing items (decode/resize/normalise or tokenise)
        self._text: TextSource | None = None  # kept to tokenise again for other tokenizers
        self._inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # tokenizer key -> (train_x, test_x)
        # Tokenizer of the items the Lightning loaders serve (None: the dataset's); FinetuneCallback sets the winner's.
        self.loader_tokenizer: str | None = None

    # -- preparation

    def setup(self, stage: str | None = None, num_rounds: int | None = None) -> None:
        """Prepare the items (once per data module); with ``num_rounds`` also cut the chunks (:meth:`setup_rounds`)."""
        if self._data is None:
            start = time.perf_counter()
            self._data = self._prepare(num_rounds)
            self.prepare_seconds += time.perf_counter() - start
        if num_rounds is not None:
            self.setup_rounds(num_rounds)

    def _prepare(self, num_rounds: int | None) -> _Prepared:
        spec = self.spec
        source = make_source(spec)
        labels, names = np.asarray(source.labels, dtype=np.int64), list(source.class_names)
        rng = np.random.default_rng(spec.seed)
        keep = np.arange(len(labels))
        if spec.num_items is not None and spec.num_items < len(labels):
            keep = balanced_subset(labels, spec.num_items, rng)
        elif spec.num_items is not None and spec.num_items > len(labels):
            raise DataError(f"dataset {spec.name!r} has only {len(labels)} items but num_items={spec.num_items}: "
                            "lower num_items, or set it to null to use all items")
        _check_classes(np.bincount(labels[keep], minlength=len(names)), np.bincount(labels, minlength=len(names)),
                       names, spec)
        train, test = stratified_split(labels[keep], spec.test_fraction, rng)
        if num_rounds is not None:  # fail before the expensive part
            _check_rounds(len(train), len(names), num_rounds, spec)
        order = keep[np.concatenate([train, test])]
        items = source.prepare(order)
        targets = torch.from_numpy(labels[order])
        n = len(train)
        if isinstance(source, TextSource):
            self._text = source
            self._inputs[tokenizer_key(source.tokenizer)] = (items[:n], items[n:])
        return _Prepared(items[:n], targets[:n], items[n:], targets[n:], names, order)

    def setup_rounds(self, num_rounds: int) -> None:
        """Cut the training set into ``num_rounds`` chunks D1..Dl, each about twice the previous, together all of it.

        D1 must hold one item per class: needs at least ``num_classes * (2**num_rounds - 1)`` training items.
        """
        data = self._prepared()
        _check_rounds(len(data.train_y), len(data.class_names), num_rounds, self.spec)
        self._rounds = num_rounds

    def _prepared(self) -> _Prepared:
        if self._data is None:
            self.setup()
        assert self._data is not None
        return self._data

    def _items(self, tokenizer: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(train_x, test_x)``; text tokenised with ``tokenizer`` (None: the dataset's), once per tokenizer key."""
        data = self._prepared()
        if tokenizer is None:
            return data.train_x, data.test_x
        if self._text is None:
            raise DataError(f"dataset {self.spec.name!r} is not a text dataset: it has no tokenizer to choose")
        key = tokenizer_key(tokenizer)
        if key not in self._inputs:
            start = time.perf_counter()
            items = self._text.prepare(data.order, tokenizer=tokenizer)
            self.prepare_seconds += time.perf_counter() - start
            self._inputs[key] = (items[:len(data.train_y)], items[len(data.train_y):])
        return self._inputs[key]

    @property
    def tokenizer_key(self) -> str | None:
        """Content key of the dataset's tokenizer (text), else None; models with this key can use the default items."""
        self._prepared()
        return None if self._text is None else tokenizer_key(self._text.tokenizer)

    # -- access for the search executor

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self._prepared().class_names)

    @property
    def class_names(self) -> list[str]:
        """Class names; label ``k`` is ``class_names[k]``."""
        return list(self._prepared().class_names)

    @property
    def chunk_sizes(self) -> list[int]:
        """|D1|, ..., |Dl| (one chunk when :meth:`setup_rounds` was not called)."""
        bounds = self._bounds()
        return [b - a for a, b in zip(bounds, bounds[1:])]

    def _bounds(self) -> list[int]:
        return chunk_bounds(len(self._prepared().train_y), self._rounds)

    @property
    def item_bytes(self) -> int:
        """Bytes of one prepared item (e.g. ``3 * S * S * 4`` for float32 images)."""
        x = self._prepared().train_x
        return x[0].numel() * x.element_size()

    @property
    def held_bytes(self) -> int:
        """Bytes of every prepared tensor this module holds (items of each tokenizer prepared so far, and labels)."""
        data = self._prepared()
        tensors = [data.train_x, data.test_x, data.train_y, data.test_y]
        tensors += [t for pair in self._inputs.values() for t in pair if t is not data.train_x and t is not data.test_x]
        return sum(t.numel() * t.element_size() for t in tensors)

    def test_items(self, tokenizer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the test set D_test, the same in every round (text: tokenised with ``tokenizer``)."""
        return self._items(tokenizer)[1], self._prepared().test_y

    def chunk(self, i: int, tokenizer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the items new in round ``i`` (0-based), i.e. chunk D_{i+1} (text: tokenised with
        ``tokenizer``, default the dataset's)."""
        bounds = self._bounds()
        if not 0 <= i < len(bounds) - 1:
            raise IndexError(f"chunk {i} out of range: there are {len(bounds) - 1} chunks")
        x = self._items(tokenizer)[0]
        return x[bounds[i]:bounds[i + 1]], self._prepared().train_y[bounds[i]:bounds[i + 1]]

    def train_items(self, upto: int | None = None, tokenizer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of chunks 0..``upto`` together, in chunk order (default: the whole training set)."""
        bounds = self._bounds()
        upto = len(bounds) - 2 if upto is None else upto
        if not 0 <= upto < len(bounds) - 1:
            raise IndexError(f"chunk {upto} out of range: there are {len(bounds) - 1} chunks")
        x = self._items(tokenizer)[0]
        return x[:bounds[upto + 1]], self._prepared().train_y[:bounds[upto + 1]]

    def describe(self) -> dict[str, Any]:
        """Summary for results.json: name, items, classes, image_size, chunk_sizes, test_size and more."""
        data = self._prepared()
        return {"name": self.spec.name, "path": self.spec.path, "items": len(data.train_y) + len(data.test_y),
                "classes": len(data.class_names), "image_size": self.spec.image_size,
                "train_size": len(data.train_y), "test_size": len(data.test_y), "chunk_sizes": self.chunk_sizes,
                "item_bytes": self.item_bytes, "held_bytes": self.held_bytes, "seed": self.spec.seed,
                **({"max_length": self.spec.max_length, "tokenizer": self._text.tokenizer} if self._text else {})}

    # -- Lightning loaders for later fine-tuning

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) batches of ``batch_size`` over the whole training set (text: ``loader_tokenizer``'s)."""
        data = self._prepared()
        generator = torch.Generator().manual_seed(self.spec.seed)
        return DataLoader(TensorDataset(self._items(self.loader_tokenizer)[0], data.train_y),
                          batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        """Batches of ``batch_size`` over the test set, in order (text: ``loader_tokenizer``'s)."""
        data = self._prepared()
        return DataLoader(TensorDataset(self._items(self.loader_tokenizer)[1], data.test_y),
                          batch_size=self.batch_size)


def _check_classes(counts: np.ndarray, available: np.ndarray, names: list[str], spec: DataSpec) -> None:
    """At least two classes, and two items per class (one for the test set, one for training) among those kept."""
    if counts.sum() == 0:
        raise DataError(f"empty dataset {spec.name!r}: it has no items")
    if len(names) < 2:
        raise DataError(f"dataset {spec.name!r} has one class only ({names[0]!r}); model search needs at least two "
                        "classes: add a subfolder with images for each further class")
    small = np.flatnonzero(counts < 2)
    if len(small):
        listed = ", ".join(f"{names[c]!r} ({counts[c]})" for c in small[:5]) + (" ..." if len(small) > 5 else "")
        fix = (f"raise num_items to at least {2 * len(names)}" if (available[small] >= 2).all()
               else "add images to these classes or remove their folders")
        raise DataError(f"every class needs at least 2 items (one for the test set, one for training), but "
                        f"{len(small)} class(es) have fewer: {listed}; {fix}")


def _check_rounds(num_train: int, num_classes: int, rounds: int, spec: DataSpec) -> None:
    """A positive number of rounds whose first chunk D1 = round(num_train / (2**rounds - 1)) holds every class."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise DataError(f"the number of rounds must be a positive integer, got {rounds!r}")
    needed = num_classes * (2**rounds - 1)
    if num_train < needed:
        total = math.ceil((needed + num_classes) / (1 - spec.test_fraction))
        raise DataError(
            f"too few items for {rounds} rounds: the first chunk D1 must hold one item per class, so {rounds} rounds "
            f"need at least {needed} training items ({num_classes} classes x (2^{rounds} - 1)), but dataset "
            f"{spec.name!r} has {num_train} (test_fraction={spec.test_fraction}). Use at least {total} items "
            "(num_items, or more images), or fewer rounds (rounds = ceil(log2(models / result size)): search fewer "
            "models or ask for a larger result)")
