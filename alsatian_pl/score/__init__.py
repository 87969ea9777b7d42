"""Proxy scoring (paper §2.2): each surviving model's train/test features → one :class:`ProxyScore` per model.

Every model of a round has features for the same train items (same order) and for the test items. The default
``"linear"`` scorer trains one linear head per model (mini-batch SGD on cross-entropy, as in the paper and SHiFT) and
scores its test accuracy; all heads of a round train together in :class:`LinearProbes`. ``"knn"`` votes over the
nearest train items. ``"logme"``, ``"hscore"``, ``"hscore_reg"``, ``"gbc"`` and ``"transrate"`` are transferability
scores of the train features and labels, no training (:mod:`._transfer`). A model's score depends only on its own
features, the labels and the seed, never on the other models scored with it; the one exception is ``"ensemble"``,
which combines several scorers' ranks among the round's models (:mod:`._ensemble`). Asked for replicates, every
scorer attaches a jackknife of its score (:mod:`._confidence`): the intervals and the models that could be best.

This module holds the registry (``SCORERS``, :func:`register_scorer`, :func:`get_scorer`); the contract lives in
``_base``, the scorers in their own modules, which register themselves on import below.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

from ..errors import ConfigError
from ..registry import Registry
from ._base import (TASKS, ProxyScore, ProxyScorer, ScoreProgress, binomial_stderr, check_inputs, check_task, rank,
                    reporting, scoring_task)
from ._confidence import GROUPS as JACKKNIFE_GROUPS, could_be_best, interval, replicating

__all__ = ["ProxyScore", "ProxyScorer", "ScoreProgress", "reporting", "LinearProbes", "LinearScorer", "KNNScorer", "LogMEScorer", "HScorer",
           "RegularizedHScorer", "GBCScorer", "TransRateScorer", "TransferabilityScorer",
           "SCORERS", "register_scorer", "get_scorer", "available_scorers", "rank", "check_inputs",
           "binomial_stderr", "dual_is_cheaper", "EnsembleScorer", "JACKKNIFE_GROUPS", "could_be_best", "interval",
           "replicating", "TASKS", "check_task", "scoring_task"]

SCORERS: Registry[type[ProxyScorer]] = Registry("proxy scorer", plural="scorers")
_S = TypeVar("_S", bound=type[ProxyScorer])


def register_scorer(name: str) -> Callable[[_S], _S]:
    """Class decorator: make a :class:`ProxyScorer` subclass available to :func:`get_scorer` as ``name``."""

    def decorate(cls: _S) -> _S:
        if not (isinstance(cls, type) and issubclass(cls, ProxyScorer)):
            raise TypeError(f"@register_scorer({name!r}) needs a ProxyScorer subclass, got {cls!r}")
        SCORERS.register(name, cls)
        cls.name = name
        return cls

    return decorate


def available_scorers() -> list[str]:
    """Names of the registered scorers, sorted."""
    return SCORERS.names()


def get_scorer(name: str, **kwargs) -> ProxyScorer:
    """A new scorer registered as ``name``, built with ``kwargs``; an unknown name or option raises ConfigError."""
    cls = SCORERS.get(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid options for proxy scorer {name!r}: {exc}") from None
    return cls(**kwargs)


# The scorers register themselves with the names above, so they are imported once these exist.
from ._linear import LinearProbes, LinearScorer, dual_is_cheaper  # noqa: E402
from ._knn import KNNScorer  # noqa: E402
from ._transfer import TransferabilityScorer  # noqa: E402
from ._logme import LogMEScorer  # noqa: E402
from ._hscore import HScorer, RegularizedHScorer  # noqa: E402
from ._gbc import GBCScorer  # noqa: E402
from ._transrate import TransRateScorer  # noqa: E402
from ._source import LEEPScorer, NCEScorer, SourceHeadScorer  # noqa: E402,F401  (heads: leep, nce)
from ._ensemble import EnsembleScorer  # noqa: E402
