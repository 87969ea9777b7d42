"""Successive halving (paper §2.2, §4.1): round by round, plan → execute → score → prune.

Round i pushes only its new training chunk D_i (and, in the first round, the test items) through the surviving
models' blocks; every model's features from earlier rounds are kept, so nothing is recomputed across rounds. Text
models of different tokenizers form groups, each with its own task tree and prepared inputs, planned and run one
after the other in every round; scoring and pruning span all groups.
"""

from __future__ import annotations

import math
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .data import SearchDataModule
from .errors import ConfigError, DataError
from .execute import CacheService, Executor, Timings, WeightCache, tensor_bytes
from .plan import BlockSpec, plan_round
from .score import ProxyScore, get_scorer, rank
from .store import BlockStore, ModelManifest
from .strategies import Strategy, get_strategy
from .zoo import model_tokenizer


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

    @property
    def winner(self) -> str:
        return self.ranking[0].model

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenizerGroup:
    """Models that take the same prepared inputs: text models of one tokenizer (``tokenizer``: its file, None for
    the dataset's own items, which also serve image models and models without a tokenizer)."""

    tokenizer: str | None
    models: list[str]


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; through Lightning Fabric's accelerator selection."""
    from lightning.fabric import Fabric

    accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "cuda", "gpu": "cuda"}.get(str(device))
    if accelerator is None:
        raise ConfigError(f"search.device must be auto, cpu or cuda, got {device!r}")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError("search.device=cuda but no CUDA device is available; use search.device=auto or cpu")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    return Fabric(accelerator=accelerator, devices=1).device


class SuccessiveHalving:
    """The search driver: one strategy, one store, one data module, one scorer."""

    def __init__(self, store: BlockStore, data: SearchDataModule, *, strategy: str | Strategy = "alsatian",
                 scorer: str = "linear", scorer_kwargs: dict[str, Any] | None = None, result_size: int = 1,
                 batch_size: int = 64, device: str | torch.device = "auto", cache_budget: int | None = None,
                 seed: int = 0, progress: bool = True, channels_last: bool = True,
                 spill_dir: str | Path | None = None, prefetch: bool | str | None = "auto"):
        if result_size < 1:
            raise ConfigError(f"search.result_size must be at least 1, got {result_size}")
        if batch_size < 1:
            raise ConfigError(f"search.batch_size must be at least 1, got {batch_size}")
        self.store, self.data = store, data
        self.strategy = strategy if isinstance(strategy, Strategy) else get_strategy(strategy)
        self.scorer = get_scorer(scorer, seed=seed, **(scorer_kwargs or {}))
        self.result_size, self.batch_size, self.cache_budget = result_size, batch_size, cache_budget
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.progress, self.channels_last = progress, channels_last
        # Reading the next step's weights on a background thread overlaps an accelerator's inference; on a CPU the
        # reads compete with inference for the same cores (measured on 2 cores: no gain), so auto = accelerators only.
        if prefetch not in ("auto", None, True, False):
            raise ConfigError(f"search.prefetch must be auto, true or false, got {prefetch!r}")
        self.prefetch = self.device.type != "cpu" if prefetch in ("auto", None) else bool(prefetch)
        # With a spill folder, a round that does not fit the budget spills cached outputs to disk instead of being
        # split into partitions (paper §5.4's alternative; same results, more I/O).
        self.spill_dir = None if spill_dir is None else Path(spill_dir)

    # ------------------------------------------------------------------------------------------------------------
    def run(self, model_names: Sequence[str]) -> SearchResult:
        """Rank ``model_names`` (all stored in ``self.store``) on the data module's dataset."""
        if not model_names:
            raise ConfigError("the search has no candidate models: the model query matched nothing")
        if len(set(model_names)) != len(model_names):
            raise ConfigError("the candidate model list names a model twice")
        timings = Timings(self.device)
        reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        wall = time.perf_counter()
        manifests = {n: self.store.manifest(n) for n in model_names}
        rounds = self.strategy.num_rounds(len(manifests), self.result_size)
        prepared_before = self.data.prepare_seconds  # preparation done before this call still belongs to the search
        self.data.setup(num_rounds=rounds)
        groups = self._groups(manifests)
        with timings.phase("planning"):
            trees = []
            for group in groups:
                trees.append(self.strategy.make_tree())
                for name in group.models:
                    trees[-1].add_model(name, block_specs(manifests[name]))
        spill = None if self.spill_dir is None else Path(tempfile.mkdtemp(prefix="spill-", dir=_mkdir(self.spill_dir)))
        cache = CacheService(device=self.device, capacity=self.cache_budget if spill else None, spill_dir=spill)
        weights = WeightCache(self.store, self.device, channels_last=self.channels_last)
        executor = Executor(self.store, device=self.device, batch_size=self.batch_size, timings=timings,
                            cache=cache, weights=weights, share_weights=self.strategy.shared,
                            prefetch=self.prefetch)
        feature_bytes = {n: m.blocks[-1].out_bytes for n, m in manifests.items()}
        train: dict[str, list[torch.Tensor]] = {n: [] for n in manifests}
        test: dict[str, torch.Tensor] = {}
        labels: list[torch.Tensor] = []
        _, y_test = self.data.test_items()
        alive = list(manifests)
        eliminated: dict[str, tuple[int, ProxyScore]] = {}
        reports: list[RoundReport] = []
        last: dict[str, ProxyScore] = {}
        try:
            with _progress(self.progress) as bar:
                task = bar.add_task("search", total=rounds)
                for r in range(rounds):
                    y_new = self.data.chunk(r)[1] if self.strategy.halving else self.data.train_items()[1]
                    n_new = len(y_new)
                    n_items = n_new + (len(y_test) if r == 0 else 0)
                    # Resident while any group runs: every survivor's kept features, every survivor's reserved
                    # buffers for this round (groups run earlier have filled theirs) and the prepared data.
                    kept = (sum(tensor_bytes(t) for m in alive for t in train[m])
                            + sum(tensor_bytes(test[m]) for m in test))
                    reserved = sum(feature_bytes[m] for m in alive) * n_items
                    buffers: dict[str, torch.Tensor] = {}

                    def sink(model: str, start: int, feats: torch.Tensor) -> None:
                        if model not in buffers:
                            buffers[model] = torch.empty((n_items, *feats.shape[1:]), dtype=feats.dtype,
                                                         device=feats.device)
                        buffers[model][start:start + len(feats)] = feats

                    bar.update(task, description=f"round {r + 1}/{rounds} · {len(alive)} models · {n_items} items")
                    steps_before, runs_before = executor.inference_steps, executor.block_runs
                    partitions = planned = observed = ran = 0
                    for group, tree in zip(groups, trees):
                        if not tree.models:  # every model of this tokenizer was pruned
                            continue
                        x_new = (self.data.chunk(r, group.tokenizer)[0] if self.strategy.halving
                                 else self.data.train_items(tokenizer=group.tokenizer)[0])
                        inputs = torch.cat([x_new, self.data.test_items(group.tokenizer)[0]]) if r == 0 else x_new
                        # The prepared data set is held throughout; round 1's inputs are a copy (chunk + test items),
                        # later rounds' a view of it.
                        held = self.data.held_bytes + (tensor_bytes(inputs) if r == 0 else 0)
                        with timings.phase("planning"):
                            plan = plan_round(tree, num_items=n_items, batch_size=self.batch_size,
                                              budget=None if spill else self.cache_budget,
                                              resident_bytes=held + kept + reserved)
                        weights.shrink(None if self.cache_budget is None
                                       else max(0, self.cache_budget - plan.peak_bytes))
                        cache.reserve(plan.resident_bytes)
                        cache.reset_peak()
                        executor.run_round(plan, tree, inputs, sink)
                        partitions, ran = max(partitions, plan.partitions), ran + 1
                        planned, observed = max(planned, plan.peak_bytes), max(observed, cache.peak)
                        cache.reserve(0)
                        del inputs, x_new  # the next group's inputs replace these
                    for m in alive:
                        train[m].append(buffers[m][:n_new])
                        if r == 0:
                            test[m] = buffers[m][n_new:]
                    labels.append(y_new)
                    with timings.phase("proxy_scoring"):
                        y_train = torch.cat(labels)
                        last = self.scorer.score({m: torch.cat(train[m]) for m in alive}, y_train,
                                                 {m: test[m] for m in alive}, y_test, self.data.num_classes)
                    order = rank(last, self.scorer.higher_is_better)
                    keep = self.result_size if r == rounds - 1 else max(self.result_size, math.ceil(len(alive) / 2))
                    dropped = order[keep:]
                    for m in dropped:
                        eliminated[m] = (r, last[m])
                        del train[m], test[m]
                    reports.append(RoundReport(r, len(alive), n_items, partitions,
                                               executor.inference_steps - steps_before, executor.block_runs - runs_before,
                                               len(frozenset().union(*(t.distinct_blocks() for t in trees))), planned,
                                               observed, keep, ran))
                    with timings.phase("planning"):
                        for tree in trees:
                            tree.prune([m for m in dropped if m in tree])
                    alive = order[:keep]
                    weights.retain(frozenset().union(*(t.distinct_blocks() for t in trees)), alive)
                    bar.advance(task)
        finally:
            weights.close()
            if spill is not None:
                shutil.rmtree(spill, ignore_errors=True)
        ranking = [RankedModel(m, last[m].score, last[m].test_loss, None) for m in alive]
        for r in reversed(range(rounds)):
            out = {m: s for m, (rr, s) in eliminated.items() if rr == r}
            ranking += [RankedModel(m, out[m].score, out[m].test_loss, r)
                        for m in rank(out, self.scorer.higher_is_better)]
        timings["prepare_data"] = self.data.prepare_seconds
        timings["total"] = time.perf_counter() - wall + prepared_before
        memory = {"peak_host_rss_bytes": peak_rss(),
                  "peak_accelerator_bytes": torch.cuda.max_memory_allocated() if self.device.type == "cuda" else 0,
                  "peak_cache_bytes": max(rep.observed_peak_bytes for rep in reports),
                  "weight_cache_bytes": weights.bytes}
        stats = {"hits": cache.hits, "moved_to_host_bytes": cache.moved_to_host_bytes,
                 "spilled_bytes": cache.spilled_bytes,
                 "weight_loads": weights.loads, "weight_hits": weights.hits, "weight_prefetches": weights.prefetched,
                 "blocks_read": sum(self.store.blocks_read.values())}
        return SearchResult(self.strategy.name, ranking, reports, dict(timings), memory, stats,
                            dict(executor.block_seconds), dict(executor.block_items))

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


def block_specs(manifest: ModelManifest) -> list[BlockSpec]:
    """What the planner needs of a model's blocks: hash, output bytes per item, weight bytes, relative cost."""
    return [BlockSpec(b.hash, b.out_bytes, b.nbytes, float(max(b.params, 1))) for b in manifest.blocks]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def reset_peak_rss() -> None:
    """Restart the process's peak-RSS counter (Linux: VmHWM via /proc/self/clear_refs), so each search has its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss() -> int:
    """Peak resident memory in bytes since :func:`reset_peak_rss` (else since the process started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} rounds"),
                    TimeElapsedColumn(), disable=not enabled, transient=False)
