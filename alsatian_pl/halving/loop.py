"""Successive halving (paper §2.2, §4.1, Figure 6): round by round, inputs → plan → execute → score → prune, with a
:class:`SearchCallback` hook after each step.

Round i pushes only its new training chunk D_i (and, in the first round, the test items) through the surviving
models' blocks; the :class:`FeatureStore` keeps every model's features from earlier rounds, so nothing is recomputed.
Text models of different tokenizers form groups, each with its own task tree and prepared inputs, planned and run
one after the other in every round; scoring and pruning span all groups. The strategy decides the rounds, the items
of each round, the tree and the weight keys; the loop below is the same for all strategies. What happens around the
loop (progress, metrics, checkpoints, reports) is a callback.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..blocks import activation_bytes
from ..data import Items, SearchDataModule
from ..distributed import SINGLE, Group
from ..errors import AlsatianWarning, ConfigError, DataError, InvalidCandidateError
from ..features import FeatureStore
from ..precision import DEFAULT_PRECISION, Precision
from ..plan import BlockSpec, RoundMemory, RoundPlan, TaskTree, plan_block_batches
from ..resources import release_free_memory, reset_peak_memory, resolve_device
from ..score import (JACKKNIFE_GROUPS, ProxyScore, ProxyScorer, ScoreProgress, check_task, rank, replicating,
                     reporting, scoring_task)
from ..stats import SearchStats
from ..threads import describe as describe_threads
from ..threads import using as using_threads
from ..store import BlockStore, ModelManifest
from ..zoo import model_tokenizer
from . import rebalance
from .budget import Budget, in_flight_bytes
from .callbacks import CallbackList, SearchCallback
from .candidates import check_finite, leave_out
from .engine import Engine, open_engine
from .metrics import LogMetrics
from .monitor import FiniteFeatures
from .options import block_batches as most_block_batches
from .options import check_options, make_scorer, to_bytes
from .progress import ProgressBar
from .reports import round_report, search_result
from .resume import RoundCheckpoint, interrupted
from .reuse import remember_features, reuse_features
from .schedule import Schedule
from .state import SearchResult, SearchState, TokenizerGroup
from .strategies import Strategy, get_strategy

__all__ = ["SuccessiveHalving", "block_specs"]


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


class SuccessiveHalving:
    """The search driver: one strategy, one store, one data module, one scorer.

    ``cache_budget``: bytes (or a size such as ``"4GB"``; None: unlimited) for everything the memory model counts;
    ``scorer``: a registered name, ``{"name": ..., "kwargs": {...}}`` or a :class:`ProxyScorer`; ``spill_dir``: rounds
    over budget spill cached outputs there instead of splitting the data (paper §5.4's alternative); ``prefetch``:
    read the next step's weights on a thread (``auto``: on accelerators); ``device_capacity``: bytes of cached
    outputs the accelerator holds before the host tier takes the rest (``auto``: from its free memory);
    ``feature_cache``: a folder keeping models' features across searches (at most ``feature_cache_bytes``);
    ``callbacks``: :class:`SearchCallback` instances called around every round; ``progress`` adds a
    :class:`ProgressBar`, ``logger`` (a Lightning logger) a :class:`LogMetrics`, ``checkpoint_dir`` a
    :class:`RoundCheckpoint` (each finished round saved there; ``resume`` continues from the last one saved);
    ``group``: the ranks of a distributed search (each runs the subtrees assigned to it). ``min_class_items`` and
    ``noise_margin``: the opt-in robust successive-halving schedule (:mod:`alsatian_pl.halving.schedule`, which
    states their cost; None: the paper's schedule). ``rebalance_below``: a distributed search whose survivors'
    predicted balance over the ranks falls below this moves subtrees and their features between ranks
    (:mod:`alsatian_pl.halving.rebalance`; None: never). ``confidence``: the level of the scores' intervals and of
    the set of models that could be best (:mod:`alsatian_pl.score._confidence`; None: neither, and no replicates).
    ``precision``: block inference in Lightning's names, ``32-true`` (float32, the default), ``bf16-mixed`` or
    ``16-mixed`` (accelerators only) (:mod:`alsatian_pl.precision`; features reach the scorer as float32).
    ``threads``: torch's CPU threads during the search, ``auto`` (the cores this process may use, shared by the ranks
    on this machine), a number, or None (torch's default) (:mod:`alsatian_pl.threads`; recorded in the result).
    ``on_invalid``: a candidate that cannot be scored (a block failing at forward, outputs of another size, weights
    or features not finite) stops the search with one line (``error``) or is left out with a warning and recorded
    in the result's ``skipped`` (``skip``; :mod:`alsatian_pl.halving.candidates`). ``block_batches``: the most batches
    a step runs block by block (each block over them all, then the next; the same features bit for bit), ``auto``
    (:data:`~alsatian_pl.halving.options.AUTO_BLOCK_BATCHES`) or a number; fewer where the budget leaves no room.
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
                 rebalance_below: float | None = 0.8, callbacks: Sequence[SearchCallback] | None = None,
                 confidence: float | None = 0.9, precision: str = DEFAULT_PRECISION,
                 threads: int | str | None = "auto", on_invalid: str = "error", block_batches: int | str = "auto"):
        check_options(result_size=result_size, batch_size=batch_size, seed=seed, progress=progress,
                      precision=precision, threads=threads,
                      channels_last=channels_last, resume=resume, prefetch=prefetch, spill_dir=spill_dir,
                      feature_cache=feature_cache, checkpoint_dir=checkpoint_dir, confidence=confidence,
                      on_invalid=on_invalid, block_batches=block_batches,
                      sizes={"cache_budget": cache_budget, "feature_cache_bytes": feature_cache_bytes,
                             "device_capacity": device_capacity})
        self.rebalance_below = rebalance.check_threshold(rebalance_below)
        self.store, self.data = store, data
        self._set_strategy(strategy, Schedule(min_class_items, noise_margin))
        self.scorer = make_scorer(scorer, scorer_kwargs, seed)
        self.confidence = None if confidence is None else float(confidence)
        errors = self.scorer.reports_stderr or (confidence is not None and self.scorer.gives_replicates)
        if self.schedule.noise_margin is not None and not errors:
            warnings.warn(f"search.noise_margin={self.schedule.noise_margin:g} keeps nobody extra with scorer "
                          f"{self.scorer.name or type(self.scorer).__name__!r}: its scores carry no standard error "
                          "(linear and knn always do; every built-in scorer does with search.confidence set)",
                          AlsatianWarning, stacklevel=2)
        self.result_size, self.batch_size, self.on_invalid = result_size, batch_size, on_invalid
        self.block_batches = block_batches
        self.cache_budget = to_bytes(cache_budget)
        self.device = resolve_device(device)
        self.precision = Precision.on(precision, self.device)
        self.progress, self.channels_last, self.threads = progress, channels_last, threads
        # On a CPU the reads compete with inference for the same cores (measured on 2 cores: no gain).
        self.prefetch = self.device.type != "cpu" if prefetch in ("auto", None) else bool(prefetch)
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self.device_capacity = device_capacity
        self.feature_cache = None if feature_cache is None else Path(feature_cache)
        self.feature_cache_bytes = to_bytes(feature_cache_bytes)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        if resume and self.checkpoint_dir is None:
            raise ConfigError("search.resume=true needs search.checkpoint_dir (where finished rounds are saved)")
        self.resume = bool(resume)
        self.logger = logger  # a Lightning logger (CSVLogger, TensorBoardLogger, MLFlowLogger, ...) or None
        self.group = group or SINGLE  # the ranks that share this search (distributed.launch)
        self.callbacks = CallbackList(self._default_callbacks(list(callbacks or [])))
        self.engine: Engine | None = None  # the running search's services (None outside run)
        self.stats = SearchStats(self.device)
        self.score_progress = ScoreProgress()  # how far the scorer is while a round is scored (the progress display)

    def _set_strategy(self, strategy: str | Strategy, schedule: Schedule) -> None:
        self.strategy = get_strategy(strategy)
        if not schedule.is_paper:  # the knobs set the schedule; else the strategy keeps its own (the paper's)
            self.strategy = self.strategy.scheduled(schedule)
        self.schedule = self.strategy.schedule

    def _default_callbacks(self, given: list[SearchCallback]) -> list[SearchCallback]:
        """The user's callbacks, plus a progress bar, metrics and round checkpoints where the options ask for them
        and the user gave none of that kind; round checkpoints last, so they save the other callbacks' state."""
        def missing(kind: type) -> bool:
            return not any(isinstance(c, kind) for c in given)
        front = [ProgressBar()] if self.progress and missing(ProgressBar) else []
        if self.logger is not None and missing(LogMetrics):
            front.append(LogMetrics(self.logger))
        if self.precision.name == "16-mixed" and missing(FiniteFeatures):  # float16 can overflow
            front.append(FiniteFeatures())
        checkpoints = [c for c in given if isinstance(c, RoundCheckpoint)]
        if self.checkpoint_dir is not None and not checkpoints:
            checkpoints = [RoundCheckpoint(self.checkpoint_dir, self.resume)]
        return front + [c for c in given if not isinstance(c, RoundCheckpoint)] + checkpoints

    def on_rank(self, group: Group, device: torch.device | None = None) -> SuccessiveHalving:
        """This searcher for one rank of a distributed search (``device``: the rank's own; None: unchanged)."""
        rank = copy.copy(self)
        rank.group, rank.device = group, self.device if device is None else device
        rank.precision = Precision(self.precision.name, rank.device.type)
        rank.stats = SearchStats(rank.device)
        return rank

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self, model_names: Sequence[str]) -> SearchResult:
        """Rank ``model_names`` (all stored in ``self.store``) on the data module's dataset (Figure 6), with the
        scorer set to the data's task (ConfigError first if it cannot score it)."""
        task = self.check_task()
        with scoring_task(self.scorer, task), using_threads(self.threads, self.group.local_size):
            return self._run(model_names)

    def check_task(self) -> str:
        """The data's task (``dataset.task``, or what ``auto`` inferred from the labels; nothing is decoded);
        ConfigError in one line when the scorer cannot score it."""
        task = self.data.task
        check_task(self.scorer, task)
        return task

    def _run(self, model_names: Sequence[str]) -> SearchResult:
        manifests = self._manifests(model_names)
        wall, prepared_before = time.perf_counter(), self.data.prepare_seconds
        self.stats = SearchStats(self.device)
        reset_peak_memory(self.device)
        self.callbacks.for_rank(self.group.is_global_zero)
        state = self._start(manifests)
        with self._engine() as engine:
            self.engine = engine
            try:
                self.callbacks.call("setup", self, state)
                self.callbacks.call("on_search_start", self, state)
                for r in range(state.first_round, state.rounds):
                    self._round(state, engine, r)
            except BaseException as exc:
                self.callbacks.call("on_exception", self, state, exc)
                if isinstance(exc, KeyboardInterrupt):
                    raise interrupted(state) from None
                raise
            finally:
                self.engine = None
        result = search_result(state, engine, strategy=self.strategy.name,
                               higher_is_better=self.scorer.higher_is_better, group=self.group,
                               prepare_data=self.data.prepare_seconds, confidence=self.confidence,
                               limits=self.scorer.score_range,
                               total=time.perf_counter() - wall + prepared_before + self.stats.earlier_seconds,
                               blocks_read=sum(self.store.blocks_read.values()), rebalance_below=self.rebalance_below,
                               precision=self.precision.name, task=self.scorer.task)
        result.threads = describe_threads(self.threads, torch.get_num_threads(), self.group.local_size)
        self.callbacks.call("on_search_end", self, state, result)
        return result

    def _round(self, state: SearchState, engine: Engine, r: int) -> None:
        """One round: every group's inputs planned and run (features the feature cache holds are read instead),
        then the survivors scored and pruned, a hook after each step."""
        state.open_round(r, self.strategy.round_items(self.data, r)[1], engine.stats.snapshot())
        self.callbacks.call("on_round_start", self, state)
        for group in state.live_groups():
            self._run_group(state, engine, group)
        self.callbacks.call("on_round_executed", self, state)
        scores = self._score(state, engine)
        self.callbacks.call("on_round_scored", self, state, scores)
        self._prune(state, engine, scores)
        self.callbacks.call("on_round_end", self, state, state.reports[-1])

    def _run_group(self, state: SearchState, engine: Engine, group: TokenizerGroup) -> None:
        """The group's inputs of this round planned, run and remembered (features the feature cache holds are read
        instead); a candidate that cannot be scored is left out (``on_invalid=skip``) and the rest planned again."""
        while group.tree is not None and group.tree.models:
            inputs = self._inputs(state, group)
            todo = reuse_features(state, engine, self.strategy, group, inputs, self.device)
            try:
                if todo.models:
                    plan = self._plan(state, engine, todo, inputs)
                    self.callbacks.call("on_round_planned", self, state, plan)
                    self._execute(state, engine, plan, inputs)
                check_finite(state, self.store, group.tree.models, self.precision.name)
            except InvalidCandidateError as exc:
                gone = leave_out(state, engine, exc, self.on_invalid)
                todo.prune([m for m in gone if m in todo])
                if exc.block is not None:  # a block failed: the plan stopped part-way, run the others' again
                    continue
            if todo.models:
                remember_features(state, engine, group, todo, inputs)
            return

    def _start(self, manifests: dict[str, ModelManifest]) -> SearchState:
        """Cut the data into the strategy's rounds, group the models by input and build their task trees (in a
        distributed search, this rank's share of them)."""
        rounds = self.strategy.cut_rounds(self.data, len(manifests), self.result_size)
        asked = self.strategy.num_rounds(len(manifests), self.result_size)
        if rounds < asked:
            warnings.warn(f"search.min_class_items={self.schedule.min_class_items}: the doubling chunks use up all "
                          f"{sum(self.data.chunk_sizes)} training items after {rounds} of the {asked} rounds: the "
                          f"search runs only those (chunk sizes {self.data.chunk_sizes}; the last cuts straight to "
                          f"result_size={self.result_size})", AlsatianWarning, stacklevel=3)
        groups = self._groups(manifests)
        with self.stats.phase("planning"):
            for g in groups:
                g.specs = {m: block_specs(manifests[m], self.batch_size) for m in g.models}
                g.tree = self.strategy.make_tree(g.specs)
        features = FeatureStore({n: m.blocks[-1].out_bytes for n, m in manifests.items()}, self.device)
        state = SearchState(rounds, groups, features, list(manifests), self.data.test_items()[1], manifests=manifests)
        state.feature_dims = {n: math.prod(m.blocks[-1].out_shape) for n, m in manifests.items()}
        if self.group.world_size > 1:
            rebalance.partition(state, self.group)
        return state

    def _inputs(self, state: SearchState, group: TokenizerGroup) -> Items:
        """The group's items of this round: its new chunk, joined with the test items in round 1 (a view: the rows
        are read batch by batch as the plan runs)."""
        x_new = self.strategy.round_items(self.data, state.round, group.tokenizer)[0]
        return x_new + self.data.test_items(group.tokenizer)[0] if state.round == 0 else x_new

    @property
    def budget(self) -> Budget:
        """The cache budget's split between the plan, the weight cache and the device tier."""
        return Budget(self.cache_budget, device=self.device, spill=self.spill_dir is not None,
                      device_capacity=self.device_capacity)

    def round_memory(self, state: SearchState, inputs: Items | None = None) -> RoundMemory:
        """The round's :class:`RoundMemory` while ``inputs`` run (or, without them, while it is scored)."""
        held = 0 if inputs is None else in_flight_bytes(inputs, self.batch_size, self.channels_last)
        return self.budget.round_memory(state, held_bytes=self.data.held_bytes, scorer=self.scorer,
                                        num_classes=self.data.num_classes, input_bytes=held)

    def _plan(self, state: SearchState, engine: Engine, tree: TaskTree, inputs: Items) -> RoundPlan:
        """DFS+ over the tree within the budget; the weight cache and the device tier get what the plan leaves."""
        budget = self.budget
        memory = state.memory = self.round_memory(state, inputs)
        with engine.stats.phase("planning"):
            plan = plan_block_batches(tree, num_items=len(inputs), batch_size=self.batch_size,
                                      most=most_block_batches(self.block_batches), budget=budget.plan_budget,
                                      resident_bytes=memory, room=budget.bytes if budget.spill else None)
        if budget.spill:  # spilling cannot make scoring fit
            budget.check_scoring(memory)
        weight_room = budget.weight_room(plan)
        engine.weights.shrink(weight_room)
        engine.cache.device_capacity = budget.device_tier(memory, plan, weight_room)
        return plan

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
        memory = self.round_memory(state)
        self.budget.check_scoring(memory)
        engine.cache.reserve(self.data.held_bytes + state.features.held_bytes())
        engine.cache.reset_peak()
        mine = [m for m in state.alive if m in state.features.models]
        with engine.stats.phase("proxy_scoring"), engine.cache.hold_weights(memory.scoring), \
                replicating(self.scorer, self._replicates(state)), reporting(self.scorer, self.score_progress):
            state.features.close_round()
            scores = self.scorer.score(state.features.train(mine), torch.cat(state.labels), state.features.test(mine),
                                       state.test_labels, self.data.num_classes) if mine else {}
        state.scoring = (memory.scoring_peak, engine.cache.peak)
        engine.cache.reserve(0)
        release_free_memory()
        with engine.stats.phase("communication"):
            parts = self.group.all_gather((scores, state.skipped))  # each rank's scores and left-out models
            gathered = {m: p for part, _ in parts for m, p in part.items()}
            state.skipped = {m: why for _, skipped in parts for m, why in skipped.items()}
        return self.scorer.combine(gathered)

    def _replicates(self, state: SearchState) -> int:
        """Jackknife groups the scorer attaches this round: with a confidence level, in the last round, and in every
        round where they cost no rescoring or the noise margin reads their standard error."""
        wanted = (state.round == state.rounds - 1 or not self.scorer.costly_replicates
                  or self.schedule.noise_margin is not None)
        return JACKKNIFE_GROUPS if self.confidence is not None and wanted else 0

    def _prune(self, state: SearchState, engine: Engine, scores: dict[str, ProxyScore]) -> None:
        """Keep the better part (the strategy's survivors and, with a noise margin, the models within it), report
        the round, and drop the rest's features, tree paths and weights."""
        r, order = state.round, rank(scores, self.scorer.higher_is_better)
        alive = self.strategy.keep(order, scores, r, state.rounds, self.result_size, self.scorer.higher_is_better)
        going_on = set(alive)
        dropped = [m for m in order if m not in going_on]
        state.reports.append(round_report(state, engine, self.group, len(alive), scores))
        state.leaders[r] = (order[0], scores[order[0]])
        for m in dropped:
            state.eliminated[m] = (r, scores[m])
        state.features.drop(dropped)
        with engine.stats.phase("planning"):
            for tree in state.trees:
                tree.prune([m for m in dropped if m in tree])
        state.alive, state.scores = alive, scores
        if self.group.world_size > 1 and r + 1 < state.rounds:
            rebalance.after_pruning(state, self.strategy, self.group, self.rebalance_below, self.device, engine.stats)
        engine.weights.retain(self.strategy.weight_keys(state.trees))

    # --------------------------------------------------------------------------------------------- set-up
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
                if (default is not None) == (len(m.input_size) == 3):  # texts for image models, or the reverse
                    fix = ("a text dataset needs text models (models=minilm_zoo, models=bert_base_zoo or "
                           "models=hf_dirs)" if default is not None else "an image dataset needs image models "
                           "(models=effnet_lite0_zoo, models=resnet18_zoo, models=checkpoints, ...)")
                raise DataError(f"model {bad[0]} expects inputs of size {list(m.input_size)} but the dataset "
                                f"prepares {list(shape)} ({len(bad)} model(s) differ): {fix}, or rebuild the zoo to "
                                "match.")
        return groups

    def _engine(self):
        """The services of one search (:func:`~alsatian_pl.halving.engine.open_engine`) with this searcher's
        options; the feature cache keys on what changes the features' bits."""
        context = {"strategy": self.strategy.name, "batch_size": self.batch_size, "device": self.device.type,
                   "channels_last": self.channels_last, "torch": torch.__version__}
        if self.precision.name != DEFAULT_PRECISION:  # 32-true keeps the key it always had
            context["precision"] = self.precision.name
        return open_engine(self.store, self.stats, device=self.device, batch_size=self.batch_size,
                           channels_last=self.channels_last, prefetch=self.prefetch,
                           weight_key=self.strategy.weight_key, cache_budget=self.cache_budget,
                           spill_dir=self.spill_dir, feature_cache=self.feature_cache,
                           feature_cache_bytes=self.feature_cache_bytes, feature_context=context,
                           precision=self.precision)
