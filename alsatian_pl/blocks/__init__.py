"""Models as block sequences (paper §2.1): a registry of model families, each cutting a model into its blocks, and
the recipes that rebuild a stored model's empty blocks.

Every family fulfils one contract: ``matches(model)`` says whether it applies, ``split(model)`` returns the ordered
feature-extractor blocks, whose composition equals the model's pre-logits features
(timm: ``model.forward_head(model.forward_features(x), pre_logits=True)``; Hugging Face encoders: the pooled last
hidden state). Every recipe names a builder in :data:`BUILDERS`; :func:`skeleton` gives its blocks on the meta device.
"""

from __future__ import annotations

from ._registry import FAMILIES, BlockFamily, families, family_of, register_family, split_model
from ._recipes import (BUILDERS, activation_bytes, build_model, hf_recipe, hf_vision_recipe, register_builder, skeleton,
                       skeleton_family, timm_recipe)
from . import _resnet, _efficientnet, _vit, _mobilenetv3, _bert, _hf_vision  # noqa: F401  (built-in families)
from ._generic import check_split, generic_split  # registered last: the fallback for any other timm model
from ._bert import MINILM, PRESETS, arch_config, load_encoder, model_dir, transformers_offline
from ._hf_vision import VISION_TYPES

__all__ = ["BlockFamily", "FAMILIES", "families", "family_of", "register_family", "split_model",
           "check_split", "generic_split",
           "BUILDERS", "register_builder", "build_model", "timm_recipe", "hf_recipe", "hf_vision_recipe", "skeleton",
           "skeleton_family", "activation_bytes",
           "MINILM", "PRESETS", "arch_config", "load_encoder", "model_dir", "transformers_offline",
           "VISION_TYPES"]
