"""Per-round metrics through a Lightning logger (CSVLogger, TensorBoardLogger, MLFlowLogger, ...), a
:class:`SearchCallback`: models alive, items, kept, partitions, steps, peaks, scores, timings, cache hits and host
memory at step = the round; the search's hyperparameters and ``finalize("success")`` at its end."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable

from ..errors import AlsatianWarning
from ..io import os_error_message
from ..resources import peak_rss
from .callbacks import SearchCallback

if TYPE_CHECKING:
    from .loop import SuccessiveHalving
    from .state import RoundReport, SearchResult, SearchState

__all__ = ["LogMetrics"]


class LogMetrics(SearchCallback):
    """Log each round's metrics to ``logger`` (rank 0 only). The searcher adds it for its ``logger`` option. A logger
    that cannot write (a full disk, a folder it may not write to) is one warning line and logs no more: the search
    and its results.json go on without it."""

    def __init__(self, logger: Any):
        self.logger = logger
        self.failed = False

    def _call(self, log: Callable[[], Any]) -> None:
        """``log()``, unless the logger failed before; an OS error from it: the warning, and no more logging."""
        if self.failed:
            return
        try:
            log()
        except OSError as exc:
            self.failed = True
            where = getattr(self.logger, "log_dir", None) or getattr(self.logger, "save_dir", None)
            path = exc.filename or (None if where is None else f"{where}/")
            warnings.warn(f"the metrics logger stopped: {os_error_message(exc, path)}; results.json still holds "
                          "every round (~logger turns the metrics off)",
                          AlsatianWarning, stacklevel=2)

    def on_round_end(self, search: SuccessiveHalving, state: SearchState, report: RoundReport) -> None:
        values = sorted(p.score for p in state.scores.values())
        c = search.stats.counts
        metrics = {"round/models": report.models, "round/items": report.items, "round/kept": report.kept,
                   "round/partitions": report.partitions, "round/inference_steps": report.inference_steps,
                   "round/observed_peak_bytes": report.observed_peak_bytes,
                   "score/best": values[-1] if search.scorer.higher_is_better else values[0],
                   "score/median": values[len(values) // 2], "score/min": values[0], "score/max": values[-1],
                   **{f"time/{k}": v for k, v in search.stats.timings.items()},
                   "cache/hits": c["cache_hits"], "cache/weight_loads": c["weight_loads"],
                   "cache/weight_hits": c["weight_hits"], "cache/feature_cache_hits": c["feature_cache_hits"],
                   "memory/peak_host_rss_bytes": peak_rss()}
        self._call(lambda: self.logger.log_metrics(metrics, step=state.round))

    def on_search_end(self, search: SuccessiveHalving, state: SearchState, result: SearchResult) -> None:
        hyperparams = {"strategy": search.strategy.name, "models": len(state.manifests), "scorer": search.scorer.name,
                       "result_size": search.result_size,
                       **({} if search.schedule.is_paper else search.schedule.options())}
        self._call(lambda: self.logger.log_hyperparams(hyperparams))
        self._call(lambda: self.logger.finalize("success"))
