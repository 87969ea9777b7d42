"""What a search hands from round to round (:class:`SearchState`) and what it hands back (:class:`SearchResult`).

Nothing here runs anything: the loop (:mod:`.loop`) fills the state, the callbacks read it, resume saves and restores
it, and :func:`assemble_ranking` turns it into the final order.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..features import FeatureStore
from ..plan import BlockSpec, RoundMemory, RoundPlan, TaskTree
from ..plan.partition import Assignment
from ..score import ProxyScore, interval, rank

if TYPE_CHECKING:
    from ..store import ModelManifest
    from .rebalance import Migration

__all__ = ["RoundReport", "RankedModel", "SearchResult", "TokenizerGroup", "SearchState", "assemble_ranking"]


@dataclass
class RoundReport:
    """What one round did: models scored, items pushed, steps run, and planned vs observed peak cache bytes.

    A search over models of several tokenizers runs one plan per tokenizer group and round: ``partitions`` and the
    peaks are the largest of the groups', steps, runs and distinct blocks are summed / united over them.
    """

    round: int
    models: int
    items: int
    partitions: int
    inference_steps: int
    block_runs: int
    distinct_blocks: int
    planned_peak_bytes: int
    observed_peak_bytes: int
    kept: int
    groups: int = 1  # tokenizer groups planned and run this round (each on its own prepared inputs)
    scoring_peak_bytes: int = 0  # of the peaks: the scoring phase's (planned; kept features + scorer's working set)
    agreement: dict[str, float] | None = None  # an ensemble's Kendall tau between its members' scores this round


@dataclass
class RankedModel:
    """A model's place in the ranking: its last score, test loss, round of elimination (None: it survived) and the
    score's interval at the search's confidence level (None: no level, or the score carries no uncertainty)."""

    model: str
    score: float
    test_loss: float
    eliminated_in_round: int | None
    score_interval: list[float] | None = None


@dataclass
class SearchResult:
    """The outcome of a search: ranking (best first), per-round reports, time breakdown, memory and cache stats."""

    strategy: str
    ranking: list[RankedModel]
    rounds: list[RoundReport]
    timings_s: dict[str, float]
    memory: dict[str, int]
    cache: dict[str, int]
    block_seconds: dict[str, float] = field(default_factory=dict)
    block_items: dict[str, int] = field(default_factory=dict)
    resumed_from_round: int | None = None  # the first round this process ran, when it resumed a saved search
    distributed: dict[str, Any] | None = None  # per-rank timings, bytes and load balance of a distributed search
    confidence: float | None = None  # the level of the intervals and of the confident set (None: none computed)
    confident_set: list[str] | None = None  # the last round's models that could be best at that level, best first
    pruned_contenders: list[str] = field(default_factory=list)  # pruned by halving, though they could have been best
    agreement: dict[str, float] | None = None  # an ensemble's Kendall tau between its members over all candidates
    precision: str = "32-true"  # search.precision: what block inference ran in (alsatian_pl.precision)
    threads: dict[str, Any] = field(default_factory=dict)  # search.threads: the CPU threads used (alsatian_pl.threads)
    skipped: list[dict[str, str]] = field(default_factory=list)  # left out (models.on_invalid=skip): name, reason
    task: str = "multiclass"  # the data's task type; the scores are that task's metric (accuracy, average precision, R²)

    @property
    def winner(self) -> str:
        return self.ranking[0].model

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenizerGroup:
    """Models that take the same prepared inputs (``tokenizer``: their tokenizer file; None for the dataset's own
    items, which also serve image models and models without a tokenizer), and their task tree."""

    tokenizer: str | None
    models: list[str]
    tree: TaskTree | None = None
    specs: dict[str, list[BlockSpec]] = field(default_factory=dict)  # each model's blocks, as the planner sees them

    def chain(self, model: str) -> list[str]:
        """A model's block hashes in order (the identity of its features)."""
        return [b.hash for b in self.specs[model]]


@dataclass
class SearchState:
    """What a search carries from round to round: the alive models, their features, the labels so far, the last
    scores, the eliminated models and the reports. Nothing global: a distributed driver runs one per rank."""

    rounds: int
    groups: list[TokenizerGroup]
    features: FeatureStore
    alive: list[str]
    test_labels: torch.Tensor
    labels: list[torch.Tensor] = field(default_factory=list)
    scores: dict[str, ProxyScore] = field(default_factory=dict)
    eliminated: dict[str, tuple[int, ProxyScore]] = field(default_factory=dict)
    reports: list[RoundReport] = field(default_factory=list)
    round: int = 0
    new_items: int = 0
    runs: list[tuple[RoundPlan, int]] = field(default_factory=list)  # this round's plans and observed peaks
    counts_before: Counter[str] = field(default_factory=Counter)  # the search's counters when the round opened
    inputs_key: str = ""  # content hash of the running group's inputs (feature-cache key part)
    assignment: Assignment | None = None  # which models each rank runs (a distributed search)
    feature_dims: dict[str, int] = field(default_factory=dict)  # each model's feature dim, as the scorer sees it
    first_assignment: Assignment | None = None  # the round-1 assignment (``assignment`` changes as ranks rebalance)
    migrations: list[Migration] = field(default_factory=list)  # the rebalancings so far
    scoring: tuple[int, int] = (0, 0)  # the round's scoring phase: planned and observed peak bytes
    manifests: dict[str, ModelManifest] = field(default_factory=dict)  # every candidate's manifest
    first_round: int = 0  # the first round this process runs (after a resume: the round after the last saved)
    saved_to: str | None = None  # where finished rounds are saved (None: they are not)
    saved_rounds: int = 0  # how many finished rounds that file holds
    memory: RoundMemory | None = None  # the memory model of the plan made last (what the planner was given)
    leaders: dict[int, tuple[str, ProxyScore]] = field(default_factory=dict)  # each finished round's top model
    block_seconds_before: dict[str, float] = field(default_factory=dict)  # the blocks' seconds as the group's run began
    skipped: dict[str, str] = field(default_factory=dict)  # candidates left out (models.on_invalid=skip) -> why

    @property
    def trees(self) -> list[TaskTree]:
        return [g.tree for g in self.groups if g.tree is not None]

    def live_groups(self) -> list[TokenizerGroup]:
        """The groups that still have models (every model of a tokenizer may have been pruned)."""
        return [g for g in self.groups if g.tree is not None and g.tree.models]

    def open_round(self, r: int, labels: torch.Tensor, counts: Counter[str]) -> None:
        """Start round ``r``, whose new training items have ``labels`` (plus the test items in round 1); ``counts``:
        the search's counters now."""
        self.round, self.new_items, self.runs, self.counts_before = r, len(labels), [], counts
        self.scoring = (0, 0)
        self.labels.append(labels)
        self.features.open_round(len(labels), len(self.test_labels) if r == 0 else 0)

    @property
    def round_items(self) -> int:
        """Items the current round pushes through every survivor."""
        return self.new_items + (len(self.test_labels) if self.round == 0 else 0)


def assemble_ranking(state: SearchState, higher_is_better: bool, level: float | None = None,
                     limits: tuple[float, float] = (-math.inf, math.inf)) -> list[RankedModel]:
    """The survivors in their final order, then the models eliminated in each round, later rounds first; with a
    confidence ``level``, each score's interval (within the scorer's ``limits``)."""
    def ranked(m: str, p: ProxyScore, r: int | None) -> RankedModel:
        bounds = None if level is None else interval(p, level, limits)
        return RankedModel(m, p.score, p.test_loss, r, None if bounds is None else list(bounds))

    ranking = [ranked(m, state.scores[m], None) for m in state.alive]
    for r in reversed(range(state.rounds)):
        out = {m: s for m, (rr, s) in state.eliminated.items() if rr == r}
        ranking += [ranked(m, out[m], r) for m in rank(out, higher_is_better)]
    return ranking
