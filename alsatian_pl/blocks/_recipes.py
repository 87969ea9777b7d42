"""Recipes: JSON descriptions that rebuild a model, and through its family, the model's empty blocks.

A recipe is ``{"builder": name, ...builder arguments...}``, plus ``"input_dtype"`` when the model's items are not
float32 (text: int64). Builders make the whole model; :func:`skeleton` makes it on the meta device (no memory, no
init cost) and splits it. Add a builder with ``@BUILDERS.register("name")`` on ``(**recipe_args) -> nn.Module``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Callable

import torch
from torch import nn

from ..registry import Registry
from ._registry import family_of

BUILDERS: Registry[Callable[..., nn.Module]] = Registry("model builder")
register_builder = BUILDERS.register  # ``@register_builder("name")``, as before the registry existed
_NOT_BUILDER_ARGS = ("builder", "input_dtype")  # recipe keys that describe the model but are not builder arguments


@BUILDERS.register("timm")
def _build_timm(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm
    return timm.create_model(arch, pretrained=False, **kwargs)


def timm_recipe(arch: str, **kwargs: Any) -> dict[str, Any]:
    """The recipe of a timm model ``timm.create_model(arch, **kwargs)``."""
    return {"builder": "timm", "arch": arch, "kwargs": dict(sorted(kwargs.items()))}


@BUILDERS.register("hf")
def _build_hf(arch: str, config: dict[str, Any], pooling: str = "cls") -> nn.Module:
    from ._bert import build_encoder
    return build_encoder(config, pooling)


def hf_recipe(config: Any, pooling: str = "cls", arch: str | None = None) -> dict[str, Any]:
    """The recipe of a Hugging Face BERT-style encoder (config fields or a ``PretrainedConfig``); its models take
    int64 ``[2, L]`` items (token ids; attention mask)."""
    from ._bert import config_dict
    fields = config_dict(config)
    arch = arch or "{}-L{}-H{}".format(fields.get("model_type", "bert"), fields.get("num_hidden_layers", 12),
                                       fields.get("hidden_size", 768))
    return {"builder": "hf", "arch": arch, "config": fields, "pooling": pooling, "input_dtype": "int64"}


def hf_vision_recipe(config: Any) -> dict[str, Any]:
    """The recipe of a Hugging Face vision encoder (ViT, DeiT, DINOv2, BEiT, ConvNeXt, Swin) from its
    ``PretrainedConfig``; its models take float ``[3, H, W]`` images."""
    from ._bert import config_dict
    width = getattr(config, "hidden_size", None) or (getattr(config, "hidden_sizes", None) or [0])[-1]
    depth = sum(getattr(config, "depths", None) or []) or getattr(config, "num_hidden_layers", 0)
    arch = f"{config.model_type}-L{depth}-H{width}"
    return {"builder": "hf", "arch": arch, "config": config_dict(config), "pooling": "cls"}


def build_model(recipe: dict[str, Any]) -> nn.Module:
    """A freshly initialised model from a recipe (on the current default device); ConfigError for unknown builders."""
    args = {k: v for k, v in recipe.items() if k not in _NOT_BUILDER_ARGS}
    return BUILDERS.get(recipe.get("builder"))(**args)


def skeleton(recipe: dict[str, Any]) -> tuple[nn.Module, ...]:
    """The blocks of the recipe's model on the meta device, in eval mode, cached by the recipe's JSON.

    Shared between callers: copy one before giving it tensors (``BlockStore`` does, see ``store.materialize``)."""
    return _skeleton(json.dumps(recipe, sort_keys=True))[1]


def skeleton_family(recipe: dict[str, Any]) -> str:
    """The name of the block family that splits the recipe's model."""
    return _skeleton(json.dumps(recipe, sort_keys=True))[0]


@lru_cache(maxsize=16)
def _skeleton(recipe_json: str) -> tuple[str, tuple[nn.Module, ...]]:
    with torch.device("meta"):
        model = build_model(json.loads(recipe_json)).eval()
    family = family_of(model)
    return family.name, tuple(family.split(model))


def activation_bytes(recipe: dict[str, Any], input_size: tuple[int, ...], batch_size: int) -> tuple[int, ...]:
    """Per block of the recipe's model: the most bytes its forward pass over one batch of ``batch_size`` items of
    ``input_size`` holds at once beyond its input (its activations, its output included), from the blocks on the
    meta device (shapes only: no weights, no memory). Scratch memory a kernel takes within one op is not included."""
    return _activations(json.dumps(recipe, sort_keys=True), tuple(input_size), int(batch_size))


@lru_cache(maxsize=64)
def _activations(recipe_json: str, input_size: tuple[int, ...], batch_size: int) -> tuple[int, ...]:
    from ..resources import TensorPeak

    recipe = json.loads(recipe_json)
    x = torch.empty((batch_size, *input_size), device="meta", dtype=getattr(torch, recipe.get("input_dtype", "float32")))
    out = []
    with torch.inference_mode():
        for block in skeleton(recipe):
            with TensorPeak() as peak:
                y = block(x)
            out.append(peak.peak)
            x = y
    return tuple(out)
