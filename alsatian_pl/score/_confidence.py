"""How sure a score is: the delete-a-group jackknife every scorer shares, intervals, and the models that could be best.

A scorer asked for replicates (``ProxyScorer.jackknife = G``) splits the items its score is computed on into ``G``
groups (a permutation drawn from the seed and the item count alone, so every model, strategy and rank uses the same
groups) and computes its score once without each group: ``ProxyScore.replicates`` holds those ``G`` values. No model
is retrained: the accuracy scorers (linear, knn) leave out test items of their already trained head's predictions,
the scorers of the train features (logme, hscore, gbc, transrate, leep, nce) recompute their closed form without the
group's train items. The jackknife variance of any score ``θ`` is ``(G-1)/G Σ_g (θ_(g) - θ̄)²``, with ``G - 1``
degrees of freedom.

From the replicates, at a confidence level ``c``:

- ``interval``: ``θ ± t_{(1+c)/2, G-1} · se`` (a scorer's own standard error where it has no replicates, with the
  normal quantile);
- ``could_be_best``: the point winner and every model whose gap to it is within ``t_{c, G-1} · se(θ_top - θ_m)``,
  the jackknife standard error of the *paired* difference (both scores computed without the same groups), a
  one-sided test at level ``c`` against the winner, not corrected for the winner being chosen from the data.

Identical models (the same features) get identical replicates, so they are in or out together. The interval covers
the sampling of the items a score is computed on; it does not cover the probe's training seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from statistics import NormalDist

import torch
from torch import Tensor

from ._base import ProxyScore, ProxyScorer, lending, rank

__all__ = ["GROUPS", "replicating", "jackknife_groups", "leave_out_means", "hit_replicates", "leave_out", "with_replicates", "jackknife_se",
           "t_quantile", "interval", "could_be_best"]

GROUPS = 10  # jackknife groups: 9 degrees of freedom; a transferability scorer computes its score 10 more times


@contextmanager
def replicating(scorer: ProxyScorer, groups: int) -> Iterator[ProxyScorer]:
    """``scorer`` attaching ``groups`` jackknife replicates to its scores (0: none) within the block."""
    with lending(scorer, "jackknife", groups):
        yield scorer


def jackknife_groups(n: int, seed: int, groups: int = GROUPS) -> Tensor | None:
    """Each of ``n`` items' group [n] (int64, groups of sizes differing by at most one), from ``seed`` and ``n``
    alone; None when there are fewer items than groups."""
    if n < groups:
        return None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    group = torch.empty(n, dtype=torch.long)
    group[order] = torch.arange(n) % groups
    return group


def leave_out_means(terms: Tensor, group: Tensor, groups: int = GROUPS) -> Tensor:
    """Each row's mean without each group [M, G] (float64) of per-item terms [M, n] (a mean of per-item terms:
    an accuracy's 0/1 hits, a log-likelihood's terms)."""
    terms = terms.double()
    sums = torch.zeros(terms.shape[0], groups, dtype=torch.float64, device=terms.device)
    sums.index_add_(1, group.to(terms.device), terms)
    counts = torch.bincount(group, minlength=groups).to(terms.device, torch.float64)
    return (terms.sum(1, keepdim=True) - sums) / (len(group) - counts)


def hit_replicates(ids: Sequence[str], hits: Tensor, seed: int, groups: int) -> dict[str, list[float]] | None:
    """Each model's accuracy without each group, from its per-item hits [M, n] (one row per id); None when there
    are fewer items than groups."""
    group = jackknife_groups(hits.shape[1], seed, groups)
    if group is None:
        return None
    return dict(zip(ids, leave_out_means(hits, group, groups).tolist()))


def leave_out(group: Tensor, groups: int = GROUPS) -> list[Tensor]:
    """The indices [n - |group g|] of the items kept when group ``g`` is left out, for every g."""
    return [torch.nonzero(group != g).squeeze(1) for g in range(groups)]


def with_replicates(scores: Mapping[str, ProxyScore], replicates: Mapping[str, Sequence[float]]) -> dict[str, ProxyScore]:
    """``scores`` with each model's replicates attached, and the jackknife standard error where a score has none."""
    out = {}
    for m, p in scores.items():
        reps = tuple(float(v) for v in replicates[m])
        stderr = p.stderr if p.stderr is not None else jackknife_se(reps)
        out[m] = ProxyScore(p.score, p.test_loss, stderr, reps, p.members)
    return out


def jackknife_se(replicates: Sequence[float]) -> float:
    """The delete-a-group jackknife standard error of a score from its ``G`` replicates (NaN if one is not finite)."""
    g = len(replicates)
    if g < 2 or not all(math.isfinite(v) for v in replicates):
        return math.nan
    mean = math.fsum(replicates) / g
    return math.sqrt((g - 1) / g * math.fsum((v - mean) ** 2 for v in replicates))


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile at ``p`` with ``df`` degrees of freedom (Cornish-Fisher, Abramowitz & Stegun 26.7.5:
    within 1e-3 of the exact value for df >= 5 and p in [0.5, 0.995]); df = inf: the normal quantile."""
    z = NormalDist().inv_cdf(p)
    if math.isinf(df):
        return z
    g = [(z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160]
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


def _spread(p: ProxyScore) -> tuple[float, float] | None:
    """(standard error, degrees of freedom) of a score: the jackknife's from its replicates, else its own (normal)."""
    if p.replicates:
        return jackknife_se(p.replicates), len(p.replicates) - 1
    return (p.stderr, math.inf) if p.stderr is not None else None


def interval(p: ProxyScore, level: float,
             limits: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float] | None:
    """The two-sided ``level`` interval of a score, clipped to the scorer's ``limits`` (its ``score_range``); None
    when it carries no uncertainty or is not finite."""
    spread = _spread(p)
    if spread is None or not (math.isfinite(spread[0]) and math.isfinite(p.score)):
        return None
    half = t_quantile((1 + level) / 2, spread[1]) * spread[0]
    return max(p.score - half, limits[0]), min(p.score + half, limits[1])


def could_be_best(scores: Mapping[str, ProxyScore], level: float, higher_is_better: bool) -> list[str] | None:
    """The models (best first) that could be best at ``level``: the point winner and every model the paired test
    cannot rule out; None when a model's score carries no uncertainty."""
    ranked = rank(scores, higher_is_better)
    if not ranked or any(_spread(scores[m]) is None for m in ranked):
        return None
    top = scores[ranked[0]]
    return [m for m in ranked if m == ranked[0] or _not_worse(top, scores[m], level, higher_is_better)]


def _not_worse(top: ProxyScore, p: ProxyScore, level: float, higher_is_better: bool) -> bool:
    """Whether ``p`` is within the one-sided ``level`` margin of ``top`` (paired when both have replicates)."""
    gap = top.score - p.score if higher_is_better else p.score - top.score
    if not math.isfinite(gap):
        return False
    if top.replicates and p.replicates and len(top.replicates) == len(p.replicates):
        se, df = jackknife_se([a - b for a, b in zip(top.replicates, p.replicates)]), len(p.replicates) - 1
    else:  # unpaired: the scores' own errors, as if independent
        (se_a, df_a), (se_b, df_b) = _spread(top), _spread(p)  # type: ignore[misc]
        se, df = math.hypot(se_a, se_b), min(df_a, df_b)
    if not math.isfinite(se):
        return False
    return gap <= t_quantile(level, df) * se + 1e-12  # 1e-12: float rounding of tied scores
