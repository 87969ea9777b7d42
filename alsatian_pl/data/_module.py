"""``SearchDataModule``: the target dataset of a model search (paper §2.2, §4.2), prepared once, split into a
stratified test set and doubling training chunks D1..Dl (one per successive-halving round)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ..checks import flag, number, text, whole
from ..errors import DataError
from ..io import check_folder
from ._items import Items
from ._prepare import Prepared, Preparation, check_rounds, first_items
from ._sources import DATASETS, DataSpec
from ._table import label_columns
from ._text import tokenizer_key
from ._split import chunk_bounds
from ._tasks import TASKS, label_prefix


MIN_IMAGE_SIZE = 8  # smaller images carry no shape to rank models on (a 1x1 image is one colour)


def _spec(name: str, path: str | None, num_items: Any, image_size: Any, test_fraction: Any, seed: Any,
          mean: Sequence[float], std: Sequence[float], max_length: Any = 128, tokenizer: str | None = None,
          text_column: str = "text", label_column: Any = "label", image_column: str | None = None,
          skip_unreadable: bool = False, task: str = "auto") -> DataSpec:
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
    text("dataset.text_column", text_column, error=DataError)
    label_column = label_columns(label_column)
    image_column = text("dataset.image_column", image_column, optional=True, error=DataError)
    if task not in ("auto", *TASKS):
        raise DataError(f"dataset.task must be auto, multiclass, multilabel or regression, got {task!r}")
    stats = []
    for key, values in (("dataset.mean", mean), ("dataset.std", std)):
        values = list(values) if isinstance(values, Iterable) and not isinstance(values, (str, bytes)) else None
        if values is None or len(values) != 3:
            raise DataError(f"{key} needs three numbers (one per RGB channel), e.g. [0.5, 0.5, 0.5]")
        stats.append(tuple(number(f"{key}[{i}]", v, above=0 if key.endswith("std") else None,
                                  hint=" (std > 0)" if key.endswith("std") else "", error=DataError)
                           for i, v in enumerate(values)))
    return DataSpec(name, path, num_items, image_size, test_fraction, seed, stats[0], stats[1],  # type: ignore
                    max_length, tokenizer, text_column, label_column, image_column,
                    flag("dataset.skip_unreadable", skip_unreadable, error=DataError), task)


class SearchDataModule(LightningDataModule):
    """Target dataset of a model search: a stratified test set and training chunks D1..Dl with |D_{i+1}| ≈ 2|D_i|.

    Items are prepared once into a compact set that all rounds and models reuse: images as uint8 pixels (decoded in
    parallel worker processes, resized to ``image_size``; with ``data_cache`` kept on disk and reused by later
    searches, see ``_cache``), text as int32 token ids and masks (in memory, once per tokenizer). Accessors return
    :class:`Items`, views that a round streams batch by batch and makes model-ready on the device (``.tensor()``
    gives them in one tensor, for small sets).

    name: a registered dataset (``fashion_mnist``, ``image_folder``, ``stanford_cars``, ``text_file``,
    ``rotten_tomatoes``, ``reuters_r8``, ``twenty_newsgroups``, ``twenty_newsgroups_topics``, ``table``); path: its
    folder (image folders; for
    fashion_mnist an optional folder of IDX files; a table saved by Hugging Face datasets) or file (text_file,
    table); num_items: a seeded class-balanced subset (None: all;
    fashion_mnist: the 3,000 embedded items); image_size: side of the square model input; test_fraction: share of each class held out for D_test; seed:
    drives subset, split and chunk order; mean/std: per-channel normalisation. Text: max_length tokens per item,
    tokenizer (a tokenizer.json, a model folder or ``all-MiniLM-L6-v2``), text_column/label_column of text files
    and tables (``table``: label_column may list several columns; image_column: a table's images, see ``_table``).
    task: ``auto`` (the source's task, else inferred from its labels: :attr:`task_note` says which),
    ``multiclass``, ``multilabel`` or ``regression`` (``alsatian_pl/data/_tasks.py``).
    data_cache: folder of the prepared-data cache (None: prepared items stay in memory); skip_unreadable: leave out
    image files that cannot be decoded (counted in ``describe()``) instead of stopping; num_workers: decoding
    processes (None: one per core, at most 8; 0: decode in this process).
    """

    def __init__(self, name: str = "fashion_mnist", path: str | None = None, num_items: int | None = None,
                 image_size: int = 64, test_fraction: float = 0.2, seed: int = 0,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 max_length: int = 128, tokenizer: str | None = None, text_column: str = "text",
                 label_column: str | Sequence[str] = "label", data_cache: str | None = None,
                 skip_unreadable: bool = False, num_workers: int | None = None, image_column: str | None = None,
                 task: str = "auto"):
        super().__init__()
        self.spec = _spec(name, path, num_items, image_size, test_fraction, seed, mean, std, max_length, tokenizer,
                          text_column, label_column, image_column, skip_unreadable, task)
        data_cache = text("dataset.data_cache", data_cache, optional=True, error=DataError)
        self.data_cache = None if data_cache is None else str(check_folder(data_cache, "dataset.data_cache"))
        self.skip_unreadable = self.spec.skip_unreadable
        self.num_workers = _workers(num_workers)
        self.save_hyperparameters({**asdict(self.spec), "data_cache": self.data_cache,
                                   "skip_unreadable": self.skip_unreadable})
        self.batch_size = 64
        self._prep = Preparation(self.spec, self.data_cache, self.num_workers)
        self._data: Prepared | None = None
        self._rounds = 1
        self._min_first: int | None = None  # the robust schedule's least |D1| (None: the paper's chunks)
        # Tokenizer of the items the Lightning loaders serve (None: the dataset's); FinetuneCallback sets the winner's.
        self.loader_tokenizer: str | None = None

    # -- preparation

    def setup(self, stage: str | None = None, num_rounds: int | None = None,
              min_class_items: int | None = None) -> None:
        """Prepare the items (once per data module); with ``num_rounds`` also cut the chunks (:meth:`setup_rounds`)."""
        if self._data is None:
            self._data = self._prep.prepare(num_rounds, min_class_items)
        if num_rounds is not None:
            self.setup_rounds(num_rounds, min_class_items)

    @property
    def task(self) -> str:
        """``multiclass``, ``multilabel`` or ``regression`` (``dataset.task``, or what ``auto`` inferred); reading it
        lists the source and checks its labels, but decodes nothing."""
        return self._prep.labelled()[1].task

    @property
    def task_note(self) -> str:
        """One line: the task, and with ``dataset.task=auto`` what it was inferred from."""
        return self._prep.labelled()[1].note

    @property
    def prepare_seconds(self) -> float:
        """Wall time spent preparing items so far (decode/resize or tokenise, or opening the cache)."""
        return self._prep.seconds

    @property
    def notes(self) -> dict[str, Any]:
        """What preparing the items noted (files ignored, targets skipped, ...): results.json's dataset.prepared."""
        return self._prep.notes

    def setup_rounds(self, num_rounds: int, min_class_items: int | None = None) -> None:
        """Cut the training set into ``num_rounds`` chunks D1..Dl, each about twice the previous, together all of it.

        D1 must hold one item per class: needs at least ``num_classes * (2**num_rounds - 1)`` training items.
        ``min_class_items`` (the robust schedule, None: the paper's chunks): D1 holds at least that many items of
        every class (all of a class that has fewer), later chunks double until the items run out, and the chunks that
        would be empty are merged away, so there may be fewer chunks than ``num_rounds`` (:func:`chunk_bounds`).
        """
        data = self._prepared()
        train = data.train_y.numpy()
        check_rounds(len(train), first_items(train, data.task, len(data.class_names)), num_rounds, self.spec,
                     min_class_items, data.task)
        self._rounds = num_rounds
        self._min_first = None if min_class_items is None else label_prefix(train, data.train_strata, data.task,
                                                                               min_class_items)

    def _prepared(self) -> Prepared:
        if self._data is None:
            self.setup()
        assert self._data is not None
        return self._data

    def _items(self, tokenizer: str | None, part: slice) -> Items:
        """Items ``part`` of all items (training, then test); text tokenised with ``tokenizer`` (None: the
        dataset's), once per tokenizer key."""
        data = self._prepared()
        if tokenizer is None:
            return Items(data.rows, data.row_of[part], data.convert)
        return Items(self._prep.tokenized(tokenizer, data.order), data.row_of[part], self._prep.ids)

    @property
    def tokenizer_key(self) -> str | None:
        """Content key of the dataset's tokenizer (text), else None; models with this key can use the default items."""
        self._prepared()
        text = self._prep.text
        return None if text is None else tokenizer_key(text.tokenizer)

    # -- access for the search executor

    @property
    def num_classes(self) -> int:
        """Number of classes (multiclass), labels (multilabel) or targets (regression): the head's outputs."""
        return len(self._prepared().class_names)

    @property
    def num_targets(self) -> int:
        """The same as :attr:`num_classes`, under the name that fits multilabel and regression."""
        return self.num_classes

    @property
    def class_names(self) -> list[str]:
        """Names of the classes (label ``k`` is ``class_names[k]``), the labels or the targets (column ``k``)."""
        return list(self._prepared().class_names)

    @property
    def chunk_sizes(self) -> list[int]:
        """|D1|, ..., |Dl| (one chunk when :meth:`setup_rounds` was not called)."""
        bounds = self._bounds()
        return [b - a for a, b in zip(bounds, bounds[1:])]

    def _bounds(self) -> list[int]:
        return chunk_bounds(len(self._prepared().train_y), self._rounds, self._min_first)

    @property
    def item_bytes(self) -> int:
        """Bytes of one prepared item as stored (e.g. ``3 * S * S`` for uint8 pixels)."""
        rows = self._prepared().rows
        return rows.dtype.itemsize * int(np.prod(rows.row_shape))

    @property
    def held_bytes(self) -> int:
        """Bytes this module holds in memory: prepared items kept in memory (text of each tokenizer so far; images
        without a prepared-data cache) and the labels; a prepared set on disk is not held."""
        data = self._prepared()
        sets = {id(r): r for r in [data.rows, *self._prep.inputs.values()]}
        labels = sum(y.numel() * y.element_size() for y in (data.train_y, data.test_y))
        return sum(r.resident_bytes for r in sets.values()) + labels

    def test_items(self, tokenizer: str | None = None) -> tuple[Items, torch.Tensor]:
        """``(x, y)`` of the test set D_test, the same in every round (text: tokenised with ``tokenizer``)."""
        n = len(self._prepared().train_y)
        return self._items(tokenizer, slice(n, None)), self._prepared().test_y

    def chunk(self, i: int, tokenizer: str | None = None) -> tuple[Items, torch.Tensor]:
        """``(x, y)`` of the items new in round ``i`` (0-based), i.e. chunk D_{i+1} (text: tokenised with
        ``tokenizer``, default the dataset's)."""
        bounds = self._bounds()
        if not 0 <= i < len(bounds) - 1:
            raise IndexError(f"chunk {i} out of range: there are {len(bounds) - 1} chunks")
        part = slice(bounds[i], bounds[i + 1])
        return self._items(tokenizer, part), self._prepared().train_y[part]

    def train_items(self, upto: int | None = None, tokenizer: str | None = None) -> tuple[Items, torch.Tensor]:
        """``(x, y)`` of chunks 0..``upto`` together, in chunk order (default: the whole training set)."""
        bounds = self._bounds()
        upto = len(bounds) - 2 if upto is None else upto
        if not 0 <= upto < len(bounds) - 1:
            raise IndexError(f"chunk {upto} out of range: there are {len(bounds) - 1} chunks")
        part = slice(0, bounds[upto + 1])
        return self._items(tokenizer, part), self._prepared().train_y[part]

    def describe(self) -> dict[str, Any]:
        """Summary for results.json: name, items, classes, image_size, chunk_sizes, test_size, how the items were
        prepared (decoded now or reused from the prepared-data cache, files skipped or ignored) and more."""
        data = self._prepared()
        text = self._prep.text
        prepared = {"data_cache": self.data_cache if text is None else None, "decoded": data.decoded,
                    "reused": len(data.order) - data.decoded, "seconds": round(self.prepare_seconds, 3),
                    "skipped_unreadable": len(data.skipped), **self.notes}
        if data.skipped:
            prepared["skipped_files"] = list(data.skipped[:20])
        return {"name": self.spec.name, "path": self.spec.path, "items": len(data.train_y) + len(data.test_y),
                "task": data.task, "classes": len(data.class_names), "image_size": self.spec.image_size,
                "train_size": len(data.train_y), "test_size": len(data.test_y), "chunk_sizes": self.chunk_sizes,
                "item_bytes": self.item_bytes, "in_flight_item_bytes": self.test_items()[0].in_flight_item_bytes,
                "held_bytes": self.held_bytes, "seed": self.spec.seed, "prepared": prepared,
                **({"max_length": self.spec.max_length, "tokenizer": text.tokenizer} if text else {})}

    # -- Lightning loaders for later fine-tuning

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) batches of ``batch_size`` over the whole training set (text: ``loader_tokenizer``'s)."""
        generator = torch.Generator().manual_seed(self.spec.seed)
        x, y = self.train_items(tokenizer=self.loader_tokenizer)
        return DataLoader(_Labelled(x, y), batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        """Batches of ``batch_size`` over the test set, in order (text: ``loader_tokenizer``'s)."""
        return DataLoader(_Labelled(*self.test_items(self.loader_tokenizer)), batch_size=self.batch_size)


class _Labelled(Dataset):
    """``(item, label)`` pairs of :class:`Items`, read a batch at a time (``__getitems__``)."""

    def __init__(self, items: Items, labels: torch.Tensor):
        self.items, self.labels = items, labels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[k:k + 1].tensor()[0], self.labels[k]

    def __getitems__(self, ks: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x = self.items.take(ks).tensor()
        return list(zip(x, self.labels[ks]))


def _workers(value: Any) -> int:
    """Decoding processes: ``value``, or one per available core (at most 8) when None."""
    if value is None:
        return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return whole("dataset.num_workers", value, at_least=0, hint=" (0: decode in this process; null: one per core)",
                 error=DataError)
