"""``models=timm_names``: pretrained timm models by name from a local Hugging Face hub cache laid out as
huggingface_hub writes it (refs/main -> snapshots/<revision>/model.safetensors + config.json); nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from alsatian_pl.errors import ConfigError, StoreError
from alsatian_pl.store import BlockStore
from alsatian_pl.zoo import TimmNames, timm_names_spec

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZE = (3, 32, 32)
MODELS = {  # name -> (model_args written to config.json, classes of its head)
    "mobilenetv3_small_050.lamb_in1k": ({}, 5),
    "resnet18.a1_in1k": ({}, 3),
    "vit_tiny_patch16_224.augreg_in21k_ft_in1k": ({"img_size": 32, "depth": 2}, 4),
}


def write_cached(cache: Path, name: str, model_args: dict, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """One timm model in the hub cache layout, with small random weights and timm's config.json."""
    arch = name.split(".")[0]
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=num_classes, **model_args).eval()
    repo = cache / f"models--timm--{name}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, snap / "model.safetensors")
    pretrained = {k: v for k, v in model.pretrained_cfg.items() if isinstance(v, (str, int, float, list, tuple))}
    (snap / "config.json").write_text(json.dumps({"architecture": arch, "num_classes": num_classes,
                                                  "num_features": model.num_features, "model_args": model_args,
                                                  "pretrained_cfg": {**pretrained, "num_classes": num_classes}}))
    return model


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return root, {n: write_cached(root, n, args, classes, i) for i, (n, (args, classes)) in enumerate(MODELS.items())}


def test_cached_models_import_by_name_with_their_heads(cache, tmp_path):
    root, models = cache
    store = BlockStore(tmp_path / "store")
    spec = TimmNames("named", tuple(MODELS), SIZE, str(root))
    zoo = spec.build(store, progress=False)
    assert len(zoo.models) == 3 and spec.size == 3
    x = torch.randn(2, *SIZE)
    for stored, name in zip(zoo.models, MODELS):
        model, man = models[name], store.manifest(stored)
        assert f"timm:{name}" in man.tags and man.source.startswith(f"hf-hub:timm/{name}")
        assert (man.head.in_features, man.head.out_features) == (model.get_classifier().in_features, MODELS[name][1])
        with torch.no_grad():
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
            torch.testing.assert_close(store.load_model(stored)(x), feats, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(store.load_head(stored)(feats), model(x), rtol=1e-4, atol=1e-4)
    assert spec.build(store, progress=False).models == zoo.models  # reused while the cached files stay the same


def test_the_hub_cache_comes_from_the_environment(cache, tmp_path, monkeypatch):
    root, models = cache
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    store = BlockStore(tmp_path / "store")
    zoo = TimmNames("env", ("resnet18.a1_in1k",), SIZE).build(store, progress=False)
    assert len(zoo.models) == 1
    model, x = models["resnet18.a1_in1k"], torch.randn(2, *SIZE)  # the weights of that cache, not another one's
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(store.load_model(zoo.models[0])(x), feats, rtol=1e-5, atol=1e-5)


def test_a_model_missing_from_the_cache_is_one_clear_error(cache, tmp_path):
    root, _ = cache
    spec = TimmNames("named", ("resnet18.a1_in1k", "convnext_atto.d2_in1k"), SIZE, str(root))
    with pytest.raises(StoreError) as info:
        spec.build(BlockStore(tmp_path / "store"), progress=False)
    message = str(info.value)
    for words in ("1 timm model(s) are not in the Hugging Face cache", "convnext_atto.d2_in1k",
                  "models--timm--convnext_atto.d2_in1k", "model.safetensors", "config.json",
                  "huggingface-cli download timm/convnext_atto.d2_in1k", "models.cache_dir"):
        assert words in message, message
    assert "\n" not in message and not (tmp_path / "store" / "models").exists()


@pytest.mark.parametrize("names, words", [("resnet18", "must be a non-empty list"), ([], "must be a non-empty list"),
                                          (["no_such_net.x"], "is not a timm model"),
                                          (["resnet18.a1_in1k"] * 2, "more than once")])
def test_bad_names_are_refused_before_anything_is_read(names, words):
    with pytest.raises(ConfigError, match=words):
        timm_names_spec(name="n", names=names, image_size=32)


def test_the_models_config_builds_the_zoo(cache, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    root, _ = cache
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=["models=timm_names", "models.names=[resnet18.a1_in1k,mobilenetv3_small_050]",
                                           f"models.cache_dir={root}", "dataset.image_size=32"])
    node = OmegaConf.to_container(cfg.models, resolve=True)
    node.pop("where", None)  # the candidate filter the front layer applies after building
    spec = instantiate(node)
    assert isinstance(spec, TimmNames) and spec.input_size == SIZE
    zoo = spec.build(BlockStore(tmp_path / "store"), progress=False)
    assert [m.rsplit("-", 1)[1] for m in zoo.models] == ["resnet18.a1_in1k", "mobilenetv3_small_050"]
