"""Execution-plan steps (paper §4.3): block inference (BI), score model (SM), modify cache (MC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .tree import BlockSpec

__all__ = ["InferenceStep", "step_work_bytes", "ScoreStep", "ReleaseStep"]


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
    work_bytes: int = 0  # the activations of one batch, the most its blocks hold at once (see step_work_bytes)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the step's block weights, held while it runs."""
        return sum(b.weight_bytes for b in self.blocks)

    @property
    def running_bytes(self) -> int:
        """Bytes held only while the step runs: its block weights and one batch's activations."""
        return self.weight_bytes + self.work_bytes


def step_work_bytes(blocks: tuple[BlockSpec, ...], batch_size: int) -> int:
    """The most one batch's activations take while ``blocks`` run one after the other: block k's own
    ``work_bytes`` plus its input, the batch output of block k-1 (the step's own input is counted elsewhere: a cached
    node, or the batch of inputs in flight). Blocks without activations (``work_bytes`` 0 throughout, as a planner
    given only outputs and weights sees them) hold none."""
    if not any(b.work_bytes for b in blocks):
        return 0
    return max((b.work_bytes + (batch_size * blocks[k - 1].out_bytes if k else 0) for k, b in enumerate(blocks)),
               default=0)


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
