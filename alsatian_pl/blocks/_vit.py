"""Vision Transformer (timm ``VisionTransformer``): embedding, each transformer block, final norm + token pooling."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ._registry import BlockFamily, register_family


class ViTEmbed(nn.Module):
    """Patch embedding, class/register tokens and position embedding, as ``VisionTransformer`` applies them."""

    def __init__(self, vit: VisionTransformer):
        super().__init__()
        self.patch_embed, self.pos_drop, self.patch_drop, self.norm_pre = (
            vit.patch_embed, vit.pos_drop, vit.patch_drop, vit.norm_pre)
        self.cls_token, self.reg_token, self.pos_embed = vit.cls_token, vit.reg_token, vit.pos_embed
        self.no_embed_class, self.dynamic_img_size = vit.no_embed_class, vit.dynamic_img_size
        self.num_prefix_tokens = vit.num_prefix_tokens

    def extra_repr(self) -> str:
        return (f"no_embed_class={self.no_embed_class}, dynamic_img_size={self.dynamic_img_size}, "
                f"num_prefix_tokens={self.num_prefix_tokens}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = VisionTransformer._pos_embed(self, self.patch_embed(x))
        return self.norm_pre(self.patch_drop(x))


class ViTPool(nn.Module):
    """Final norm and token pooling (class token or average), as ``forward_head(pre_logits=True)`` does."""

    def __init__(self, vit: VisionTransformer):
        super().__init__()
        self.norm, self.attn_pool, self.fc_norm, self.head_drop = vit.norm, vit.attn_pool, vit.fc_norm, vit.head_drop
        self.global_pool, self.num_prefix_tokens = vit.global_pool, vit.num_prefix_tokens
        self.pool_include_prefix = getattr(vit, "pool_include_prefix", False)

    def extra_repr(self) -> str:
        return (f"global_pool={self.global_pool!r}, num_prefix_tokens={self.num_prefix_tokens}, "
                f"pool_include_prefix={self.pool_include_prefix}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = VisionTransformer.pool(self, self.norm(x))
        return self.head_drop(self.fc_norm(x))


@register_family
class ViTFamily(BlockFamily):
    name = "vit"

    def matches(self, model: nn.Module) -> bool:  # subclasses (DeiT distilled: two tokens) get the generic cut
        return type(model) is VisionTransformer

    def split(self, model: nn.Module) -> list[nn.Module]:
        return [ViTEmbed(model), *model.blocks, ViTPool(model)]
