"""The cache budget, in one place: what the plan may use, what the weight cache gets, what the accelerator's tier
holds, and whether scoring fits (the memory model itself is :class:`~alsatian_pl.plan.RoundMemory`).

``search.cache_budget`` bounds everything the memory model counts. The planner gets it whole (or nothing when rounds
spill to disk instead of splitting); the weight cache gets what the round's planned peak leaves; the device tier holds
cached outputs up to the accelerator's free memory less what the round reserves; the scoring phase is checked
against it before any work.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..data import Items
from ..plan import InferenceStep, RoundMemory, RoundPlan
from ..resources import device_capacity
from ..units import parse_bytes

if TYPE_CHECKING:
    from ..score import ProxyScorer
    from .state import SearchState

__all__ = ["Budget", "in_flight_bytes"]


def in_flight_bytes(inputs: Items, batch_size: int, channels_last: bool) -> int:
    """One batch of ``inputs`` in flight: its rows as read and their model-ready copy, plus the executor's
    channels-last copy of an image batch."""
    held = inputs.batch_bytes(batch_size)
    if channels_last and len(inputs.shape) == 4:
        held += min(batch_size, len(inputs)) * inputs.dtype.itemsize * math.prod(inputs.shape[1:])
    return held


class Budget:
    """``cache_budget`` bytes (None: unlimited) split between the plan, the weight cache and the device tier.

    ``spill``: rounds over budget spill cached outputs to disk, so the planner runs unbounded; ``device_capacity``:
    ``"auto"`` (the accelerator's free memory), None (no limit) or bytes of cached outputs the device holds.
    """

    def __init__(self, cache_budget: int | None, *, device: torch.device, spill: bool = False,
                 device_capacity: int | str | None = "auto"):
        self.bytes, self.device, self.spill, self.device_capacity = cache_budget, device, spill, device_capacity

    def round_memory(self, state: SearchState, *, held_bytes: int, scorer: ProxyScorer, num_classes: int,
                     input_bytes: int = 0) -> RoundMemory:
        """Resident while a group runs: the data module's held bytes, ``input_bytes`` in flight, every survivor's
        kept features and new-feature buffers, and scoring the round (the scorer's working set, joined labels)."""
        return state.features.memory(new_items=state.round_items, data_bytes=held_bytes, input_bytes=input_bytes,
                                     scoring_bytes=self.scoring_bytes(state, scorer, num_classes))

    @staticmethod
    def scoring_bytes(state: SearchState, scorer: ProxyScorer, num_classes: int) -> int:
        """What scoring this round's survivors takes beyond their features: the scorer's working set
        (``ProxyScorer.working_bytes``) and the joined training labels."""
        mine = {m: state.feature_dims[m] for m in state.alive if m in state.features.models}
        if not mine:
            return 0
        train_rows = sum(len(y) for y in state.labels)
        return 8 * train_rows + scorer.working_bytes(train_rows, len(state.test_labels), mine, num_classes)

    @property
    def plan_budget(self) -> int | None:
        """What the planner plans within (None when rounds spill instead of splitting)."""
        return None if self.spill else self.bytes

    def check_scoring(self, memory: RoundMemory) -> None:
        """BudgetTooSmallError, with the numbers, when scoring the round cannot fit."""
        memory.check_scoring(self.bytes)

    def weight_room(self, plan: RoundPlan) -> int | None:
        """What the weight cache may hold: the budget less the round's planned peak."""
        return RoundMemory.weight_capacity(self.bytes, plan.round_peak_bytes)

    def device_tier(self, memory: RoundMemory, plan: RoundPlan, weight_room: int | None) -> int | None:
        """Bytes of cached outputs the compute device holds before the host tier takes the rest."""
        if self.device_capacity != "auto":
            return None if self.device_capacity is None else parse_bytes(str(self.device_capacity))
        weights = sum(s.weight_bytes for s in plan.steps if isinstance(s, InferenceStep))
        held = min(weights, weight_room if weight_room is not None else weights)
        return device_capacity(self.device, self.bytes, reserve=memory.reserved + held)
