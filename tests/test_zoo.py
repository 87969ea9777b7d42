"""Model zoos: seeded M_syn generation with the paper's distributions, the pretrained base, checkpoint folders."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from alsatian_pl.errors import AlsatianWarning, ConfigError, StoreError
from alsatian_pl.store import BlockStore
from alsatian_pl.zoo import (DISTRIBUTIONS, ZooConfig, build_synthetic_zoo, efficientnet_lite0_checkpoint,
                             import_checkpoint_folder, sample_num_reinit)

SMALL = dict(arch="mobilenetv3_small_050", input_size=(3, 32, 32))


def test_same_config_gives_the_same_models_block_for_block(tmp_path):
    cfg = ZooConfig("z", num_models=8, distribution="top25", seed=4, **SMALL)
    a = build_synthetic_zoo(BlockStore(tmp_path / "a"), cfg, progress=False)
    b = build_synthetic_zoo(BlockStore(tmp_path / "b"), cfg, progress=False)
    assert [m.hashes for m in a.manifests()] == [m.hashes for m in b.manifests()]
    other = build_synthetic_zoo(BlockStore(tmp_path / "c"), ZooConfig("z", num_models=8, distribution="top25",
                                                                       seed=5, **SMALL), progress=False)
    assert [m.hashes for m in other.manifests()] != [m.hashes for m in a.manifests()]


def test_every_model_differs_from_its_parent_in_its_last_blocks(store):
    zoo = build_synthetic_zoo(store, ZooConfig("z", num_models=12, distribution="top_layers", **SMALL), progress=False)
    manifests = {m.name: m for m in zoo.manifests()}
    for m in list(manifests.values())[1:]:
        parent = manifests[m.parent]
        k = int(next(t for t in m.tags if t.startswith("reinit:")).split(":")[1])
        differ = [i for i, (a, b) in enumerate(zip(m.hashes, parent.hashes)) if a != b]
        assert len(differ) == k >= 1
        assert differ == sorted(differ) and m.hashes[: differ[0]] == parent.hashes[: differ[0]]


@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_reinit_counts_follow_the_papers_distributions(dist):
    rng = np.random.default_rng(0)
    blocks = 50
    ks = np.array([sample_num_reinit(rng, blocks, dist) for _ in range(4000)])
    frac, rel_std = DISTRIBUTIONS[dist]
    assert ks.min() >= 1 and ks.max() <= blocks
    assert abs(ks.mean() - frac * blocks) < 0.12 * frac * blocks + 0.5
    # the spread: std = rel_std x mean before truncation to [0, B] (which narrows it a little; seeded: 2.36, 5.90, 6.25)
    assert abs(ks.std() - rel_std * frac * blocks) < 0.1 * rel_std * frac * blocks + 0.2
    with pytest.raises(ConfigError, match="unknown zoo distribution"):
        sample_num_reinit(rng, blocks, "top99")


def test_zoo_is_reused_until_its_config_changes(store):
    cfg = ZooConfig("z", num_models=3, **SMALL)
    first = build_synthetic_zoo(store, cfg, progress=False)
    files = sorted(store.root.rglob("*.safetensors"))
    assert build_synthetic_zoo(store, cfg, progress=False).models == first.models
    assert sorted(store.root.rglob("*.safetensors")) == files
    bigger = build_synthetic_zoo(store, ZooConfig("z", num_models=4, **SMALL), progress=False)
    assert len(bigger.models) == 4 and bigger.name != first.name


def test_checkpoint_folder_shares_blocks_by_hash(store, tmp_path):
    torch.manual_seed(0)
    base = timm.create_model("mobilenetv3_small_050").eval()
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.save(base.state_dict(), folder / "base.pth")
    tuned = timm.create_model("mobilenetv3_small_050").eval()
    tuned.load_state_dict(base.state_dict())
    torch.nn.init.normal_(tuned.conv_head.weight)
    torch.save(tuned.state_dict(), folder / "tuned.pth")
    zoo = import_checkpoint_folder(store, name="mine", path=str(folder), arch="mobilenetv3_small_050",
                                   input_size=(3, 32, 32), progress=False)
    a, b = zoo.manifests()
    assert a.hashes[:-1] == b.hashes[:-1] and a.hashes[-1] != b.hashes[-1]
    assert zoo.stats().distinct_blocks == len(a.hashes) + 1
    with pytest.raises(StoreError, match="no checkpoints"):
        import_checkpoint_folder(store, name="none", path=str(tmp_path / "empty"), arch="resnet18")
    (folder / "copy.pth").write_bytes((folder / "base.pth").read_bytes())  # a copy made by mistake: said
    with pytest.warns(AlsatianWarning, match=r"byte-identical copies of each other \(base.pth = copy.pth\)"):
        again = import_checkpoint_folder(store, name="mine", path=str(folder), arch="mobilenetv3_small_050",
                                         input_size=(3, 32, 32), progress=False)
    first, copy = (again.store.manifest(m) for m in again.models if m.endswith(("-base", "-copy")))
    assert first.hashes == copy.hashes  # one model under two names


@pytest.mark.integration
def test_pretrained_efficientnet_lite0_base_carries_the_shipped_weights(store):
    zoo = build_synthetic_zoo(store, ZooConfig("lite", "tf_efficientnet_lite0", num_models=3, input_size=(3, 64, 64),
                                               checkpoint="efficientnet_lite0"), progress=False)
    shipped = torch.load(efficientnet_lite0_checkpoint(), map_location="cpu", weights_only=True)
    base = store.load_model(zoo.models[0])
    ours = [t for k, t in base.state_dict().items()]
    theirs = [t for k, t in shipped.items() if not k.startswith("_fc.")]
    assert len(ours) == len(theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
