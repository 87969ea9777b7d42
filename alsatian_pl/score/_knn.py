"""k-nearest neighbours: test accuracy of a cosine-similarity vote over the train items; no training."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy

from . import register_scorer
from ._confidence import hit_replicates, with_replicates
from ._base import ProxyScore, ProxyScorer, _check_option, _is_int, binomial_stderr, check_inputs


@register_scorer("knn")
class KNNScorer(ProxyScorer):
    """Test accuracy of a k-nearest-neighbour vote (cosine similarity to the train items); no training.

    Vote ties go to the class whose voters are more similar in sum; ``test_loss`` is the cross-entropy of the
    Laplace-smoothed vote shares. ``seed`` is accepted for a uniform interface and unused (kNN is deterministic).
    A score is a test accuracy, so it carries the binomial standard error over the test items (``ProxyScore.stderr``).
    """

    higher_is_better = True
    reports_stderr = True
    gives_replicates = True
    score_range = (0.0, 1.0)

    def __init__(self, *, k: int = 5, seed: int = 0, chunk_items: int = 4096):
        _check_option("k", k, _is_int(k, 1), "an integer >= 1")
        _check_option("chunk_items", chunk_items, _is_int(chunk_items, 1), "an integer >= 1")
        self.k, self.seed, self.chunk_items = k, seed, chunk_items

    def working_bytes(self, train_rows: int, test_rows: int, dims: Mapping[str, int], num_classes: int) -> int:
        """One model at a time: its normalised features, a chunk's similarities and top-k, the vote tensors."""
        n, t, c = train_rows, test_rows, num_classes
        chunk, d = min(self.chunk_items, t), max(dims.values(), default=0)
        return 8 * (n + t) * d + 8 * chunk * n + 40 * chunk * min(self.k, n) + 64 * t * c + 4 * max(n, t) * d

    def score(self, train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor],
              test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        """kNN test accuracy (score) and smoothed-vote cross-entropy of each model, computed per model."""
        check_inputs(train, train_labels, test, test_labels, num_classes)
        out = {}
        for m in train:
            a = F.normalize(train[m].float(), dim=1)
            b = F.normalize(test[m].float().to(a.device), dim=1)
            y, k = train_labels.to(a.device, torch.long), min(self.k, len(a))
            votes = torch.zeros(len(b), num_classes, device=a.device)
            sims = torch.zeros_like(votes)
            for s in range(0, len(b), self.chunk_items):
                top = (b[s:s + self.chunk_items] @ a.T).topk(k, dim=1)
                votes[s:s + self.chunk_items].scatter_add_(1, y[top.indices], torch.ones_like(top.values))
                sims[s:s + self.chunk_items].scatter_add_(1, y[top.indices], top.values)
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
