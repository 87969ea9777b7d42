"""EfficientNet / EfficientNetV2 / EfficientNet-Lite (timm ``EfficientNet``): stem, each (Fused)MBConv block, head."""

from __future__ import annotations

from torch import nn

from ._registry import BlockFamily, register_family


@register_family
class EfficientNetFamily(BlockFamily):
    name = "efficientnet"

    def matches(self, model: nn.Module) -> bool:
        return type(model).__name__ == "EfficientNet"

    def split(self, model: nn.Module) -> list[nn.Module]:
        stem = nn.Sequential(model.conv_stem, model.bn1)
        blocks = [blk for stage in model.blocks for blk in stage]
        head = nn.Sequential(model.conv_head, model.bn2, model.global_pool)
        return [stem, *blocks, head]
