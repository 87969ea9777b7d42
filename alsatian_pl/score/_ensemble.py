"""The ensemble scorer: several scorers on the same features in one pass, their ranks combined (Borda count).

Each member scores every model as it would alone (``ProxyScore.members``). Once the round's scores are gathered,
:meth:`EnsembleScorer.combine` gives each model, per member, the share of the other models it beats (a tie counts
half; member order by score, then its test loss) and the ensemble score is the mean share over the members, in
[0, 1], higher is better; its test loss is the mean share of models beating it on the members' test losses. Unlike
the single scorers, a model's ensemble score depends on the other models of its round. With replicates, replicate g
of the ensemble is the same aggregation of the members' replicates g, so the confidence works as for any scorer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from . import get_scorer, register_scorer
from ._base import ProxyScore, ProxyScorer, scoring_task
from ._confidence import replicating, with_replicates

__all__ = ["EnsembleScorer", "DEFAULT_MEMBERS"]

DEFAULT_MEMBERS = ("linear", "logme", "knn")


@register_scorer("ensemble")
class EnsembleScorer(ProxyScorer):
    """Mean Borda share over ``members``: a list of scorer names, or a mapping of name to that scorer's options."""

    higher_is_better = True
    reports_stderr = False
    gives_replicates = True
    score_range = (0.0, 1.0)

    def __init__(self, *, members: Sequence[str] | Mapping[str, Mapping[str, Any] | None] = DEFAULT_MEMBERS,
                 seed: int = 0):
        if isinstance(members, str) or not isinstance(members, (Sequence, Mapping)) or len(members) < 2:
            raise ConfigError("proxy scorer option members must name at least two scorers (a list such as "
                              f"[linear, logme, knn], or a mapping of name to options), got {members!r}")
        options = {str(m): {} for m in members} if not isinstance(members, Mapping) else \
            {str(k): dict(v or {}) for k, v in members.items()}
        if "ensemble" in options:
            raise ConfigError("proxy scorer option members cannot contain the ensemble itself")
        if len(options) != len(members):
            raise ConfigError(f"proxy scorer option members names a scorer twice: {list(members)}")
        self.seed, self.member_options = seed, options
        self.members = {name: get_scorer(name, **{"seed": seed, **kw}) for name, kw in options.items()}
        self.costly_replicates = any(s.costly_replicates for s in self.members.values())

    @property
    def tasks(self) -> frozenset[str]:  # type: ignore[override]
        """The task types every member scores."""
        return frozenset.intersection(*(s.tasks for s in self.members.values()))

    def score(self, train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor],
              test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        """Every member's scores (``members``); the ensemble's own score is set by :meth:`combine`."""
        parts = {}
        for name, member in self.members.items():
            with replicating(member, self.jackknife), scoring_task(member, self.task):
                parts[name] = member.score(train, train_labels, test, test_labels, num_classes)
        return {m: ProxyScore(math.nan, math.nan, members={n: parts[n][m] for n in parts}) for m in train}

    def combine(self, scores: dict[str, ProxyScore]) -> dict[str, ProxyScore]:
        """Each model's mean Borda share over the members among ``scores`` (and over their replicates)."""
        if not scores:
            return scores
        models = list(scores)
        shares = {n: _shares(models, [scores[m].members[n] for m in models], s.higher_is_better)  # type: ignore[index]
                  for n, s in self.members.items()}
        losses = {n: _shares(models, [ProxyScore(scores[m].members[n].test_loss, 0.0) for m in models], False)  # type: ignore[index]
                  for n in self.members}
        out = {}
        for i, m in enumerate(models):
            p = scores[m]
            out[m] = ProxyScore(_mean(shares, i), 1 - _mean(losses, i), None, None, p.members)
        return _with_replicates(out, models, self.members)

    def working_bytes(self, train_rows: int, test_rows: int, dims: Mapping[str, int], num_classes: int) -> int:
        """The largest member's (members run one after the other)."""
        sizes = []
        for s in self.members.values():
            with scoring_task(s, self.task):
                sizes.append(s.working_bytes(train_rows, test_rows, dims, num_classes))
        return max(sizes)


def _shares(models: list[str], scores: list[ProxyScore], higher_is_better: bool) -> list[float]:
    """Per model, the share of the others it beats on (score, test loss), ties half; NaN scores beat nobody."""
    if len(models) == 1:
        return [1.0]
    sign = 1.0 if higher_is_better else -1.0
    first, second = (torch.tensor(v, dtype=torch.float64) for v in ([sign * p.score for p in scores],
                                                                     [-p.test_loss for p in scores]))
    first, second = (torch.where(t.isnan(), -math.inf, t) for t in (first, second))  # NaN below everything
    same = first[:, None] == first[None]
    beats = (first[:, None] > first[None]) | (same & (second[:, None] > second[None]))
    ties = same & (second[:, None] == second[None])
    return ((beats.sum(1).double() + 0.5 * (ties.sum(1).double() - 1)) / (len(models) - 1)).tolist()


def _mean(shares: dict[str, list[float]], i: int) -> float:
    return math.fsum(s[i] for s in shares.values()) / len(shares)


def _with_replicates(out: dict[str, ProxyScore], models: list[str],
                     members: Mapping[str, ProxyScorer]) -> dict[str, ProxyScore]:
    """``out`` with replicate g = the mean share on the members' replicates g, when every member score has them."""
    reps = [[out[m].members[n].replicates for m in models] for n in members]  # type: ignore[index]
    counts = {len(r) if r else 0 for per in reps for r in per}
    if counts in ({0}, set()) or len(counts) != 1:
        return out
    groups = counts.pop()
    per_group = [[_shares(models, [ProxyScore(r[g], 0.0) for r in per], s.higher_is_better)
                  for per, s in zip(reps, members.values())] for g in range(groups)]
    return with_replicates(out, {m: [math.fsum(sh[i] for sh in per_group[g]) / len(members) for g in range(groups)]
                                 for i, m in enumerate(models)})
