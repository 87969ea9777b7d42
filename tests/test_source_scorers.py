"""LEEP and NCE through the stored source heads, against the published formulas computed here with plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

import alsatian_pl as ap
from alsatian_pl.errors import ConfigError, StoreError
from alsatian_pl.score import get_scorer
from alsatian_pl.zoo import import_checkpoint_folder, import_timm


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def reference_leep(theta: np.ndarray, y: np.ndarray, classes: int) -> float:
    """Nguyen et al. 2020, eq. (1)-(2), item by item."""
    n, z_count = theta.shape
    joint = np.zeros((classes, z_count))
    for i in range(n):
        joint[y[i]] += theta[i] / n
    cond = joint / joint.sum(0, keepdims=True)  # P(y | z)
    return float(np.mean([math.log(sum(cond[y[i], z] * theta[i, z] for z in range(z_count))) for i in range(n)]))


def reference_nce(z: np.ndarray, y: np.ndarray, classes: int, z_count: int) -> float:
    """Tran et al. 2019: NCE = -H(Y | Z) from the empirical joint of hard labels."""
    n = len(z)
    joint = np.zeros((classes, z_count))
    for i in range(n):
        joint[y[i], z[i]] += 1 / n
    total = 0.0
    for a in range(classes):
        for b in range(z_count):
            if joint[a, b] > 0:
                total += joint[a, b] * math.log(joint[a, b] / joint[:, b].sum())
    return total


def _inputs(seed=0, n=60, t=20, dim=8, classes=3):
    g = torch.Generator().manual_seed(seed)
    feats = {m: (torch.randn(n, dim, generator=g), torch.randn(t, dim, generator=g)) for m in ("a", "b")}
    heads = {"a": (torch.randn(5, dim, generator=g), torch.randn(5, generator=g)),
             "b": (torch.randn(4, dim, generator=g) * 3, None)}
    labels = torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (t,), generator=g)
    return feats, heads, labels, classes


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_scores_match_the_published_formulas(name):
    feats, heads, (y, y_test), classes = _inputs()
    scorer = get_scorer(name, heads=heads)
    scores = scorer.score({m: f[0] for m, f in feats.items()}, y, {m: f[1] for m, f in feats.items()}, y_test,
                          classes)
    assert scorer.higher_is_better
    for m, (w, b) in heads.items():
        logits = feats[m][0].double().numpy() @ w.double().numpy().T + (0 if b is None else b.double().numpy())
        theta = _softmax(logits)
        expected = (reference_leep(theta, y.numpy(), classes) if name == "leep" else
                    reference_nce(theta.argmax(1), y.numpy(), classes, theta.shape[1]))
        assert scores[m].score == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert math.isfinite(scores[m].test_loss) and scores[m].test_loss > 0


def test_a_models_score_depends_only_on_itself():
    feats, heads, (y, y_test), classes = _inputs(1)
    both = get_scorer("leep", heads=heads).score({m: f[0] for m, f in feats.items()}, y,
                                                 {m: f[1] for m, f in feats.items()}, y_test, classes)
    alone = get_scorer("leep", heads=heads).score({"b": feats["b"][0]}, y, {"b": feats["b"][1]}, y_test, classes)
    assert alone["b"] == both["b"]


SIZE = (3, 32, 32)


def test_heads_come_from_the_store_and_a_search_runs_with_them(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for i, classes in enumerate((10, 4, 7, 5)):
        torch.manual_seed(i)
        torch.save(timm.create_model("resnet18", num_classes=classes).state_dict(), folder / f"m{i}.pth")
    store = ap.BlockStore(tmp_path / "store")
    zoo = import_checkpoint_folder(store, name="ft", path=str(folder), arch="resnet18", input_size=SIZE,
                                   progress=False)
    results = {}
    for strategy in ("alsatian", "shift"):
        data = ap.SearchDataModule(num_items=80, image_size=32, seed=0)
        result = ap.search(zoo, data, strategy=strategy, scorer={"name": "leep", "kwargs": {"store": str(store.root)}},
                           device="cpu", progress=False, cache_budget=None, batch_size=32)
        results[strategy] = {r.model: r.score for r in result.ranking}
    assert results["alsatian"] == pytest.approx(results["shift"], abs=1e-9)
    assert all(math.isfinite(v) and v < 0 for v in results["alsatian"].values())


def test_models_without_a_head_and_missing_options_are_refused(store):
    import_timm(store, "plain", "resnet18", input_size=SIZE)
    with pytest.raises(ConfigError, match="reads each model's stored classifier head"):
        get_scorer("nce")
    scorer = get_scorer("nce", store=str(store.root))
    x, y = torch.randn(6, 512), torch.tensor([0, 1, 0, 1, 0, 1])
    with pytest.raises(StoreError, match="needs the source classifier head of every model"):
        scorer.score({"plain": x}, y, {"plain": x}, y, 2)


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_the_config_group_entry_points_the_scorer_at_the_store(name, tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("search", overrides=[f"search/scorer={name}", f"store.root={tmp_path / 'store'}"])
    scorer = get_scorer(cfg.search.scorer.name, seed=0, **cfg.search.scorer.kwargs)
    assert scorer.name == name and scorer.store == str(tmp_path / "store")


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_alsatian_and_shift_give_the_same_source_head_scores(zoo, tmp_path, name):
    """With a random head stored for every model of the shared zoo, both strategies rank and score identically."""
    import shutil

    from alsatian_pl.data import SearchDataModule
    from alsatian_pl.halving import SuccessiveHalving
    from alsatian_pl.store import BlockStore

    shutil.copytree(zoo.store.root, tmp_path / "store")
    store = BlockStore(tmp_path / "store")
    g = torch.Generator().manual_seed(3)
    for m in zoo.models:
        dim = store.manifest(m).blocks[-1].out_shape[0]
        store.put_head(m, {"fc.weight": torch.randn(7, dim, generator=g), "fc.bias": torch.randn(7, generator=g)})
    data = SearchDataModule(num_items=300, image_size=32, seed=0)

    def run(strategy):
        return SuccessiveHalving(store, data, strategy=strategy, scorer=get_scorer(name, store=str(store.root)),
                                 batch_size=32, device="cpu", progress=False).run(zoo.models)

    a, s = run("alsatian"), run("shift")
    assert [r.model for r in a.ranking] == [r.model for r in s.ranking]
    for ra, rs in zip(a.ranking, s.ranking):
        assert ra.eliminated_in_round == rs.eliminated_in_round and abs(ra.score - rs.score) <= 1e-5
