"""What a search reports: each round's :class:`RoundReport` (gathered over the ranks) and the final
:class:`SearchResult` (ranking, timings, memory, cache counters, and a distributed search's per-rank summary)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..distributed import Group
from ..resources import peak_accelerator_bytes, peak_rss
from ..score import ProxyScore
from . import rebalance
from .confidence import agreement, confident_set, pruned_contenders
from .state import RoundReport, SearchResult, SearchState, assemble_ranking

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["round_report", "search_result"]


def round_report(state: SearchState, engine: Engine, group: Group, keep: int,
                 scores: Mapping[str, ProxyScore]) -> RoundReport:
    """The current round's report, before pruning (counters since the round opened; every rank's part gathered:
    peaks and partitions are per rank, steps and runs add up, distinct blocks unite; an ensemble's agreement over
    the round's gathered ``scores``)."""
    plans, peaks = [p for p, _ in state.runs], [o for _, o in state.runs]
    since = engine.stats.since
    mine = (max((p.partitions for p in plans), default=0), since(state.counts_before, "inference_steps"),
            since(state.counts_before, "block_runs"), frozenset().union(*(t.distinct_blocks() for t in state.trees)),
            max([state.scoring[0], *(p.round_peak_bytes for p in plans)]), max([state.scoring[1], *peaks]),
            len(plans), state.scoring[0])
    with engine.stats.phase("communication"):
        ranks = group.all_gather(mine)
    return RoundReport(state.round, len(state.alive), state.round_items, max(r[0] for r in ranks),
                       sum(r[1] for r in ranks), sum(r[2] for r in ranks), len(frozenset().union(*(r[3] for r in ranks))),
                       max(r[4] for r in ranks), max(r[5] for r in ranks), keep, max(r[6] for r in ranks),
                       max(r[7] for r in ranks), agreement(scores))


def search_result(state: SearchState, engine: Engine, *, strategy: str, higher_is_better: bool, group: Group,
                  prepare_data: float, total: float, blocks_read: int, rebalance_below: float | None,
                  confidence: float | None = None,
                  limits: tuple[float, float] = (-math.inf, math.inf),
                  precision: str = "32-true", task: str = "multiclass") -> SearchResult:
    """The finished search: its ranking (with intervals and the confident set at the ``confidence`` level),
    statistics and memory (and, distributed, every rank's summary)."""
    stats = engine.stats.compute(prepare_data=prepare_data, total=total, blocks_read=blocks_read)
    device = engine.executor.device
    memory = {"peak_host_rss_bytes": peak_rss(), "peak_accelerator_bytes": peak_accelerator_bytes(device),
              "peak_cache_bytes": max(rep.observed_peak_bytes for rep in state.reports),
              "weight_cache_bytes": engine.weights.bytes}
    result = SearchResult(strategy, assemble_ranking(state, higher_is_better, confidence, limits), state.reports,
                          memory=memory, **stats)
    result.resumed_from_round = state.first_round or None
    result.confidence = confidence
    result.confident_set = confident_set(state, confidence, higher_is_better)
    result.pruned_contenders = pruned_contenders(state, confidence, higher_is_better)
    result.agreement = state.reports[0].agreement if state.reports else None
    result.precision = precision
    result.skipped = [{"name": m, "reason": why} for m, why in state.skipped.items()]
    result.task = task
    if group.world_size > 1:
        mine = {**stats, "memory": memory, "bytes_sent": group.bytes_sent, "collectives": group.collectives,
                "migration_s": [m.seconds for m in state.migrations]}
        result.distributed = _ranks_summary(state, group.all_gather(mine))
        result.distributed["rebalance_below"] = rebalance_below
    return result


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
