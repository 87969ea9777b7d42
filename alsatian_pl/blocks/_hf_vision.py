"""Hugging Face vision encoders (``transformers`` ViTModel, DeiTModel, Dinov2Model, BeitModel, ConvNextModel,
SwinModel): the embeddings, each layer (ConvNeXt: each downsampling and each layer; Swin: each layer and each patch
merging), then the final norm and pooling.

Composing the blocks equals the features the model's ``*ForImageClassification`` head reads (:func:`hf_features`):
the CLS token of the normed last hidden state (ViT, DeiT), CLS and mean patch token side by side (DINOv2), the pooler
output (BEiT, ConvNeXt, Swin); so a fine-tuned folder's ``classifier`` is its head. One float tensor travels between
blocks: tokens ``[N, T, H]``, ConvNeXt maps ``[N, C, H, W]``, Swin maps ``[N, H, W, C]`` (so each block knows its
grid). ViT, DeiT and Swin interpolate their position embeddings to the input size (exact at the native size); BEiT's
layers read the patch grid off the token count (square images).
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from ._registry import BlockFamily, register_family

KINDS = {"ViTModel": "vit", "DeiTModel": "deit", "Dinov2Model": "dinov2", "BeitModel": "beit",
         "ConvNextModel": "convnext", "SwinModel": "swin"}
VISION_TYPES = frozenset(KINDS.values())  # config.json model_type values this family splits
INTERPOLATE = frozenset({"vit", "deit", "swin"})  # forward(..., interpolate_pos_encoding=True) resizes positions


def vision_kind(model: nn.Module) -> str | None:
    """``vit``, ``deit``, ``dinov2``, ``beit``, ``convnext``, ``swin`` for a transformers vision encoder, else None."""
    if not type(model).__module__.startswith("transformers."):
        return None
    return KINDS.get(type(model).__name__)


def hf_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features the model's image-classification head reads (see the module docstring)."""
    kind = vision_kind(model)
    out = model(pixel_values=x, **({"interpolate_pos_encoding": True} if kind in INTERPOLATE else {}))
    h = out.last_hidden_state
    if kind in ("vit", "deit"):
        return h[:, 0]
    if kind == "dinov2":
        return torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)
    return out.pooler_output


def _layers(model: nn.Module) -> nn.ModuleList:
    """The layer list, wherever this transformers version keeps it (``layers`` or ``encoder.layer``)."""
    for path in ("layers", "encoder.layer", "encoder.layers"):
        try:
            found = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(found, nn.ModuleList):
            return found
    raise AttributeError(f"{type(model).__name__} has no layer list")


def _first(out):
    return out[0] if isinstance(out, tuple) else out


class HFEmbed(nn.Module):
    """Pixels ``[N, 3, H, W]`` → the embeddings' output (Swin: as a ``[N, h, w, C]`` map)."""

    def __init__(self, embeddings: nn.Module, interpolate: bool, grid: bool = False):
        super().__init__()
        self.embeddings, self.grid = embeddings, grid
        self.interpolate = interpolate and "interpolate_pos_encoding" in inspect.signature(embeddings.forward).parameters

    def extra_repr(self) -> str:
        return f"interpolate={self.interpolate}, grid={self.grid}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.embeddings(x, interpolate_pos_encoding=True) if self.interpolate else self.embeddings(x)
        if not self.grid:
            return _first(out)
        h, (height, width) = out[0], out[1]
        return h.reshape(h.shape[0], height, width, h.shape[-1])


class HFLayer(nn.Module):
    """Tokens → tokens: one transformer layer, attending to every token."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _first(self.layer(x))


class BeitLayer(nn.Module):
    """Tokens → tokens: one BEiT layer with its relative position bias (and the model's shared one) for the square
    patch grid the token count gives."""

    def __init__(self, layer: nn.Module, shared_bias: nn.Module | None, patch_size: int):
        super().__init__()
        self.layer, self.shared_bias, self.patch_size = layer, shared_bias, patch_size

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = math.isqrt(x.shape[1] - 1)
        bias = None if self.shared_bias is None else self.shared_bias((side, side), dim_size=x.shape[1])
        resolution = (side * self.patch_size, side * self.patch_size)
        return _first(self.layer(x, attention_mask=bias, resolution=resolution))


class SwinBlock(nn.Module):
    """Map ``[N, h, w, C]`` → map: one Swin layer (``merge=False``) or one patch merging (``merge=True``).

    A Swin layer clamps its window and shift to each input's grid *in place*; the block resets them to the layer's
    own (``window``, ``shift``: the config's window, and half of it on every second layer of a stage) first, so its
    output never depends on the sizes run before."""

    def __init__(self, module: nn.Module, merge: bool, window: int = 0, shift: int = 0):
        super().__init__()
        self.module, self.merge, self.window, self.shift = module, merge, window, shift

    def extra_repr(self) -> str:
        return f"merge={self.merge}, window={self.window}, shift={self.shift}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, height, width, c = x.shape
        tokens = x.reshape(n, height * width, c)
        if not self.merge:
            self.module.window_size, self.module.shift_size = self.window, self.shift
            return _first(self.module(tokens, (height, width))).reshape(n, height, width, c)
        out = self.module(tokens, (height, width))
        return out.reshape(n, (height + 1) // 2, (width + 1) // 2, out.shape[-1])


class HFPool(nn.Module):
    """The final norm and pooling: ``cls`` (ViT, DeiT), ``cls_mean`` (DINOv2), ``pooler`` (BEiT), ``spatial``
    (ConvNeXt), ``tokens`` (Swin)."""

    def __init__(self, model: nn.Module, mode: str):
        super().__init__()
        self.norm, self.mode = model.layernorm, mode
        self.pooler = model.pooler if mode == "pooler" else None

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "spatial":
            return self.norm(x.mean([-2, -1]))
        if self.mode == "tokens":
            return self.norm(x.reshape(x.shape[0], -1, x.shape[-1])).mean(1)
        h = self.norm(x)
        if self.mode == "cls":
            return h[:, 0].contiguous()
        if self.mode == "cls_mean":
            return torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)
        return self.pooler(h)


def _convnext_blocks(model: nn.Module) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    for stage in model.encoder.stages:
        if len(stage.downsampling_layer):
            blocks.append(nn.Sequential(*stage.downsampling_layer))
        blocks.extend(stage.layers)
    return blocks


def _swin_blocks(model: nn.Module) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    window = model.config.window_size
    for stage in model.encoder.layers:
        blocks.extend(SwinBlock(layer, False, window, 0 if i % 2 == 0 else window // 2)
                      for i, layer in enumerate(stage.blocks))
        if stage.downsample is not None:
            blocks.append(SwinBlock(stage.downsample, merge=True))
    return blocks


@register_family
class HFVisionFamily(BlockFamily):
    name = "hf_vision"

    def matches(self, model: nn.Module) -> bool:
        return vision_kind(model) is not None

    def split(self, model: nn.Module) -> list[nn.Module]:
        kind = vision_kind(model)
        embed = HFEmbed(model.embeddings, kind in INTERPOLATE, grid=kind == "swin")
        if kind == "convnext":
            return [embed, *_convnext_blocks(model), HFPool(model, "spatial")]
        if kind == "swin":
            return [embed, *_swin_blocks(model), HFPool(model, "tokens")]
        if kind == "beit":
            shared = getattr(model, "shared_position_bias", None)
            layers = [BeitLayer(layer, shared, model.config.patch_size) for layer in _layers(model)]
            return [embed, *layers, HFPool(model, "pooler")]
        pool = HFPool(model, "cls_mean" if kind == "dinov2" else "cls")
        return [embed, *(HFLayer(layer) for layer in _layers(model)), pool]
