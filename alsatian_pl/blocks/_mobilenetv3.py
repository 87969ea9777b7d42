"""MobileNetV3 (timm ``MobileNetV3``): stem, each inverted-residual block, pooling + head conv."""

from __future__ import annotations

from torch import nn

from ._registry import BlockFamily, register_family


@register_family
class MobileNetV3Family(BlockFamily):
    name = "mobilenetv3"

    def matches(self, model: nn.Module) -> bool:
        return type(model).__name__ == "MobileNetV3"

    def split(self, model: nn.Module) -> list[nn.Module]:
        stem = nn.Sequential(model.conv_stem, model.bn1)
        blocks = [blk for stage in model.blocks for blk in stage]
        head = nn.Sequential(model.global_pool, model.conv_head, model.norm_head, model.act2, model.flatten)
        return [stem, *blocks, head]
