"""Transferability scorers: a model's score from its train features and the train labels alone, no training.

LogME, H-score (plain and regularised), GBC and TransRate are published as functions of the target task's training
features and labels, and so they are computed here. A scorer stacks a round's models of one feature dim ([M, N, D],
float64, chunks of at most ``max_chunk_bytes``) and computes the metric for all of them at once: every op acts on
each model's own slice (batched matmuls and eigendecompositions, reductions within a model), so a model's score
is the same alone or among others up to float rounding. Classes are those present in the labels given.

The linear algebra is shared: the eigendecomposition of the smaller Gram matrix (x xᵀ when N ≤ D, else xᵀ x) gives
the nonzero spectrum of xᵀ x and the label columns' coordinates on the left singular vectors of x, in O(M·min(N, D)³)
whatever the feature dim. Eigenvalues below numpy's matrix-rank tolerance (``σ_max · max(N, D) · eps``) count as 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ._base import ProxyScore, ProxyScorer, _check_option, _is_int, _model_chunks, check_inputs
from ._confidence import jackknife_groups, leave_out, with_replicates


class TransferabilityScorer(ProxyScorer):
    """Base of the feature-and-label scorers: ``score`` is :meth:`metric` of the train features and labels (the
    published definition); ``test_loss`` is minus the same metric of the test features and labels, a held-out second
    opinion that only breaks ties. Higher is better. ``seed`` is accepted for a uniform interface and unused."""

    higher_is_better = True
    costly_replicates = True
    gives_replicates = True

    def __init__(self, *, seed: int = 0, max_chunk_bytes: int = 256 * 2**20):
        _check_option("seed", seed, _is_int(seed, 0), "an integer >= 0")
        _check_option("max_chunk_bytes", max_chunk_bytes, _is_int(max_chunk_bytes, 1), "an integer >= 1")
        self.seed, self.max_chunk_bytes = seed, max_chunk_bytes

    def score(self, train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor],
              test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        """The metric on the train items (score) and minus the metric on the test items (test_loss), per model."""
        check_inputs(train, train_labels, test, test_labels, num_classes, self.task)
        group = jackknife_groups(len(train_labels), self.seed, self.jackknife) if self.jackknife else None
        kind = torch.long if self.task == "multiclass" else torch.float64
        out: dict[str, ProxyScore] = {}
        for ids in _model_chunks(train, len(train_labels) + len(test_labels), self.max_chunk_bytes, 8):
            device = train[ids[0]].device
            x, y = _stack(train, ids, device), train_labels.to(device, kind)
            on_train, on_test = self.metric(x, y), self.metric(_stack(test, ids, device), test_labels.to(device, kind))
            chunk = {m: ProxyScore(a, -b) for m, a, b in zip(ids, on_train.tolist(), on_test.tolist())}
            if group is not None:  # the metric without each group of train items, [G, M] -> per model
                again = torch.stack([self.metric(x[:, keep], y[keep]) for keep in leave_out(group.to(device),
                                                                                             self.jackknife)])
                chunk = with_replicates(chunk, dict(zip(ids, again.T.tolist())))
            out.update(chunk)
        return {m: out[m] for m in train}

    def metric(self, x: Tensor, y: Tensor) -> Tensor:
        """The metric [M] of each model's features x [M, N, D] (float64) with the labels y [N] (int64; a scorer
        that scores other tasks also gets float64 label or target tables [N, C])."""
        raise NotImplementedError


def _stack(features: Mapping[str, Tensor], ids: list[str], device: torch.device) -> Tensor:
    return torch.stack([features[m].to(device, torch.float64) for m in ids])


def indicators(y: Tensor) -> tuple[Tensor, Tensor]:
    """(one-hot [N, K] float64 over the K classes present in y, ascending; each item's class index [N])."""
    classes, index = torch.unique(y, return_inverse=True)
    return torch.nn.functional.one_hot(index, len(classes)).to(torch.float64), index


def label_columns(y: Tensor) -> Tensor:
    """The label columns [N, K] float64 a regression of the features fits: the one-hot of the classes present (class
    ids y [N]), the labels some item shows (a 0/1 table), or the targets (a real table)."""
    if not y.is_floating_point():
        return indicators(y)[0]
    y = y.to(torch.float64)
    binary = bool(((y == 0) | (y == 1)).all())
    return y[:, y.sum(0) > 0] if binary else y


def centred(x: Tensor) -> Tensor:
    """Features [M, N, D] minus each model's mean over the items."""
    return x - x.mean(1, keepdim=True)


def _gram(x: Tensor) -> Tensor:
    return x @ x.mT if x.shape[-2] <= x.shape[-1] else x.mT @ x


def _rank_mask(sigma: Tensor, shape: torch.Size) -> Tensor:
    return sigma > sigma.amax(-1, keepdim=True) * max(shape[-2:]) * torch.finfo(sigma.dtype).eps


def eigvals(x: Tensor) -> Tensor:
    """The min(N, D) largest eigenvalues [M, k] of xᵀ x for x [M, N, D] (ascending; below the rank tolerance: 0)."""
    sigma = torch.linalg.eigvalsh(_gram(x))
    return torch.where(_rank_mask(sigma, x.shape), sigma, 0)


def spectrum(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(σ [M, k], energy [M, k, C]) for x [M, N, D] and label columns y [N, C]: the eigenvalues σ_j of xᵀ x as in
    :func:`eigvals`, and (u_jᵀ y_c)², the squared coordinates of y's columns on the left singular vectors u_j of x
    (0 where σ_j is 0). Only squares appear, so the eigenvectors' signs do not matter."""
    sigma, vectors = torch.linalg.eigh(_gram(x))
    if x.shape[-2] <= x.shape[-1]:  # the vectors are the u_j
        energy = (vectors.mT @ y).square()
    else:  # the vectors are the right singular vectors v_j, and u_j = x v_j / √σ_j
        energy = (vectors.mT @ (x.mT @ y)).square() / sigma.unsqueeze(-1)
    keep = _rank_mask(sigma, x.shape)
    return torch.where(keep, sigma, 0), torch.where(keep.unsqueeze(-1), energy, 0)
