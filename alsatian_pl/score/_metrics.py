"""The test metric and loss of each task type, from torchmetrics, shared by the scorers that predict (linear, knn):
multiclass accuracy (micro), multilabel macro average precision over the labels the items show, regression R²
(uniform average over the targets); and their jackknife replicates (the metric without each group of test items).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional import r2_score
from torchmetrics.functional.classification import multiclass_accuracy, multilabel_average_precision

from ._confidence import hit_replicates, jackknife_groups, leave_out

__all__ = ["METRIC_NAMES", "task_metric", "task_loss", "metric_replicates"]

METRIC_NAMES = {"multiclass": "accuracy", "multilabel": "macro average precision", "regression": "R²"}


def task_metric(task: str, preds: Tensor, target: Tensor) -> float:
    """The test metric of one model's predictions ``preds`` [T, K] (scores or logits per class or label, or the
    predicted targets) against ``target`` (class ids [T], or a table [T, K])."""
    if task == "multiclass":
        return float(multiclass_accuracy(preds, target, num_classes=preds.shape[1], average="micro"))
    if task == "multilabel":
        shown = target.sum(0) > 0               # a label no test item shows has no precision to average
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torchmetrics warns about exactly those labels
            per_label = multilabel_average_precision(preds, target.long(), num_labels=preds.shape[1], average=None)
        return float(per_label[shown].mean()) if bool(shown.any()) else float("nan")
    return float(r2_score(preds, target, multioutput="uniform_average"))


def task_loss(task: str, preds: Tensor, target: Tensor) -> Tensor:
    """Each item's loss [T] (float64): cross-entropy of logits, binary cross-entropy of logits (mean over the
    labels) or squared error (mean over the targets), row by row so it never depends on how many models share a
    batch."""
    if task == "multiclass":
        return F.cross_entropy(preds, target, reduction="none").double()
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(preds, target, reduction="none").double().mean(1)
    return (preds - target).double().square().mean(1)


def metric_replicates(ids: Sequence[str], preds: Tensor, target: Tensor, task: str, seed: int,
                      groups: int) -> dict[str, list[float]] | None:
    """Each model's test metric without each jackknife group of test items, from its predictions [M, T, K] (one row
    per id); None when there are fewer items than groups. Multiclass from the per-item hits (a mean); the other
    metrics are no mean of per-item terms, so they are computed again on the items each replicate keeps."""
    if task == "multiclass":
        return hit_replicates(ids, preds.argmax(2) == target, seed, groups)
    group = jackknife_groups(preds.shape[1], seed, groups)
    if group is None:
        return None
    kept = leave_out(group.to(preds.device), groups)
    return {m: [task_metric(task, preds[j, keep], target[keep]) for keep in kept] for j, m in enumerate(ids)}
