"""Execution-plan steps (paper §4.3): block inference (BI), score model (SM), modify cache (MC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .tree import BlockSpec


@dataclass(frozen=True)
class InferenceStep:
    """BI-step: run ``blocks`` on the output of node ``input`` (0 = the round's data) to produce node ``output``,
    which the cache holds until its ReleaseStep when ``cache_output`` (later steps read it), else it is a model's
    features and goes straight to the score steps that follow (never cached)."""

    blocks: tuple[BlockSpec, ...]
    input: int
    output: int
    models: frozenset[str]
    cache_output: bool = True

    @property
    def weight_bytes(self) -> int:
        """Bytes of the step's block weights, held while it runs."""
        return sum(b.weight_bytes for b in self.blocks)


@dataclass(frozen=True)
class ScoreStep:
    """SM-step: the output of node ``features`` is the feature set of ``model``; score it."""

    model: str
    features: int


@dataclass(frozen=True)
class ReleaseStep:
    """MC-step: drop node ``node``'s output from the cache; no later step reads it."""

    node: int


Step = Union[InferenceStep, ScoreStep, ReleaseStep]
