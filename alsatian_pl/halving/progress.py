"""The search's progress bar (rich), a :class:`SearchCallback`: one bar over the rounds, its description naming
the round, the models alive and the items it pushes. The searcher adds it when ``progress`` is true."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .callbacks import SearchCallback

if TYPE_CHECKING:
    from .loop import SuccessiveHalving
    from .state import RoundReport, SearchState

__all__ = ["ProgressBar"]


class ProgressBar(SearchCallback):
    """A bar over the rounds: advances as each round ends (a resumed search starts at its first round to run)."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: Any = None

    def on_search_start(self, search: SuccessiveHalving, state: SearchState) -> None:
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             TextColumn("{task.completed}/{task.total} rounds"), TimeElapsedColumn(), transient=False)
        self._bar.start()
        self._task = self._bar.add_task("search", total=state.rounds, completed=state.first_round)

    def on_round_start(self, search: SuccessiveHalving, state: SearchState) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"round {state.round + 1}/{state.rounds} · {len(state.alive)} "
                                                     f"models · {state.round_items} items")

    def on_round_end(self, search: SuccessiveHalving, state: SearchState, report: RoundReport) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def on_search_end(self, search: SuccessiveHalving, state: SearchState, result: Any) -> None:
        self._stop()

    def on_exception(self, search: SuccessiveHalving, state: SearchState, exc: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
