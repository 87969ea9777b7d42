"""Search, then fine-tune: hand the search's winner to a Lightning ``Trainer`` (the paper's hand-off stage).

``FinetuneCallback`` runs the search (or reads a finished search's ``results.json``) when ``trainer.fit`` sets up,
and installs the winner's blocks from the :class:`BlockStore` plus a fresh linear head into a
:class:`FinetuneModule`, before Lightning configures the optimizers. ``SafetensorsCheckpoint`` writes the result as
``finetuned.safetensors`` with its provenance; :func:`load_finetuned` reads it back without the store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor, nn
from torchmetrics import Metric, R2Score
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision

from .blocks import skeleton
from .checks import whole
from .errors import AlsatianWarning, ConfigError, CorruptFileError, DataError, StoreError
from .io import atomic_write, read_json
from .store import BlockStore, ModelManifest, block_tensors, materialize
from .zoo import model_tokenizer

__all__ = ["FinetuneModule", "FinetuneCallback", "confirm", "confirm_candidates", "SafetensorsCheckpoint",
           "save_finetuned", "load_finetuned", "make_head", "read_results", "METRIC_KEYS"]

CHECKPOINT_FORMAT = "alsatian-finetuned-v1"
METRIC_KEYS = {"multiclass": "acc", "multilabel": "ap", "regression": "r2"}  # logged as train/<key>, val/<key>
OptimizerFactory = Callable[[Any], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def make_head(feature_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """A fresh linear classifier over the flattened pre-logits features (as the search's linear probe sees them)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(feature_shape), num_classes))


def task_metric(task: str, outputs: int) -> Metric:
    """The fine-tune's metric of a task (torchmetrics): accuracy, macro average precision or R² (uniform average)."""
    if task == "multilabel":
        return MultilabelAveragePrecision(outputs, average="macro")
    if task == "regression":
        return R2Score(multioutput="uniform_average")
    return MulticlassAccuracy(outputs, average="micro")


def own_storage(module: nn.Module) -> None:
    """Replace every parameter and buffer of ``module`` by a copy with storage of its own (same values, same
    ``requires_grad``)."""
    for m in module.modules():
        for n, p in m._parameters.items():
            if p is not None:
                m._parameters[n] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
        for n, b in m._buffers.items():
            if b is not None:
                m._buffers[n] = b.clone()


class FinetuneModule(L.LightningModule):
    """``backbone`` (the stored blocks, an ``nn.Sequential``) → ``head`` (linear); ``None`` until :meth:`install`.

    The task (``install``'s, recorded in the provenance) sets loss and metric: cross-entropy and accuracy
    (multiclass), binary cross-entropy of logits and macro average precision (multilabel), squared error on the
    targets standardised with the training items' mean and std and R² (regression; :meth:`forward` gives the
    predictions in the targets' units). The metric is logged as ``train/<key>`` and ``val/<key>``, ``key`` from
    :data:`METRIC_KEYS` (``acc``, ``ap``, ``r2``; :attr:`metric_key`).

    ``train_blocks``: how many of the backbone's last blocks train (0: head only; ``-1`` or ``"all"``: every block);
    frozen blocks keep ``requires_grad=False`` and stay in eval mode, so neither their weights nor their BatchNorm
    statistics change. ``optimizer``/``scheduler`` are factories (Hydra ``_partial_: true``) called with the trainable
    parameters / the optimizer; the scheduler steps once per epoch.
    """

    def __init__(self, optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None,
                 train_blocks: int | str = 0):
        super().__init__()
        self.optimizer_factory = optimizer or (lambda params: torch.optim.AdamW(params, lr=1e-3))
        self.scheduler_factory = scheduler
        self.train_blocks = -1 if train_blocks in ("all", None) else whole(
            "finetune.train_blocks", train_blocks, at_least=-1, hint=" (blocks to train; 0: head only), or all")
        self.backbone: nn.Sequential | None = None
        self.head: nn.Module | None = None
        self.provenance: dict[str, Any] = {}
        self.frozen_blocks = 0
        self.task = "multiclass"
        self.register_buffer("target_mean", torch.zeros(0), persistent=False)  # regression: the targets' scale
        self.register_buffer("target_std", torch.ones(0), persistent=False)

    @property
    def metric_key(self) -> str:
        """The name its metric is logged under (``val/<key>``): ``acc``, ``ap`` or ``r2``."""
        return METRIC_KEYS[self.task]

    # -- installation
    def install(self, backbone: nn.Sequential, head: nn.Module, num_classes: int,
                provenance: dict[str, Any] | None = None, task: str = "multiclass",
                target_scale: tuple[list[float], list[float]] | None = None) -> None:
        """Put the blocks and the head in place, add the task's metrics and apply the freezing rule; regression
        needs ``target_scale`` (the training targets' mean and std). Each tensor of the backbone gets storage of
        its own (the store loads a block's tensors as views of one buffer, which share one autograd version
        counter, so a BatchNorm statistic updated in place would fail the weights' backward)."""
        if task not in METRIC_KEYS:
            raise ConfigError(f"fine-tuning task must be one of {', '.join(METRIC_KEYS)}, got {task!r}")
        if task == "regression" and target_scale is None:
            raise ConfigError("fine-tuning a regression task needs the training targets' mean and std (target_scale)")
        own_storage(backbone)
        self.backbone, self.head, self.task = backbone, head, task
        self.train_acc, self.val_acc = task_metric(task, num_classes), task_metric(task, num_classes)
        if target_scale is not None:
            self.target_mean, self.target_std = (torch.tensor(v, dtype=torch.float32) for v in target_scale)
        self.provenance = {**dict(provenance or {}), "task": task}
        if target_scale is not None:
            self.provenance["target_scale"] = {"mean": list(target_scale[0]), "std": list(target_scale[1])}
        n = len(backbone)
        if self.train_blocks > n:
            rank_zero_warn(f"finetune.train_blocks={self.train_blocks}, but the backbone has {n} blocks: all of them "
                           "train (set finetune.train_blocks=all to say so)", category=AlsatianWarning)
        first = 0 if self.train_blocks < 0 else max(0, n - self.train_blocks)
        for i, block in enumerate(backbone):
            block.requires_grad_(i >= first)
        self.frozen_blocks = first
        self.train(self.training)

    @property
    def installed(self) -> bool:
        return self.backbone is not None and self.head is not None

    def train(self, mode: bool = True) -> "FinetuneModule":
        """Like ``nn.Module.train``, but frozen blocks always stay in eval mode."""
        super().train(mode)
        if self.backbone is not None:
            for block in list(self.backbone)[:self.frozen_blocks]:
                block.eval()
        return self

    # -- Lightning
    def forward(self, x: Tensor) -> Tensor:
        """Logits (multiclass, multilabel) or predicted targets in their own units (regression)."""
        out = self._outputs(x)
        return out * self.target_std + self.target_mean if self.task == "regression" else out

    def _outputs(self, x: Tensor) -> Tensor:
        if not self.installed:
            raise ConfigError("FinetuneModule has no backbone yet: add FinetuneCallback to the Trainer's callbacks "
                              "(or call install) before using it")
        return self.head(self.backbone(x))  # type: ignore[misc]

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        out = self._outputs(x)
        if self.task == "multiclass":
            loss = F.cross_entropy(out, y)
        elif self.task == "multilabel":
            loss = F.binary_cross_entropy_with_logits(out, y)
        else:
            y = (y - self.target_mean) / self.target_std  # R² is the same in standardised units
            loss = F.mse_loss(out, y)
        metric = self.train_acc if stage == "train" else self.val_acc
        if self.task == "multilabel":
            metric(out, y.long())
        else:
            metric(out.squeeze(1) if out.shape[1:] == (1,) and self.task == "regression" else out,
                   y.squeeze(1) if self.task == "regression" and y.shape[1:] == (1,) else y)
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(y))
        self.log(f"{stage}/{self.metric_key}", metric, prog_bar=True, on_step=False, on_epoch=True,
                 batch_size=len(y))
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        """The optimizer over the trainable parameters only (installed by then: Lightning calls this after setup)."""
        if not self.installed:
            raise ConfigError("FinetuneModule was not installed before the optimizers were configured: add "
                              "FinetuneCallback to the Trainer's callbacks")
        opt = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(opt), "interval": "epoch"}}


class FinetuneCallback(L.Callback):
    """On ``setup`` of ``trainer.fit``: find the model and install its blocks plus a fresh head into the module.

    The model is ``model`` if given, else the winner of the search ``search(datamodule)`` runs now (it returns the
    search's report, e.g. ``app.run_search``'s; ``results`` then names the results.json it writes), else of the
    finished search in ``results`` (a results.json path). Blocks load from ``store_root`` (default: the searched
    config's ``store.root``). The head has ``trainer.datamodule.num_classes`` outputs; a text model whose tokenizer
    differs from the dataset's trains on its own tokenizer's items (the data module's ``loader_tokenizer``). The
    module must be a :class:`FinetuneModule` that is not yet installed. ``on_search`` is called with the report of a
    search this callback ran (e.g. ``app.print_report``); ``config`` (the run's configuration) goes into the
    provenance.
    """

    def __init__(self, search: Callable[[Any], dict[str, Any]] | None = None, results: str | Path | None = None,
                 model: str | None = None, store_root: str | Path | None = None,
                 on_search: Callable[[dict[str, Any]], None] | None = None, config: Any = None,
                 report: dict[str, Any] | None = None, confirmation: dict[str, Any] | None = None):
        if search is None and results is None and report is None and (model is None or store_root is None):
            raise ConfigError("FinetuneCallback needs a search, a results.json path, or a model and a store")
        self.search, self.results, self.model = search, (None if results is None else Path(results)), model
        self.store_root, self.on_search = store_root, on_search
        self.config, self.confirmation = config, confirmation  # confirmation: how short fine-tunes chose ``model``
        self.report: dict[str, Any] | None = report  # a search's report already at hand (its winner, unless model)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or getattr(pl_module, "installed", False):
            return
        if not isinstance(pl_module, FinetuneModule):
            raise ConfigError(f"FinetuneCallback installs into a FinetuneModule, got {type(pl_module).__name__}")
        report = self._report(trainer.datamodule)
        name = self.model or (report["ranking"][0]["model"] if report else None)
        root = self.store_root or (report or {}).get("config", {}).get("store", {}).get("root")
        if name is None or root is None:
            raise ConfigError("no model to fine-tune: the search ranked nothing, or no store root is known")
        store = BlockStore(root)
        manifest = store.manifest(name)
        data = trainer.datamodule
        if data is None or not hasattr(data, "num_classes"):
            raise ConfigError("fine-tuning needs trainer.fit(module, datamodule=SearchDataModule(...))")
        if getattr(data, "tokenizer_key", None) is not None:  # text: the loaders serve the winner's tokenizer's items
            data.loader_tokenizer = model_tokenizer(store, manifest, data.tokenizer_key)
            x, _ = data.test_items(data.loader_tokenizer)
        else:
            x, _ = data.test_items() if hasattr(data, "test_items") else next(iter(data.val_dataloader()))
        if tuple(x.shape[1:]) != tuple(manifest.input_size):
            raise DataError(f"model {name} expects inputs of size {list(manifest.input_size)} but the data module "
                            f"prepares {list(x.shape[1:])}; set dataset.image_size (text: dataset.max_length) to "
                            f"{manifest.input_size[-1]}")
        searched, ours = (report or {}).get("dataset", {}), data.describe() if hasattr(data, "describe") else {}
        keys = [k for k in ("name", "items", "seed") if k in searched and k in ours]
        if any(searched[k] != ours[k] for k in keys):
            rank_zero_warn(f"the search ranked the models on dataset {[searched[k] for k in keys]} ({keys}) but "
                           f"fine-tuning uses {[ours[k] for k in keys]}: the ranking may not carry over, and test "
                           "items of one may be training items of the other")
        backbone = store.load_model(name)
        head = make_head(manifest.blocks[-1].out_shape, data.num_classes)
        task = getattr(data, "task", "multiclass")
        ranked = {r["model"]: (i + 1, r["score"]) for i, r in enumerate((report or {}).get("ranking", []))}
        provenance = {
            "model": name, "search_rank": ranked.get(name, (None, None))[0],
            "proxy_score": ranked.get(name, (None, None))[1],
            "results": None if self.results is None else str(self.results.resolve()), "store_root": str(root),
            "manifest": manifest.to_json(), "num_classes": data.num_classes,
            "class_names": list(getattr(data, "class_names", [])), "train_blocks": pl_module.train_blocks,
            "config": self.config,
            "search_config": (report or {}).get("config"),
            "confirmation": self.confirmation,
        }
        pl_module.install(backbone, head, data.num_classes, provenance, task, _target_scale(data, task))

    def _report(self, data: Any = None) -> dict[str, Any] | None:
        """The search's results.json contents: produced by running ``search`` now (unless ``model`` is given; on the
        trainer's data module, so the prepared items are reused), or read from ``results``."""
        if self.report is None and self.search is not None:
            if self.model is None:
                self.report = self.search(data)
                if self.on_search is not None:
                    self.on_search(self.report)
        elif self.report is None and self.results is not None:
            if not self.results.is_file():
                raise ConfigError(f"search results {self.results} do not exist: run search.py first, or leave "
                                  "finetune.results empty to search now")
            self.report = read_results(self.results)
        return self.report


def _target_scale(data: Any, task: str) -> tuple[list[float], list[float]] | None:
    """Regression: the training targets' mean and std per target (a std of 0 counts as 1); else None."""
    if task != "regression":
        return None
    y = data.train_items()[1].double()
    std = y.std(0, correction=0)
    return y.mean(0).tolist(), torch.where(std > 1e-12, std, torch.ones_like(std)).tolist()


def confirm_candidates(report: dict[str, Any], top_k: int | str) -> list[str]:
    """The models short fine-tunes confirm: the ranking's first ``top_k``, or with ``"confident"`` the search's
    confident set (ConfigError when the search computed none)."""
    if top_k == "confident":
        chosen = report.get("confident_set")
        if not chosen:
            raise ConfigError("finetune.confirm_top_k=confident needs the search's confident set, and this search "
                              "has none (search.confidence=null, or its scorer gives no uncertainty): set "
                              "search.confidence=0.9 or give a number, e.g. finetune.confirm_top_k=3")
        return list(chosen)
    return [r["model"] for r in report["ranking"][:whole("finetune.confirm_top_k", top_k, hint=" or confident")]]


def confirm(candidates: list[str], fit: Callable[[str], float], report: dict[str, Any] | None = None,
            epochs: int | None = None) -> dict[str, Any]:
    """Short fine-tunes of ``candidates`` (``fit(model)``: one's validation accuracy after ``epochs``), the winner by
    that accuracy (ties and NaN: the earlier candidate); the record that goes into the checkpoint's provenance."""
    ranked = {r["model"]: (i + 1, r["score"]) for i, r in enumerate((report or {}).get("ranking", []))}
    rows = [{"model": m, "search_rank": ranked.get(m, (None, None))[0], "proxy_score": ranked.get(m, (None, None))[1],
             "val_acc": fit(m)} for m in candidates]
    best = max(rows, key=lambda r: (not math.isnan(r["val_acc"]), r["val_acc"], -candidates.index(r["model"])))
    return {"candidates": rows, "epochs": epochs, "search_winner": candidates[0], "winner": best["model"],
            "winner_val_acc": best["val_acc"], "confident_set": (report or {}).get("confident_set")}


def read_results(path: str | Path) -> dict[str, Any]:
    """A finished search's ``results.json``, checked to hold a ranking of models; CorruptFileError saying what to do
    when it is damaged (e.g. truncated) or holds no ranking."""
    fix = "run search.py again, or leave finetune.results empty to search now"
    report = read_json(path, "search results", fix)
    ranking = report.get("ranking") if isinstance(report, dict) else None
    if not isinstance(ranking, list) or not ranking or not all(
            isinstance(r, dict) and isinstance(r.get("model"), str) for r in ranking):
        raise CorruptFileError(f"search results {path} hold no ranking of models; {fix}")
    return report


# ------------------------------------------------------------------------------------------------- checkpoints
def save_finetuned(module: FinetuneModule, path: str | Path, **extra: Any) -> Path:
    """Write the backbone and head tensors to a safetensors file; metadata: provenance plus ``extra`` (as JSON)."""
    if not module.installed:
        raise ConfigError("nothing to save: the FinetuneModule has no backbone")
    tensors = {f"backbone.{k}": v for k, v in block_tensors(module.backbone).items()}
    tensors.update({f"head.{k}": v for k, v in block_tensors(module.head).items()})
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in tensors.items() if v.is_floating_point()}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        first = next(iter(bad))
        raise DataError(f"fine-tuning diverged: {sum(bad.values())} weights are NaN or infinite ({first} first), so "
                        f"nothing was saved to {path}. Lower finetune.optimizer.lr or set trainer.gradient_clip_val")
    meta = {"format": CHECKPOINT_FORMAT, "provenance": json.dumps({**module.provenance, **extra}, default=str),
            "head_shape": json.dumps(list(module.head[-1].weight.shape))}
    return atomic_write(path, st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta))


def load_finetuned(path: str | Path) -> FinetuneModule:
    """A fine-tuned model saved by :func:`save_finetuned`, in eval mode, ``provenance`` restored; needs no store."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise StoreError(f"cannot read fine-tuned checkpoint {path}: {exc}; fine-tune again (train.py) to write "
                         "it anew") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(f"{path} is not a fine-tuned alsatian-pl checkpoint (format {meta.get('format')!r})")
    try:
        prov = json.loads(meta["provenance"])
        manifest = ModelManifest.from_json(prov["manifest"])
        num_classes, in_features = json.loads(meta["head_shape"])
        with torch.device("meta"):
            head = make_head((in_features,), num_classes)
        parts = materialize(nn.ModuleDict({"backbone": nn.Sequential(*skeleton(manifest.recipe)), "head": head}),
                            tensors)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise StoreError(f"fine-tuned checkpoint {path} is damaged ({exc!r}); fine-tune again (train.py) to write "
                         "it anew") from None
    module = FinetuneModule(train_blocks=prov.get("train_blocks", 0))
    scale = prov.get("target_scale")
    module.install(parts["backbone"], parts["head"], num_classes, prov, prov.get("task", "multiclass"),
                   None if scale is None else (scale["mean"], scale["std"]))
    return module.eval()


class SafetensorsCheckpoint(L.Callback):
    """At the end of ``fit``, write the fine-tuned model to ``path`` (see :func:`save_finetuned`), with the final
    logged metrics added to its provenance."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and isinstance(pl_module, FinetuneModule):
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            save_finetuned(pl_module, self.path, metrics=metrics, epochs=trainer.current_epoch)
