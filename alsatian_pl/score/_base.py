"""The scorer contract: :class:`ProxyScore`, :class:`ProxyScorer`, :func:`rank`, and the checks every scorer shares
(:func:`check_inputs` for features and labels, option checks that raise ConfigError, chunks of same-dim models)."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class ProxyScore:
    """A model's proxy score and its test loss, the first tie-breaker in :func:`rank` (lower is better; each scorer
    says what it is: the linear probe's mean test cross-entropy, for instance).

    ``stderr``: the score's standard error, where the scorer can estimate it (None otherwise; the test-accuracy
    scorers give the binomial one, :func:`binomial_stderr`, the others the jackknife's when asked for replicates);
    the schedule's ``noise_margin`` reads it. ``replicates``: the score without each jackknife group of items
    (:mod:`._confidence`), when the scorer was asked for them. ``members``: an ensemble's member scores. None of
    these are compared: two scores are equal when score and test loss are.
    """

    score: float
    test_loss: float
    stderr: float | None = field(default=None, compare=False)
    replicates: tuple[float, ...] | None = field(default=None, compare=False, repr=False)
    members: Mapping[str, ProxyScore] | None = field(default=None, compare=False, repr=False)


class ScoreProgress:
    """How far a scorer is: ``done`` of ``total`` units of its work (``what``: e.g. the linear probe's SGD steps),
    counted by the scorer while :func:`reporting` lends it one, read by the search's progress display."""

    def __init__(self) -> None:
        self.start(0, "")

    def start(self, total: int, what: str) -> None:
        self.done, self.total, self.what, self.started = 0, int(total), what, time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n

    def text(self) -> str:
        """``1,234/31,250 SGD steps, 210/s`` (empty before the scorer says what it counts)."""
        if not self.total:
            return ""
        seconds = time.perf_counter() - self.started
        rate = f", {self.done / seconds:,.0f}/s" if self.done and seconds > 0 else ""
        return f"{min(self.done, self.total):,}/{self.total:,} {self.what}{rate}"


@contextmanager
def reporting(scorer: "ProxyScorer", progress: ScoreProgress) -> Iterator["ProxyScorer"]:
    """``scorer`` counting its work in ``progress`` within the block (its options, ``vars(scorer)``, stay as they
    were outside it)."""
    progress.start(0, "")
    scorer.progress = progress
    try:
        yield scorer
    finally:
        del scorer.progress
        progress.start(0, "")  # nothing to show between scorings


@contextmanager
def lending(scorer: "ProxyScorer", attr: str, value: object) -> Iterator["ProxyScorer"]:
    """``scorer`` with its attribute ``attr`` set to ``value`` within the block, as it was (or unset) after it."""
    before = scorer.__dict__.get(attr)
    setattr(scorer, attr, value)
    try:
        yield scorer
    finally:
        if before is None:
            delattr(scorer, attr)
        else:
            setattr(scorer, attr, before)


TASKS = ("multiclass", "multilabel", "regression")


class ProxyScorer:
    """Base class of scorers; subclasses declare ``higher_is_better`` and get ``name`` from :func:`register_scorer`.

    ``tasks``: the task types it scores (torchmetrics-style; the default: multiclass only). ``task``: the one it
    scores now, set by the search around each scoring (:func:`scoring_task`, after :func:`check_task`). Labels by
    task: multiclass int64 class ids [N]; multilabel float32 0/1 [N, L]; regression float32 targets [N, T];
    ``num_classes`` is C, L or T.
    """

    progress: ScoreProgress | None = None  # while a search scores: where the scorer counts its work (reporting)

    name: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset({"multiclass"})
    task: str = "multiclass"
    higher_is_better: ClassVar[bool] = True
    reports_stderr: ClassVar[bool] = False  # whether its scores carry a standard error (ProxyScore.stderr)
    jackknife: int = 0  # > 0: attach that many jackknife replicates to every score (the search sets it; 0: none)
    gives_replicates: ClassVar[bool] = False  # whether it honours ``jackknife`` (every built-in scorer does)
    costly_replicates: ClassVar[bool] = False  # whether replicates recompute the score once per group
    score_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)  # where its scores lie (intervals are clipped)

    def score(self, train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor],
              test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        """One score per model id: ``train[m]`` is [N, D_m] (same N items for every model), ``test[m]`` is [T, D_m]."""
        raise NotImplementedError

    def __repr__(self) -> str:
        """Its class and public options (stable across runs: a search's checkpoint key records nested scorers so)."""
        options = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items())
                            if not k.startswith("_") and k != "task")  # the task is the data's, set per search
        return f"{type(self).__name__}({options})"

    def combine(self, scores: dict[str, ProxyScore]) -> dict[str, ProxyScore]:
        """The round's scores of all models (gathered over the ranks) as ranked: as given, unless the scorer ranks a
        model against the others (the ensemble's rank aggregation)."""
        return scores

    def working_bytes(self, train_rows: int, test_rows: int, dims: Mapping[str, int], num_classes: int) -> int:
        """At least the bytes :meth:`score` holds at once beyond its inputs, for ``train_rows`` and ``test_rows``
        items of the models ``dims`` (model id -> feature dim): the search's memory model counts them while it
        scores. The default is generous (four float64 copies of every model's features, Gram matrices, per-class
        tensors); a scorer that knows its buffers says so more tightly."""
        rows, k = train_rows + test_rows, max(train_rows, test_rows)
        grams = sum(min(k, d) ** 2 for d in dims.values())
        return 8 * (4 * rows * sum(dims.values()) + 3 * grams + rows * num_classes * (len(dims) + 2))


def check_task(scorer: ProxyScorer, task: str) -> None:
    """ConfigError, in one line before any work, when ``scorer`` cannot score ``task``."""
    if task not in scorer.tasks:
        from . import SCORERS  # the registry, to name the scorers that can

        able = [n for n in SCORERS.names()
                if isinstance(kinds := SCORERS.get(n).tasks, frozenset) and task in kinds]  # class-level tasks
        name = scorer.name or type(scorer).__name__
        raise ConfigError(f"proxy scorer {name!r} cannot score a {task} task (it scores "
                          f"{', '.join(sorted(scorer.tasks))}): choose {' or '.join(f'search/scorer={n}' for n in able)}"
                          ", or set dataset.task")


@contextmanager
def scoring_task(scorer: ProxyScorer, task: str) -> Iterator[ProxyScorer]:
    """``scorer`` scoring ``task`` within the block (checked with :func:`check_task`)."""
    check_task(scorer, task)
    with lending(scorer, "task", task):
        yield scorer


def binomial_stderr(accuracy: float, num_test: int) -> float | None:
    """The standard error ``sqrt(p (1 - p) / n)`` of a test accuracy ``p`` over ``n`` test items (None if not finite)."""
    if not (math.isfinite(accuracy) and num_test > 0):
        return None
    p = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / num_test)


def rank(scores: Mapping[str, ProxyScore], higher_is_better: bool) -> list[str]:
    """Model ids best first: by score, ties by lower test loss, then by model id; NaN scores and losses go last."""

    def nan_last(value: float) -> tuple[bool, float]:
        return (True, 0.0) if math.isnan(value) else (False, value)

    return sorted(scores, key=lambda m: (nan_last(-scores[m].score if higher_is_better else scores[m].score),
                                         nan_last(scores[m].test_loss), m))


# ---------------------------------------------------------------------------------------------------------------------
# input checks shared by all scorers


def _check_labels(split: str, labels: Tensor, num_classes: int, task: str = "multiclass") -> int:
    if task != "multiclass":
        return _check_targets(split, labels, num_classes, task)
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool:
        raise DataError(f"{split} labels must be a 1-D integer tensor, got {_describe(labels)}")
    if labels.numel() == 0:
        raise DataError(f"there are no {split} items to score with: the {split} labels are empty")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{split} labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
                        f"found labels from {lo} to {hi}")
    return labels.numel()


def _check_targets(split: str, labels: Tensor, width: int, task: str) -> int:
    """The rows of a multilabel (0/1) or regression (finite) float table [N, width]; DataError otherwise."""
    if not isinstance(labels, Tensor) or labels.dim() != 2 or not labels.is_floating_point() or labels.shape[1] != width:
        raise DataError(f"{split} labels of a {task} task must be a 2-D float tensor [items, {width}], got "
                        f"{_describe(labels)}")
    if labels.shape[0] == 0:
        raise DataError(f"there are no {split} items to score with: the {split} labels are empty")
    if not bool(torch.isfinite(labels).all()):
        raise DataError(f"{split} targets contain NaN or infinite values")
    if task == "multilabel" and not bool(((labels == 0) | (labels == 1)).all()):
        raise DataError(f"{split} labels of a multilabel task must be 0 or 1")
    return labels.shape[0]


def _describe(x: object) -> str:
    return f"a {x.dim()}-D {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def check_inputs(train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor], test_labels: Tensor,
                 num_classes: int, task: str = "multiclass") -> None:
    """Raise DataError unless every model has finite 2-D float features matching the labels (same dim train/test),
    the labels in ``task``'s form (:class:`ProxyScorer`)."""
    least = 1 if task == "regression" else 2
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < least:
        raise DataError(f"num_classes must be an integer of at least {least}, got {num_classes!r}")
    if not train:
        raise DataError("there are no models to score: the train feature mapping is empty")
    if set(train) != set(test):
        raise DataError("train and test features must cover the same models; only in train: "
                        f"{sorted(set(train) - set(test))}, only in test: {sorted(set(test) - set(train))}")
    rows = {"train": _check_labels("train", train_labels, num_classes, task),
            "test": _check_labels("test", test_labels, num_classes, task)}
    for m in train:
        for split, x in (("train", train[m]), ("test", test[m])):
            if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point() or x.shape[1] == 0:
                raise DataError(f"{split} features of model {m!r} must be a 2-D float tensor [items, dim] with "
                                f"dim >= 1, got {_describe(x)}")
            if x.shape[0] != rows[split]:
                raise DataError(f"model {m!r} has {x.shape[0]} {split} feature rows but there are {rows[split]} "
                                f"{split} labels; features and labels must describe the same items")
            if not bool(torch.isfinite(x).all()):
                raise DataError(f"{split} features of model {m!r} contain NaN or infinite values")
        if train[m].shape[1] != test[m].shape[1]:
            raise DataError(f"model {m!r} has {train[m].shape[1]}-dim train features but {test[m].shape[1]}-dim "
                            "test features; both must come from the same feature extractor")


def _check_option(name: str, value: object, ok: bool, need: str) -> None:
    if not ok or isinstance(value, bool):
        raise ConfigError(f"proxy scorer option {name} must be {need}, got {value!r}")


def _is_int(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and 0 < value < math.inf


def _model_chunks(features: Mapping[str, Tensor], rows: int, max_chunk_bytes: int,
                  itemsize: int) -> Iterator[list[str]]:
    """The models grouped by feature dim, in chunks whose stacked features ([M, rows, D] of ``itemsize`` bytes)
    take at most ``max_chunk_bytes`` (at least one model per chunk); models keep their order within a dim."""
    by_dim: dict[int, list[str]] = defaultdict(list)
    for m in features:
        by_dim[features[m].shape[1]].append(m)
    for dim, ids in by_dim.items():
        step = max(1, max_chunk_bytes // (rows * dim * itemsize))
        for i in range(0, len(ids), step):
            yield ids[i:i + step]
