"""Models as block sequences (paper §2.1): a registry of model families, each cutting a model into its blocks.

Every family fulfils one contract: ``matches(model)`` says whether it applies, ``split(model)`` returns the ordered
feature-extractor blocks, whose composition equals the model's pre-logits features
(timm: ``model.forward_head(model.forward_features(x), pre_logits=True)``; Hugging Face encoders: the pooled last
hidden state).
"""

from __future__ import annotations

from ._registry import BlockFamily, families, family_of, register_family, split_model
from . import _resnet, _efficientnet, _vit, _mobilenetv3, _bert  # noqa: F401  (register the built-in families)

__all__ = ["BlockFamily", "families", "family_of", "register_family", "split_model"]
