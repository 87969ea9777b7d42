"""The memory model of one round (see docs/ARCHITECTURE.md), shared by the search driver, the planner call, the
executor's cache service, the benchmarks and the error messages. Pure Python, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..units import format_bytes


@dataclass(frozen=True)
class RoundMemory:
    """Bytes that stay resident while a round's plan runs; the planner adds cached intermediates and the running
    step's weights on top of :attr:`resident`."""

    data: int = 0      # what the data module holds in memory (text of every tokenizer so far, images without a
    #                    prepared-data cache, labels); a prepared set on disk is not resident
    inputs: int = 0    # the batch of inputs in flight: its rows as read and their model-ready copy
    kept: int = 0      # the surviving models' kept features: earlier chunks and the test items
    reserved: int = 0  # the buffers reserved for every survivor's new features of this round

    @classmethod
    def of_round(cls, *, data_bytes: int, feature_bytes: Mapping[str, int], kept_items: int, new_items: int,
                 input_bytes: int = 0) -> "RoundMemory":
        """The round's resident bytes: ``feature_bytes`` per item of each surviving model, ``kept_items`` items of
        features kept from earlier rounds, ``new_items`` pushed now, ``input_bytes`` of the inputs in flight."""
        per_item = sum(feature_bytes.values())
        return cls(data_bytes, input_bytes, per_item * kept_items, per_item * new_items)

    @property
    def resident(self) -> int:
        """The planner's ``resident_bytes``."""
        return self.data + self.inputs + self.kept + self.reserved

    def describe(self) -> str:
        """The resident bytes by kind, as error messages show them."""
        return (f"{format_bytes(self.data + self.inputs)} prepared data, {format_bytes(self.kept)} kept features, "
                f"{format_bytes(self.reserved)} feature buffers")

    @staticmethod
    def weight_capacity(budget: int | None, planned_peak: int) -> int | None:
        """What the budget leaves the weight cache above a plan's peak (None: unlimited)."""
        return None if budget is None else max(0, budget - planned_peak)
