"""LogME (You et al., ICML 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning")."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import register_scorer
from ._base import _check_option, _is_int, _is_positive
from ._base import TASKS
from ._transfer import TransferabilityScorer, label_columns, spectrum


@register_scorer("logme")
class LogMEScorer(TransferabilityScorer):
    """LogME of the train features and labels: per class, the maximum over α, β of the log evidence per item of a
    Bayesian linear regression y_c = F w + noise (prior w ~ N(0, α⁻¹I), noise ~ N(0, β⁻¹)) from the raw features F
    [N, D] onto the class's 0/1 indicator y_c; the score is the mean over the classes present (higher is better).

    The evidence is maximised with the paper's fixed-point iteration (Algorithm 1: γ = Σ βσ_i/(α + βσ_i),
    m = βA⁻¹Fᵀy, α ← γ/mᵀm, β ← (N − γ)/‖Fm − y‖², A = αI + βFᵀF), from α = β = 1, run on the eigendecomposition of
    the smaller Gram matrix (the authors' fast form), until α/β changes by at most ``tol`` relative or ``max_iter``
    updates; the evidence is then evaluated at the final α, β. log|A| counts all D eigenvalues (the N < D fix of
    thuml/LogME issue 23). Where the evidence keeps growing with β (the labels lie in the features' span, as with
    N ≤ D), the score is its β → ∞ limit, the noise-free model's evidence. All-zero features score NaN (ranked last).

    The same evidence scores the other tasks (the authors' code fits any real label columns): regression, the mean
    over the targets of each raw target's evidence; multilabel, the mean over the labels some item shows of each
    0/1 label column's.
    """

    tasks = frozenset(TASKS)

    def __init__(self, *, tol: float = 1e-6, max_iter: int = 100, seed: int = 0,
                 max_chunk_bytes: int = 256 * 2**20):
        super().__init__(seed=seed, max_chunk_bytes=max_chunk_bytes)
        _check_option("tol", tol, _is_positive(tol) and tol < 1, "a number in (0, 1)")
        _check_option("max_iter", max_iter, _is_int(max_iter, 1), "an integer >= 1")
        self.tol, self.max_iter = float(tol), max_iter

    def metric(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean over the label columns (classes, labels or targets) of the maximum log evidence per item, per model."""
        n, d = x.shape[-2:]
        columns = label_columns(y)
        sigma, energy = spectrum(x, columns)                       # [M, k], [M, k, K]
        sigma = sigma.unsqueeze(-1)
        rest = (columns.square().sum(0) - energy.sum(1)).clamp_min(0)  # ‖y_c‖² outside the span of the u_j
        alpha, beta = self._fixed_point(sigma, energy, rest, n)
        _, _, m2, res2 = _terms(sigma, energy, rest, alpha / beta, n)
        logdet = (alpha.unsqueeze(1) + beta.unsqueeze(1) * sigma).log().sum(1) + (d - sigma.shape[1]) * alpha.log()
        evidence = (d * alpha.log() + n * beta.log() - logdet - beta * res2 - alpha * m2 - n * math.log(2 * math.pi)) / 2
        return (evidence / n).mean(-1)

    def _fixed_point(self, sigma: Tensor, energy: Tensor, rest: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """α, β [M, K] after the updates; each (model, class) stops on its own, as if iterated alone. Where the
        evidence keeps growing with β, α/β falls geometrically: it also stops once α/β is below the spectrum's
        resolution (σ_max · eps), where the evidence has reached its limit."""
        alpha = beta = torch.ones_like(rest)
        floor = sigma.amax(1) * torch.finfo(sigma.dtype).eps                  # [M, 1]
        active = torch.ones_like(rest, dtype=torch.bool)
        for _ in range(self.max_iter):
            t = alpha / beta
            gamma, unexplained, m2, res2 = _terms(sigma, energy, rest, t, n)
            new_alpha, new_beta = gamma / m2, unexplained / res2
            new_t = new_alpha / new_beta
            done = ((new_t - t).abs() <= self.tol * t) | (new_t <= floor)
            alpha, beta = torch.where(active, new_alpha, alpha), torch.where(active, new_beta, beta)
            active = active & ~done
            if not bool(active.any()):
                break
        return alpha, beta

def _terms(sigma: Tensor, energy: Tensor, rest: Tensor, t: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """γ, N − γ, mᵀm and ‖Fm − y‖² [M, K] at t = α/β, from σ [M, k, 1], the energies [M, k, K] and the rest [M, K];
    N − γ summed from its own terms, so it stays exact as t → 0."""
    t = t.unsqueeze(1)
    explained, unexplained = sigma / (sigma + t), t / (sigma + t)
    m2 = (sigma * energy / (sigma + t).square()).sum(1)
    res2 = (energy * unexplained.square()).sum(1) + rest
    return explained.sum(1), unexplained.sum(1) + (n - sigma.shape[1]), m2, res2
