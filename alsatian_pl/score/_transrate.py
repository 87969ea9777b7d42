"""TransRate (Huang et al., ICML 2022, "Frustratingly Easy Transferability Estimation")."""

from __future__ import annotations

import torch
from torch import Tensor

from . import register_scorer
from ._base import _check_option, _is_positive
from ._transfer import TransferabilityScorer, centred, eigvals, indicators


@register_scorer("transrate")
class TransRateScorer(TransferabilityScorer):
    """TransRate of the train features and labels: R(Z, ε) − R(Z|Y, ε) with Z the features centred over the train
    items, R(Z, ε) = ½ log det(I + ZᵀZ/(Nε)) and R(Z|Y, ε) the mean over the classes present of R(Z_c, ε) on each
    class's rows (N_c of them), as in the paper's code (ε = ``eps``, 1e-4 there); higher is better. The log
    determinants come from the eigenvalues of the smaller Gram matrix (Sylvester's identity).
    """

    def __init__(self, *, eps: float = 1e-4, seed: int = 0, max_chunk_bytes: int = 256 * 2**20):
        super().__init__(seed=seed, max_chunk_bytes=max_chunk_bytes)
        _check_option("eps", eps, _is_positive(eps), "a positive number")
        self.eps = float(eps)

    def metric(self, x: Tensor, y: Tensor) -> Tensor:
        """R(Z, ε) − mean_c R(Z_c, ε) per model."""
        z = centred(x)
        _, index = indicators(y)
        per_class = [self._rate(z[:, index == c]) for c in range(int(index.max()) + 1)]
        return self._rate(z) - torch.stack(per_class).mean(0)

    def _rate(self, z: Tensor) -> Tensor:
        """The coding rate ½ log det(I + zᵀz/(nε)) [M] of rows z [M, n, D]."""
        return torch.log1p(eigvals(z) / (z.shape[1] * self.eps)).sum(-1) / 2
