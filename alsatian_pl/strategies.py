"""Search strategies. They differ in their plan only, never in execution code:

- ``alsatian``: successive halving over a task tree that shares identical block prefixes across models (DFS+ plan,
  cached intermediates, each distinct block read and run once per item);
- ``shift``: successive halving, every model on its own path (SHiFT as the paper re-implemented it), reusing only
  its own features from earlier rounds;
- ``base``: every model on the full training data, one model after another, no halving.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import num_rounds
from .errors import ConfigError
from .plan import TaskTree


@dataclass(frozen=True)
class Strategy:
    """A plan recipe: whether the task tree shares prefixes (and weights) and whether rounds halve the models."""

    name: str
    shared: bool
    halving: bool

    def num_rounds(self, num_models: int, result_size: int) -> int:
        """Rounds of successive halving (1 for a strategy without halving)."""
        return num_rounds(num_models, result_size) if self.halving else 1

    def make_tree(self) -> TaskTree:
        return TaskTree(shared=self.shared)


STRATEGIES: dict[str, Strategy] = {
    "alsatian": Strategy("alsatian", shared=True, halving=True),
    "shift": Strategy("shift", shared=False, halving=True),
    "base": Strategy("base", shared=False, halving=False),
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; ConfigError listing the known ones otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None
