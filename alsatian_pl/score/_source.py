"""Transferability from the source classifier head stored with each model (``BlockStore.read_head``): LEEP
(Nguyen et al., ICML 2020) and NCE (Tran et al., ICCV 2019). No training.

The head turns a model's features into source-class probabilities θ(x) (softmax of its logits). From the ``n`` train
items the empirical joint of target label ``y`` and source class ``z`` is ``P(y, z) = 1/n Σ_{i: y_i = y} θ(x_i)_z``
(LEEP: soft) or the share of items with ``y_i = y`` and ``argmax θ(x_i) = z`` (NCE: hard), and
``P(y | z) = P(y, z) / P(z)``. LEEP ``= 1/n Σ_i log Σ_z P(y_i | z) θ(x_i)_z``; NCE ``= -H(Y | Z) = Σ_{y,z} P(y, z)
log P(y | z)``. Both are higher-is-better. ``test_loss`` (the tie-breaker) is the cross-entropy on the test items of
the expected-empirical prediction ``Σ_z P(y | z) θ(x)_z`` (NCE: with θ one-hot). A model's score depends only on its
own features and head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ..errors import ConfigError, StoreError
from . import register_scorer
from ._base import ProxyScore, ProxyScorer, check_inputs
from ._confidence import jackknife_groups, leave_out, with_replicates

_TINY = 1e-12


def leep(probs: Tensor, labels: Tensor, num_classes: int) -> tuple[float, Tensor]:
    """LEEP of source-class probabilities ``probs`` [n, Z] for ``labels``, and ``P(y | z)`` [Z, num_classes]."""
    probs = probs.double()
    joint = torch.zeros(probs.shape[1], num_classes, dtype=torch.float64, device=probs.device)
    joint.index_add_(1, labels.to(probs.device, torch.long), probs.T / len(probs))
    conditional = joint / joint.sum(1, keepdim=True).clamp_min(_TINY)
    eep = (probs @ conditional).gather(1, labels.to(probs.device, torch.long)[:, None])
    return float(eep.clamp_min(_TINY).log().mean()), conditional


def nce(probs: Tensor, labels: Tensor, num_classes: int) -> tuple[float, Tensor]:
    """NCE (``-H(Y | Z)``) with the source classes ``argmax probs``, and ``P(y | z)`` [Z, num_classes]."""
    z = probs.argmax(1)
    joint = torch.zeros(probs.shape[1], num_classes, dtype=torch.float64, device=probs.device)
    joint.index_put_((z, labels.to(probs.device, torch.long)), torch.ones_like(z, dtype=torch.float64),
                     accumulate=True)
    joint /= len(z)
    conditional = joint / joint.sum(1, keepdim=True).clamp_min(_TINY)
    return float((joint * conditional.clamp_min(_TINY).log()).sum()), conditional


class SourceHeadScorer(ProxyScorer):
    """Base of the scorers that read each model's stored source head. ``store``: the block store's root (the
    search's ``store.root``); ``heads``: instead, ``{model: (weight [Z, D], bias [Z] or None)}``."""

    higher_is_better = True
    hard = False
    gives_replicates = True
    score_range = (-math.inf, 0.0)  # a mean log-probability (LEEP), minus a conditional entropy (NCE)

    def __init__(self, *, store: str | None = None, heads: Mapping[str, tuple[Tensor, Tensor | None]] | None = None,
                 seed: int = 0):
        if store is None and heads is None:
            raise ConfigError(f"proxy scorer {self.name!r} reads each model's stored classifier head: set its "
                              "option store (search.scorer.kwargs.store=<store.root>) or pass heads")
        if store is not None and not isinstance(store, str):
            store = str(getattr(store, "root", store))
        self.store, self.seed = store, seed
        self._heads = dict(heads or {})

    def _head(self, model: str) -> tuple[Tensor, Tensor | None]:
        if model not in self._heads:
            from ..store import BlockStore
            if self.store is None:
                raise StoreError(f"proxy scorer {self.name!r} has no head for model {model!r}")
            try:
                linear = BlockStore(self.store).load_head(model)
            except StoreError as exc:
                raise StoreError(f"proxy scorer {self.name!r} needs the source classifier head of every model: "
                                 f"{exc}. Search fine-tuned checkpoints (models=checkpoints, timm_names, hf_dirs) "
                                 "or choose a scorer that needs no head (linear, logme, ...)") from None
            self._heads[model] = (linear.weight.detach(), linear.bias.detach() if linear.bias is not None else None)
        return self._heads[model]

    def _probs(self, model: str, x: Tensor) -> Tensor:
        weight, bias = self._head(model)
        if weight.shape[1] != x.shape[1]:
            raise StoreError(f"the stored head of model {model!r} reads {weight.shape[1]} features but the model "
                             f"gives {x.shape[1]}; import the model again")
        logits = x.double() @ weight.double().T.to(x.device)
        if bias is not None:
            logits = logits + bias.double().to(x.device)
        probs = logits.softmax(1)
        return torch.nn.functional.one_hot(probs.argmax(1), probs.shape[1]).double() if self.hard else probs

    def working_bytes(self, train_rows: int, test_rows: int, dims: Mapping[str, int], num_classes: int) -> int:
        """One model at a time: its features in float64, its head's logits and probabilities over the Z source
        classes (hard: their one-hot), the joint and conditional tables, the predictions (reads each head)."""
        r, c = max(train_rows, test_rows), num_classes
        z = max((self._head(m)[0].shape[0] for m in dims), default=0)
        d = max(dims.values(), default=0)
        return 8 * (r * d + 2 * z * d + 6 * r * z + 3 * z * c + 2 * r * c) + 4 * r * d

    def score(self, train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor],
              test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        """The score of every model from its train features through its head; test_loss as in the module doc."""
        check_inputs(train, train_labels, test, test_labels, num_classes)
        formula = nce if self.hard else leep
        group = jackknife_groups(len(train_labels), self.seed, self.jackknife) if self.jackknife else None
        out = {}
        for m in train:
            probs = self._probs(m, train[m])
            value, conditional = formula(probs, train_labels, num_classes)
            predicted = self._probs(m, test[m]) @ conditional
            target = test_labels.to(predicted.device, torch.long)[:, None]
            loss = -predicted.gather(1, target).clamp_min(_TINY).log().mean()
            out[m] = ProxyScore(value, float(loss))
            if group is not None:  # the score without each group of train items
                again = [formula(probs[keep.to(probs.device)], train_labels[keep.to(train_labels.device)],
                                 num_classes)[0] for keep in leave_out(group, self.jackknife)]
                out[m] = with_replicates({m: out[m]}, {m: again})[m]
        return out


@register_scorer("leep")
class LEEPScorer(SourceHeadScorer):
    """LEEP: log expected empirical prediction through the model's source head (soft source labels)."""


@register_scorer("nce")
class NCEScorer(SourceHeadScorer):
    """NCE: negative conditional entropy of the target labels given the head's hard source labels."""

    hard = True
