"""Block composition equals each family's pre-logits features; unsplittable models get one clear error."""

from __future__ import annotations

import pytest
import timm
import torch

from alsatian_pl.blocks import family_of, split_model
from alsatian_pl.errors import StoreError

CASES = [
    ("resnet18", {}, 64, "resnet"),
    ("resnet26", {}, 64, "resnet"),  # bottleneck blocks
    ("tf_efficientnet_lite0", {}, 64, "efficientnet"),
    ("efficientnetv2_rw_t", {}, 64, "efficientnet"),  # FusedMBConv blocks
    ("vit_tiny_patch16_224", {"img_size": 112}, 112, "vit"),  # non-default input size
    ("vit_tiny_patch16_224", {"img_size": 64, "global_pool": "avg", "class_token": False}, 64, "vit"),
    ("mobilenetv3_small_050", {}, 64, "mobilenetv3"),
]


@pytest.mark.parametrize("arch,kwargs,size,family", CASES)
def test_composed_blocks_equal_prelogits_features(arch, kwargs, size, family):
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    x = torch.randn(2, 3, size, size)
    blocks = split_model(model)
    assert family_of(model).name == family
    assert len(blocks) >= 3
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        out = x
        for block in blocks:
            out = block(out)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_blocks_follow_the_declared_structure():
    model = timm.create_model("resnet18", pretrained=False)
    blocks = split_model(model)
    # stem + 2 residual blocks in each of the 4 stages + pooling
    assert len(blocks) == 1 + 8 + 1
    assert blocks[1] is model.layer1[0] and blocks[-2] is model.layer4[1]


def test_unsplittable_architecture_gets_a_clear_error():
    # (convnext_atto, refused here before the generic family existed, now splits: tests/test_generic_blocks.py)
    with pytest.raises(StoreError, match="Sequential.*no registered block family matches.*register_family"):
        split_model(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_materialize_fills_each_clone_of_a_skeleton_and_refuses_tensors_of_another_structure():
    """The slots of a skeleton are worked out once and reused: every clone gets its own tensors in the right owner
    (parameters keep requires_grad, buffers stay buffers), the skeleton itself stays on the meta device, and tensors
    that do not cover the structure exactly are refused by name."""
    from torch import nn

    from alsatian_pl.store._codec import block_tensors, materialize

    torch.manual_seed(0)
    real = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(2, 2)))
    real[2][0].bias.requires_grad_(False)
    with torch.device("meta"):
        template = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(2, 2)))
    template[2][0].bias.requires_grad_(False)
    tensors = block_tensors(real)
    first, second = materialize(template, tensors), materialize(template, {n: t.clone() for n, t in tensors.items()})
    for block in (first, second):
        got = block_tensors(block)
        assert got.keys() == tensors.keys() and all(torch.equal(got[n], tensors[n]) for n in tensors)
        assert isinstance(block[1]._buffers["running_mean"], torch.Tensor) and "running_mean" not in dict(
            block[1].named_parameters())
        assert not block[2][0].bias.requires_grad and block[0].weight.requires_grad
    assert first[0].weight.data_ptr() == tensors["0.weight"].data_ptr() != second[0].weight.data_ptr()
    assert template[0].weight.is_meta
    with pytest.raises(StoreError, match=r"\['0.bias'\]"):
        materialize(template, {n: t for n, t in tensors.items() if n != "0.bias"})
