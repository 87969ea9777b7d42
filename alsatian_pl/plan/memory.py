"""The memory model of one round (see docs/ARCHITECTURE.md), shared by the search driver, the planner call, the
executor's cache service, the benchmarks and the error messages. Pure Python, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import BudgetTooSmallError
from ..units import format_bytes

__all__ = ["RoundMemory"]


@dataclass(frozen=True)
class RoundMemory:
    """Bytes that stay resident while a round's plan runs; the planner adds cached intermediates and the running
    step's weights and activations on top of :attr:`resident`. ``scoring`` is what scoring the round's features
    takes on top of them once the plan has run (:attr:`scoring_peak`)."""

    data: int = 0      # what the data module holds in memory (text of every tokenizer so far, images without a
    #                    prepared-data cache, labels); a prepared set on disk is not resident
    inputs: int = 0    # the batch of inputs in flight: its rows as read, their model-ready copy (and the executor's
    #                    channels-last copy of it)
    kept: int = 0      # the surviving models' kept features: earlier chunks and the test items
    reserved: int = 0  # the buffers reserved for every survivor's new features of this round
    scoring: int = 0   # the scoring phase's working set: the scorer's copies of the features, its buffers

    @classmethod
    def of_round(cls, *, data_bytes: int, feature_bytes: Mapping[str, int], kept_items: int, new_items: int,
                 input_bytes: int = 0, scoring_bytes: int = 0) -> "RoundMemory":
        """The round's resident bytes: ``feature_bytes`` per item of each surviving model, ``kept_items`` items of
        features kept from earlier rounds, ``new_items`` pushed now, ``input_bytes`` of the inputs in flight;
        ``scoring_bytes``: the scoring phase's working set."""
        per_item = sum(feature_bytes.values())
        return cls(data_bytes, input_bytes, per_item * kept_items, per_item * new_items, scoring_bytes)

    @property
    def resident(self) -> int:
        """The planner's ``resident_bytes``."""
        return self.data + self.inputs + self.kept + self.reserved

    @property
    def scoring_peak(self) -> int:
        """Held while the round's features are scored: the data, every survivor's features (kept and new) and the
        scoring working set (no inputs in flight, no intermediates, no running step)."""
        return self.data + self.kept + self.reserved + self.scoring

    def describe(self) -> str:
        """The resident bytes by kind, as error messages show them."""
        return (f"{format_bytes(self.data + self.inputs)} prepared data, {format_bytes(self.kept)} kept features, "
                f"{format_bytes(self.reserved)} feature buffers")

    def check_scoring(self, budget: int | None) -> None:
        """BudgetTooSmallError if scoring the round cannot stay within ``budget`` (None: unlimited)."""
        if budget is not None and self.scoring_peak > budget:
            needed = self.scoring_peak
            raise BudgetTooSmallError(
                f"The cache budget {format_bytes(budget)} is too small for this round: scoring its features needs "
                f"{format_bytes(needed)} ({needed} bytes) = {format_bytes(self.data)} prepared data + "
                f"{format_bytes(self.kept + self.reserved)} features of the surviving models + "
                f"{format_bytes(self.scoring)} for the scorer's working copies and buffers. Raise the cache budget "
                f"to at least {format_bytes(needed)}, or lower the scorer's max_chunk_bytes.", needed=needed)

    @staticmethod
    def weight_capacity(budget: int | None, planned_peak: int) -> int | None:
        """What the budget leaves the weight cache above a plan's peak (None: unlimited)."""
        return None if budget is None else max(0, budget - planned_peak)
