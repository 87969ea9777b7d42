"""Successive halving (paper §2.2, §4.1, Figure 6): round by round, inputs → plan → execute → score → prune.

Round i pushes only its new training chunk D_i (and, in the first round, the test items) through the surviving
models' blocks; the :class:`FeatureStore` keeps every model's features from earlier rounds, so nothing is recomputed.
Text models of different tokenizers form groups, each with its own task tree and prepared inputs, planned and run
one after the other in every round; scoring and pruning span all groups. The strategy decides the rounds, the items
of each round, the tree and the weight keys; the loop below is the same for all strategies.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
import tempfile
import warnings
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .blocks import activation_bytes
from .cache import CacheService, tensor_bytes
from .data import Items, SearchDataModule
from .checks import flag, text, whole
from .errors import AlsatianWarning, ConfigError, DataError, SearchInterrupted
from .io import check_folder
from .execute import Executor
from .features import FeatureStore
from .plan import BlockSpec, InferenceStep, RoundMemory, RoundPlan, TaskTree, plan_round
from .resources import (device_capacity, peak_accelerator_bytes, peak_rss, release_free_memory,
                        reset_peak_memory, resolve_device)
from .score import ProxyScore, ProxyScorer, get_scorer, rank
from .stats import SearchStats
from .store import BlockStore, ModelManifest
from .strategies import Strategy, get_strategy
from .units import parse_bytes
from .distributed import SINGLE, Group
from .plan.partition import Assignment, lpt, subtree_parts
from . import rebalance
from .reuse import FeatureCache, SearchCheckpoint, fingerprint, items_key
from .schedule import Schedule
from .weights import WeightCache
from .zoo import model_tokenizer

__all__ = ["SuccessiveHalving", "SearchResult", "RoundReport", "RankedModel", "SearchState", "TokenizerGroup",
           "assemble_ranking", "block_specs", "resolve_device"]


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


@dataclass
class RankedModel:
    model: str
    score: float
    test_loss: float
    eliminated_in_round: int | None


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
    migrations: list[rebalance.Migration] = field(default_factory=list)  # the rebalancings so far
    scoring: tuple[int, int] = (0, 0)  # the round's scoring phase: planned and observed peak bytes

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


@dataclass
class Engine:
    """The execution side of one search: statistics, cache service, weight cache and executor."""

    stats: SearchStats
    cache: CacheService
    weights: WeightCache
    executor: Executor
    features: FeatureCache | None = None  # the persistent feature cache, when the search has one


def block_specs(manifest: ModelManifest, batch_size: int | None = None) -> list[BlockSpec]:
    """What the planner needs of a model's blocks: hash, output bytes per item, weight bytes, relative cost, and
    with ``batch_size`` the activations of one batch (:func:`~alsatian_pl.blocks.activation_bytes`)."""
    work = [0] * len(manifest.blocks) if batch_size is None else _activations(manifest, batch_size)
    return [BlockSpec(b.hash, b.out_bytes, b.nbytes, float(max(b.params, 1)), w) for b, w in zip(manifest.blocks, work)]


def _activations(manifest: ModelManifest, batch_size: int) -> list[int]:
    """Each block's activations over one batch, from its shapes; where the blocks cannot run on the meta device,
    a stand-in of three batch outputs per block (its output and two intermediates of that size)."""
    try:
        work = list(activation_bytes(manifest.recipe, tuple(manifest.input_size), batch_size))
        if len(work) == len(manifest.blocks):
            return work
    except Exception:  # noqa: BLE001 - an estimate must not stop the search
        pass
    return [3 * batch_size * b.out_bytes for b in manifest.blocks]


def assemble_ranking(state: SearchState, higher_is_better: bool) -> list[RankedModel]:
    """The survivors in their final order, then the models eliminated in each round, later rounds first."""
    ranking = [RankedModel(m, state.scores[m].score, state.scores[m].test_loss, None) for m in state.alive]
    for r in reversed(range(state.rounds)):
        out = {m: s for m, (rr, s) in state.eliminated.items() if rr == r}
        ranking += [RankedModel(m, out[m].score, out[m].test_loss, r) for m in rank(out, higher_is_better)]
    return ranking


class SuccessiveHalving:
    """The search driver: one strategy, one store, one data module, one scorer.

    ``cache_budget``: bytes (or a size such as ``"4GB"``; None: unlimited) for everything the memory model counts;
    ``scorer``: a registered name, ``{"name": ..., "kwargs": {...}}`` or a :class:`ProxyScorer`; ``spill_dir``: rounds
    over budget spill cached outputs there instead of splitting the data (paper §5.4's alternative); ``prefetch``:
    read the next step's weights on a thread (``auto``: on accelerators); ``device_capacity``: bytes of cached
    outputs the accelerator holds before the host tier takes the rest (``auto``: from its free memory);
    ``feature_cache``: a folder keeping models' features across searches (at most ``feature_cache_bytes``);
    ``checkpoint_dir``: each finished round is saved there, and ``resume`` continues from the last one saved;
    ``logger``: a Lightning logger that gets each round's metrics; ``group``: the ranks of a distributed search
    (each runs the subtrees assigned to it). ``min_class_items`` and ``noise_margin``: the opt-in robust
    successive-halving schedule (:mod:`alsatian_pl.schedule`, which states their cost; None: the paper's schedule).
    ``rebalance_below``: a distributed search whose survivors' predicted balance over the ranks falls below this
    moves subtrees and their features between ranks (:mod:`alsatian_pl.rebalance`; None: never).
    """

    def __init__(self, store: BlockStore, data: SearchDataModule, *, strategy: str | Strategy = "alsatian",
                 scorer: str | Mapping[str, Any] | ProxyScorer = "linear", scorer_kwargs: dict[str, Any] | None = None,
                 result_size: int = 1, batch_size: int = 64, device: str | torch.device = "auto",
                 cache_budget: int | str | None = None, seed: int = 0, progress: bool = True,
                 channels_last: bool = True, spill_dir: str | Path | None = None,
                 prefetch: bool | str | None = "auto", device_capacity: int | str | None = "auto",
                 feature_cache: str | Path | None = None, feature_cache_bytes: int | str | None = "8GB",
                 checkpoint_dir: str | Path | None = None, resume: bool = False, logger: Any = None,
                 group: Group | None = None, min_class_items: int | None = None, noise_margin: float | None = None,
                 rebalance_below: float | None = 0.8):
        _check_options(result_size=result_size, batch_size=batch_size, seed=seed, progress=progress,
                       channels_last=channels_last, resume=resume, prefetch=prefetch, spill_dir=spill_dir,
                       feature_cache=feature_cache, checkpoint_dir=checkpoint_dir,
                       sizes={"cache_budget": cache_budget, "feature_cache_bytes": feature_cache_bytes,
                              "device_capacity": device_capacity})
        schedule = Schedule(min_class_items, noise_margin)
        self.rebalance_below = rebalance.check_threshold(rebalance_below)
        self.store, self.data = store, data
        self.strategy = get_strategy(strategy)
        if not schedule.is_paper:  # the knobs set the schedule; else the strategy keeps its own (the paper's)
            self.strategy = self.strategy.scheduled(schedule)
        self.schedule = self.strategy.schedule
        self.scorer = _scorer(scorer, scorer_kwargs, seed)
        if self.schedule.noise_margin is not None and not self.scorer.reports_stderr:
            warnings.warn(f"search.noise_margin={self.schedule.noise_margin:g} keeps nobody extra with scorer "
                          f"{self.scorer.name!r}: its scores carry no standard error (linear and knn do)",
                          AlsatianWarning, stacklevel=2)
        self.result_size, self.batch_size = result_size, batch_size
        self.cache_budget = _bytes(cache_budget)
        self.device = resolve_device(device)
        self.progress, self.channels_last = progress, channels_last
        # On a CPU the reads compete with inference for the same cores (measured on 2 cores: no gain).
        self.prefetch = self.device.type != "cpu" if prefetch in ("auto", None) else bool(prefetch)
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self.device_capacity = device_capacity
        self.feature_cache = None if feature_cache is None else Path(feature_cache)
        self.feature_cache_bytes = _bytes(feature_cache_bytes)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        if resume and self.checkpoint_dir is None:
            raise ConfigError("search.resume=true needs search.checkpoint_dir (where finished rounds are saved)")
        self.resume = bool(resume)
        self.logger = logger  # a Lightning logger (CSVLogger, TensorBoardLogger, MLFlowLogger, ...) or None
        self.group = group or SINGLE  # the ranks that share this search (distributed.launch)

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self, model_names: Sequence[str]) -> SearchResult:
        """Rank ``model_names`` (all stored in ``self.store``) on the data module's dataset (Figure 6)."""
        manifests = self._manifests(model_names)
        wall, prepared_before = time.perf_counter(), self.data.prepare_seconds
        stats = SearchStats(self.device)
        reset_peak_memory(self.device)
        state = self._start(manifests, stats)
        checkpoint = self._checkpoint(manifests)
        first = self._restore(state, stats, checkpoint)  # 0, or the round after the last one saved
        with self._engine(stats) as engine, _progress(self.progress, state.rounds) as advance:
            try:
                for r in range(first, state.rounds):
                    state.open_round(r, self.strategy.round_items(self.data, r)[1], engine.stats.snapshot())
                    advance(f"round {r + 1}/{state.rounds} · {len(state.alive)} models · {state.round_items} items")
                    for group in state.live_groups():
                        inputs = self._inputs(state, group)
                        todo = self._reuse(state, engine, group, inputs)  # the tree of the models not in the cache
                        if todo.models:
                            plan = self._plan(state, engine, todo, inputs)
                            self._execute(state, engine, plan, inputs)
                            self._remember(state, engine, group, todo, inputs)
                    scores = self._score(state, engine)
                    self._prune(state, engine, scores)
                    self._save(state, engine, checkpoint)
            except KeyboardInterrupt:
                raise _interrupted(state, checkpoint) from None
        if checkpoint is not None:
            checkpoint.clear()
        result = self._result(state, engine, time.perf_counter() - wall + prepared_before)
        result.resumed_from_round = first or None
        if self.logger is not None:
            self.logger.log_hyperparams({"strategy": self.strategy.name, "models": len(manifests),
                                         "scorer": self.scorer.name, "result_size": self.result_size,
                                         **({} if self.schedule.is_paper else self.schedule.options())})
            self.logger.finalize("success")
        return result

    def _start(self, manifests: dict[str, ModelManifest], stats: SearchStats) -> SearchState:
        """Cut the data into the strategy's rounds, group the models by input and build their task trees."""
        rounds = self.strategy.cut_rounds(self.data, len(manifests), self.result_size)
        asked = self.strategy.num_rounds(len(manifests), self.result_size)
        if rounds < asked:
            warnings.warn(f"search.min_class_items={self.schedule.min_class_items}: the doubling chunks use up all "
                          f"{sum(self.data.chunk_sizes)} training items after {rounds} of the {asked} rounds: the "
                          f"search runs only those (chunk sizes {self.data.chunk_sizes}; the last cuts straight to "
                          f"result_size={self.result_size})", AlsatianWarning, stacklevel=3)
        groups = self._groups(manifests)
        with stats.phase("planning"):
            for g in groups:
                g.specs = {m: block_specs(manifests[m], self.batch_size) for m in g.models}
                g.tree = self.strategy.make_tree(g.specs)
        features = FeatureStore({n: m.blocks[-1].out_bytes for n, m in manifests.items()})
        state = SearchState(rounds, groups, features, list(manifests), self.data.test_items()[1])
        state.feature_dims = {n: math.prod(m.blocks[-1].out_shape) for n, m in manifests.items()}
        if self.group.world_size > 1:
            self._partition(state)
        return state

    def _partition(self, state: SearchState) -> None:
        """Keep this rank's share: the task trees' subtrees spread over the ranks by LPT on the planner's cost
        (every rank computes the same assignment)."""
        parts = [(p.cost, p.models) for g in state.groups for p in subtree_parts(g.tree, self.group.world_size)]
        assignment = lpt(parts, self.group.world_size)
        mine = assignment.models[self.group.rank]
        for g in state.groups:
            g.tree.prune([m for m in g.tree.models if m not in mine])
        state.features.drop([m for m in state.features.models if m not in mine])
        state.assignment = state.first_assignment = assignment

    def _inputs(self, state: SearchState, group: TokenizerGroup) -> Items:
        """The group's items of this round: its new chunk, joined with the test items in round 1 (a view: the rows
        are read batch by batch as the plan runs)."""
        x_new = self.strategy.round_items(self.data, state.round, group.tokenizer)[0]
        return x_new + self.data.test_items(group.tokenizer)[0] if state.round == 0 else x_new

    def _memory(self, state: SearchState, inputs: Items | None = None) -> RoundMemory:
        """Resident while the group runs: what the data module holds in memory, the batch of inputs in flight (with
        the executor's channels-last copy of an image batch), every survivor's kept features and the buffers
        reserved for every survivor's new features (earlier groups have filled theirs); and the working set of
        scoring the round (:meth:`_scoring_bytes`)."""
        in_flight = 0
        if inputs is not None:
            in_flight = inputs.batch_bytes(self.batch_size)
            if self.channels_last and len(inputs.shape) == 4:
                in_flight += min(self.batch_size, len(inputs)) * inputs.dtype.itemsize * math.prod(inputs.shape[1:])
        return state.features.memory(new_items=state.round_items, data_bytes=self.data.held_bytes,
                                     input_bytes=in_flight, scoring_bytes=self._scoring_bytes(state))

    def _scoring_bytes(self, state: SearchState) -> int:
        """What scoring this round's survivors takes beyond their features: the scorer's working set
        (``ProxyScorer.working_bytes``) and the joined training labels."""
        mine = {m: state.feature_dims[m] for m in state.alive if m in state.features.models}
        if not mine:
            return 0
        train_rows = sum(len(y) for y in state.labels)
        return 8 * train_rows + self.scorer.working_bytes(train_rows, len(state.test_labels), mine,
                                                          self.data.num_classes)

    def _reuse(self, state: SearchState, engine: Engine, group: TokenizerGroup, inputs: Items) -> TaskTree:
        """With a feature cache: the cached features of this round go straight to the feature store, and the tree of
        the group's other models is returned (without one: the group's tree)."""
        assert group.tree is not None
        if engine.features is None:
            return group.tree
        state.inputs_key = inputs.key
        missing = {}
        for m in sorted(group.tree.models):
            feats = engine.features.get(engine.features.key(group.chain(m), state.inputs_key))
            if feats is None:
                missing[m] = group.specs[m]
            else:
                state.features.write(m, 0, feats.to(self.device))
        if len(missing) == len(group.tree.models):
            return group.tree
        with engine.stats.phase("planning"):
            return self.strategy.make_tree(missing)

    def _remember(self, state: SearchState, engine: Engine, group: TokenizerGroup, tree: TaskTree,
                  inputs: Items) -> None:
        """With a feature cache: store the features just computed (``tree``'s models), with their inference time."""
        if engine.features is None:
            return
        per_item = {h: s / engine.stats.block_items[h] for h, s in engine.stats.block_seconds.items()}
        for m in tree.models:
            hashes = group.chain(m)
            engine.features.put(engine.features.key(hashes, state.inputs_key), state.features.current(m),
                                compute_s=sum(per_item.get(h, 0.0) for h in hashes) * len(inputs))

    def _plan(self, state: SearchState, engine: Engine, tree: TaskTree, inputs: Items) -> RoundPlan:
        """DFS+ over the tree within the budget; the weight cache gets what the plan leaves over."""
        memory = self._memory(state, inputs)
        with engine.stats.phase("planning"):
            plan = plan_round(tree, num_items=len(inputs), batch_size=self.batch_size,
                              budget=None if self.spill_dir else self.cache_budget, resident_bytes=memory)
        if self.spill_dir is not None:  # spilling cannot make scoring fit
            memory.check_scoring(self.cache_budget)
        weight_room = RoundMemory.weight_capacity(self.cache_budget, plan.round_peak_bytes)
        engine.weights.shrink(weight_room)
        engine.cache.device_capacity = self._device_capacity(memory, plan, weight_room)
        return plan

    def _device_capacity(self, memory: RoundMemory, plan: RoundPlan, weight_room: int | None) -> int | None:
        if self.device_capacity != "auto":
            return None if self.device_capacity is None else parse_bytes(str(self.device_capacity))
        weights = sum(s.weight_bytes for s in plan.steps if isinstance(s, InferenceStep))
        return device_capacity(self.device, self.cache_budget,
                               reserve=memory.reserved + min(weights, weight_room if weight_room is not None else weights))

    def _execute(self, state: SearchState, engine: Engine, plan: RoundPlan, inputs: Items) -> None:
        """Run the plan; every model's features land in the feature store's buffers."""
        engine.cache.reserve(plan.resident_bytes)
        engine.cache.reset_peak()
        engine.executor.run_round(plan, inputs, state.features.write)
        state.runs.append((plan, engine.cache.peak))
        engine.cache.reserve(0)
        release_free_memory()

    def _score(self, state: SearchState, engine: Engine) -> dict[str, ProxyScore]:
        """Proxy scores of the survivors on all training items so far and the test items (each rank scores its own
        models; the scores of all ranks are gathered)."""
        memory = self._memory(state)
        memory.check_scoring(self.cache_budget)
        engine.cache.reserve(self.data.held_bytes + state.features.held_bytes())
        engine.cache.reset_peak()
        mine = [m for m in state.alive if m in state.features.models]
        with engine.stats.phase("proxy_scoring"), engine.cache.hold_weights(memory.scoring):
            state.features.close_round()
            scores = self.scorer.score(state.features.train(mine), torch.cat(state.labels), state.features.test(mine),
                                       state.test_labels, self.data.num_classes) if mine else {}
        state.scoring = (memory.scoring_peak, engine.cache.peak)
        engine.cache.reserve(0)
        release_free_memory()
        with engine.stats.phase("communication"):
            return {m: p for part in self.group.all_gather(scores) for m, p in part.items()}

    def _prune(self, state: SearchState, engine: Engine, scores: dict[str, ProxyScore]) -> None:
        """Keep the better part (the strategy's survivors and, with a noise margin, the models within it), report
        the round, and drop the rest's features, tree paths and weights."""
        r, order = state.round, rank(scores, self.scorer.higher_is_better)
        alive = self.strategy.keep(order, scores, r, state.rounds, self.result_size, self.scorer.higher_is_better)
        going_on = set(alive)
        dropped = [m for m in order if m not in going_on]
        state.reports.append(self._report(state, engine, len(alive)))
        for m in dropped:
            state.eliminated[m] = (r, scores[m])
        state.features.drop(dropped)
        with engine.stats.phase("planning"):
            for tree in state.trees:
                tree.prune([m for m in dropped if m in tree])
        state.alive, state.scores = alive, scores
        if self.group.world_size > 1 and r + 1 < state.rounds:
            self._rebalance(state, engine)
        engine.weights.retain(self.strategy.weight_keys(state.trees))
        self._log(state, engine, scores)

    def _rebalance(self, state: SearchState, engine: Engine) -> None:
        """When pruning left the ranks' predicted loads uneven (below ``rebalance_below``), move subtrees and their
        kept features to even them (:mod:`alsatian_pl.rebalance`; the same decision on every rank)."""
        with engine.stats.phase("planning"):
            migration = rebalance.plan(state, self.strategy, self.group.world_size, self.rebalance_below)
        if migration is None:
            return
        with engine.stats.phase("communication"):
            rebalance.migrate(state, self.strategy, self.group, migration, self.device)
        state.migrations.append(migration)

    def _log(self, state: SearchState, engine: Engine, scores: dict[str, ProxyScore]) -> None:
        """The round's metrics through the Lightning logger, if the search has one (step = the round)."""
        if self.logger is None:
            return
        values = sorted(p.score for p in scores.values())
        report, c = state.reports[-1], engine.stats.counts
        metrics = {"round/models": report.models, "round/items": report.items, "round/kept": report.kept,
                   "round/partitions": report.partitions, "round/inference_steps": report.inference_steps,
                   "round/observed_peak_bytes": report.observed_peak_bytes,
                   "score/best": values[-1] if self.scorer.higher_is_better else values[0],
                   "score/median": values[len(values) // 2], "score/min": values[0], "score/max": values[-1],
                   **{f"time/{k}": v for k, v in engine.stats.timings.items()},
                   "cache/hits": c["cache_hits"], "cache/weight_loads": c["weight_loads"],
                   "cache/weight_hits": c["weight_hits"], "cache/feature_cache_hits": c["feature_cache_hits"],
                   "memory/peak_host_rss_bytes": peak_rss()}
        self.logger.log_metrics(metrics, step=state.round)

    def _report(self, state: SearchState, engine: Engine, keep: int) -> RoundReport:
        """The current round's report, before pruning (counters since the round opened)."""
        plans, peaks = [p for p, _ in state.runs], [o for _, o in state.runs]
        since = engine.stats.since
        mine = (max((p.partitions for p in plans), default=0), since(state.counts_before, "inference_steps"),
                since(state.counts_before, "block_runs"), frozenset().union(*(t.distinct_blocks() for t in state.trees)),
                max([state.scoring[0], *(p.round_peak_bytes for p in plans)]), max([state.scoring[1], *peaks]),
                len(plans), state.scoring[0])
        with engine.stats.phase("communication"):
            ranks = self.group.all_gather(mine)  # every rank's part of the round; peaks and partitions are per rank
        return RoundReport(state.round, len(state.alive), state.round_items, max(r[0] for r in ranks),
                           sum(r[1] for r in ranks), sum(r[2] for r in ranks), len(frozenset().union(*(r[3] for r in ranks))),
                           max(r[4] for r in ranks), max(r[5] for r in ranks), keep, max(r[6] for r in ranks),
                           max(r[7] for r in ranks))

    # ------------------------------------------------------------------------------------------------- resume
    def _checkpoint(self, manifests: dict[str, ModelManifest]) -> SearchCheckpoint | None:
        """Where this search's finished rounds are saved, named by what defines its result."""
        if self.checkpoint_dir is None:
            return None
        x, y = self.data.train_items()
        parts = [self.strategy.name, [(n, m.hashes) for n, m in manifests.items()],
                 type(self.scorer).__name__, vars(self.scorer), self.result_size, self.batch_size,
                 self.device.type, self.channels_last, x.key, items_key(y), self.data.test_items()[0].key]
        # the paper's schedule keeps the key it always had; the robust knobs are part of the key when set
        schedule = [] if self.schedule.is_paper else [self.schedule.options()]
        key = fingerprint([*parts, self.data.chunk_sizes, *schedule])
        return SearchCheckpoint(self.checkpoint_dir / f"search-{key}.safetensors", key, family=fingerprint(parts))

    def _save(self, state: SearchState, engine: Engine, checkpoint: SearchCheckpoint | None) -> None:
        """Write the state after the round just finished (atomically; the previous round's file is replaced)."""
        if checkpoint is None:
            return
        s = engine.stats
        meta = {"round": state.round, "alive": state.alive, "kept_items": state.features.kept_items,
                "scores": {m: [p.score, p.test_loss] for m, p in state.scores.items()},
                "eliminated": {m: [r, p.score, p.test_loss] for m, (r, p) in state.eliminated.items()},
                "reports": [asdict(r) for r in state.reports], "timings": s.timings, "counts": dict(s.counts),
                "block_seconds": s.block_seconds, "block_items": s.block_items, "schedule": self.schedule.options()}
        labels = {f"labels/{i}": y for i, y in enumerate(state.labels)}
        with s.phase("checkpoint"):
            checkpoint.save(meta, {**state.features.state(), **labels, "labels/test": state.test_labels})

    def _restore(self, state: SearchState, stats: SearchStats, checkpoint: SearchCheckpoint | None) -> int:
        """With ``resume``: the saved state back into ``state`` and ``stats``; the first round still to run."""
        saved = checkpoint.load() if checkpoint is not None and self.resume else None
        if saved is None:
            if self.resume:
                warnings.warn("search.resume=true but no saved round matches this search: starting from round 1"
                              + _other_schedules(checkpoint))
            return 0
        meta, tensors = saved
        state.alive, state.reports = list(meta["alive"]), [RoundReport(**r) for r in meta["reports"]]
        state.scores = {m: ProxyScore(*v) for m, v in meta["scores"].items()}
        state.eliminated = {m: (r, ProxyScore(a, b)) for m, (r, a, b) in meta["eliminated"].items()}
        state.labels = [tensors[f"labels/{i}"] for i in range(meta["round"] + 1)]
        distributed = self.group.world_size > 1  # each rank saved its own models' features
        mine = [m for m in state.alive if not distributed or f"{m}/test" in tensors]
        state.features.restore(tensors, mine, meta["kept_items"], self.device)
        if distributed:  # its models may have changed since round 1 (rebalancing)
            rebalance.restored(state, self.strategy, self.group, mine)
        for tree in state.trees:
            tree.prune([m for m in tree.models if m not in state.alive])
        stats.timings.update(meta["timings"])
        stats.counts.update(meta["counts"])
        stats.block_seconds.update(meta["block_seconds"])
        stats.block_items.update(meta["block_items"])
        return meta["round"] + 1

    # --------------------------------------------------------------------------------------------- set-up, result
    def _manifests(self, model_names: Sequence[str]) -> dict[str, ModelManifest]:
        if not model_names:
            raise ConfigError("the search has no candidate models: the model query matched nothing")
        if len(set(model_names)) != len(model_names):
            raise ConfigError("the candidate model list names a model twice")
        if self.result_size > len(model_names):
            warnings.warn(f"search.result_size={self.result_size} is more than the {len(model_names)} models "
                          f"searched: all {len(model_names)} are returned, ranked", AlsatianWarning)
        return {n: self.store.manifest(n) for n in model_names}

    def _groups(self, manifests: dict[str, ModelManifest]) -> list[TokenizerGroup]:
        """The models grouped by the inputs they take (one group per tokenizer, the dataset's own items first);
        DataError if a model's stored tokenizer is missing or a model does not accept its group's item shape."""
        default = self.data.tokenizer_key
        by_tokenizer: dict[str | None, list[str]] = {None: []}
        for name, man in manifests.items():
            by_tokenizer.setdefault(model_tokenizer(self.store, man, default), []).append(name)
        groups = [TokenizerGroup(tok, names) for tok, names in by_tokenizer.items() if names]
        for group in groups:
            shape = tuple(self.data.test_items(group.tokenizer)[0].shape[1:])
            bad = [n for n in group.models if tuple(manifests[n].input_size) != shape]
            if bad:
                m = manifests[bad[0]]
                fix = (f"set dataset.max_length to {m.input_size[-1]}" if default is not None else
                       f"set dataset.image_size to {m.input_size[-1]}")
                raise DataError(f"model {bad[0]} expects inputs of size {list(m.input_size)} but the dataset "
                                f"prepares {list(shape)} ({len(bad)} model(s) differ): {fix}, or rebuild the zoo to "
                                "match.")
        return groups

    @contextmanager
    def _engine(self, stats: SearchStats) -> Iterator[Engine]:
        """Cache service, weight cache and executor for one search (and a spill folder, removed afterwards)."""
        spill = None if self.spill_dir is None else Path(tempfile.mkdtemp(prefix="spill-", dir=_mkdir(self.spill_dir)))
        cache = CacheService(device=self.device, capacity=self.cache_budget if spill else None, spill_dir=spill,
                             stats=stats)
        weights = WeightCache(self.store, self.device, channels_last=self.channels_last, stats=stats)
        executor = Executor(device=self.device, batch_size=self.batch_size, stats=stats, cache=cache,
                            weights=weights, weight_key=self.strategy.weight_key, prefetch=self.prefetch)
        features = None if self.feature_cache is None else FeatureCache(
            self.feature_cache, self.feature_cache_bytes, stats,
            {"strategy": self.strategy.name, "batch_size": self.batch_size, "device": self.device.type,
             "channels_last": self.channels_last, "torch": torch.__version__})
        try:
            yield Engine(stats, cache, weights, executor, features)
        finally:
            weights.close()
            if spill is not None:
                shutil.rmtree(spill, ignore_errors=True)

    def _result(self, state: SearchState, engine: Engine, total: float) -> SearchResult:
        stats = engine.stats.compute(prepare_data=self.data.prepare_seconds, total=total,
                                     blocks_read=sum(self.store.blocks_read.values()))
        memory = {"peak_host_rss_bytes": peak_rss(), "peak_accelerator_bytes": peak_accelerator_bytes(self.device),
                  "peak_cache_bytes": max(rep.observed_peak_bytes for rep in state.reports),
                  "weight_cache_bytes": engine.weights.bytes}
        result = SearchResult(self.strategy.name, assemble_ranking(state, self.scorer.higher_is_better), state.reports,
                              memory=memory, **stats)
        if self.group.world_size > 1:
            mine = {**stats, "memory": memory, "bytes_sent": self.group.bytes_sent,
                    "collectives": self.group.collectives, "migration_s": [m.seconds for m in state.migrations]}
            result.distributed = _ranks_summary(state, self.group.all_gather(mine))
            result.distributed["rebalance_below"] = self.rebalance_below
        return result


def _scorer(scorer: str | Mapping[str, Any] | ProxyScorer, kwargs: dict[str, Any] | None, seed: int) -> ProxyScorer:
    """A scorer from a name (with ``kwargs``), a ``{"name", "kwargs"}`` mapping, or as given."""
    if isinstance(scorer, ProxyScorer):
        return scorer
    if isinstance(scorer, Mapping):
        name, options = scorer.get("name", "linear"), dict(scorer.get("kwargs") or {})
        return get_scorer(str(name), seed=seed, **{**options, **(kwargs or {})})
    return get_scorer(scorer, seed=seed, **(kwargs or {}))


def _ranks_summary(state: SearchState, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-rank statistics of a distributed search and its load balance (mean over max busy seconds)."""
    busy = [sum(r["timings_s"][p] for p in ("prepare_model", "inference", "proxy_scoring")) for r in ranks]
    first, last = state.first_assignment, state.assignment
    assert first is not None and last is not None
    moves = rebalance.summary(state.migrations, [r["migration_s"] for r in ranks])
    return {"world_size": len(ranks), "load_balance": sum(busy) / len(busy) / max(max(busy), 1e-12),
            "predicted_balance": first.balance, "rebalancing": moves,
            "ranks": [{"rank": i, "busy_s": b, "models": sorted(first.models[i]),
                       "final_models": sorted(last.models[i]), "predicted_cost_per_item": first.loads[i],
                       "timings_s": r["timings_s"], "cache": r["cache"], "memory": r["memory"],
                       "bytes_sent": r["bytes_sent"], "collectives": r["collectives"], **_moved(moves, i)}
                      for i, (b, r) in enumerate(zip(busy, ranks))]}


def _moved(moves: list[dict[str, Any]], rank: int) -> dict[str, Any]:
    """One rank's totals over the rebalancings: models moved in and out, bytes moved, seconds migrating."""
    mine = [next(r for r in m["ranks"] if r["rank"] == rank) for m in moves]
    return {"models_in": sum(len(r["models_in"]) for r in mine), "models_out": sum(len(r["models_out"]) for r in mine),
            "bytes_moved_in": sum(r["bytes_in"] for r in mine), "bytes_moved_out": sum(r["bytes_out"] for r in mine),
            "migration_s": sum(r["seconds"] for r in mine)}


def _other_schedules(checkpoint: SearchCheckpoint | None) -> str:
    """Where the rounds of this search saved under another schedule are, and how to continue them (or nothing)."""
    others = [] if checkpoint is None else checkpoint.siblings()
    if not others:
        return ""
    path, state = others[0]
    saved = Schedule(**state.get("schedule", {})).options()
    knobs = ", ".join(f"search.{k}={'null' if v is None else v}" for k, v in saved.items())
    return f" ({path} holds rounds of this search run with {knobs}: resume with those values to continue it)"


def _interrupted(state: SearchState, checkpoint: SearchCheckpoint | None) -> SearchInterrupted:
    """The one-line message of a Ctrl-C: what was saved and how to go on."""
    where = f"interrupted in round {state.round + 1} of {state.rounds}"
    if checkpoint is None:
        return SearchInterrupted(f"{where}; nothing was saved (set search.checkpoint_dir to make searches resumable)")
    if not state.reports:
        return SearchInterrupted(f"{where}; no round had finished, so nothing was saved: run the command again")
    return SearchInterrupted(f"{where}; rounds 1-{len(state.reports)} are saved in {checkpoint.path}: run the same "
                             "command with search.resume=true to continue from there")


def _check_options(*, prefetch: Any, result_size: Any, batch_size: Any, seed: Any, progress: Any,
                   channels_last: Any, resume: Any, sizes: dict[str, Any], **folders: Any) -> None:
    """ConfigError (DiskError for a folder that is a file) naming the first ``search.*`` value that is wrong."""
    for key, value in sizes.items():
        try:
            parse_bytes(None if value == "auto" else value)
        except ConfigError as exc:
            raise ConfigError(f"search.{key}: {exc}") from None
    whole("search.result_size", result_size)
    whole("search.batch_size", batch_size)
    whole("search.seed", seed, at_least=0)
    for key, value in (("progress", progress), ("channels_last", channels_last), ("resume", resume)):
        flag(f"search.{key}", value)
    if prefetch not in ("auto", None, True, False):
        raise ConfigError(f"search.prefetch must be auto, true or false, got {prefetch!r}")
    for key, folder in folders.items():
        if folder is not None:
            check_folder(text(f"search.{key}", folder), f"search.{key}")


def _bytes(value: int | str | None) -> int | None:
    """A byte count from an int, a size such as ``"4GB"``, or None."""
    return value if value is None or isinstance(value, int) else parse_bytes(str(value))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _progress(enabled: bool, rounds: int) -> Iterator[Any]:
    """A progress bar over the rounds; yields ``advance(description)``, called as each round starts."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} rounds"),
                   TimeElapsedColumn(), disable=not enabled, transient=False)
    with bar:
        task = bar.add_task("search", total=rounds)
        started = [False]

        def advance(description: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, description=description)

        yield advance
        if started[0]:
            bar.advance(task)
