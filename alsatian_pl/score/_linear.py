"""The linear probe (paper §2.2, SHiFT): one linear head per model, all heads of a round trained together, with the
loss of the task: cross-entropy (multiclass), binary cross-entropy of logits (multilabel), squared error on
standardised targets (regression)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import RandomSampler

from . import register_scorer
from ._base import TASKS, ProxyScore, ProxyScorer, _check_option, _is_int, _model_chunks, binomial_stderr, check_inputs
from ._confidence import with_replicates
from ._metrics import metric_replicates, task_loss, task_metric
from ..errors import ConfigError


DIVERGED = 1000  # a head whose mean test loss exceeds this times an untrained head's (ln C, ln 2, 1) diverged
STEP_CURVATURE = 0.5  # regression: features scaled so that lr times the largest curvature of the squared error is
#                       at most this (plain SGD on a squared error diverges above 2)


def _init_seed(seed: int, dim: int) -> int:
    return (seed * 1_000_003 + dim) % 2**63


def dual_is_cheaper(n: int, dim: int, classes: int, epochs: int) -> bool:
    """Whether the dual fit takes no more FLOPs per head than the primal (Gram 2N²D + steps 2N²CE against 4NDCE;
    measured on CPU it is then also no slower) with a Gram [N, N] no larger than the features [N, D]."""
    return n <= dim and n * (dim + classes * epochs) <= 2 * dim * classes * epochs


def _dlogits(logits: Tensor, targets: Tensor, idx: Tensor, task: str = "multiclass") -> Tensor:
    """dLoss/dlogits [M, C, B] of each head's loss, mean over the batch ``idx`` of its items' loss summed over the
    outputs: softmax minus one-hot (cross-entropy), sigmoid minus the labels (binary cross-entropy), the outputs
    minus the targets (half the squared error); ``targets`` item-major [N, C]. torch's CPU softmax over a middle dim
    splits its work across threads by M·B and runs a chunk's tail scalar, so a head's rounding can depend on M when B
    is not a multiple of the vector width (a row-wise softmax over a [M, B, C] copy would not, but costs ~15x more at
    C=10)."""
    out = logits.softmax(1) if task == "multiclass" else logits.sigmoid() if task == "multilabel" else logits
    return out.sub_(torch.index_select(targets, 0, idx).T).div_(len(idx))


def _counted(batches: Iterable[Tensor], step: Callable[[], None] | None) -> Iterator[Tensor]:
    """``batches``, calling ``step`` once each has been used (after its SGD step)."""
    for idx in batches:
        yield idx
        if step is not None:
            step()


def _sgd_(param: Tensor, grad: Tensor, vel: Tensor | None, lr: float, momentum: float) -> Tensor | None:
    """One torch.optim.SGD step on ``param`` in place (no dampening/weight decay); returns the momentum buffer."""
    if momentum:
        grad = grad if vel is None else vel.mul_(momentum).add_(grad)
    param.sub_(grad, alpha=lr)
    return grad if momentum else None


class LinearProbes(L.LightningModule):
    """The linear heads of M models with D-dim features, stacked (``weight`` [M, C, D] as in nn.Linear, ``bias``
    [M, C]) and trained together with batched matmuls.

    Every head starts from the same init drawn from ``seed`` and D (nn.Linear's U(±1/√D) range), and each head's
    arithmetic is its own slice of every batched op, so a head trains the same in any batch of two or more heads up
    to float rounding: observed so far, identical accuracy and test loss within 1e-7 relative between batches of 3
    and 8 heads (on CPU/MKL a batch of one takes another gemm path; :class:`LinearScorer` pads it to two; the
    softmax is the one op seen to round a head differently by batch, see :func:`_dlogits`).
    """

    def __init__(self, num_models: int, dim: int, num_classes: int, *, lr: float = 0.1, momentum: float = 0.0,
                 seed: int = 0, task: str = "multiclass"):
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"LinearProbes task must be one of {', '.join(TASKS)}, got {task!r}")
        self.lr, self.momentum, self.task = lr, momentum, task
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
        """Sum over heads of each head's loss (mean over the batch of the item's loss summed over the outputs), so
        each head gets its own gradient; batch = (x [B, M, D], y [B] or [B, C]) as a DataLoader over item-major
        features yields it."""
        x, y = batch
        logits = self(x.transpose(0, 1))                                        # [M, C, B]
        if self.task == "multiclass":
            return F.cross_entropy(logits, y.expand(x.shape[1], -1), reduction="sum") / x.shape[0]
        target = y.T.expand(x.shape[1], -1, -1)
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / x.shape[0]
        return (logits - target).square().sum() / (2 * x.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD over all heads (per-element updates, so heads stay independent)."""
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)

    @torch.no_grad()
    def fit(self, x: Tensor, y: Tensor, *, epochs: int, batch_size: int, generator: torch.Generator,
            step: Callable[[], None] | None = None) -> None:
        """Train exactly as ``Trainer.fit`` would with :meth:`training_step`, :meth:`configure_optimizers` and
        ``DataLoader(TensorDataset(x, y), batch_size, sampler=RandomSampler(x, generator=generator))``, but without
        the framework's per-step cost; x item-major [N, M, D], y [N] (class ids) or [N, C] (labels, targets);
        ``step`` is called after each SGD step.

        Runs the primal form (per step: gather the batch, forward and weight-gradient GEMMs over D) or, when
        :func:`dual_is_cheaper`, the same SGD in the dual form (:meth:`_fit_dual`); the choice depends on the
        shapes only, never on which heads train together. The primal form is bit-identical to the pre-#18 fit; the
        dual equals it up to float rounding (bench/bench_probe.py --drift: accuracy identical, test loss within
        ~3e-7 absolute at M=24, D=512/1280, N=150..500, 100 epochs).
        """
        n = x.shape[0]
        sampler = RandomSampler(range(n), generator=generator)     # the DataLoader's item order, epoch by epoch
        # item-major [N, C]: a step gathers its batch's rows (gathering columns of a [C, N] view took 0.7 s a step
        # at C = N = 10,000, most of a 10,000-class search's scoring)
        onehot = (F.one_hot(y, self.weight.shape[1]) if self.task == "multiclass" else y).to(self.weight.dtype)
        batches = _counted((idx for _ in range(epochs)
                            for idx in torch.tensor(list(sampler), device=x.device).split(batch_size)), step)
        if dual_is_cheaper(n, x.shape[2], onehot.shape[1], epochs):
            self._fit_dual(x, onehot, batches, batch_size)
        else:
            self._fit_primal(x, onehot, batches, batch_size)

    def _fit_primal(self, x: Tensor, onehot: Tensor, batches: Iterable[Tensor], batch_size: int) -> None:
        """SGD on W [M, C, D] directly: per step one gather of the batch's features and two GEMMs over D."""
        lr, momentum, w, b = self.lr, self.momentum, self.weight, self.bias.unsqueeze(-1)
        buf = x.new_empty((min(batch_size, x.shape[0]), *x.shape[1:]))      # reused: no allocation per step
        vel_w = vel_b = None
        for idx in batches:
            xb = torch.index_select(x, 0, idx, out=buf[:len(idx)]).transpose(0, 1)      # [M, B, D]
            grad = _dlogits(self.forward(xb), onehot, idx, self.task)
            vel_b = _sgd_(b, grad.sum(2, keepdim=True), vel_b, lr, momentum)
            if momentum == 0:
                w.baddbmm_(grad, xb, alpha=-lr)                     # gradient GEMM fused with the update
            else:
                vel_w = _sgd_(w, torch.bmm(grad, xb), vel_w, lr, momentum)

    def _fit_dual(self, x: Tensor, onehot: Tensor, batches: Iterable[Tensor], batch_size: int) -> None:
        """The same SGD with each head's weight kept as W0 + A·X (every update is a sum of rows of X): with the
        Gram K = X·Xᵀ [M, N, N] computed once, a step's logits are W0·Xbᵀ + b + A·K[batch]ᵀ (a GEMM over N, not D)
        and its update only writes A's batch columns; W = W0 + A·X at the end."""
        lr, momentum, b = self.lr, self.momentum, self.bias.unsqueeze(-1)
        xm = x.transpose(0, 1)                                                  # [M, N, D]
        gram = torch.bmm(xm, xm.transpose(1, 2)).transpose(0, 1).contiguous()  # item-major K [N, M, N]
        base = torch.bmm(self.weight, xm.transpose(1, 2))                       # W0·Xᵀ [M, C, N]
        coef = torch.zeros_like(base)                                           # A
        buf = gram.new_empty((min(batch_size, x.shape[0]), *gram.shape[1:]))    # reused: no allocation per step
        vel_a = vel_b = None
        for idx in batches:
            kb = torch.index_select(gram, 0, idx, out=buf[:len(idx)]).permute(1, 2, 0)    # K[:, batch]ᵀ [M, N, B]
            logits = torch.baddbmm(torch.index_select(base, 2, idx).add_(b), coef, kb)
            grad = _dlogits(logits, onehot, idx, self.task)
            vel_b = _sgd_(b, grad.sum(2, keepdim=True), vel_b, lr, momentum)
            if momentum == 0:
                coef.index_add_(2, idx, grad, alpha=-lr)
            else:
                vel_a = _sgd_(coef, torch.zeros_like(coef).index_add_(2, idx, grad), vel_a, lr, momentum)
        self.weight.baddbmm_(coef, xm)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-head test metric (torchmetrics: accuracy, macro average precision or R², ``_metrics``) and mean
        test loss (float64) for x [M, T, D], y [T] or [T, C]; head by head on a row-major [T, C] copy of its
        logits, so a head's numbers never depend on M (see :func:`_dlogits`)."""
        logits = self.forward(x)
        metric = torch.empty(len(logits), dtype=torch.float64)
        loss = torch.empty(len(logits), dtype=torch.float64)
        for h in range(len(logits)):
            preds = logits[h].T.contiguous()
            metric[h] = task_metric(self.task, preds, y)
            loss[h] = task_loss(self.task, preds, y).mean()
        return metric, loss


@register_scorer("linear")
class LinearScorer(ProxyScorer):
    """The test metric of a linear head per model trained with mini-batch SGD (paper §2.2, SHiFT), by task:
    multiclass accuracy (cross-entropy), multilabel macro average precision over the labels the test items show
    (binary cross-entropy of logits), regression R² averaged over the targets (squared error on the targets
    standardised with the training items' mean and std; each model's features are further scaled so that lr times
    the squared error's largest curvature is at most ``STEP_CURVATURE``, which plain SGD needs to converge).

    ``standardize`` scales each model's features by its own train mean/std, so lr 0.1 means the same for every
    model whatever its feature scale. Models are grouped by feature dim and trained together in chunks of at most
    ``max_chunk_bytes`` of stacked features (chunking never changes a score). An accuracy carries the binomial
    standard error over the test items (``ProxyScore.stderr``). Confidence: the jackknife leaves out groups of test
    items of the trained heads' predictions; accuracy is a mean of per-item hits, average precision and R² are not,
    so their replicates compute the metric again on the items each keeps (``_metrics.metric_replicates``).
    """

    tasks = frozenset(TASKS)
    higher_is_better = True
    reports_stderr = True
    gives_replicates = True

    @property
    def score_range(self) -> tuple[float, float]:  # type: ignore[override]
        """Accuracy and average precision lie in [0, 1]; R² at most 1."""
        return (-math.inf, 1.0) if self.task == "regression" else (0.0, 1.0)
    probes_class: type[LinearProbes] = LinearProbes  # the heads' module (a subclass may train them another way)

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
        """The test metric (score) and mean test loss of each model's trained linear head."""
        check_inputs(train, train_labels, test, test_labels, num_classes, self.task)
        if self.task == "regression":  # targets standardised with the training items' mean and std
            mean, std = train_labels.mean(0), train_labels.std(0, correction=0)
            std = torch.where(std > 1e-12, std, torch.ones_like(std))
            train_labels, test_labels = (train_labels - mean) / std, (test_labels - mean) / std
        out: dict[str, ProxyScore] = {}
        chunks = list(_model_chunks(train, len(train_labels) + len(test_labels), self.max_chunk_bytes, 4))
        if self.progress is not None:
            self.progress.start(len(chunks) * self.epochs * math.ceil(len(train_labels) / self.batch_size),
                                "probe SGD steps")
        for ids in chunks:
            out.update(self._score_chunk(ids, train, train_labels, test, test_labels, num_classes))
        return {m: out[m] for m in train}

    def working_bytes(self, train_rows: int, test_rows: int, dims: Mapping[str, int], num_classes: int) -> int:
        """The largest chunk's stacked features and its probes' training or evaluation buffers (or the input
        checks' masks, if larger); see :func:`_chunk_bytes`."""
        n, t = train_rows, test_rows
        shapes = {m: torch.empty(0, d, device="meta") for m, d in dims.items()}
        chunks = [(max(2, len(ids)), dims[ids[0]]) for ids in _model_chunks(shapes, n + t, self.max_chunk_bytes, 4)]
        checks = max(n, t) * max(dims.values(), default=0)  # torch.isfinite's bool mask, one model at a time
        return max([checks, *(self._chunk_bytes(h, d, n, t, num_classes) for h, d in chunks)])

    def _chunk_bytes(self, h: int, d: int, n: int, t: int, c: int) -> int:
        """Bytes of one chunk of ``h`` heads of dim ``d``: the stacked train and test features, one model's float32
        copy and statistics, the heads, then the larger of training (labels' one-hot, epoch order, and the primal's
        batch and logits or the dual's Gram, its transposed copy and coefficients; momentum buffers) and evaluation
        (logits, per head the metric's copies and the loss's contiguous copy and log-softmax: measured per task)."""
        b = min(self.batch_size, n)
        stacked = 4 * (h * d * (n + t) + (n + t) * d + 4 * d) + 4 * (2 * h * c * d + c * d + 2 * h * c)
        steps = 3 * 4 * h * c * b + 4 * h * c
        if dual_is_cheaper(n, d, c, self.epochs):
            fit = 2 * 4 * h * n * n + 2 * 4 * h * c * n + 4 * b * h * n + steps + (2 * 4 * h * c * n if self.momentum else 0)
        else:
            fit = 4 * b * h * d + steps + (2 * 4 * h * c * d if self.momentum else 0)
        fit += 12 * n * c + 8 * n
        if self.task == "regression":  # standardised targets, the power iteration's vectors
            fit += 8 * (n + t) * c + 8 * n * h + 16 * h * d
        per_item = 16 if self.task == "multiclass" else 40  # the metric's and loss's [T, C] copies, per class
        evaluate = 4 * h * c * t + 8 * h * t + 4 * h + per_item * t * c
        return stacked + max(fit, evaluate)

    def _check_converged(self, ids: list[str], losses: list[float], num_classes: int) -> None:
        """ConfigError naming the learning rate when a head diverged: a test loss that is not finite or above
        DIVERGED times an untrained head's (ln C; ln 2 per label; 1 per standardised target), which no trained head
        reaches (a score would be noise)."""
        untrained = {"multiclass": math.log(num_classes), "multilabel": math.log(2), "regression": 1.0}[self.task]
        bad = [m for m, l in zip(ids, losses) if not (math.isfinite(l) and l <= DIVERGED * untrained)]
        if bad:
            raise ConfigError(f"the linear probe diverged for {len(bad)} model(s) ({bad[0]}: mean test loss "
                              f"{losses[ids.index(bad[0])]:.3g}) with lr={self.lr:g}: lower "
                              "search.scorer.kwargs.lr (0.1 is the default)")

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
            if self.standardize:  # per model, from its own train features only; (a - mean) / std written in place
                mean, std = a.mean(0), a.std(0, correction=0)
                std = torch.where(std > 1e-6, std, torch.ones_like(std))
                torch.sub(a, mean, out=x[:, j]).div_(std)
                torch.sub(b, mean, out=xt[j]).div_(std)
            else:
                x[:, j], xt[j] = a, b
        if self.task == "regression":
            self._bound_curvature(x, xt)
        probes = self.probes_class(heads, dim, num_classes, lr=self.lr, momentum=self.momentum, seed=self.seed,
                                   task=self.task)
        kind = torch.long if self.task == "multiclass" else torch.float32
        probes.to(device).fit(x, train_labels.to(device, kind), epochs=self.epochs, batch_size=self.batch_size,
                              generator=torch.Generator().manual_seed(self.seed),
                              **({} if self.progress is None else {"step": self.progress.advance}))
        target = test_labels.to(device, kind)
        metric, loss = probes.evaluate(xt, target)
        self._check_converged(ids, loss[:len(ids)].tolist(), num_classes)
        scores = {m: ProxyScore(a, l, binomial_stderr(a, t) if self.task == "multiclass" else None)
                  for m, a, l in zip(ids, metric.tolist(), loss.tolist())}
        if not self.jackknife:
            return scores
        with torch.no_grad():
            preds = probes(xt)[:len(ids)].transpose(1, 2)           # [M, T, C]: the heads' test predictions
        replicates = metric_replicates(ids, preds, target, self.task, self.seed, self.jackknife)
        return scores if replicates is None else with_replicates(scores, replicates)

    def _bound_curvature(self, x: Tensor, xt: Tensor, iterations: int = 30) -> None:
        """Scale each head's train x [N, M, D] and test xt [M, T, D] features in place so that lr times the largest
        eigenvalue of its XᵀX/N (power iteration from a seeded start; a head's own slice of every op) is at most
        ``STEP_CURVATURE``; features already within it are left as they are."""
        n = x.shape[0]
        gen = torch.Generator().manual_seed(_init_seed(self.seed, x.shape[2]))
        v = torch.randn(x.shape[2], generator=gen).to(x.device).expand(x.shape[1], -1).contiguous()  # [M, D]
        top = torch.zeros(x.shape[1], device=x.device)
        for _ in range(iterations):
            v = torch.einsum("nmd,nm->md", x, torch.einsum("nmd,md->nm", x, v)) / n
            top = v.norm(dim=1)
            v = v / top.clamp_min(1e-30).unsqueeze(1)
        scale = (STEP_CURVATURE / (self.lr * top).clamp_min(STEP_CURVATURE)).sqrt()  # 1 where already small
        x.mul_(scale.view(1, -1, 1))
        xt.mul_(scale.view(-1, 1, 1))


