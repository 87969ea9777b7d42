"""Hugging Face vision folders (config.json + model.safetensors) in ``models=hf_dirs``: ViT, DeiT, DINOv2, BEiT,
ConvNeXt and Swin split into blocks that compose to the features their classification head reads, checked on import;
a fine-tuned folder's classifier is stored as the model's head. Tiny random configs, written by the tests."""

from __future__ import annotations

import os

import pytest
import torch

from alsatian_pl.blocks import family_of, skeleton
from alsatian_pl.blocks._hf_vision import _layers, hf_features
from alsatian_pl.errors import StoreError
from alsatian_pl.zoo import hf_dirs_spec, import_hf_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import transformers  # a dependency: missing, these tests fail rather than skip

VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=64)
CONFIGS = {
    "vit": VIT,
    "deit": VIT,
    "dinov2": {**{k: v for k, v in VIT.items() if k != "intermediate_size"}, "mlp_ratio": 2},
    "beit": {**VIT, "use_relative_position_bias": True},
    "convnext": dict(image_size=32, hidden_sizes=[8, 16], depths=[1, 2], num_stages=2, patch_size=4),
    "swin": dict(image_size=32, patch_size=4, embed_dim=8, depths=[1, 2], num_heads=[1, 2], window_size=4),
}
BLOCKS = {"vit": 4, "deit": 4, "dinov2": 4, "beit": 4, "convnext": 6, "swin": 6}


def write_folder(path, model_type, *, num_labels=3, seed=0, head=True, **overrides):
    """save_pretrained of a tiny random model: the image classifier (with its head) or the bare encoder."""
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(model_type, **{**CONFIGS[model_type], **overrides},
                                               num_labels=num_labels)
    cls = transformers.AutoModelForImageClassification if head else transformers.AutoModel
    if head and model_type == "deit":  # two image classifiers (with and without teacher): name the plain one
        cls = transformers.DeiTForImageClassification
    model = (cls(config) if model_type == "deit" and head else cls.from_config(config)).eval()
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_a_vision_folder_imports_split_and_checked_with_its_head(store, tmp_path, model_type):
    tuned = write_folder(tmp_path / "models" / "tuned", model_type)
    zoo = import_hf_folder(store, name="v", path=str(tmp_path / "models"), progress=False)
    (name,) = zoo.models
    man = store.manifest(name)
    assert man.family == "hf_vision" and man.input_size == (3, 32, 32) and len(man.blocks) == BLOCKS[model_type]
    assert len(skeleton(man.recipe)) == len(man.blocks)
    encoder = transformers.AutoModel.from_pretrained(tmp_path / "models" / "tuned").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = hf_features(encoder, x)
        torch.testing.assert_close(store.load_model(name)(x), feats, rtol=1e-5, atol=1e-5)
        logits = tuned(pixel_values=x).logits
        torch.testing.assert_close(store.load_head(name)(feats), logits, rtol=1e-4, atol=1e-5)
    assert (man.head.in_features, man.head.out_features) == (feats.shape[1], 3)
    assert set(store.read_head(name)[0]) == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("model_type", ["vit", "swin", "convnext"])
def test_other_image_sizes_and_bare_encoders(store, tmp_path, model_type):
    write_folder(tmp_path / "m" / "bare", model_type, head=False)
    spec = hf_dirs_spec(name="v", path=str(tmp_path / "m"), image_size=48)
    (name,) = spec.build(store, progress=False).models
    man = store.manifest(name)
    assert man.input_size == (3, 48, 48) and man.head is None
    encoder = transformers.AutoModel.from_pretrained(tmp_path / "m" / "bare").eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(store.load_model(name)(x), hf_features(encoder, x), rtol=1e-5, atol=1e-5)


def test_fine_tuned_variants_share_their_unchanged_blocks(store, tmp_path):
    base = write_folder(tmp_path / "m" / "a", "vit", num_labels=3)
    with torch.no_grad():
        _layers(base.vit)[-1].layernorm_after.weight.add_(0.1)  # another fine-tuned variant: last layer, head differ
    base.classifier = torch.nn.Linear(32, 7)
    base.config.num_labels = 7
    base.save_pretrained(tmp_path / "m" / "b")
    a, b = (store.manifest(n) for n in import_hf_folder(store, name="v", path=str(tmp_path / "m"),
                                                        progress=False).models)
    assert a.recipe == b.recipe and a.hashes[:2] == b.hashes[:2] and a.hashes[2] != b.hashes[2]
    assert (a.head.out_features, b.head.out_features) == (3, 7)


def test_a_folder_with_foreign_tensors_is_refused(store, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m" / "x"
    write_folder(folder, "vit")
    state = load_file(folder / "model.safetensors")
    save_file({**state, "aux.weight": torch.zeros(3)}, folder / "model.safetensors")
    with pytest.raises(StoreError, match=r"1 unexpected tensor\(s\) \(e.g. aux.weight\)"):
        import_hf_folder(store, name="v", path=str(tmp_path / "m"), progress=False)
    assert store.model_names() == []


def test_the_family_splits_only_vision_encoders():
    config = transformers.AutoConfig.for_model("vit", **VIT)
    assert family_of(transformers.AutoModel.from_config(config)).name == "hf_vision"
    bert = transformers.AutoConfig.for_model("bert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32, vocab_size=50)
    assert family_of(transformers.AutoModel.from_config(bert)).name == "bert"


def _hub_layout(cache, repo, source, revision="0123abcd"):
    """``source``'s files as huggingface_hub caches them: blobs, a snapshot of links, refs/main."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for f in source.iterdir():
        blob = root / "blobs" / f"blob-{f.name}"
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(blob)


def test_model_ids_are_read_from_the_local_hub_cache(store, tmp_path):
    write_folder(tmp_path / "src" / "a", "vit", num_labels=3, seed=1)
    write_folder(tmp_path / "src" / "b", "convnext", num_labels=4, seed=2)
    cache = tmp_path / "hub"
    _hub_layout(cache, "org/tiny-vit", tmp_path / "src" / "a")
    _hub_layout(cache, "org/tiny-convnext", tmp_path / "src" / "b")
    spec = hf_dirs_spec(name="h", ids=["org/tiny-vit", "org/tiny-convnext"], cache_dir=str(cache))
    zoo = spec.build(store, progress=False)
    assert [m.rsplit("-", 2)[-2:] for m in zoo.models] == [["tiny", "vit"], ["tiny", "convnext"]]
    assert [store.manifest(m).head.out_features for m in zoo.models] == [3, 4]
    x = torch.randn(2, 3, 32, 32)
    encoder = transformers.AutoModel.from_pretrained(tmp_path / "src" / "a").eval()
    with torch.no_grad():
        torch.testing.assert_close(store.load_model(zoo.models[0])(x), hf_features(encoder, x), rtol=1e-5, atol=1e-5)
    assert spec.build(store, progress=False).models == zoo.models  # reused


def test_a_model_id_not_in_the_cache_says_what_was_looked_for(tmp_path):
    from alsatian_pl.errors import ConfigError, StoreError

    with pytest.raises(StoreError, match=r"1 Hugging Face model\(s\) are not in the hub cache.*org/absent.*"
                                         r"refs/main.*huggingface-cli download org/absent"):
        hf_dirs_spec(name="h", ids=["org/absent"], cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="exactly one of models.path"):
        hf_dirs_spec(name="h", path=str(tmp_path), ids=["org/x"])
