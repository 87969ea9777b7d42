"""Lightning-style hooks around a search: :class:`SearchCallback` and the list that calls them.

A round fires, in order: ``on_round_start`` → per input group ``on_round_planned`` (the group's plan, before it
runs) → ``on_round_executed`` (every group's features are in) → ``on_round_scored`` (the scores, before pruning) →
``on_round_end`` (the round's report, after pruning). ``setup`` and ``on_search_start`` come before the first round,
``on_search_end`` after the last, ``on_exception`` when the search stops on an error or Ctrl-C.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..plan import RoundPlan
    from ..score import ProxyScore
    from .loop import SuccessiveHalving
    from .state import RoundReport, SearchResult, SearchState

__all__ = ["SearchCallback", "CallbackList"]

class SearchCallback:
    """Subclass and override the hooks you need; each receives the searcher (``search.stats``: timings and counters,
    ``search.engine``: the running services) and the :class:`~alsatian_pl.halving.SearchState` (``state.round``,
    ``state.alive``, ``state.scores``, ``state.reports``).

    ``rank_zero_only``: in a distributed search only rank 0 calls it (set False to be called on every rank; the
    report and the scores it sees are then every rank's, gathered). A callback that keeps state returns it from
    :meth:`state_dict` (JSON values) and takes it back in :meth:`load_state_dict`: a resumed search restores it
    before ``on_search_start`` (so set state up in ``__init__``, not in a hook).
    """

    rank_zero_only: bool = True

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a search checkpoint (its class name; override to run two)."""
        return type(self).__qualname__

    def setup(self, search: SuccessiveHalving, state: SearchState) -> None:
        """The state is built (trees, this rank's models), before any round; a resume restores here."""

    def on_search_start(self, search: SuccessiveHalving, state: SearchState) -> None:
        """Before the first round this process runs (``state.first_round``; above 0 after a resume)."""

    def on_round_start(self, search: SuccessiveHalving, state: SearchState) -> None:
        """Round ``state.round`` opened: ``len(state.alive)`` models, ``state.round_items`` items."""

    def on_round_planned(self, search: SuccessiveHalving, state: SearchState, plan: RoundPlan) -> None:
        """One input group's plan (DFS+ within the budget), before it runs."""

    def on_round_executed(self, search: SuccessiveHalving, state: SearchState) -> None:
        """Every model's features of the round are in the feature store; scoring is next."""

    def on_round_scored(self, search: SuccessiveHalving, state: SearchState,
                        scores: Mapping[str, ProxyScore]) -> None:
        """The round's scores (every rank's), before pruning."""

    def on_round_end(self, search: SuccessiveHalving, state: SearchState, report: RoundReport) -> None:
        """The round is pruned: ``report`` (models, items, steps, peaks), ``state.scores`` the round's scores,
        ``state.alive`` the survivors, ``search.stats.timings`` the time so far."""

    def on_search_end(self, search: SuccessiveHalving, state: SearchState, result: SearchResult) -> None:
        """The search finished with ``result``."""

    def on_exception(self, search: SuccessiveHalving, state: SearchState, exc: BaseException) -> None:
        """The search stops on ``exc`` (a KeyboardInterrupt for Ctrl-C); it is raised again afterwards."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned."""


class CallbackList:
    """The callbacks of one search, in order; :meth:`call` fires a hook on those active on this rank."""

    def __init__(self, callbacks: Iterable[SearchCallback] = ()):
        self._all = list(callbacks)
        self._check()
        self.active = list(self._all)

    def _check(self) -> None:
        bad = [c for c in self._all if not isinstance(c, SearchCallback)]
        if bad:
            raise ConfigError(f"search callbacks must be alsatian_pl.SearchCallback instances, got "
                              f"{type(bad[0]).__name__}: subclass SearchCallback and override its hooks")
        keys = [c.state_key for c in self._all]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ConfigError(f"two search callbacks share the state key {twice[0]!r}: give one a state_key of its own")

    def append(self, callback: SearchCallback) -> None:
        """Add ``callback`` before the ones that save state (``saves_state``), so they save its state too."""
        at = next((i for i, c in enumerate(self._all) if getattr(c, "saves_state", False)), len(self._all))
        self._all.insert(at, callback)
        try:
            self._check()
        except ConfigError:
            self._all.pop(at)
            raise
        self.active = list(self._all)

    def __iter__(self) -> Iterator[SearchCallback]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def for_rank(self, is_global_zero: bool) -> None:
        """Keep active only the callbacks this rank calls."""
        self.active = [c for c in self._all if is_global_zero or not c.rank_zero_only]

    def call(self, hook: str, *args: Any) -> None:
        for callback in self.active:
            getattr(callback, hook)(*args)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {c.state_key: c.state_dict() for c in self.active}

    def load_state_dict(self, states: Mapping[str, dict[str, Any]]) -> None:
        for c in self.active:
            if c.state_key in states:
                c.load_state_dict(states[c.state_key])
