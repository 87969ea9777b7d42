"""Proxy scoring (paper §2.2): each surviving model's train/test features → one :class:`ProxyScore` per model.

Every model of a round has features for the same train items (same order) and for the test items. The default
``"linear"`` scorer trains one linear head per model (mini-batch SGD on cross-entropy, as in the paper and SHiFT) and
scores its test accuracy; all heads of a round train together in :class:`LinearProbes`. A model's score depends only
on its own features, the labels and the seed, never on the other models scored with it.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import RandomSampler
from torchmetrics.functional.classification import multiclass_accuracy

from .errors import ConfigError, DataError
from .registry import Registry

__all__ = ["ProxyScore", "ProxyScorer", "LinearProbes", "LinearScorer", "KNNScorer",
           "SCORERS", "register_scorer", "get_scorer", "available_scorers", "rank", "check_inputs"]


@dataclass(frozen=True)
class ProxyScore:
    """A model's proxy score and its mean test cross-entropy (the first tie-breaker in :func:`rank`)."""

    score: float
    test_loss: float


class ProxyScorer:
    """Base class of scorers; subclasses declare ``higher_is_better`` and get ``name`` from :func:`register_scorer`."""

    name: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True

    def score(self, train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor],
              test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        """One score per model id: ``train[m]`` is [N, D_m] (same N items for every model), ``test[m]`` is [T, D_m]."""
        raise NotImplementedError


SCORERS: Registry[type[ProxyScorer]] = Registry("proxy scorer", plural="scorers")
_S = TypeVar("_S", bound=type[ProxyScorer])


def register_scorer(name: str) -> Callable[[_S], _S]:
    """Class decorator: make a :class:`ProxyScorer` subclass available to :func:`get_scorer` as ``name``."""

    def decorate(cls: _S) -> _S:
        if not (isinstance(cls, type) and issubclass(cls, ProxyScorer)):
            raise TypeError(f"@register_scorer({name!r}) needs a ProxyScorer subclass, got {cls!r}")
        SCORERS.register(name, cls)
        cls.name = name
        return cls

    return decorate


def available_scorers() -> list[str]:
    """Names of the registered scorers, sorted."""
    return SCORERS.names()


def get_scorer(name: str, **kwargs) -> ProxyScorer:
    """A new scorer registered as ``name``, built with ``kwargs``; an unknown name or option raises ConfigError."""
    cls = SCORERS.get(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid options for proxy scorer {name!r}: {exc}") from None
    return cls(**kwargs)


def rank(scores: Mapping[str, ProxyScore], higher_is_better: bool) -> list[str]:
    """Model ids best first: by score, ties by lower test loss, then by model id; NaN scores and losses go last."""

    def nan_last(value: float) -> tuple[bool, float]:
        return (True, 0.0) if math.isnan(value) else (False, value)

    return sorted(scores, key=lambda m: (nan_last(-scores[m].score if higher_is_better else scores[m].score),
                                         nan_last(scores[m].test_loss), m))


# ---------------------------------------------------------------------------------------------------------------------
# input checks shared by all scorers


def _check_labels(split: str, labels: Tensor, num_classes: int) -> int:
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool:
        raise DataError(f"{split} labels must be a 1-D integer tensor, got {_describe(labels)}")
    if labels.numel() == 0:
        raise DataError(f"there are no {split} items to score with: the {split} labels are empty")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{split} labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
                        f"found labels from {lo} to {hi}")
    return labels.numel()


def _describe(x: object) -> str:
    return f"a {x.dim()}-D {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def check_inputs(train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor], test_labels: Tensor,
                 num_classes: int) -> None:
    """Raise DataError unless every model has finite 2-D float features matching the labels (same dim train/test)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DataError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
    if not train:
        raise DataError("there are no models to score: the train feature mapping is empty")
    if set(train) != set(test):
        raise DataError("train and test features must cover the same models; only in train: "
                        f"{sorted(set(train) - set(test))}, only in test: {sorted(set(test) - set(train))}")
    rows = {"train": _check_labels("train", train_labels, num_classes),
            "test": _check_labels("test", test_labels, num_classes)}
    for m in train:
        for split, x in (("train", train[m]), ("test", test[m])):
            if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point() or x.shape[1] == 0:
                raise DataError(f"{split} features of model {m!r} must be a 2-D float tensor [items, dim] with "
                                f"dim >= 1, got {_describe(x)}")
            if x.shape[0] != rows[split]:
                raise DataError(f"model {m!r} has {x.shape[0]} {split} feature rows but there are {rows[split]} "
                                f"{split} labels; features and labels must describe the same items")
            if not bool(torch.isfinite(x).all()):
                raise DataError(f"{split} features of model {m!r} contain NaN or infinite values")
        if train[m].shape[1] != test[m].shape[1]:
            raise DataError(f"model {m!r} has {train[m].shape[1]}-dim train features but {test[m].shape[1]}-dim "
                            "test features; both must come from the same feature extractor")


def _check_option(name: str, value: object, ok: bool, need: str) -> None:
    if not ok or isinstance(value, bool):
        raise ConfigError(f"proxy scorer option {name} must be {need}, got {value!r}")


def _is_int(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# ---------------------------------------------------------------------------------------------------------------------
# linear probes


def _init_seed(seed: int, dim: int) -> int:
    return (seed * 1_000_003 + dim) % 2**63


class LinearProbes(L.LightningModule):
    """The linear heads of M models with D-dim features, stacked (``weight`` [M, C, D] as in nn.Linear, ``bias``
    [M, C]) and trained together with batched matmuls.

    Every head starts from the same init drawn from ``seed`` and D (nn.Linear's U(±1/√D) range), and each head's
    arithmetic is its own slice of every batched op, so a head trains the same in any batch of two or more heads up
    to float rounding: observed so far, identical accuracy and test loss within 1e-7 relative between batches of 3
    and 8 heads (on CPU/MKL a batch of one takes another gemm path; :class:`LinearScorer` pads it to two).
    """

    def __init__(self, num_models: int, dim: int, num_classes: int, *, lr: float = 0.1, momentum: float = 0.0,
                 seed: int = 0):
        super().__init__()
        self.lr, self.momentum = lr, momentum
        gen = torch.Generator().manual_seed(_init_seed(seed, dim))
        bound = 1 / math.sqrt(dim)
        weight = torch.empty(num_classes, dim).uniform_(-bound, bound, generator=gen)
        bias = torch.empty(num_classes).uniform_(-bound, bound, generator=gen)
        self.weight = nn.Parameter(weight.expand(num_models, -1, -1).clone())
        self.bias = nn.Parameter(bias.expand(num_models, -1).clone())

    def forward(self, x: Tensor) -> Tensor:
        """Logits [M, C, B] (class axis second, as F.cross_entropy and torchmetrics take it) of features [M, B, D]."""
        return torch.baddbmm(self.bias.unsqueeze(-1), self.weight, x.transpose(1, 2))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Sum over heads of each head's mean cross-entropy, so each head gets its own gradient; batch = (x [B, M, D],
        y [B]) as a DataLoader over item-major features yields it."""
        x, y = batch
        return F.cross_entropy(self(x.transpose(0, 1)), y.expand(x.shape[1], -1), reduction="sum") / x.shape[0]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD over all heads (per-element updates, so heads stay independent)."""
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)

    @torch.no_grad()
    def fit(self, x: Tensor, y: Tensor, *, epochs: int, batch_size: int, generator: torch.Generator) -> None:
        """Train exactly as ``Trainer.fit`` would with :meth:`training_step`, :meth:`configure_optimizers` and
        ``DataLoader(TensorDataset(x, y), batch_size, sampler=RandomSampler(x, generator=generator))``, but without
        the framework's per-step cost; x item-major [N, M, D], y [N].
        """
        n, lr, momentum = x.shape[0], self.lr, self.momentum
        sampler = RandomSampler(range(n), generator=generator)     # the DataLoader's item order, epoch by epoch
        w, b = self.weight, self.bias.unsqueeze(-1)
        onehot = F.one_hot(y, w.shape[1]).T.to(w.dtype)             # [C, N]
        buf = x.new_empty((min(batch_size, n), *x.shape[1:]))      # reused: no allocation per step
        vel_w = vel_b = None
        for _ in range(epochs):
            order = torch.as_tensor(list(sampler)).to(x.device)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                xb = torch.index_select(x, 0, idx, out=buf[:len(idx)]).transpose(0, 1)      # [M, B, D]
                grad = self.forward(xb).softmax(1).sub_(onehot[:, idx]).div_(len(idx))     # dLoss/dlogits
                if momentum == 0:
                    b.sub_(grad.sum(2, keepdim=True), alpha=lr)
                    w.baddbmm_(grad, xb, alpha=-lr)
                    continue
                gw, gb = torch.bmm(grad, xb), grad.sum(2, keepdim=True)
                vel_w = gw if vel_w is None else vel_w.mul_(momentum).add_(gw)
                vel_b = gb if vel_b is None else vel_b.mul_(momentum).add_(gb)
                w.sub_(vel_w, alpha=lr)
                b.sub_(vel_b, alpha=lr)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-head test accuracy (torchmetrics, micro) and mean cross-entropy (float64) for x [M, T, D], y [T]."""
        logits = self.forward(x)
        target = y.expand(logits.shape[0], -1)
        accuracy = multiclass_accuracy(logits, target, num_classes=logits.shape[1], average="micro",
                                       multidim_average="samplewise")
        return accuracy, F.cross_entropy(logits, target, reduction="none").double().mean(1)


@register_scorer("linear")
class LinearScorer(ProxyScorer):
    """Test accuracy of a linear head per model trained with mini-batch SGD on cross-entropy (paper §2.2, SHiFT).

    ``standardize`` scales each model's features by its own train mean/std, so lr 0.1 means the same for every
    model whatever its feature scale. Models are grouped by feature dim and trained together in chunks of at most
    ``max_chunk_bytes`` of stacked features (chunking never changes a score).
    """

    higher_is_better = True

    def __init__(self, *, epochs: int = 100, lr: float = 0.1, momentum: float = 0.0, batch_size: int = 64,
                 seed: int = 0, standardize: bool = True, max_chunk_bytes: int = 256 * 2**20):
        _check_option("epochs", epochs, _is_int(epochs, 1), "an integer >= 1")
        _check_option("lr", lr, isinstance(lr, (int, float)) and 0 < lr < math.inf, "a positive number")
        _check_option("momentum", momentum, isinstance(momentum, (int, float)) and 0 <= momentum < 1, "in [0, 1)")
        _check_option("batch_size", batch_size, _is_int(batch_size, 1), "an integer >= 1")
        _check_option("seed", seed, _is_int(seed, 0), "an integer >= 0")
        _check_option("max_chunk_bytes", max_chunk_bytes, _is_int(max_chunk_bytes, 1), "an integer >= 1")
        if not isinstance(standardize, bool):
            raise ConfigError(f"proxy scorer option standardize must be true or false, got {standardize!r}")
        self.epochs, self.lr, self.momentum, self.batch_size = epochs, float(lr), float(momentum), batch_size
        self.seed, self.standardize, self.max_chunk_bytes = seed, standardize, max_chunk_bytes

    def score(self, train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor],
              test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        """Test accuracy (score) and mean test cross-entropy of each model's trained linear head."""
        check_inputs(train, train_labels, test, test_labels, num_classes)
        by_dim: dict[int, list[str]] = defaultdict(list)
        for m in train:
            by_dim[train[m].shape[1]].append(m)
        out: dict[str, ProxyScore] = {}
        rows = len(train_labels) + len(test_labels)
        for dim, ids in by_dim.items():
            step = max(1, self.max_chunk_bytes // (rows * dim * 4))
            for i in range(0, len(ids), step):
                out.update(self._score_chunk(ids[i:i + step], train, train_labels, test, test_labels, num_classes))
        return {m: out[m] for m in train}

    def _score_chunk(self, ids: list[str], train: Mapping[str, Tensor], train_labels: Tensor,
                     test: Mapping[str, Tensor], test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        device, (n, dim), t = train[ids[0]].device, train[ids[0]].shape, len(test_labels)
        # A lone head gets a zero-feature partner: MKL runs a batch of one matrix through a different gemm path
        # (other rounding) than batches of two or more, whose slices agree up to rounding whatever the batch size.
        heads = max(2, len(ids))
        x = torch.empty(n, heads, dim, device=device)     # item-major train features: one gather per step
        xt = torch.empty(heads, t, dim, device=device)    # model-major test features
        x[:, len(ids):], xt[len(ids):] = 0, 0
        for j, m in enumerate(ids):
            a, b = train[m].to(device, torch.float32), test[m].to(device, torch.float32)
            if self.standardize:  # per model, from its own train features only
                mean, std = a.mean(0), a.std(0, correction=0)
                std = torch.where(std > 1e-6, std, torch.ones_like(std))
                a, b = (a - mean) / std, (b - mean) / std
            x[:, j], xt[j] = a, b
        probes = LinearProbes(heads, dim, num_classes, lr=self.lr, momentum=self.momentum, seed=self.seed)
        probes.to(device).fit(x, train_labels.to(device, torch.long), epochs=self.epochs, batch_size=self.batch_size,
                              generator=torch.Generator().manual_seed(self.seed))
        accuracy, loss = probes.evaluate(xt, test_labels.to(device, torch.long))
        return {m: ProxyScore(a, l) for m, a, l in zip(ids, accuracy.tolist(), loss.tolist())}


# ---------------------------------------------------------------------------------------------------------------------
# k-nearest neighbours


@register_scorer("knn")
class KNNScorer(ProxyScorer):
    """Test accuracy of a k-nearest-neighbour vote (cosine similarity to the train items); no training.

    Vote ties go to the class whose voters are more similar in sum; ``test_loss`` is the cross-entropy of the
    Laplace-smoothed vote shares. ``seed`` is accepted for a uniform interface and unused (kNN is deterministic).
    """

    higher_is_better = True

    def __init__(self, *, k: int = 5, seed: int = 0, chunk_items: int = 4096):
        _check_option("k", k, _is_int(k, 1), "an integer >= 1")
        _check_option("chunk_items", chunk_items, _is_int(chunk_items, 1), "an integer >= 1")
        self.k, self.seed, self.chunk_items = k, seed, chunk_items

    def score(self, train: Mapping[str, Tensor], train_labels: Tensor, test: Mapping[str, Tensor],
              test_labels: Tensor, num_classes: int) -> dict[str, ProxyScore]:
        """kNN test accuracy (score) and smoothed-vote cross-entropy of each model, computed per model."""
        check_inputs(train, train_labels, test, test_labels, num_classes)
        out = {}
        for m in train:
            a = F.normalize(train[m].float(), dim=1)
            b = F.normalize(test[m].float().to(a.device), dim=1)
            y, k = train_labels.to(a.device, torch.long), min(self.k, len(a))
            votes = torch.zeros(len(b), num_classes, device=a.device)
            sims = torch.zeros_like(votes)
            for s in range(0, len(b), self.chunk_items):
                top = (b[s:s + self.chunk_items] @ a.T).topk(k, dim=1)
                votes[s:s + self.chunk_items].scatter_add_(1, y[top.indices], torch.ones_like(top.values))
                sims[s:s + self.chunk_items].scatter_add_(1, y[top.indices], top.values)
            # votes first; a class's similarity sum lies in [-votes, votes], so (2k+1)·votes + sims + k orders ties
            key = votes * (2 * k + 1) + sims + k
            target = test_labels.to(a.device, torch.long)
            accuracy = multiclass_accuracy(key, target, num_classes=num_classes, average="micro")
            loss = F.nll_loss(((votes + 1) / (k + num_classes)).log(), target)
            out[m] = ProxyScore(float(accuracy), float(loss))
        return out
