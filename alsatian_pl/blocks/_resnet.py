"""ResNet (timm ``ResNet``): stem, every residual block of layer1..layer4, global pooling."""

from __future__ import annotations

from torch import nn

from ._registry import BlockFamily, register_family


@register_family
class ResNetFamily(BlockFamily):
    name = "resnet"

    def matches(self, model: nn.Module) -> bool:
        return type(model).__name__ == "ResNet" and all(hasattr(model, f"layer{i}") for i in range(1, 5))

    def split(self, model: nn.Module) -> list[nn.Module]:
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        blocks = [blk for i in range(1, 5) for blk in getattr(model, f"layer{i}")]
        return [stem, *blocks, model.global_pool]
