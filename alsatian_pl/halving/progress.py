"""The search's progress, a :class:`SearchCallback`, on standard error: on a terminal a rich bar over the rounds and,
inside a round, the inference steps done of those planned and the items through them with their rate, then the
scorer's progress (the linear probe's SGD steps); elsewhere (a log file, a pipe, a batch
job) plain lines: the round's start, its plan, its inference, its end, and every ``every_s`` seconds inside a long
round the steps done so far. The searcher adds it when ``progress`` is true."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..plan import InferenceStep
from .callbacks import SearchCallback

if TYPE_CHECKING:
    from ..plan import RoundPlan
    from .loop import SuccessiveHalving
    from .state import RoundReport, SearchState

__all__ = ["ProgressBar"]


class _RoundSteps:
    """The running round's inference: steps planned (from its plans) and done (the searcher's counter), items through
    them (a step over 100 items counts 100, batch by batch) with their rate; then the scorer's progress."""

    def __init__(self) -> None:
        self.stats: Any = None
        self.scoring: Any = None
        self.start_count = self.start_items = self.planned = self.planned_items = 0
        self.started = time.perf_counter()
        self.executed: float | None = None  # when the round's inference ended (its rate stops there)

    def open(self, stats: Any, scoring: Any = None) -> None:
        self.stats, self.scoring, self.planned, self.planned_items = stats, scoring, 0, 0
        self.started, self.executed = time.perf_counter(), None
        self.start_count, self.start_items = stats.counts["inference_steps"], stats.items_inferred

    def done(self) -> int:
        return 0 if self.stats is None else self.stats.counts["inference_steps"] - self.start_count

    def items(self) -> int:
        return 0 if self.stats is None else self.stats.items_inferred - self.start_items

    def text(self) -> str:
        if self.executed is not None and self.scoring is not None and self.scoring.text():
            return f"scoring {self.scoring.text()}"
        if not self.planned:
            return ""
        done, items, seconds = self.done(), self.items(), (self.executed or time.perf_counter()) - self.started
        rate = f", {_compact(items / seconds)}/s" if items and seconds > 0 else ""
        return f"step {min(done, self.planned)}/{self.planned}, {_compact(min(items, self.planned_items))} items{rate}"


def _compact(n: float) -> str:
    """A count in at most five characters: 950, 9500, 12.3k, 123k, 4.1M (the bar's column fits 80 columns)."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size and (unit != "k" or n >= 1e4):
            return f"{n / size:.1f}{unit}" if n < 100 * size else f"{n / size:.0f}{unit}"
    return f"{n:.0f}" if n >= 10 or n == int(n) else f"{n:.1f}"


class _StepsColumn(ProgressColumn):
    """The bar's column of the running round's steps (rendered on rich's refresh thread, so it moves in a round)."""

    def __init__(self, steps: _RoundSteps):
        super().__init__()
        self.steps = steps

    def render(self, task: Any) -> Text:
        return Text(self.steps.text(), no_wrap=True, overflow="ellipsis")


class ProgressBar(SearchCallback):
    """A bar over the rounds on a terminal, plain lines elsewhere (``plain``: None decides by the stream;
    ``stream``: standard error by default). A resumed search starts at its first round to run and says so."""

    def __init__(self, stream: TextIO | None = None, plain: bool | None = None, every_s: float = 30.0):
        self.stream, self.plain, self.every_s = stream, plain, float(every_s)
        self._bar: Progress | None = None
        self._task: Any = None
        self._steps = _RoundSteps()
        self._ticker: threading.Thread | None = None
        self._stop_ticks = threading.Event()

    def on_search_start(self, search: SuccessiveHalving, state: SearchState) -> None:
        console = Console(file=self.stream or sys.stderr)
        plain = self.plain if self.plain is not None else not console.is_terminal
        resumed = f", resumed after round {state.first_round}" if state.first_round else ""
        if plain:
            self._say(f"search: {state.rounds} rounds over {len(state.alive)} models{resumed}")
            return
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=8), TimeElapsedColumn(),
                             _StepsColumn(self._steps), console=console)  # 80 columns hold it
        self._bar.start()
        self._task = self._bar.add_task(f"search, {state.rounds} rounds{resumed}", total=state.rounds,
                                        completed=state.first_round)

    def on_round_start(self, search: SuccessiveHalving, state: SearchState) -> None:
        self._steps.open(search.stats, getattr(search, "score_progress", None))
        what = f"round {state.round + 1}/{state.rounds} · {len(state.alive)} models · {state.round_items} items"
        if self._bar is not None:  # its items are in the steps column
            self._bar.update(self._task, description=f"round {state.round + 1}/{state.rounds} · {len(state.alive)} "
                                                     "models")
        else:
            self._say(what)
            self._start_ticks(state)

    def on_round_planned(self, search: SuccessiveHalving, state: SearchState, plan: RoundPlan) -> None:
        per_partition = sum(1 for s in plan.steps if isinstance(s, InferenceStep))
        steps = per_partition * plan.partitions
        self._steps.planned += steps
        self._steps.planned_items += per_partition * plan.num_items
        if self._bar is None:
            self._say(f"round {state.round + 1}/{state.rounds}: {steps} inference steps planned in "
                      f"{plan.partitions} partition(s)")

    def on_round_executed(self, search: SuccessiveHalving, state: SearchState) -> None:
        self._steps.executed = time.perf_counter()
        if self._bar is None:
            self._say(f"round {state.round + 1}/{state.rounds}: inference done ({self._steps.text() or 'no steps'}), "
                      "scoring")

    def on_round_end(self, search: SuccessiveHalving, state: SearchState, report: RoundReport) -> None:
        self._steps.planned = 0
        if self._bar is not None:
            self._bar.advance(self._task)
            return
        self._stop_tick_thread()
        seconds = time.perf_counter() - self._steps.started
        self._say(f"round {state.round + 1}/{state.rounds}: kept {len(state.alive)} of {report.models} models, "
                  f"{seconds:.1f} s")

    def on_search_end(self, search: SuccessiveHalving, state: SearchState, result: Any) -> None:
        self._stop()

    def on_exception(self, search: SuccessiveHalving, state: SearchState, exc: BaseException) -> None:
        self._stop()

    def _say(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)

    def _start_ticks(self, state: SearchState) -> None:
        """Plain lines every ``every_s`` seconds while the round runs (a long round is not silent in a log)."""
        if self.every_s <= 0:
            return
        self._stop_ticks.clear()
        label = f"round {state.round + 1}/{state.rounds}"

        def tick() -> None:
            while not self._stop_ticks.wait(self.every_s):
                if self._steps.executed is not None:
                    done = self._steps.text()
                    self._say(f"{label}: {done + ', ' if done.startswith('scoring') else 'scoring, '}"
                              f"{time.perf_counter() - self._steps.executed:.0f} s so far")
                elif self._steps.planned:
                    self._say(f"{label}: {self._steps.text()}")
        self._ticker = threading.Thread(target=tick, name="alsatian-progress", daemon=True)
        self._ticker.start()

    def _stop_tick_thread(self) -> None:
        self._stop_ticks.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None

    def _stop(self) -> None:
        self._stop_tick_thread()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
