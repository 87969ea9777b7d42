"""H-score (Bao et al., ICIP 2019, "An Information-theoretic Approach to Transferability in Task Transfer Learning")
and its shrinkage-regularised form (Ibrahim, Ponomareva & Mazumder 2022, "Newer is not always better: Rethinking
transferability metrics, their peculiarities, stability and performance", arXiv:2110.06893)."""

from __future__ import annotations

import torch
from torch import Tensor

from . import register_scorer
from ._transfer import TransferabilityScorer, centred, indicators, spectrum


def _class_spectrum(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(centred features, σ [M, k], e [M, k]): the spectrum of the centred features and e_j = Σ_c (u_jᵀ y_c)²/n_c,
    the between-class share of each component (y_c: class c's indicator)."""
    xc = centred(x)
    onehot, _ = indicators(y)
    sigma, energy = spectrum(xc, onehot / onehot.sum(0).sqrt())
    return xc, sigma, energy.sum(-1)


@register_scorer("hscore")
class HScorer(TransferabilityScorer):
    """H-score of the train features and labels: tr(cov(f)⁺ cov(E[f|y])), both covariances over the train items
    (the authors' code: np.cov, pinv); higher is better. Computed as Σ_j e_j over the components u_j of the centred
    features (see :func:`_class_spectrum`), which is that trace without forming a D × D inverse. With N ≤ D + 1 the
    centred features span every centred label direction and the score is K − 1 for every model: use ``hscore_reg``.
    """

    def metric(self, x: Tensor, y: Tensor) -> Tensor:
        """tr(cov(f)⁺ cov(E[f|y])) per model."""
        return _class_spectrum(x, y)[2].sum(-1)


@register_scorer("hscore_reg")
class RegularizedHScorer(TransferabilityScorer):
    """Regularised H-score of the train features and labels: tr(cov_α(f)⁻¹ (1 − α) cov(E[f|y])), cov_α the
    Ledoit-Wolf shrinkage estimate (1 − α) S + α tr(S)/D · I of the features' covariance S (1/N normalised, α from
    the Ledoit-Wolf formula as sklearn.covariance.LedoitWolf computes it), cov(E[f|y]) 1/(N − 1) normalised, as in
    the authors' code; higher is better. Computed on the spectrum of the centred features, no D × D inverse.
    """

    def metric(self, x: Tensor, y: Tensor) -> Tensor:
        """tr(cov_α(f)⁻¹ (1 − α) cov(E[f|y])) per model."""
        n = x.shape[1]
        xc, sigma, between = _class_spectrum(x, y)
        alpha, mu = ledoit_wolf_shrinkage(xc, sigma)
        shrunk = (1 - alpha).unsqueeze(-1) * sigma / n + (alpha * mu).unsqueeze(-1)   # cov_α's eigenvalues
        terms = torch.where(sigma > 0, sigma * between / shrunk, 0)
        return (1 - alpha) * terms.sum(-1) / (n - 1)


def ledoit_wolf_shrinkage(xc: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """(α, μ) [M] of centred features xc [M, N, D] whose xcᵀ xc has eigenvalues σ [M, k]: the Ledoit-Wolf shrinkage
    α = min(b², d²)/d² as sklearn.covariance.ledoit_wolf_shrinkage computes it (Ledoit & Wolf 2004), d² =
    ‖S − μI‖²_F/D, b² = Σ_i ‖x_i x_iᵀ − S‖²_F/(N²D), and its target's scale μ = tr(S)/D, S = xcᵀ xc/N."""
    n, d = xc.shape[-2:]
    squares = xc.square()
    mu = squares.sum((1, 2)) / (n * d)
    cross = sigma.square().sum(-1) / n**2                          # ‖S‖²_F
    beta = (squares.sum(-1).square().sum(-1) / n - cross) / (d * n)
    delta = (cross - d * mu.square()) / d
    beta = torch.minimum(beta, delta)
    alpha = torch.where(beta == 0, 0.0, beta / delta)
    return (alpha if d > 1 else torch.zeros_like(alpha)), mu   # one feature: nothing to shrink (as sklearn)
