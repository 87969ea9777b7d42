"""The feature store of a search: every surviving model's features, kept across rounds so that nothing is
recomputed (paper §4.1): the training chunks seen so far, the test items (from round 1), and the buffers this
round's new features are written into."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from .cache import tensor_bytes
from .plan import RoundMemory

__all__ = ["FeatureStore"]


class FeatureStore:
    """Features by model. ``feature_bytes`` gives each model's bytes per item (its last block's output).

    Each model's training features are kept as one tensor (the chunks so far, joined as each round closes, one model
    at a time), so the scorer reads them without a copy of every survivor's features."""

    def __init__(self, feature_bytes: Mapping[str, int], device: torch.device | None = None):
        self.feature_bytes = dict(feature_bytes)
        self.device = device  # where the buffers live (None: where each model's first features arrive)
        self._train: dict[str, list[torch.Tensor]] = {m: [] for m in feature_bytes}
        self._test: dict[str, torch.Tensor] = {}
        self._buffers: dict[str, torch.Tensor] = {}
        self._rows = self._new = 0
        self.kept_items = 0  # items of features kept per model: training chunks so far, and the test items

    @property
    def models(self) -> list[str]:
        """The models whose features are kept (not dropped)."""
        return list(self._train)

    def memory(self, *, new_items: int, data_bytes: int, input_bytes: int = 0, scoring_bytes: int = 0) -> RoundMemory:
        """The round's resident bytes if ``new_items`` items of every kept model's features are pushed now; the
        scoring phase's working set is ``scoring_bytes`` (the scorer's) or joining one model's chunks as the round
        closes (:meth:`close_bytes`), whichever is larger."""
        feature_bytes = {m: self.feature_bytes[m] for m in self._train}
        scoring = max(scoring_bytes, self.close_bytes(new_items))
        return RoundMemory.of_round(data_bytes=data_bytes, feature_bytes=feature_bytes, kept_items=self.kept_items,
                                    new_items=new_items, input_bytes=input_bytes, scoring_bytes=scoring)

    def close_bytes(self, new_items: int) -> int:
        """What :meth:`close_round` allocates at most, after a round of ``new_items``: one model's features joined
        (and its test rows copied out of the first round's buffer); nothing in the first round."""
        if not self.kept_items:
            return 0
        return max((self.feature_bytes[m] for m in self._train), default=0) * (self.kept_items + new_items)

    def open_round(self, new_train: int, new_test: int = 0) -> None:
        """Expect ``new_train`` training items (then ``new_test`` test items) of features from every model."""
        self._buffers, self._new, self._rows = {}, new_train, new_train + new_test

    def write(self, model: str, start: int, feats: torch.Tensor) -> None:
        """The executor's feature sink: rows ``start:start+len(feats)`` of ``model``'s features of this round."""
        if model not in self._buffers:
            # on the search's device even when the first rows come from the cache's host tier
            self._buffers[model] = torch.empty((self._rows, *feats.shape[1:]), dtype=feats.dtype,
                                               device=feats.device if self.device is None else self.device)
        self._buffers[model][start:start + len(feats)] = feats

    def current(self, model: str) -> torch.Tensor:
        """``model``'s features of this round so far (all rows once its score steps ran)."""
        return self._buffers[model]

    def close_round(self) -> None:
        """Keep this round's features: the training rows join the model's chunks, the test rows (round 1) stay."""
        missing = [m for m in self._train if m not in self._buffers]
        if missing:
            raise RuntimeError(f"internal error: no features were computed for {len(missing)} model(s): {missing[:3]}")
        for m, buf in list(self._buffers.items()):
            del self._buffers[m]
            if self._rows > self._new:  # the first round: the test rows share the buffer with the training rows
                self._test[m] = buf[self._new:]
            old = self._train[m]
            if not old:
                self._train[m] = [buf[:self._new]]
                continue
            test = self._test.get(m)
            if test is not None and test.untyped_storage().data_ptr() == old[0].untyped_storage().data_ptr():
                self._test[m] = test.clone()  # its own memory, so that the first round's buffer can go
            self._train[m] = [torch.cat([*old, buf[:self._new]])]
            del old, buf
        self.kept_items += self._rows
        self._buffers = {}

    def train(self, models: Iterable[str]) -> dict[str, torch.Tensor]:
        """Each model's features of every training item so far, in chunk order (the tensor kept: no copy)."""
        return {m: _joined(self._train[m]) for m in models}

    def test(self, models: Iterable[str]) -> dict[str, torch.Tensor]:
        return {m: self._test[m] for m in models}

    def drop(self, models: Iterable[str]) -> None:
        """Forget pruned (or left-out) models' features, this round's too."""
        for m in models:
            self._buffers.pop(m, None)
            self._train.pop(m, None)
            self._test.pop(m, None)

    def adopt(self, model: str, train: torch.Tensor, test: torch.Tensor) -> None:
        """Keep ``model``'s features as another rank kept them (its training rows so far, its test rows)."""
        self._train[model], self._test[model] = [train], test

    def state(self) -> dict[str, torch.Tensor]:
        """The kept features as named tensors (``<model>/train/<chunk>``, ``<model>/test``), for a checkpoint."""
        out = {f"{m}/train/{i}": t for m, chunks in self._train.items() for i, t in enumerate(chunks)}
        return {**out, **{f"{m}/test": t for m, t in self._test.items()}}

    def restore(self, tensors: dict[str, torch.Tensor], models: Iterable[str], kept_items: int,
                device: torch.device) -> None:
        """Take back the kept features of ``models`` from :meth:`state`'s tensors; every other model is dropped."""
        self._train = {m: [] for m in models}
        for name in sorted((n for n in tensors if "/train/" in n), key=lambda n: int(n.rsplit("/", 1)[1])):
            m = name.split("/train/")[0]
            if m in self._train:
                self._train[m].append(tensors[name].to(device))
        self._train = {m: [_joined(chunks)] if chunks else [] for m, chunks in self._train.items()}
        self._test = {m: tensors[f"{m}/test"].to(device) for m in self._train if f"{m}/test" in tensors}
        self.kept_items = kept_items

    def held_bytes(self) -> int:
        """Bytes of every feature tensor held now: the kept features and this round's buffers."""
        return self.kept_bytes() + sum(tensor_bytes(t) for t in self._buffers.values())

    def kept_bytes(self) -> int:
        """Bytes of the features kept now (what :meth:`memory` counts as ``kept``)."""
        return (sum(tensor_bytes(t) for chunks in self._train.values() for t in chunks)
                + sum(tensor_bytes(t) for t in self._test.values()))


def _joined(chunks: list[torch.Tensor]) -> torch.Tensor:
    """One tensor of ``chunks`` in order (the one chunk itself, not a copy)."""
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)
