"""A callback as a user writes one in a notebook: it notes every hook it sees (and keeps a count of rounds as its
state); shared by the callback tests and the distributed test script."""

from __future__ import annotations

import json
from pathlib import Path

from alsatian_pl import SearchCallback


class HookLog(SearchCallback):
    def __init__(self, out: str | Path | None = None, every_rank: bool = False):
        self.out, self.rank_zero_only = out, not every_rank
        self.calls: list[tuple[str, int]] = []
        self.rounds_seen = 0
        self.reports, self.survivors, self.result = [], [], None

    @property
    def state_key(self):
        return "HookLog" if self.rank_zero_only else "HookLogEveryRank"

    def _note(self, hook, state):
        self.calls.append((hook, state.round))

    def setup(self, search, state):
        self._note("setup", state)

    def on_search_start(self, search, state):
        self._note("on_search_start", state)

    def on_round_start(self, search, state):
        self._note("on_round_start", state)

    def on_round_planned(self, search, state, plan):
        assert plan.models <= set(state.alive)
        self._note("on_round_planned", state)

    def on_round_executed(self, search, state):
        self._note("on_round_executed", state)

    def on_round_scored(self, search, state, scores):
        assert set(scores) == set(state.alive)  # every rank's scores, gathered; before pruning
        self._note("on_round_scored", state)

    def on_round_end(self, search, state, report):
        self._note("on_round_end", state)
        self.rounds_seen += 1
        self.reports.append(report)
        self.survivors.append(list(state.alive))

    def on_search_end(self, search, state, result):
        self._note("on_search_end", state)
        self.result = result
        if self.out is not None:
            name = f"{'every' if not self.rank_zero_only else 'zero'}-rank{search.group.rank}.json"
            Path(self.out, name).write_text(json.dumps({"calls": self.calls, "rounds_seen": self.rounds_seen}))

    def on_exception(self, search, state, exc):
        self._note(f"on_exception:{type(exc).__name__}", state)

    def state_dict(self):
        return {"rounds_seen": self.rounds_seen}

    def load_state_dict(self, state_dict):
        self.rounds_seen = state_dict["rounds_seen"]
