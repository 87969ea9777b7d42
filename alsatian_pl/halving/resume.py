"""Resuming a search: :class:`RoundCheckpoint` (a :class:`SearchCallback`) saves the state after every finished
round and, with ``resume``, restores it before the first round; :class:`SearchCheckpoint` is the file.

The file is named by what defines the search's result (strategy, models' blocks, scorer and its options, result
size, batch size, device type, layout, the data's keys and chunk sizes, and the robust schedule's knobs and the
precision when they are not the defaults), so a search resumes only its own rounds; rounds saved by the same search
under other knobs or another precision are named in the warning, never continued. In a distributed search every rank saves its own models' features in its own
folder (``rank-<r>-of-<world>``). The callbacks' ``state_dict``s are saved with the state and restored with it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from ..errors import SearchInterrupted
from ..io import atomic_write
from ..precision import DEFAULT_PRECISION
from ..score import ProxyScore
from . import rebalance
from .callbacks import SearchCallback
from .reuse import fingerprint, items_key
from .schedule import Schedule
from .state import RoundReport, SearchState

if TYPE_CHECKING:
    from .loop import SuccessiveHalving

__all__ = ["RoundCheckpoint", "SearchCheckpoint", "interrupted", "saved_rounds"]

CHECKPOINT_FORMAT = "alsatian-search-state-v2"  # v2: scores keep replicates, members; round leaders


@dataclass
class SearchCheckpoint:
    """The state after a finished round, written atomically to ``path`` (a safetensors file: the kept features and
    labels as tensors, everything else as JSON metadata) and read back by ``search.resume``."""

    path: Path
    fingerprint: str
    family: str = ""  # the fingerprint without the schedule: the same search run with other schedule knobs

    def save(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        payload = {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "family": self.family,
                   "state": json.dumps(meta)}
        atomic_write(self.path, st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                                        metadata=payload))

    def load(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """The saved state, or None when there is none for this search (another config, or nothing saved)."""
        if not self.path.is_file():
            return None
        try:
            with safe_open(self.path, framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(self.path)
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            warnings.warn(f"search checkpoint {self.path} is unreadable ({exc}); starting from round 1")
            return None
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("fingerprint") != self.fingerprint:
            return None
        try:
            state = json.loads(meta["state"])
            missing = sorted(_SAVED_KEYS - set(state))
            why = f"no {', '.join(missing)}" if missing else None
        except (KeyError, TypeError, ValueError) as exc:
            why = f"its state cannot be read: {type(exc).__name__}: {exc}"
        if why is not None:
            warnings.warn(f"search checkpoint {self.path} is damaged ({why}); starting from round 1")
            return None
        return state, tensors

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def siblings(self) -> list[tuple[Path, dict[str, Any]]]:
        """``(path, saved state)`` of the other saved searches of this family (the same search, another schedule)."""
        found = []
        for path in sorted(self.path.parent.glob("search-*.safetensors")) if self.family else []:
            try:
                with safe_open(path, framework="pt") as f:
                    meta = f.metadata() or {}
                if meta.get("family") == self.family and meta.get("fingerprint") != self.fingerprint:
                    found.append((path, json.loads(meta["state"])))
            except (SafetensorError, OSError, RuntimeError, ValueError, KeyError):
                continue  # unreadable, or not a saved search: not a sibling
        return found


class RoundCheckpoint(SearchCallback):
    """Save the state after every finished round into ``folder``; with ``resume``, continue from the last one saved.
    The searcher adds it last (after the other callbacks' ``on_round_end``) when ``checkpoint_dir`` is set."""

    rank_zero_only = False  # every rank saves (and resumes) its own part of the state
    saves_state = True  # callbacks added later go before it (CallbackList.append)

    def __init__(self, folder: str | Path, resume: bool = False):
        self.folder, self.resume = Path(folder), bool(resume)
        self.file: SearchCheckpoint | None = None

    def setup(self, search: SuccessiveHalving, state: SearchState) -> None:
        folder = self.folder
        if search.group.world_size > 1:
            folder = folder / f"rank-{search.group.rank}-of-{search.group.world_size}"
        self.file = checkpoint_file(search, state, folder)
        state.saved_to = str(self.file.path)
        if self.resume:
            state.first_round = self._restore(search, state)

    def on_round_end(self, search: SuccessiveHalving, state: SearchState, report: RoundReport) -> None:
        assert self.file is not None
        with search.stats.phase("checkpoint"):
            self.file.save(_meta(search, state), {**state.features.state(), **_labels(state)})
        state.saved_rounds = state.round + 1

    def on_search_end(self, search: SuccessiveHalving, state: SearchState, result: Any) -> None:
        if self.file is not None:
            self.file.clear()

    def _restore(self, search: SuccessiveHalving, state: SearchState) -> int:
        """The saved state back into ``state``, the statistics and the callbacks; the first round still to run."""
        assert self.file is not None
        saved = self.file.load()
        if saved is None:
            warnings.warn("search.resume=true but no saved round matches this search: starting from round 1"
                          + _other_schedules(self.file))
            return 0
        meta, tensors = saved
        restore_state(search, state, meta, tensors)
        s = search.stats
        s.timings.update(meta["timings"])
        s.counts.update(meta["counts"])
        s.block_seconds.update(meta["block_seconds"])
        s.block_items.update(meta["block_items"])
        s.earlier_seconds = float(meta.get("elapsed_s", 0.0))  # the total counts the earlier runs' rounds too
        search.callbacks.load_state_dict(meta.get("callbacks", {}))
        state.saved_rounds = meta["round"] + 1
        return meta["round"] + 1


def checkpoint_file(search: SuccessiveHalving, state: SearchState, folder: Path) -> SearchCheckpoint:
    """Where this search's finished rounds are saved, named by what defines its result."""
    data = search.data
    x, y = data.train_items()
    parts = [search.strategy.name, [(n, m.hashes) for n, m in state.manifests.items()],
             type(search.scorer).__name__, {k: v for k, v in vars(search.scorer).items() if k != "task"},
             search.result_size, search.batch_size, search.device.type, search.channels_last, x.key, items_key(y),
             data.test_items()[0].key]
    if search.scorer.task != "multiclass":  # the labels' bytes are keyed; 0/1 targets could be either task
        parts.append({"task": search.scorer.task})
    # the paper's schedule and 32-true keep the key they always had; the robust knobs and another precision are part
    # of the key when set (not of the family: the warning names the saved search's values)
    schedule = [] if search.schedule.is_paper else [search.schedule.options()]
    precision = [] if search.precision.name == DEFAULT_PRECISION else [{"precision": search.precision.name}]
    key = fingerprint([*parts, data.chunk_sizes, *schedule, *precision])
    return SearchCheckpoint(folder / f"search-{key}.safetensors", key, family=fingerprint(parts))


# what a saved state must hold for _restore and restore_state (checked before anything is restored)
_SAVED_KEYS = frozenset({"round", "alive", "kept_items", "scores", "eliminated", "reports", "timings", "counts",
                         "block_seconds", "block_items"})


def _meta(search: SuccessiveHalving, state: SearchState) -> dict[str, Any]:
    s = search.stats
    return {"round": state.round, "alive": state.alive, "kept_items": state.features.kept_items,
            "scores": {m: _saved(p) for m, p in state.scores.items()},
            "eliminated": {m: [r, _saved(p)] for m, (r, p) in state.eliminated.items()},
            "leaders": {str(r): [m, _saved(p)] for r, (m, p) in state.leaders.items()},
            "reports": [asdict(r) for r in state.reports], "timings": s.timings, "counts": dict(s.counts),
            "block_seconds": s.block_seconds, "block_items": s.block_items, "elapsed_s": s.elapsed(),
            "schedule": search.schedule.options(), "precision": search.precision.name, "skipped": state.skipped,
            "callbacks": search.callbacks.state_dict()}


def _saved(p: ProxyScore) -> dict[str, Any]:
    """A score as JSON: its value, test loss, standard error, replicates and (an ensemble's) member scores."""
    members = None if p.members is None else {n: _saved(q) for n, q in p.members.items()}
    return {"score": p.score, "test_loss": p.test_loss, "stderr": p.stderr,
            "replicates": None if p.replicates is None else list(p.replicates), "members": members}


def _restored(v: dict[str, Any]) -> ProxyScore:
    members = None if v["members"] is None else {n: _restored(q) for n, q in v["members"].items()}
    reps = None if v["replicates"] is None else tuple(v["replicates"])
    return ProxyScore(v["score"], v["test_loss"], v["stderr"], reps, members)


def _labels(state: SearchState) -> dict[str, torch.Tensor]:
    return {**{f"labels/{i}": y for i, y in enumerate(state.labels)}, "labels/test": state.test_labels}


def restore_state(search: SuccessiveHalving, state: SearchState, meta: dict[str, Any],
                  tensors: dict[str, torch.Tensor]) -> None:
    """The saved rounds' survivors, scores, reports, labels and kept features back into ``state``."""
    state.alive, state.reports = list(meta["alive"]), [RoundReport(**r) for r in meta["reports"]]
    state.scores = {m: _restored(v) for m, v in meta["scores"].items()}
    state.eliminated = {m: (r, _restored(v)) for m, (r, v) in meta["eliminated"].items()}
    state.leaders = {int(r): (m, _restored(v)) for r, (m, v) in meta.get("leaders", {}).items()}
    state.skipped = dict(meta.get("skipped", {}))
    state.labels = [tensors[f"labels/{i}"] for i in range(meta["round"] + 1)]
    distributed = search.group.world_size > 1  # each rank saved its own models' features
    mine = [m for m in state.alive if not distributed or f"{m}/test" in tensors]
    state.features.restore(tensors, mine, meta["kept_items"], search.device)
    if distributed:  # its models may have changed since round 1 (rebalancing)
        rebalance.restored(state, search.strategy, search.group, mine)
    for tree in state.trees:
        tree.prune([m for m in tree.models if m not in state.alive])


def _other_schedules(checkpoint: SearchCheckpoint) -> str:
    """Where the rounds of this search saved under another schedule are, and how to continue them (or nothing)."""
    others = checkpoint.siblings()
    if not others:
        return ""
    path, state = others[0]
    saved = {**Schedule(**state.get("schedule", {})).options(), "precision": state.get("precision", DEFAULT_PRECISION)}
    knobs = ", ".join(f"search.{k}={'null' if v is None else v}" for k, v in saved.items())
    return f" ({path} holds rounds of this search run with {knobs}: resume with those values to continue it)"


def interrupted(state: SearchState) -> SearchInterrupted:
    """The one-line message of a Ctrl-C: what was saved and how to go on, read from the file itself (an interrupt
    during a save leaves the rounds saved before it; one just after it, one more than the state counted)."""
    where = f"interrupted in round {state.round + 1} of {state.rounds}"
    if state.saved_to is None:
        return SearchInterrupted(f"{where}; nothing was saved (set search.checkpoint_dir to make searches resumable)")
    saved = saved_rounds(Path(state.saved_to))
    if not saved:
        return SearchInterrupted(f"{where}; no round was saved yet, so there is nothing to resume: run the command "
                                 "again")
    rounds = "round 1 is" if saved == 1 else f"rounds 1-{saved} are"
    return SearchInterrupted(f"{where}; {rounds} saved in {state.saved_to}: run the same command with "
                             "search.resume=true to continue from there")


def saved_rounds(path: Path) -> int:
    """How many finished rounds the search checkpoint at ``path`` holds (0: none, or no readable file)."""
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        return int(json.loads(meta["state"])["round"]) + 1 if meta.get("format") == CHECKPOINT_FORMAT else 0
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, TypeError):
        return 0
