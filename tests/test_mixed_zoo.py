"""One search over a zoo that mixes architectures (ResNet, MobileNetV3, a tiny ViT): one task tree whose root
subtrees are the architectures; every model scores exactly as in the search over its own architecture alone."""

from __future__ import annotations

import pytest

import alsatian_pl as ap
from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

SIZE = (3, 32, 32)
ARCHS = {"resnet18": {}, "mobilenetv3_small_050": {}, "vit_tiny_patch16_224": {"img_size": 32, "depth": 3}}
OPTIONS = dict(strategy="alsatian", cache_budget=None, batch_size=32, device="cpu", progress=False,
               scorer={"name": "linear", "kwargs": {"epochs": 3}})


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    store = ap.BlockStore(tmp_path_factory.mktemp("store"))
    return store, {arch: build_synthetic_zoo(store, ZooConfig(arch.split("_")[0], arch, num_models=3, seed=1,
                                                              distribution="top25", input_size=SIZE,
                                                              model_kwargs=kwargs), progress=False).models
                   for arch, kwargs in ARCHS.items()}


def _search(store, names):
    data = ap.SearchDataModule(num_items=120, image_size=32, seed=0)
    return ap.search(names, data, store=store, result_size=len(names), **OPTIONS)


def test_a_mixed_zoo_scores_and_ranks_as_its_architectures_alone(zoos):
    store, names = zoos
    everything = [n for arch in ARCHS for n in names[arch]]
    mixed = _search(store, everything)
    scores = {r.model: (r.score, r.test_loss) for r in mixed.ranking}
    order = [r.model for r in mixed.ranking]
    steps = 0
    for arch in ARCHS:
        alone = _search(store, names[arch])
        for r in alone.ranking:
            assert scores[r.model] == pytest.approx((r.score, r.test_loss), abs=1e-5), (arch, r.model)
        assert [m for m in order if m in names[arch]] == [r.model for r in alone.ranking]
        steps += alone.rounds[0].inference_steps
    assert mixed.rounds[0].inference_steps == steps  # architectures share nothing; each still shares its prefixes
