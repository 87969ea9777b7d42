"""``SearchDataModule``: the target dataset of a model search (paper §2.2, §4.2), prepared once, split into a
stratified test set and doubling training chunks D1..Dl (one per successive-halving round)."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ..checks import flag, number, text, whole
from ..errors import AlsatianWarning, DataError
from ..io import check_folder
from ..resources import host_memory_bytes
from ..units import format_bytes
from ._cache import DiskRows
from ._items import AsIs, Convert, Items, MemoryRows, Rows, ToIds, ToPixels
from ._sources import DATASETS, DataSpec, ImageSource, Source, make_source, unreadable
from ._table import label_columns
from ._text import TextSource, tokenizer_key
from ._split import balanced_subset, chunk_bounds, stratified_split
from ._tasks import TASKS, Labels, check_targets, cover_first, first_needed, label_prefix, resolve, strata


@dataclass
class _Prepared:
    rows: Rows  # the prepared set (uint8 pixels, in memory or on disk; int32 token ids in memory)
    row_of: np.ndarray  # the row of each item: training items (round-robin order: chunk i is bounds[i]:bounds[i+1]),
    #                     then the test items
    train_y: torch.Tensor  # multiclass: int64 class ids [N]; multilabel: float32 0/1 [N, L]; regression: float32 [N, T]
    test_y: torch.Tensor
    class_names: list[str]  # the classes, labels or targets
    order: np.ndarray  # source indices of the items, in the same order as row_of
    convert: Convert  # how rows become model-ready items
    decoded: int = 0  # items decoded by this module (the rest came from the prepared-data cache)
    skipped: tuple[str, ...] = ()  # unreadable files left out (dataset.skip_unreadable)
    task: str = "multiclass"
    train_strata: np.ndarray | None = None  # the stratum of each training item, in training order (_tasks.strata)


MIN_IMAGE_SIZE = 8  # smaller images carry no shape to rank models on (a 1x1 image is one colour)


def _warn_few_test_items(num_test: int, num_strata: int, spec: DataSpec) -> None:
    """A warning when the test split is too small to tell models apart (under 3 items a class, or under 30): every
    score then moves in steps of 1/num_test, and the confident set grows to match."""
    if num_test < max(30, 3 * num_strata):
        warnings.warn(f"dataset {spec.name!r}: only {num_test} test items (test_fraction={spec.test_fraction}, "
                      f"{num_strata} classes or strata): scores move in steps of {100 / num_test:.1f} points, so "
                      "close models cannot be told apart; raise dataset.test_fraction or num_items",
                      AlsatianWarning, stacklevel=2)


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


IMAGES_AT_ONCE = 16  # prepared images a decoding batch and its copies hold at once, at least


def _check_room(size: int, items: int, in_memory: bool) -> None:
    """DataError, before anything is decoded, when images of ``size`` pixels per side cannot be prepared in this
    machine's memory (a batch of them; all ``items`` without a prepared-data cache)."""
    memory, image = host_memory_bytes(), 3 * size * size
    need = image * (items if in_memory else IMAGES_AT_ONCE)
    if memory and need > memory // 2:
        held = f"all {items} prepared images" if in_memory else f"a batch of {IMAGES_AT_ONCE} prepared images"
        raise DataError(f"dataset.image_size={size} makes each prepared image {format_bytes(image)} (3 x {size} x "
                        f"{size} bytes): {held} take {format_bytes(need)}, more than half of this machine's "
                        f"{format_bytes(memory)} of memory. Models take a few hundred pixels per side: use e.g. "
                        "dataset.image_size=224" + (" (or set dataset.data_cache to keep them on disk)"
                                                    if in_memory else ""))


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
        self._data: _Prepared | None = None
        self._source: tuple[Source, Labels] | None = None  # the source and its labels checked for the task
        self._rounds = 1
        self._min_first: int | None = None  # the robust schedule's least |D1| (None: the paper's chunks)
        self.prepare_seconds = 0.0  # wall time spent preparing items (decode/resize or tokenise, or opening the cache)
        self._text: TextSource | None = None  # kept to tokenise again for other tokenizers
        self._inputs: dict[str, MemoryRows] = {}  # tokenizer key -> its token ids, rows in the order of row_of
        self._pixels, self._ids = ToPixels(self.spec.mean, self.spec.std), ToIds()
        # Tokenizer of the items the Lightning loaders serve (None: the dataset's); FinetuneCallback sets the winner's.
        self.loader_tokenizer: str | None = None

    # -- preparation

    def setup(self, stage: str | None = None, num_rounds: int | None = None,
              min_class_items: int | None = None) -> None:
        """Prepare the items (once per data module); with ``num_rounds`` also cut the chunks (:meth:`setup_rounds`)."""
        if self._data is None:
            start = time.perf_counter()
            self._data = self._prepare(num_rounds, min_class_items)
            self.prepare_seconds += time.perf_counter() - start
        if num_rounds is not None:
            self.setup_rounds(num_rounds, min_class_items)

    def _labelled(self) -> tuple[Source, Labels]:
        """The source (listed once) and its labels checked for ``dataset.task``; nothing is decoded yet."""
        if self._source is None:
            source = make_source(self.spec)
            self._source = source, resolve(source.labels, list(source.class_names), getattr(source, "task",
                                           "multiclass"), self.spec.task, self.spec.name, self.skip_unreadable)
        return self._source

    @property
    def task(self) -> str:
        """``multiclass``, ``multilabel`` or ``regression`` (``dataset.task``, or what ``auto`` inferred); reading it
        lists the source and checks its labels, but decodes nothing."""
        return self._labelled()[1].task

    @property
    def task_note(self) -> str:
        """One line: the task, and with ``dataset.task=auto`` what it was inferred from."""
        return self._labelled()[1].note

    def _prepare(self, num_rounds: int | None, min_class_items: int | None = None) -> _Prepared:
        source, resolved = self._labelled()
        labels, names = resolved.values, resolved.names
        self.notes = dict(source.notes)
        if resolved.dropped:
            self.notes["skipped_nan_targets"] = resolved.dropped
        bad: set[int] = set()
        while True:  # an unreadable file skipped: select again without it
            n, order, train_strata = self._select(resolved, bad, num_rounds, min_class_items)
            if not isinstance(source, ImageSource):  # text, or a source that prepares its items itself
                rows, convert = self._prepared_by(source, order)
                row_of, decoded = np.arange(len(order)), len(order)
                break
            rows, row_of, decoded, failed = self._images(source, order)
            convert = self._pixels
            if not failed:
                break
            bad |= failed
        targets = torch.from_numpy(labels[order])
        skipped = tuple(source.item_name(i) for i in sorted(bad)) if bad else ()
        if skipped:
            warnings.warn(f"skipped {len(skipped)} image(s) that cannot be read (dataset.skip_unreadable=true), e.g. "
                          f"{skipped[0]}; results.json lists them under dataset.prepared", stacklevel=3)
        self.notes.update(check_targets(labels[order], resolved.task, names, self.spec.name))
        return _Prepared(rows, row_of, targets[:n], targets[n:], names, order, convert, decoded, skipped,
                         resolved.task, train_strata)

    def _prepared_by(self, source: Source, order: np.ndarray) -> tuple[Rows, Convert]:
        """Items the source prepares in memory: text as int32 token ids (the key of its tokenizer noted), others
        model-ready as the source gives them."""
        if isinstance(source, TextSource):
            self._text = source
            rows = MemoryRows(source.prepare(order).to(torch.int32))
            self._inputs[tokenizer_key(source.tokenizer)] = rows
            return rows, self._ids
        return MemoryRows(source.prepare(order)), AsIs()

    def _select(self, resolved: Labels, bad: set[int], num_rounds: int | None,
                min_class_items: int | None = None) -> tuple[int, np.ndarray, np.ndarray]:
        """``(training items, source indices of the training items in round-robin order and then the test items,
        the training items' strata)`` of the seeded subset and split (stratified as the task needs:
        ``_tasks.strata``), leaving out ``bad`` items."""
        spec, labels, names, task = self.spec, resolved.values, resolved.names, resolved.task
        rng = np.random.default_rng(spec.seed)
        keep = np.setdiff1d(resolved.keep, np.fromiter(bad, dtype=np.int64, count=len(bad)))
        if spec.num_items is not None and spec.num_items < len(keep):
            keep = keep[balanced_subset(strata(labels[keep], task), spec.num_items, rng)]
        elif spec.num_items is not None and spec.num_items > len(keep):
            raise DataError(f"dataset {spec.name!r} has only {len(keep)} items but num_items={spec.num_items}: "
                            "lower num_items, or set it to null to use all items")
        if task == "multiclass":
            _check_classes(np.bincount(labels[keep], minlength=len(names)),
                           np.bincount(labels[resolved.keep], minlength=len(names)), names, spec)
        else:
            check_targets(labels[keep], task, names, spec.name)
        groups = strata(labels[keep], task)
        train, test = stratified_split(groups, spec.test_fraction, rng)
        _warn_few_test_items(len(test), len(np.unique(groups)), spec)
        train = cover_first(train, labels[keep], task)
        if num_rounds is not None:  # fail before the expensive part
            _check_rounds(len(train), self._first(labels[keep][train], task, len(names)), num_rounds, spec,
                          min_class_items, task)
        return len(train), keep[np.concatenate([train, test])], groups[train]

    @staticmethod
    def _first(train_values: np.ndarray, task: str, num_classes: int) -> int:
        """Items the first chunk needs for its guarantee (every class, every label, a spread of the target)."""
        return num_classes if task == "multiclass" else first_needed(train_values, task)

    def _images(self, source: ImageSource, order: np.ndarray) -> tuple[Rows, np.ndarray, int, set[int]]:
        """``(prepared set, row of each item, items decoded now, unreadable items)``: rows of the prepared-data cache
        (filled where missing), or a uint8 tensor in memory without one."""
        stop = not self.skip_unreadable
        _check_room(self.spec.image_size, len(order), self.data_cache is None)
        with _progress(len(order), f"Preparing {len(order)} images") as advance:
            if self.data_cache is not None:
                rows = DiskRows.open(Path(self.data_cache), source)
                decoded = rows.fill(source, order, workers=self.num_workers, stop_on_error=stop, progress=advance)
                return rows, order, decoded, {int(i) for i in order if int(i) in rows.unreadable}
            size = self.spec.image_size
            pixels = torch.empty((len(order), 3, size, size), dtype=torch.uint8)
            failed: set[int] = set()
            for pos, batch, errors, _ in source.decode(order, self.num_workers):
                pixels[torch.from_numpy(pos)] = batch
                if errors and stop:
                    raise unreadable(next(iter(errors.values())))
                failed |= {int(order[p]) for p in errors}
                advance(len(pos))
        return MemoryRows(pixels), np.arange(len(order)), len(order), failed

    def setup_rounds(self, num_rounds: int, min_class_items: int | None = None) -> None:
        """Cut the training set into ``num_rounds`` chunks D1..Dl, each about twice the previous, together all of it.

        D1 must hold one item per class: needs at least ``num_classes * (2**num_rounds - 1)`` training items.
        ``min_class_items`` (the robust schedule, None: the paper's chunks): D1 holds at least that many items of
        every class (all of a class that has fewer), later chunks double until the items run out, and the chunks that
        would be empty are merged away, so there may be fewer chunks than ``num_rounds`` (:func:`chunk_bounds`).
        """
        data = self._prepared()
        train = data.train_y.numpy()
        _check_rounds(len(train), self._first(train, data.task, len(data.class_names)), num_rounds, self.spec,
                      min_class_items, data.task)
        self._rounds = num_rounds
        self._min_first = None if min_class_items is None else label_prefix(train, data.train_strata, data.task,
                                                                               min_class_items)

    def _prepared(self) -> _Prepared:
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
        if self._text is None:
            raise DataError(f"dataset {self.spec.name!r} is not a text dataset: it has no tokenizer to choose")
        key = tokenizer_key(tokenizer)
        if key not in self._inputs:
            start = time.perf_counter()
            self._inputs[key] = MemoryRows(self._text.prepare(data.order, tokenizer=tokenizer).to(torch.int32))
            self.prepare_seconds += time.perf_counter() - start
        return Items(self._inputs[key], data.row_of[part], self._ids)

    @property
    def tokenizer_key(self) -> str | None:
        """Content key of the dataset's tokenizer (text), else None; models with this key can use the default items."""
        self._prepared()
        return None if self._text is None else tokenizer_key(self._text.tokenizer)

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
        sets = {id(r): r for r in [data.rows, *self._inputs.values()]}
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
        prepared = {"data_cache": self.data_cache if self._text is None else None, "decoded": data.decoded,
                    "reused": len(data.order) - data.decoded, "seconds": round(self.prepare_seconds, 3),
                    "skipped_unreadable": len(data.skipped), **self.notes}
        if data.skipped:
            prepared["skipped_files"] = list(data.skipped[:20])
        return {"name": self.spec.name, "path": self.spec.path, "items": len(data.train_y) + len(data.test_y),
                "task": data.task, "classes": len(data.class_names), "image_size": self.spec.image_size,
                "train_size": len(data.train_y), "test_size": len(data.test_y), "chunk_sizes": self.chunk_sizes,
                "item_bytes": self.item_bytes, "in_flight_item_bytes": self.test_items()[0].in_flight_item_bytes,
                "held_bytes": self.held_bytes, "seed": self.spec.seed, "prepared": prepared,
                **({"max_length": self.spec.max_length, "tokenizer": self._text.tokenizer} if self._text else {})}

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


@contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A transient progress bar (for 200 items or more) and the function that advances it."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)  # a terminal's bar; nothing in a log or pipe (standard output keeps the report)
    with Progress(transient=True, disable=total < 200 or not console.is_terminal, console=console) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


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


_FIRST = {"multiclass": "one item per class", "multilabel": "every label",
          "regression": "two items (a spread of the target)"}


def _check_rounds(num_train: int, num_classes: int, rounds: int, spec: DataSpec,
                  min_class_items: int | None = None, task: str = "multiclass") -> None:
    """A positive number of rounds whose first chunk D1 = round(num_train / (2**rounds - 1)) holds every class (its
    ``num_classes`` first items; multilabel: every label, regression: a spread; with ``min_class_items`` D1 holds
    that by construction)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise DataError(f"the number of rounds must be a positive integer, got {rounds!r}")
    if min_class_items is not None:
        whole("search.min_class_items", min_class_items, hint=" (training items of every class in D1), or null",
              error=DataError)
        return
    needed = num_classes * (2**rounds - 1)
    if num_train < needed:
        total = math.ceil((needed + num_classes) / (1 - spec.test_fraction))
        each = f"{num_classes} classes" if task == "multiclass" else f"{num_classes} items"
        raise DataError(
            f"too few items for {rounds} rounds: the first chunk D1 must hold {_FIRST[task]}, so {rounds} rounds "
            f"need at least {needed} training items ({each} x (2^{rounds} - 1)), but dataset "
            f"{spec.name!r} has {num_train} (test_fraction={spec.test_fraction}). Use at least {total} items "
            "(num_items, or more images), or fewer rounds (rounds = ceil(log2(models / result size)): search fewer "
            "models or ask for a larger result), or set search.min_class_items (e.g. 5: D1 then holds 5 items of every "
            "class, and the rounds the data cannot fill are merged away)")
