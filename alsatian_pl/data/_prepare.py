"""Preparing a dataset's items once (paper §4.2): the source listed and its labels checked for the task, the seeded
subset and the stratified split chosen, then the chosen items decoded (images: into the prepared-data cache, or
memory) or tokenised (texts: once per tokenizer). :class:`SearchDataModule` cuts what this prepares into the test set
and the rounds' chunks."""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..checks import whole
from ..errors import AlsatianWarning, DataError
from ..resources import host_memory_bytes
from ..units import format_bytes
from ._cache import DiskRows
from ._items import AsIs, Convert, MemoryRows, Rows, ToIds, ToPixels
from ._sources import DataSpec, ImageSource, Source, make_source, unreadable
from ._split import balanced_subset, stratified_split
from ._tasks import Labels, check_targets, cover_first, first_needed, resolve, strata
from ._text import TextSource, tokenizer_key


@dataclass
class Prepared:
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


class Preparation:
    """The items of one dataset, prepared once: :meth:`prepare` lists the source, checks its labels, chooses the
    subset and split and decodes or tokenises what it chose; :meth:`tokenized` gives a text set's token ids for
    another tokenizer (once per tokenizer). ``seconds`` is the wall time spent preparing so far."""

    def __init__(self, spec: DataSpec, data_cache: str | None, num_workers: int):
        self.spec, self.data_cache, self.num_workers = spec, data_cache, num_workers
        self.notes: dict[str, Any] = {}  # what the source and the checks noted (results.json's dataset.prepared)
        self.seconds = 0.0
        self.text: TextSource | None = None  # kept to tokenise again for other tokenizers
        self.inputs: dict[str, MemoryRows] = {}  # tokenizer key -> its token ids, rows in the order of row_of
        self.pixels, self.ids = ToPixels(spec.mean, spec.std), ToIds()
        self._source: tuple[Source, Labels] | None = None  # the source and its labels checked for the task

    def labelled(self) -> tuple[Source, Labels]:
        """The source (listed once) and its labels checked for ``dataset.task``; nothing is decoded yet."""
        if self._source is None:
            source = make_source(self.spec)
            self._source = source, resolve(source.labels, list(source.class_names), getattr(source, "task",
                                           "multiclass"), self.spec.task, self.spec.name, self.spec.skip_unreadable)
        return self._source

    def prepare(self, num_rounds: int | None, min_class_items: int | None = None) -> Prepared:
        """The prepared items (``num_rounds``: checked first that the training items can fill that many rounds)."""
        start = time.perf_counter()
        try:
            return self._prepare(num_rounds, min_class_items)
        finally:
            self.seconds += time.perf_counter() - start

    def _prepare(self, num_rounds: int | None, min_class_items: int | None) -> Prepared:
        source, resolved = self.labelled()
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
            convert = self.pixels
            if not failed:
                break
            bad |= failed
        targets = torch.from_numpy(labels[order])
        skipped = tuple(source.item_name(i) for i in sorted(bad)) if bad else ()
        if skipped:
            warnings.warn(f"skipped {len(skipped)} image(s) that cannot be read (dataset.skip_unreadable=true), e.g. "
                          f"{skipped[0]}; results.json lists them under dataset.prepared", stacklevel=3)
        self.notes.update(check_targets(labels[order], resolved.task, names, self.spec.name))
        return Prepared(rows, row_of, targets[:n], targets[n:], names, order, convert, decoded, skipped,
                         resolved.task, train_strata)

    def _prepared_by(self, source: Source, order: np.ndarray) -> tuple[Rows, Convert]:
        """Items the source prepares in memory: text as int32 token ids (the key of its tokenizer noted), others
        model-ready as the source gives them."""
        if isinstance(source, TextSource):
            self.text = source
            rows = MemoryRows(source.prepare(order).to(torch.int32))
            self.inputs[tokenizer_key(source.tokenizer)] = rows
            return rows, self.ids
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
            check_rounds(len(train), first_items(labels[keep][train], task, len(names)), num_rounds, spec,
                          min_class_items, task)
        return len(train), keep[np.concatenate([train, test])], groups[train]

    def _images(self, source: ImageSource, order: np.ndarray) -> tuple[Rows, np.ndarray, int, set[int]]:
        """``(prepared set, row of each item, items decoded now, unreadable items)``: rows of the prepared-data cache
        (filled where missing), or a uint8 tensor in memory without one."""
        stop = not self.spec.skip_unreadable
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

    def tokenized(self, tokenizer: str, order: np.ndarray) -> MemoryRows:
        """The token ids of the items ``order`` (source indices) under ``tokenizer``, tokenised once per key."""
        if self.text is None:
            raise DataError(f"dataset {self.spec.name!r} is not a text dataset: it has no tokenizer to choose")
        key = tokenizer_key(tokenizer)
        if key not in self.inputs:
            start = time.perf_counter()
            self.inputs[key] = MemoryRows(self.text.prepare(order, tokenizer=tokenizer).to(torch.int32))
            self.seconds += time.perf_counter() - start
        return self.inputs[key]


def first_items(train_values: np.ndarray, task: str, num_classes: int) -> int:
    """Items the first chunk needs for its guarantee (every class, every label, a spread of the target)."""
    return num_classes if task == "multiclass" else first_needed(train_values, task)


def _warn_few_test_items(num_test: int, num_strata: int, spec: DataSpec) -> None:
    """A warning when the test split is too small to tell models apart (under 3 items a class, or under 30): every
    score then moves in steps of 1/num_test, and the confident set grows to match."""
    if num_test < max(30, 3 * num_strata):
        warnings.warn(f"dataset {spec.name!r}: only {num_test} test items (test_fraction={spec.test_fraction}, "
                      f"{num_strata} classes or strata): scores move in steps of {100 / num_test:.1f} points, so "
                      "close models cannot be told apart; raise dataset.test_fraction or num_items",
                      AlsatianWarning, stacklevel=2)


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


def check_rounds(num_train: int, num_classes: int, rounds: int, spec: DataSpec,
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
