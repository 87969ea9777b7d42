"""Seeded, stratified index arithmetic on label vectors: balanced subsets, test split, round-robin order, chunks."""

from __future__ import annotations

import numpy as np


def num_rounds(num_models: int, result_size: int) -> int:
    """Successive-halving rounds from ``num_models`` down to ``result_size``: max(1, ceil(log2(models / result)))."""
    if num_models < 1 or result_size < 1:
        raise ValueError(f"num_models and result_size must be positive, got {num_models} and {result_size}")
    rounds = 0
    while result_size << rounds < num_models:  # exact integer ceil(log2(.)), no float rounding
        rounds += 1
    return max(1, rounds)


def _class_ranks(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation ``perm`` of all items and, for each ``perm[k]``, its rank in its class's shuffled list."""
    perm = rng.permutation(len(labels))
    shuffled = labels[perm]
    by_class = np.argsort(shuffled, kind="stable")
    sorted_labels = shuffled[by_class]
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_class] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return perm, rank


def interleave(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices, round robin over per-class shuffled lists: each prefix holds every class that has items left."""
    perm, rank = _class_ranks(labels, rng)
    return perm[np.lexsort((labels[perm], rank))]


def balanced_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded, class-balanced subset of ``size`` items (a prefix of :func:`interleave`)."""
    return np.sort(interleave(labels, rng)[:size])


def num_test_items(counts: np.ndarray, test_fraction: float) -> np.ndarray:
    """Test items per class: ``test_fraction`` of the class, rounded half up, at least one, leaving one for training."""
    return np.clip(np.floor(counts * test_fraction + 0.5), 1, np.maximum(counts - 1, 1)).astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices: per class a seeded ``test_fraction`` goes to test (sorted); train is interleaved.

    Every class needs at least two items (one test, one training item); callers check this first.
    """
    perm, rank = _class_ranks(labels, rng)
    shuffled = labels[perm]
    rank = rank - num_test_items(np.bincount(labels), test_fraction)[shuffled]  # < 0: test, else rank among train
    train = rank >= 0
    return perm[train][np.lexsort((shuffled[train], rank[train]))], np.sort(perm[~train])


def chunk_bounds(num_train: int, rounds: int, min_first: int | None = None) -> list[int]:
    """Boundaries ``0 = b0 <= ... <= b_rounds = num_train`` of chunks D1..Dl, each within one item of its ideal size
    (so ``|D_{i+1}| = 2|D_i|`` up to rounding): the paper's chunks.

    ``b_i = round(num_train * (2**i - 1) / (2**rounds - 1))``, rounded half up with exact integers.

    ``min_first`` (the robust schedule's ``min_class_items``, as items: :func:`class_prefix`): when it is above the
    paper's |D1|, ``|D1| = min(min_first, num_train)`` instead and every later chunk doubles the one before until the
    items run out: ``b_i = min(num_train, |D1| * (2**i - 1))`` for ``i < rounds``, ``b_rounds = num_train``. The chunk
    where they run out is smaller than double; the chunks after it would be empty and are merged away (the bounds are
    then strictly increasing and there may be fewer than ``rounds`` chunks: the search runs that many rounds). Each
    bound is at least the paper's bound of the same round, so every round trains on at least the paper's items.
    """
    total = 2**rounds - 1
    paper = [(2 * num_train * (2**i - 1) + total) // (2 * total) for i in range(rounds + 1)]
    if min_first is None or paper[1] >= min_first:
        return paper
    first = min(min_first, num_train)
    return sorted({min(num_train, first * (2**i - 1)) for i in range(rounds)} | {num_train})


def class_prefix(train_labels: np.ndarray, min_class_items: int) -> int:
    """Items in the shortest prefix of the round-robin training order (:func:`stratified_split`) that holds
    ``min(min_class_items, n_c)`` items of every class ``c`` (``n_c``: its training items): ``sum_c min(k, n_c)``."""
    return int(np.minimum(np.bincount(np.asarray(train_labels, dtype=np.int64)), min_class_items).sum())
