"""How sure the answer is: the confident set, the pruned contenders and an ensemble's agreement, from the scores the
rounds left in the :class:`SearchState` (the statistics are :mod:`alsatian_pl.score._confidence`'s)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torchmetrics.functional.regression import kendall_rank_corrcoef

from ..score import ProxyScore, could_be_best
from .state import SearchState

__all__ = ["confident_set", "pruned_contenders", "agreement"]


def confident_set(state: SearchState, level: float | None, higher_is_better: bool) -> list[str] | None:
    """The last round's models that could be best at ``level``, best first (None: no level, or no uncertainty)."""
    return None if level is None or not state.scores else could_be_best(state.scores, level, higher_is_better)


def pruned_contenders(state: SearchState, level: float | None, higher_is_better: bool) -> list[str]:
    """Models pruned before the last round that the round pruning them could not rule out as its best, by round."""
    if level is None:
        return []
    out = []
    for r in sorted(state.leaders):
        leader, top = state.leaders[r]
        for m, (rr, p) in sorted(state.eliminated.items()):
            if rr == r and m not in state.scores and m in (could_be_best({leader: top, m: p}, level, higher_is_better)
                                                           or ()):
                out.append(m)
    return out


def agreement(scores: Mapping[str, ProxyScore]) -> dict[str, float] | None:
    """Kendall's tau-b between every two members of an ensemble over ``scores``' models (``"a~b"``) and their mean
    (``"mean"``); None unless the scores have members and there are at least two models."""
    first = next(iter(scores.values()), None)
    if first is None or not first.members or len(scores) < 2:
        return None
    names = list(first.members)
    values = {n: torch.tensor([scores[m].members[n].score for m in scores], dtype=torch.float64)  # type: ignore[index]
              for n in names}
    pairs = {f"{a}~{b}": float(kendall_rank_corrcoef(values[a], values[b], variant="b"))
             for a, b in itertools.combinations(names, 2)}
    return {**pairs, "mean": sum(pairs.values()) / len(pairs)}
