"""Search strategies. They differ in their plan only, never in execution code: each one says how many rounds it
runs, which items each round pushes, how its task tree is built and which steps share a loaded block.

- ``alsatian``: successive halving over a task tree that shares identical block prefixes across models (DFS+ plan,
  cached intermediates, each distinct block read and run once per item);
- ``shift``: successive halving, every model on its own path (SHiFT as the paper re-implemented it), reusing only
  its own features from earlier rounds;
- ``base``: every model on the full training data, one model after another, no halving.

Register another with ``@STRATEGIES.register("name")`` on a :class:`Strategy` subclass (an instance is made per
search). The successive-halving schedule (rounds, chunk sizes, survivors) is not a strategy's own: every strategy
delegates it to its :class:`~alsatian_pl.halving.schedule.Schedule` (the paper's unless the search sets the robust knobs), so
the strategies still differ in their plan only.
"""

from __future__ import annotations

import copy
from typing import Hashable, Iterable, Mapping, Sequence

import torch

from ..data import Items, SearchDataModule
from ..plan import BlockSpec, TaskTree
from ..registry import Registry
from ..score import ProxyScore
from .schedule import PAPER, Schedule

__all__ = ["STRATEGIES", "Strategy", "Alsatian", "Shift", "Base", "get_strategy"]

STRATEGIES: Registry[type["Strategy"]] = Registry("search strategy", plural="search strategies")


class Strategy:
    """What a strategy decides; the defaults are Alsatian's plan: successive halving over doubling chunks, one task
    tree sharing block prefixes, one loaded copy of each distinct block."""

    name = ""
    shares_prefixes = True
    schedule: Schedule = PAPER  # the successive-halving schedule; a search sets its own (:meth:`scheduled`)

    def scheduled(self, schedule: Schedule) -> "Strategy":
        """A copy of this strategy that follows ``schedule`` (this one is left as it is)."""
        twin = copy.copy(self)
        twin.schedule = schedule
        return twin

    def num_rounds(self, num_models: int, result_size: int) -> int:
        """Rounds of the search over ``num_models`` candidates returning ``result_size`` models."""
        return self.schedule.num_rounds(num_models, result_size)

    def cut_rounds(self, data: SearchDataModule, num_models: int, result_size: int) -> int:
        """Cut ``data`` into the chunks of this strategy's rounds (the schedule's sizes); the rounds the search runs
        (fewer than :meth:`num_rounds` where the schedule merged away chunks the data cannot fill)."""
        data.setup(num_rounds=self.num_rounds(num_models, result_size),
                   min_class_items=self.schedule.min_class_items)
        return len(data.chunk_sizes)

    def round_items(self, data: SearchDataModule, r: int, tokenizer: str | None = None
                    ) -> tuple[Items, torch.Tensor]:
        """``(x, y)`` of the training items round ``r`` pushes (the test items come on top in round 1)."""
        return data.chunk(r, tokenizer)

    def survivors(self, ranked: Sequence[str], r: int, rounds: int, result_size: int) -> int:
        """How many of the ranked models go on after round ``r``: the better half, the result in the last round."""
        return self.schedule.halving(len(ranked), r, rounds, result_size)

    def keep(self, ranked: Sequence[str], scores: Mapping[str, ProxyScore], r: int, rounds: int, result_size: int,
             higher_is_better: bool) -> list[str]:
        """The models that go on after round ``r``, best first: the first :meth:`survivors` of ``ranked`` and, with
        the schedule's noise margin, the later ones within it (never in the last round)."""
        return self.schedule.keep(ranked, scores, self.survivors(ranked, r, rounds, result_size),
                                  final=r == rounds - 1, higher_is_better=higher_is_better)

    def make_tree(self, models: Mapping[str, Sequence[BlockSpec]]) -> TaskTree:
        """The task tree of ``models`` (their blocks in order)."""
        tree = TaskTree(shared=self.shares_prefixes)
        for name, blocks in models.items():
            tree.add_model(name, blocks)
        return tree

    def weight_key(self, block_hash: str, models: frozenset[str]) -> Hashable:
        """The weight-cache key of a block run for ``models``: one loaded copy per distinct block."""
        return block_hash, None

    def weight_keys(self, trees: Iterable[TaskTree]) -> set[Hashable]:
        """The keys of every block the models in ``trees`` still run."""
        return {self.weight_key(n.block.hash, n.models) for t in trees for n in t.nodes() if n.block is not None}


class Alsatian(Strategy):
    name = "alsatian"


class Shift(Strategy):
    """SHiFT: successive halving, every model on its own path and with its own copy of each block."""

    name = "shift"
    shares_prefixes = False

    def weight_key(self, block_hash: str, models: frozenset[str]) -> Hashable:
        return block_hash, min(models)  # an unshared tree's step belongs to one model


class Base(Shift):
    """Base: every model on all training items in one round, one model after another."""

    name = "base"

    def num_rounds(self, num_models: int, result_size: int) -> int:
        return 1

    def round_items(self, data: SearchDataModule, r: int, tokenizer: str | None = None
                    ) -> tuple[Items, torch.Tensor]:
        return data.train_items(tokenizer=tokenizer)


for _cls in (Alsatian, Shift, Base):
    STRATEGIES.register(_cls.name, _cls)


def get_strategy(name: str | Strategy) -> Strategy:
    """The strategy called ``name`` (a new instance); ConfigError listing the known ones otherwise."""
    return name if isinstance(name, Strategy) else STRATEGIES.get(name)()
