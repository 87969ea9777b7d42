"""k-nearest neighbours: the test metric of a cosine-similarity vote over the train items; no training."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy

from . import register_scorer
from ._confidence import hit_replicates, with_replicates
from ._base import TASKS, ProxyScore, ProxyScorer, _check_option, _is_int, binomial_stderr, check_inputs
from ._metrics import metric_replicates, task_loss, task_metric


@register_scorer("knn")
class KNNScorer(ProxyScorer):
    """Test accuracy of a k-nearest-neighbour vote (cosine similarity to the train items); no training.

    Vote ties go to the class whose voters are more similar in sum; ``test_loss`` is the cross-entropy of the
    Laplace-smoothed vote shares. ``seed`` is accepted for a uniform interface and unused (kNN is deterministic).
    A score is a test accuracy, so it carries the binomial standard error over the test items (``ProxyScore.stderr``).

    Multilabel and regression: the prediction is the mean of the k neighbours' label rows (the share of neighbours
    showing each label) or targets; the score is the macro average precision of those shares or the R² of those
    means (``_metrics``), the test loss the binary cross-entropy of the Laplace-smoothed shares or the squared error
    in units of the train targets' std. Their jackknife recomputes the metric without each group of test items.
    """

    tasks = frozenset(TASKS)
    higher_is_better = True
    reports_stderr = True
    gives_replicates = True

    @property
    def score_range(self) -> tuple[float, float]:  # type: ignore[override]
        """Accuracy and average precision lie in [0, 1]; R² at most 1."""
        return (-math.inf, 1.0) if self.task == "regression" else (0.0, 1.0)

    def __init__(self, *, k: int = 5, seed: int = 0, chunk_items: int = 4096):
        _check_option("k", k, _is_int(k, 1), "an integer >= 1")
        _check_option("chunk_items", chunk_items, _is_int(chunk_items, 1), "an integer >= 1")
        self.k, self.seed, self.chunk_items = k, seed, chunk_items

    def working_bytes(self, train_rows: int, test_rows: int, dims: Mapping[str, int], num_classes: int) -> int:
        """One model at a time: its normalised features, a chunk's similarities and top-k, the vote tensors."""
        n, t, c = train_rows, test_rows, num_classes
        chunk, d = min(self.chunk_items, t), max(dims.values(), default=0)
        means = 4 * chunk * min(self.k, n) * c + 40 * t * c if self.task != "multiclass" else 0  # neighbours' rows
        return 8 * (n + t) * d + 8 * chunk * n + 40 * chunk * min(self.k, n) + 64 * t * c + 4 * max(n, t) * d + means

    def score(self, train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor],
              test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        """kNN test metric (score) and loss of each model, computed per model (multiclass: accuracy and the
        smoothed vote's cross-entropy)."""
        check_inputs(train, train_labels, test, test_labels, num_classes, self.task)
        if self.task != "multiclass":
            return {m: self._score_mean(train[m], train_labels, test[m], test_labels) for m in train}
        out = {}
        for m in train:
            a = F.normalize(train[m].float(), dim=1)
            b = F.normalize(test[m].float().to(a.device), dim=1)
            y, k = train_labels.to(a.device, torch.long), min(self.k, len(a))
            votes = torch.zeros(len(b), num_classes, device=a.device)
            sims = torch.zeros_like(votes)
            for s in range(0, len(b), self.chunk_items):
                top = (b[s:s + self.chunk_items] @ a.T).topk(k, dim=1)
                classes = y[top.indices]  # the neighbours' labels, gathered once for both sums
                votes[s:s + self.chunk_items].scatter_add_(1, classes, torch.ones_like(top.values))
                sims[s:s + self.chunk_items].scatter_add_(1, classes, top.values)
            # votes first; a class's similarity sum lies in [-votes, votes], so (2k+1)·votes + sims + k orders ties
            key = votes * (2 * k + 1) + sims + k
            target = test_labels.to(a.device, torch.long)
            accuracy = multiclass_accuracy(key, target, num_classes=num_classes, average="micro")
            loss = F.nll_loss(((votes + 1) / (k + num_classes)).log(), target)
            out[m] = ProxyScore(float(accuracy), float(loss), binomial_stderr(float(accuracy), len(target)))
            replicates = hit_replicates([m], (key.argmax(1) == target)[None], self.seed, self.jackknife) \
                if self.jackknife else None
            out[m] = out[m] if replicates is None else with_replicates({m: out[m]}, replicates)[m]
        return out

    def _score_mean(self, train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor) -> ProxyScore:
        """One model's multilabel or regression score: the metric of the mean of the k neighbours' label rows or
        targets, with its replicates when asked."""
        a = F.normalize(train.float(), dim=1)
        b = F.normalize(test.float().to(a.device), dim=1)
        y, k = train_labels.to(a.device, torch.float32), min(self.k, len(a))
        target = test_labels.to(a.device, torch.float32)
        preds = torch.empty(len(b), y.shape[1], device=a.device)
        for s in range(0, len(b), self.chunk_items):
            top = (b[s:s + self.chunk_items] @ a.T).topk(k, dim=1)
            preds[s:s + self.chunk_items] = y[top.indices].mean(1)
        if self.task == "multilabel":
            smoothed = (preds * k + 1) / (k + 2)
            loss = task_loss("multilabel", (smoothed / (1 - smoothed)).log(), target).mean()
        else:
            std = y.std(0, correction=0).clamp_min(1e-12)
            loss = task_loss("regression", preds / std, target / std).mean()
        score = ProxyScore(task_metric(self.task, preds, target), float(loss))
        replicates = metric_replicates(["m"], preds[None], target, self.task, self.seed, self.jackknife) \
            if self.jackknife else None
        return score if replicates is None else with_replicates({"m": score}, replicates)["m"]
