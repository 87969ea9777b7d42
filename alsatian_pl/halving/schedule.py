"""The successive-halving schedule: how many rounds, how large each round's training chunk is, and who survives.

The default (:data:`PAPER`) is the paper's schedule (§2.2, §4.1): ``ceil(log2(models / result_size))`` rounds over
doubling chunks D1..Dl (``|D1| = N / (2**l - 1)``) and the better half after every round, ``result_size`` after the
last. Two opt-in knobs make it more robust on small or noisy data, at a cost stated below; both are None (off) by
default, and then nothing differs from the paper (alsatian, shift and base stay comparable):

``min_class_items`` (k): D1 holds at least ``k`` training items of every class (all of a class that has fewer), i.e.
``m1 = sum_c min(k, n_c)`` items, where the paper's D1 is smaller; later chunks double until the items run out and
chunks that would be empty are merged away, so the search may run fewer rounds (its last round then cuts straight to
``result_size``). The data module cuts the chunks (its ``chunk_bounds``, in ``alsatian_pl/data/_split.py``).

``noise_margin`` (z): after every round but the last, every model ranked below the cut whose score is within ``z``
of its own standard errors of the cut score (the last survivor's) goes on too:
``cut - score <= z * stderr`` (higher-is-better scores; ``score - cut`` for lower-is-better). The standard error is
the scorer's (:attr:`ProxyScore.stderr`: the binomial ``sqrt(p(1 - p) / n_test)`` of the test-accuracy scorers
``linear`` and ``knn``, or the jackknife's, which every built-in scorer gives while ``search.confidence`` is set); a
score without one keeps nobody extra. ``z = 0`` keeps the models tied
with the cut score. The last round still returns exactly ``result_size`` models.

Cost (M models, result size r, T test items, rounds l, chunk sizes |D_i|, a_i models alive in round i): a search
pushes ``M*T + sum_i a_i |D_i|`` items through the models' blocks and trains ``a_i`` heads on ``|D_1| + ... + |D_i|``
items in round i; ``a_1 = M`` and ``a_{i+1} = max(r, ceil(a_i / 2)) + e_i``, where ``e_i`` is the number of models
the margin kept in round i (0 without it; ``RoundReport.kept`` is ``a_{i+1}``). The margin costs
``sum_i (a_i - a_i') |D_i|`` extra items (a' the paper's counts), at most the exhaustive ``M * (N + T)`` when it keeps
every model until the last round. ``min_class_items`` costs nothing unless ``m1`` exceeds the paper's |D1|; then
``|D_i| = m1 * 2**(i-1)`` (the last non-empty chunk takes what is left), so each round pushes about ``M * m1`` items
instead of ``M * N / (2**l - 1)``: the items grow by about ``m1 / |D1|`` (at most ``M * (N + T)``, reached when
``m1 >= N``: one round on all items).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..checks import whole
from ..data import num_rounds
from ..errors import ConfigError
from ..score import ProxyScore

__all__ = ["Schedule", "PAPER"]


@dataclass(frozen=True)
class Schedule:
    """A successive-halving schedule: the paper's, or with the opt-in ``min_class_items`` / ``noise_margin``
    (module docstring); the values are checked when made (ConfigError naming ``search.<key>``)."""

    min_class_items: int | None = None
    noise_margin: float | None = None

    def __post_init__(self) -> None:
        if self.min_class_items is not None:
            whole("search.min_class_items", self.min_class_items,
                  hint=" (training items of every class in the first chunk), or null for the paper's chunks")
        margin = self.noise_margin
        if margin is not None:
            if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < math.inf:
                raise ConfigError("search.noise_margin must be a number, 0 or more (standard errors of the cut score, "
                                  f"e.g. 1.0), or null for the paper's better half; got {margin!r}")
            object.__setattr__(self, "noise_margin", float(margin))

    @property
    def is_paper(self) -> bool:
        """Whether this is the paper's schedule (both knobs off)."""
        return self.min_class_items is None and self.noise_margin is None

    def options(self) -> dict[str, Any]:
        """The knobs, as the config names them."""
        return asdict(self)

    def num_rounds(self, num_models: int, result_size: int) -> int:
        """Rounds from ``num_models`` down to ``result_size`` (before empty chunks are merged away)."""
        return num_rounds(num_models, result_size)

    def halving(self, alive: int, r: int, rounds: int, result_size: int) -> int:
        """How many of ``alive`` ranked models go on after round ``r``: the better half, the result in the last."""
        return result_size if r == rounds - 1 else max(result_size, math.ceil(alive / 2))

    def keep(self, ranked: Sequence[str], scores: Mapping[str, ProxyScore], halved: int, *, final: bool,
             higher_is_better: bool) -> list[str]:
        """The models that go on, best first: the first ``halved`` of ``ranked``, and, with a noise margin and unless
        this is the ``final`` round, every later one within the margin of the cut score."""
        kept = list(ranked[:halved])
        if final or self.noise_margin is None or not kept or halved >= len(ranked):
            return kept
        cut = scores[kept[-1]].score
        return kept + [m for m in ranked[halved:] if self._within(scores[m], cut, higher_is_better)]

    def _within(self, p: ProxyScore, cut: float, higher_is_better: bool) -> bool:
        """Whether score ``p`` lies within ``noise_margin`` of its standard errors of ``cut`` (never without one)."""
        if p.stderr is None or not (math.isfinite(p.stderr) and math.isfinite(p.score) and math.isfinite(cut)):
            return False
        gap = cut - p.score if higher_is_better else p.score - cut
        return gap <= self.noise_margin * p.stderr + 1e-12  # type: ignore[operator]  # 1e-12: float rounding


PAPER = Schedule()
