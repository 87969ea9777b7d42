""":class:`SearchCallback` monitors: for people and benchmarks :class:`RoundLog` (one plain line per round, for
logs and pipes) and :class:`MemoryMonitor` (host memory by phase of each round, against what the memory model
counts), which ``python search.py callbacks=rounds`` or ``callbacks=[rounds,memory]`` turns on; and
:class:`FiniteFeatures`, which the searcher adds in ``search.precision=16-mixed`` (float16 can overflow)."""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Mapping, TextIO

import torch

from ..errors import DataError
from ..resources import rss_now
from .callbacks import SearchCallback

if TYPE_CHECKING:
    from ..plan import RoundPlan
    from ..score import ProxyScore
    from .loop import SuccessiveHalving
    from .state import RoundReport, SearchResult, SearchState

__all__ = ["RoundLog", "MemoryMonitor", "FiniteFeatures"]


class FiniteFeatures(SearchCallback):
    """After each round's inference, a DataError naming the first model whose new features are not finite (in
    16-mixed, a block whose activations exceed float16's largest value, 65504, gives infinities that would score as
    numbers). One reduction per model and round; every rank checks its own models."""

    rank_zero_only = False

    def on_round_executed(self, search: SuccessiveHalving, state: SearchState) -> None:
        for m in state.features.models:
            if not bool(torch.isfinite(state.features.current(m)).all()):
                raise DataError(f"search.precision={search.precision.name}: the features of model {m} are not finite "
                                f"in round {state.round + 1} (float16 overflowed); use search.precision=bf16-mixed "
                                "or 32-true")


class RoundLog(SearchCallback):
    """After each round, one line on ``stream`` (standard error by default): the round, models and items, the
    survivors, the best score so far and the round's seconds; ``lines`` keeps them (and survives a resume)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.lines: list[str] = []
        self._started = 0.0

    def on_round_start(self, search: SuccessiveHalving, state: SearchState) -> None:
        self._started = time.perf_counter()

    def on_round_end(self, search: SuccessiveHalving, state: SearchState, report: RoundReport) -> None:
        best = state.alive[0] if state.alive else None
        score = "" if best is None else f", best {state.scores[best].score:.4f} ({best})"
        line = (f"round {state.round + 1}/{state.rounds}: {report.models} models x {report.items} items, "
                f"{len(state.alive)} kept{score}, {time.perf_counter() - self._started:.2f} s")
        self.lines.append(line)
        print(line, file=self.stream or sys.stderr, flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"lines": list(self.lines)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lines = list(state_dict.get("lines", []))


class MemoryMonitor(SearchCallback):
    """Samples the process's resident memory every ``period_s`` seconds on a thread while the search runs, tagging
    each sample with the phase (``r<round>:plan``, ``:execute``, ``:score``, ``:prune``, ``:between``) and the bytes
    the cache service counts then. :attr:`phases`: per phase the peak RSS, the peak counted bytes and the largest
    gap between the two (RSS less counted), in bytes."""

    def __init__(self, period_s: float = 0.002):
        self.period_s = float(period_s)
        self.phase = "setup"
        self.peak: dict[str, int] = defaultdict(int)
        self.counted: dict[str, int] = defaultdict(int)
        self.gap: dict[str, int] = defaultdict(lambda: -2**62)
        self._cache: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def phases(self) -> dict[str, dict[str, int]]:
        return {p: {"peak_rss": self.peak[p], "counted": self.counted[p], "uncounted": self.gap[p]} for p in self.peak}

    def setup(self, search: SuccessiveHalving, state: SearchState) -> None:
        self._cache = search.engine.cache if search.engine is not None else None
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="alsatian-memory-monitor", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss, counted, phase = rss_now(), self._cache.in_use if self._cache is not None else 0, self.phase
            self.peak[phase] = max(self.peak[phase], rss)
            self.counted[phase] = max(self.counted[phase], counted)
            self.gap[phase] = max(self.gap[phase], rss - counted)
            time.sleep(self.period_s)

    def _tag(self, state: SearchState, step: str) -> None:
        self.phase = f"r{state.round + 1}:{step}"

    def on_round_start(self, search: SuccessiveHalving, state: SearchState) -> None:
        self._tag(state, "plan")

    def on_round_planned(self, search: SuccessiveHalving, state: SearchState, plan: RoundPlan) -> None:
        self._tag(state, "execute")

    def on_round_executed(self, search: SuccessiveHalving, state: SearchState) -> None:
        self._tag(state, "score")

    def on_round_scored(self, search: SuccessiveHalving, state: SearchState, scores: Mapping[str, ProxyScore]) -> None:
        self._tag(state, "prune")

    def on_round_end(self, search: SuccessiveHalving, state: SearchState, report: RoundReport) -> None:
        self._tag(state, "between")

    def on_search_end(self, search: SuccessiveHalving, state: SearchState, result: SearchResult) -> None:
        self._halt()

    def on_exception(self, search: SuccessiveHalving, state: SearchState, exc: BaseException) -> None:
        self._halt()

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
