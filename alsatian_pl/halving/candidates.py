"""Candidates that cannot be scored (``models.on_invalid``): a block that fails at forward or gives outputs of another
size than the store recorded (the executor's :class:`~alsatian_pl.errors.InvalidCandidateError`), weights or features
that are not finite. With ``error`` (the default) the search stops with one line naming the model, the block and the
tensor; with ``skip`` the models are left out with one warning line, recorded in ``SearchState.skipped`` (and so in
results.json), and the search goes on with the rest: their features, tree paths and buffers are dropped, so the plan
of every later step is the one of a search without them."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Iterable

import torch

from ..errors import AlsatianWarning, InvalidCandidateError, StoreError
from ..store import BlockStore, ModelManifest

if TYPE_CHECKING:
    from .engine import Engine
    from .state import SearchState

__all__ = ["ON_INVALID", "leave_out", "check_finite", "nonfinite_tensor"]

ON_INVALID = ("error", "skip")


def nonfinite_tensor(store: BlockStore, manifest: ModelManifest) -> str | None:
    """Where a model's stored weights hold NaN or infinite values (``block 3 (ab12…) tensor conv.weight holds 4 NaN
    or infinite value(s)``), or None when they are all finite."""
    for i, block in enumerate(manifest.blocks):
        tensors, _ = store.read_block_tensors(block.hash)
        for key, value in tensors.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                return (f"block {i} ({block.hash[:12]}) tensor {key} holds {bad} NaN or infinite value(s) of "
                        f"{value.numel()}")
    return None


def check_finite(state: SearchState, store: BlockStore, models: Iterable[str], precision: str) -> None:
    """InvalidCandidateError for the models of ``models`` whose features of this round are not finite, naming the
    stored tensor that is not (or, with finite weights, the overflow)."""
    bad = [m for m in sorted(models) if m in state.features.models
           and not bool(torch.isfinite(state.features.current(m)).all())]
    if not bad:
        return
    where = nonfinite_tensor(store, state.manifests[bad[0]]) if bad[0] in state.manifests else None
    if where is None:
        overflow = ("float16 overflowed; use search.precision=bf16-mixed or 32-true" if precision == "16-mixed"
                    else "its arithmetic overflowed")
        where = f"its features are not finite in round {state.round + 1} ({overflow})"
    who = f"model {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
    raise InvalidCandidateError(f"{who} cannot be scored: {where}. Remove the model from the zoo, or set "
                                "models.on_invalid=skip to search without it", set(bad), where)


def _same_prefix(state: SearchState, error: InvalidCandidateError) -> frozenset[str]:
    """The models ``error`` stops, and with a failing block every model whose chain up to that block is theirs
    (the block gets the same inputs there: a strategy that shares no prefixes finds them all at once too)."""
    if error.block is None or not error.models:
        return error.models
    for group in state.groups:
        ref = next((m for m in error.models if m in group.specs), None)
        if ref is not None and error.block in group.chain(ref):
            prefix = group.chain(ref)[:group.chain(ref).index(error.block) + 1]
            return error.models | {m for m in group.specs if group.chain(m)[:len(prefix)] == prefix}
    return error.models


def leave_out(state: SearchState, engine: Engine, error: InvalidCandidateError, on_invalid: str) -> list[str]:
    """Leave out the candidates ``error`` names (``on_invalid=skip``: one warning line; ``error``: ``error`` is
    raised): their features, buffers and tree paths go, the plan's intermediates are dropped. Returns them."""
    if on_invalid != "skip":
        raise error
    stopped = _same_prefix(state, error)
    gone = [m for m in state.alive if m in stopped]
    for m in gone:
        state.skipped[m] = error.reason
    state.alive = [m for m in state.alive if m not in stopped]
    state.features.drop(gone)
    for tree in state.trees:
        tree.prune([m for m in gone if m in tree])
    engine.cache.clear()
    if not state.alive:
        raise StoreError(f"no candidate can be scored: the last {len(gone)} left out ({gone[0]}: {error.reason}). "
                         "Check the zoo (alsatian store verify)")
    shown = ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
    warnings.warn(f"left out {len(gone)} candidate(s) that cannot be scored ({shown}): {error.reason}; the search "
                  "goes on without them (results.json lists them under skipped)", AlsatianWarning, stacklevel=2)
    return gone
