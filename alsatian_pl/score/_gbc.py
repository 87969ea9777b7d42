"""GBC (Pándy et al., CVPR 2022, "Transferability Estimation using Bhattacharyya Class Separability")."""

from __future__ import annotations

import torch
from torch import Tensor

from . import register_scorer
from ._base import _check_option, _is_positive
from ._transfer import TransferabilityScorer, indicators


@register_scorer("gbc")
class GBCScorer(TransferabilityScorer):
    """Gaussian Bhattacharyya Coefficient of the train features and labels: each class present is a Gaussian with
    the class's mean and diagonal covariance (its per-dim variances over the class's items, at least
    ``min_variance``, as the authors' code floors them at 1e-4); the score is −Σ over ordered pairs of distinct
    classes of BC = exp(−D_B), D_B = ⅛ Σ_d (μ₁ − μ₂)²/σ̄² + ½ Σ_d ln(σ̄²/√(σ₁²σ₂²)), σ̄² = (σ₁² + σ₂²)/2. Higher
    (closer to 0: classes more separable) is better. Raw features, no PCA.
    """

    def __init__(self, *, min_variance: float = 1e-4, seed: int = 0, max_chunk_bytes: int = 256 * 2**20):
        super().__init__(seed=seed, max_chunk_bytes=max_chunk_bytes)
        _check_option("min_variance", min_variance, _is_positive(min_variance), "a positive number")
        self.min_variance = float(min_variance)

    def metric(self, x: Tensor, y: Tensor) -> Tensor:
        """−Σ_{a≠b} BC(a, b) per model."""
        onehot, index = indicators(y)
        counts = onehot.sum(0).unsqueeze(-1)                          # [K, 1]
        means = onehot.T @ x / counts                                  # [M, K, D]
        var = (onehot.T @ (x - means[:, index]).square() / counts).clamp_min(self.min_variance)
        log_var = var.log().sum(-1)                                    # [M, K]
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for a in range(len(counts)):
            avg = (var[:, a:a + 1] + var) / 2
            distance = ((means[:, a:a + 1] - means).square() / avg).sum(-1) / 8 \
                + (avg.log().sum(-1) - (log_var[:, a:a + 1] + log_var) / 2) / 2
            coefficient = torch.exp(-distance)
            coefficient[:, a] = 0                                      # every other class b
            total += coefficient.sum(-1)
        return -total
