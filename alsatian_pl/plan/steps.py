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
    work_bytes: int = 0  # the activations of its batches, the most its blocks hold at once (see step_work_bytes)
    block_batches: int = 1  # batches run block by block together: each block over them all, then the next block

    @property
    def weight_bytes(self) -> int:
        """Bytes of the step's block weights, held while it runs."""
        return sum(b.weight_bytes for b in self.blocks)

    @property
    def running_bytes(self) -> int:
        """Bytes held only while the step runs: its block weights and its batches' activations."""
        return self.weight_bytes + self.work_bytes


def step_work_bytes(blocks: tuple[BlockSpec, ...], batch_size: int, block_batches: int = 1) -> int:
    """The most activations take while ``blocks`` run one after the other over ``block_batches`` batches at once
    (block-major: each block over every batch of the group, then the next block; 1: one batch through the chain).

    Block k over batch i of the group holds its own ``work_bytes`` (its output included), the outputs of block k-1
    for batches i.. still to run and its own outputs for batches ..i-1: at most ``work + max(g * in, in + (g-1) *
    out)`` with ``g`` batches. The step's own input is counted elsewhere (a cached node, or the batch of inputs in
    flight: block 0 reads one batch at a time), and the last block's batches leave as they come (to the cached
    output or the features), so neither is held g times. Blocks without activations (``work_bytes`` 0 throughout, as
    a planner given only outputs and weights sees them) hold none."""
    if not any(b.work_bytes for b in blocks):
        return 0
    g, last = block_batches, len(blocks) - 1

    def held(k: int, b: BlockSpec) -> int:
        into = batch_size * blocks[k - 1].out_bytes if k else 0
        out = batch_size * b.out_bytes if k < last else 0
        return b.work_bytes + max(g * into, into + (g - 1) * out)

    return max((held(k, b) for k, b in enumerate(blocks)), default=0)


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
