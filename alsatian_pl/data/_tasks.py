"""Task types: what a dataset's labels are, and how the split and the chunks keep their guarantee for each.

``multiclass``: int64 class ids [N] (one class per item); ``multilabel``: float32 [N, L] of 0/1 (several labels per
item, possibly none); ``regression``: float32 [N, T] of real targets (T >= 1). :func:`resolve` checks a source's
labels against ``dataset.task`` (``auto``: the source's task, else inferred from the labels) and gives them in that
form. The split and the chunk order work on one integer *stratum* per item (:func:`strata`): the class
(multiclass), the item's rarest label (multilabel) or a quantile bin of the first target (regression, bins ordered
so that every prefix of the round-robin order spreads over the target's range); for multilabel, :func:`cover_first`
then moves to the front of the training order the items that each bring a label not seen yet, so the first chunk
holds every label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ._split import class_prefix

__all__ = ["TASKS", "Labels", "resolve", "check_targets", "strata", "cover_first", "first_needed", "label_prefix",
           "REGRESSION_BINS"]

TASKS = ("multiclass", "multilabel", "regression")
REGRESSION_BINS = 10  # quantile bins of the first target that the split and the chunks stratify on


@dataclass(frozen=True)
class Labels:
    """A source's labels checked for one task: ``values`` in the task's form, ``keep`` the items that go on (NaN
    targets dropped with ``skip_unreadable``), and the one line saying which task this is and why."""

    values: np.ndarray
    task: str
    names: list[str]
    keep: np.ndarray
    note: str
    dropped: int = 0


def _check_task(asked: str) -> str:
    if asked not in ("auto", *TASKS):
        raise DataError(f"dataset.task must be auto, multiclass, multilabel or regression, got {asked!r}")
    return asked


def _infer(labels: np.ndarray, source_task: str) -> tuple[str, str]:
    """The task ``auto`` picks, and why: the source's own task when it declares one, else the labels' form."""
    if source_task != "multiclass":
        width, kind = labels.shape[1] if labels.ndim == 2 else 1, "labels" if source_task == "multilabel" else "targets"
        return source_task, f"the dataset's own task: {width} {kind} per item"
    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        return "multiclass", "one integer class per item"
    finite = labels[np.isfinite(labels)] if np.issubdtype(labels.dtype, np.floating) else labels
    if labels.ndim == 2 and labels.shape[1] > 1 and np.isin(finite, (0, 1)).all():
        return "multilabel", f"{labels.shape[1]} columns of 0/1 per item"
    return "regression", f"{labels.shape[1] if labels.ndim == 2 else 1} real-valued target(s) per item"


def resolve(labels: np.ndarray, names: list[str], source_task: str, asked: str, dataset: str,
            skip_unreadable: bool) -> Labels:
    """The labels in ``asked``'s form (``auto``: inferred, said in :attr:`Labels.note`); DataError in one line for
    labels that do not fit the task, for NaN targets (unless ``skip_unreadable``: those items are dropped) and for
    class names that do not match the labels."""
    labels = np.asarray(labels)
    task, why = _infer(labels, source_task) if _check_task(asked) == "auto" else (asked, "set by dataset.task")
    if labels.ndim not in (1, 2) or labels.dtype.kind not in "biuf":
        raise DataError(f"dataset {dataset!r}: labels must be class ids [N] or a table of targets [N, T], got an "
                        f"array of shape {labels.shape} and type {labels.dtype}")
    keep = np.arange(len(labels))
    if task == "multiclass":
        values = _class_ids(labels, dataset)
    else:
        values = labels.astype(np.float32) if labels.ndim == 2 else _as_columns(labels, task, len(names))
        bad = ~np.isfinite(values).all(1)
        if bad.any() and not skip_unreadable:
            raise DataError(f"dataset {dataset!r}: {int(bad.sum())} item(s) have NaN or infinite targets (first: "
                            f"item {int(np.flatnonzero(bad)[0])}); fix them, or set dataset.skip_unreadable=true to "
                            "leave those items out (counted in results.json)")
        keep = np.flatnonzero(~bad)
        if task == "multilabel" and not np.isin(values[keep], (0, 1)).all():
            raise DataError(f"dataset {dataset!r}: dataset.task=multilabel needs 0/1 labels, but some are other "
                            "values; use dataset.task=regression for real-valued targets")
    width = 0 if values.ndim == 1 else values.shape[1]
    if task == "regression" and labels.ndim == 1 and len(names) != 1:
        names = ["target"]  # class ids read as one number
    if width and len(names) != width:
        raise DataError(f"dataset {dataset!r}: {len(names)} name(s) for {width} label column(s); name every column")
    note = f"task: {task} ({why}; set dataset.task to choose)" if asked == "auto" else f"task: {task}"
    return Labels(values, task, list(names), keep, note, int(len(labels) - len(keep)))


def _class_ids(labels: np.ndarray, dataset: str) -> np.ndarray:
    """Class ids int64 [N]; DataError for a table or for values that are not whole numbers."""
    if labels.ndim != 1 or (labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels))):
        raise DataError(f"dataset {dataset!r}: dataset.task=multiclass needs one whole-number class per item, got "
                        f"labels of shape {labels.shape} and type {labels.dtype}; set dataset.task=multilabel or "
                        "regression (or auto)")
    return labels.astype(np.int64)


def _as_columns(labels: np.ndarray, task: str, width: int) -> np.ndarray:
    """One label per item as a table: class ids one-hot (multilabel), a value as one target (regression)."""
    if task == "multilabel":
        return np.eye(width, dtype=np.float32)[labels.astype(np.int64)]
    return labels.astype(np.float32)[:, None]


def check_targets(values: np.ndarray, task: str, names: list[str], dataset: str) -> dict[str, int]:
    """DataError for a regression target with one value or a label on fewer than two items (one to test, one to
    train on); the counts results.json reports (multilabel: items with no label)."""
    if task == "regression":
        flat = [names[t] for t in range(values.shape[1]) if np.ptp(values[:, t]) == 0]
        if flat:
            raise DataError(f"dataset {dataset!r}: regression target {flat[0]!r} has one value "
                            f"({values[0, names.index(flat[0])]:g}) on every item: there is nothing to rank models "
                            "on; drop that target or use more items")
        return {}
    if task == "multilabel":
        counts = values.sum(0).astype(np.int64)
        few = np.flatnonzero(counts < 2)
        if len(few):
            listed = ", ".join(f"{names[c]!r} ({counts[c]})" for c in few[:5]) + (" ..." if len(few) > 5 else "")
            raise DataError(f"dataset {dataset!r}: every label needs at least 2 items (one for the test set, one for "
                            f"training), but {len(few)} label(s) have fewer: {listed}; add items or drop the label")
        return {"items_without_labels": int((values.sum(1) == 0).sum())}
    return {}


def strata(values: np.ndarray, task: str) -> np.ndarray:
    """One integer stratum per item (int64 [N]) that the split, the subset and the round-robin order balance."""
    if task == "multiclass":
        return values
    if task == "multilabel":
        counts = values.sum(0)
        rarity = np.where(values > 0, counts[None], np.inf)               # an item's labels by how common they are
        rarest = rarity.argmin(1)
        return np.where(values.sum(1) > 0, rarest, values.shape[1]).astype(np.int64)  # no label: a stratum of its own
    n = len(values)
    bins = max(1, min(REGRESSION_BINS, n // 2))
    ranks = np.empty(n, dtype=np.int64)
    ranks[np.argsort(values[:, 0], kind="stable")] = np.arange(n)         # ties broken by position: equal-sized bins
    return _spread_order(bins)[(ranks * bins) // n]


def _spread_order(bins: int) -> np.ndarray:
    """Stratum id of each bin, so that bins taken in id order spread over the range (van der Corput: 0, the middle,
    the quarters, ...): a prefix of the round-robin order holds low, middle and high targets alike."""
    picks: list[int] = []
    k = 0
    while len(picks) < bins:
        x, f, v = k, 0.5, 0.0
        while x:
            v, x, f = v + f * (x & 1), x >> 1, f / 2
        b = int(v * bins)
        if b not in picks:
            picks.append(b)
        k += 1
    ids = np.empty(bins, dtype=np.int64)
    ids[picks] = np.arange(bins)
    return ids


def cover_first(order: np.ndarray, values: np.ndarray, task: str) -> np.ndarray:
    """``order`` (indices into ``values``) with, for multilabel, the items that each bring a label not seen yet
    (walking ``order``) moved to the front, in their order; unchanged for the other tasks."""
    if task != "multilabel" or len(order) == 0:
        return order
    seen = np.zeros(values.shape[1], dtype=bool)
    front = []
    for pos, i in enumerate(order):
        new = (values[i] > 0) & ~seen
        if new.any():
            front.append(pos)
            seen |= new
            if seen.all():
                break
    moved = np.zeros(len(order), dtype=bool)
    moved[front] = True
    return np.concatenate([order[moved], order[~moved]])


def first_needed(train_values: np.ndarray, task: str) -> int:
    """Items the first chunk must hold for its guarantee: one per class (multiclass), the training order's items up
    to the last that brings a new label (multilabel, after :func:`cover_first`), two (regression: a spread)."""
    if task == "multiclass":
        return len(np.unique(train_values))
    if task == "regression":
        return 2
    present = train_values.sum(0) > 0
    seen = np.cumsum(train_values > 0, axis=0) > 0
    return int(np.argmax((seen == present).all(1))) + 1 if len(train_values) else 0


def label_prefix(train_values: np.ndarray, train_strata: np.ndarray, task: str, min_items: int) -> int:
    """Items in the shortest prefix of the training order holding ``min(min_items, n)`` items of every class, label
    (its positives) or target bin (``n``: how many the training set has); the order is round robin over
    ``train_strata`` (then, multilabel, :func:`cover_first`)."""
    if task == "multilabel":
        hits = np.cumsum(train_values > 0, axis=0)
        need = np.minimum(hits[-1], min_items)
        return int(np.argmax((hits >= need).all(1))) + 1
    return class_prefix(train_strata, min_items)
