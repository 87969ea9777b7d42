"""The generic block family: any timm model is cut from its own structure (fx graph at single-tensor boundaries),
and every split composes exactly to the pre-logits features, or the model is refused with one clear message."""

from __future__ import annotations

import pytest
import timm
import torch

from alsatian_pl.blocks import check_split, family_of, generic_split, skeleton, split_model, timm_recipe
from alsatian_pl.errors import StoreError

V = {"img_size": 64}  # ViT-like models take their input size as a constructor argument
# (architecture, constructor kwargs, input size): the smallest variant of each family, random init.
ARCHS = [
    ("convnext_atto", {}, 64), ("regnetx_002", {}, 64), ("regnety_002", {}, 64), ("densenet121", {}, 64),
    ("mobilenetv2_050", {}, 64), ("mobilenetv3_small_050", {}, 64), ("mobilenetv4_conv_small", {}, 64),
    ("tf_efficientnetv2_b0", {}, 64), ("efficientnetv2_rw_t", {}, 64), ("resnext26ts", {}, 64),
    ("seresnext26d_32x4d", {}, 64), ("vit_tiny_patch16_224", V, 64), ("deit_tiny_patch16_224", V, 64),
    ("deit_tiny_distilled_patch16_224", V, 64),
    ("beit_base_patch16_224", {**V, "depth": 2}, 64), ("eva02_tiny_patch14_224", {"img_size": 56}, 56),
    ("swin_tiny_patch4_window7_224", {"img_size": 128, "window_size": 4}, 128), ("mixer_s32_224", V, 64),
    ("ghostnet_050", {}, 64), ("levit_128s", V, 64), ("edgenext_xx_small", {}, 64), ("lcnet_050", {}, 64),
    ("mobilevit_xxs", {}, 64), ("poolformer_s12", {}, 64), ("pvt_v2_b0", {}, 64), ("repvgg_a0", {}, 64),
    ("cspresnet50", {}, 64), ("dla34", {}, 64), ("res2net50_14w_8s", {}, 64), ("resnest14d", {}, 64),
    ("rexnet_100", {}, 64), ("hrnet_w18_small", {}, 64), ("fastvit_t8", {}, 64), ("efficientvit_b0", {}, 64),
    ("tiny_vit_5m_224", {}, 64), ("mambaout_femto", {}, 64), ("repvit_m0_9", {}, 64),
    ("resmlp_12_224", V, 64), ("xcit_nano_12_p16_224", V, 64), ("cait_xxs24_224", {**V, "depth": 2}, 64),
    ("hiera_tiny_224", {"img_size": 64}, 64), ("inception_next_tiny", {}, 64), ("starnet_s050", {}, 64),
    ("ese_vovnet19b_slim", {}, 64), ("hgnetv2_b0", {}, 64), ("test_vit_relpos", V, 64), ("test_maxvit", {}, 160),
    ("test_coatnet", {}, 160), ("test_nfnet", {}, 64), ("test_byobnet", {}, 64), ("test_efficientnet_evos", {}, 64),
]


def _model(arch: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=10, **kwargs).eval()


REFUSED: set[str] = set()  # architectures the splitter refuses today (none): one refused elsewhere fails the test


@pytest.mark.parametrize("arch,kwargs,size", ARCHS, ids=[a for a, _, _ in ARCHS])
def test_every_family_splits_exactly_or_is_refused_clearly(arch, kwargs, size):
    model = _model(arch, kwargs)
    try:
        blocks = split_model(model)
        check_split(model, blocks, (3, size, size))
    except StoreError as exc:
        assert str(exc).startswith("cannot split a ") and "\n" not in str(exc)
        assert arch in REFUSED, f"{arch} was split before and is refused now: {exc}"
        return
    assert arch not in REFUSED, f"{arch} splits now: take it out of REFUSED"
    assert len(blocks) >= 2
    own = {id(p) for p in model.parameters()}
    assert all(id(p) in own for b in blocks for p in b.parameters())  # the model's own tensors, shared
    # the store's path: the recipe's meta skeleton has the same blocks, tensor names, and runs on the meta device
    meta = skeleton(timm_recipe(arch, num_classes=10, **kwargs))
    assert [sorted(dict(b.state_dict())) for b in meta] == [sorted(dict(b.state_dict())) for b in blocks]
    assert [repr(b) for b in meta] == [repr(b) for b in blocks]  # a generic block's repr names a digest of its code
    x = torch.empty(1, 3, size, size, device="meta")
    for block in meta:
        x = block(x)
    assert x.shape[1:] == model.forward_head(model.forward_features(torch.zeros(1, 3, size, size)), True).shape[1:]


HAND_WRITTEN = [("resnet18", {}, "resnet"), ("tf_efficientnet_lite0", {}, "efficientnet"),
                ("mobilenetv3_small_050", {}, "mobilenetv3"), ("vit_tiny_patch16_224", V, "vit")]


@pytest.mark.parametrize("arch,kwargs,family", HAND_WRITTEN, ids=[a for a, _, _ in HAND_WRITTEN])
def test_hand_written_families_stay_first_and_the_generic_cut_finds_the_same_blocks(arch, kwargs, family):
    model = _model(arch, kwargs)
    assert family_of(model).name == family
    blocks = generic_split(model)
    check_split(model, blocks, (3, 64, 64))
    count = [sum(p.numel() for p in b.parameters()) for b in blocks]
    assert count == [sum(p.numel() for p in b.parameters()) for b in split_model(model)]


def test_other_timm_models_fall_back_to_the_generic_family():
    assert family_of(_model("convnext_atto", {})).name == "generic"
    assert family_of(_model("deit_tiny_distilled_patch16_224", V)).name == "generic"  # not the plain ViT's cut


def test_meta_skeleton_has_the_same_blocks_and_tensor_names():
    recipe = timm_recipe("convnext_atto", num_classes=10)
    model = _model("convnext_atto", {})
    real = split_model(model)
    meta = skeleton(recipe)
    assert len(real) == len(meta)
    for r, m in zip(real, meta):
        assert repr(r) == repr(m)
        assert [n for n, _ in r.named_parameters()] == [n for n, _ in m.named_parameters()]
        assert all(t.is_meta for t in m.parameters())


class _Untraceable(torch.nn.Module):
    """A timm-shaped model whose forward branches on the data: fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3)

    def forward_features(self, x):
        x = self.stem(x)
        return x if x.sum() > 0 else -x

    def forward_head(self, x, pre_logits=False):
        return x.mean((2, 3))


def test_a_model_that_cannot_be_cut_is_refused_with_one_message():
    with pytest.raises(StoreError, match=r"cannot split a .*_Untraceable into blocks: torch.fx cannot trace"):
        split_model(_Untraceable())
    model = _model("resnet18", {})
    with torch.no_grad():  # random init zeroes each residual branch's last norm: make every block count
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    blocks = generic_split(model)  # blocks[2] is layer1.1: same shape in and out
    with pytest.raises(StoreError, match=f"exactly: its {len(blocks) - 1} composed blocks differ"):
        check_split(model, blocks[:2] + blocks[3:], (3, 64, 64))  # a wrong split is never accepted
    with pytest.raises(StoreError, match="exactly: running its"):
        check_split(model, blocks[1:], (3, 64, 64))
    with pytest.raises(StoreError, match="no registered block family matches"):
        split_model(torch.nn.Sequential(torch.nn.Linear(2, 2)))
