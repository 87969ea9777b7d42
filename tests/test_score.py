"""Proxy scoring: batched probes equal one-at-a-time and a plain torch reference; quality; ranking; registry; errors."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import alsatian_pl.score as score_mod
import alsatian_pl.score._linear as linear_mod
from alsatian_pl.errors import ConfigError, DataError
from alsatian_pl.score import (KNNScorer, LinearProbes, LinearScorer, ProxyScore, ProxyScorer, available_scorers,
                               get_scorer, rank, register_scorer)

C = 4
FAST = dict(epochs=15, batch_size=16)  # 90 train items: 5 full batches and a partial one per epoch


def make_round(dims, n=90, t=60, classes=C, signal=1.0, seed=0):
    """Features of models m0, m1, ... (one per dim): class centres plus noise that grows with the model index."""
    g = torch.Generator().manual_seed(seed)
    y, yt = torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (t,), generator=g)
    train, test = {}, {}
    for i, d in enumerate(dims):
        centres = torch.randn(classes, d, generator=g) * signal
        noise = 0.5 + 0.25 * i
        train[f"m{i}"] = centres[y] + noise * torch.randn(n, d, generator=g) + 3.0  # offset: standardising matters
        test[f"m{i}"] = centres[yt] + noise * torch.randn(t, d, generator=g) + 3.0
    return train, y, test, yt


def reference_probe(x, y, xt, yt, *, epochs, batch_size, lr=0.1, momentum=0.0, seed=0):
    """Textbook per-model probe: standardise, nn.Linear (same init), seeded RandomSampler, torch SGD, autograd."""
    mean, std = x.mean(0), x.std(0, correction=0)
    x, xt = (x - mean) / std, (xt - mean) / std
    head = torch.nn.Linear(x.shape[1], C)
    init = LinearProbes(1, x.shape[1], C, seed=seed)
    with torch.no_grad():
        head.weight.copy_(init.weight[0])
        head.bias.copy_(init.bias[0])
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size,
                        sampler=RandomSampler(x, generator=torch.Generator().manual_seed(seed)))
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(head(xb), yb).backward()
            opt.step()
    with torch.no_grad():
        logits = head(xt)
    return ProxyScore((logits.argmax(1) == yt).float().mean().item(), F.cross_entropy(logits, yt).item())


# ---------------------------------------------------------------------------------------------------------------------
# determinism: a model's score never depends on the other models of the round


def test_batched_equals_one_at_a_time_order_and_chunking():
    train, y, test, yt = make_round([8, 12, 8, 5] * 8 + [8, 12, 5])  # 35 models, three feature dims
    scorer = LinearScorer(**FAST)
    together = scorer.score(train, y, test, yt, C)
    assert list(together) == list(train)
    variants = [scorer.score(dict(reversed(train.items())), y, test, yt, C),
                LinearScorer(**FAST, max_chunk_bytes=1).score(train, y, test, yt, C),  # one model per chunk
                {m: scorer.score({m: train[m]}, y, {m: test[m]}, yt, C)[m] for m in train}]  # one at a time
    for other in variants:
        for m in train:
            assert other[m].score == together[m].score
            assert abs(other[m].test_loss - together[m].test_loss) <= 1e-6
        assert rank(other, True) == rank(together, True)
    assert variants[0] == together  # same group sizes, other order: bitwise


def test_probes_train_bitwise_the_same_in_any_batch_of_heads():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(70, 6, 24, generator=g), torch.randint(0, 5, (70,), generator=g)
    def fit(cols):
        probes = LinearProbes(len(cols), 24, 5, momentum=0.5, seed=2)
        probes.fit(x[:, cols].contiguous(), y, epochs=4, batch_size=32, generator=torch.Generator().manual_seed(3))
        return probes
    full = fit([0, 1, 2, 3, 4, 5])
    for cols in ([4, 1], [5, 0, 3], [2, 3, 4, 5, 0]):
        part = fit(cols)
        assert torch.equal(part.weight, full.weight[cols]) and torch.equal(part.bias, full.bias[cols])


def _fit_dual_or_primal(monkeypatch, dual, x, y, cols, momentum, epochs=20):
    """Heads ``cols`` of x trained by LinearProbes.fit with the dual form forced on or off."""
    monkeypatch.setattr(linear_mod, "dual_is_cheaper", lambda *shape: dual)
    probes = LinearProbes(len(cols), x.shape[2], 5, momentum=momentum, seed=2)
    probes.fit(x[:, cols].contiguous(), y, epochs=epochs, batch_size=16, generator=torch.Generator().manual_seed(3))
    return probes


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_dual_fit_trains_the_same_in_any_batch_and_equals_primal(monkeypatch, momentum):
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(40, 6, 64, generator=g), torch.randint(0, 5, (40,), generator=g)  # N <= D: dual pays
    assert linear_mod.dual_is_cheaper(40, 64, 5, 20) and not linear_mod.dual_is_cheaper(70, 24, 5, 4)
    full = _fit_dual_or_primal(monkeypatch, True, x, y, [0, 1, 2, 3, 4, 5], momentum)
    for cols in ([4, 1], [5, 0, 3]):  # bitwise but for softmax tails (see _dlogits)
        part = _fit_dual_or_primal(monkeypatch, True, x, y, cols, momentum)
        torch.testing.assert_close(part.weight, full.weight[cols], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(part.bias, full.bias[cols], rtol=1e-5, atol=1e-6)
    primal = _fit_dual_or_primal(monkeypatch, False, x, y, [0, 1, 2, 3, 4, 5], momentum)
    torch.testing.assert_close(full.weight, primal.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(full.bias, primal.bias, rtol=1e-4, atol=1e-5)


def test_dual_scores_match_primal_scores_and_do_not_depend_on_the_batch(monkeypatch):
    train, y, test, yt = make_round([96, 96, 96], n=60)  # 60 items, 96-dim: the dual form
    assert linear_mod.dual_is_cheaper(60, 96, C, FAST["epochs"])
    dual = LinearScorer(**FAST).score(train, y, test, yt, C)
    alone = {m: LinearScorer(**FAST).score({m: train[m]}, y, {m: test[m]}, yt, C)[m] for m in train}
    monkeypatch.setattr(linear_mod, "dual_is_cheaper", lambda *shape: False)
    primal = LinearScorer(**FAST).score(train, y, test, yt, C)
    for m in train:
        assert alone[m].score == dual[m].score and alone[m].test_loss == pytest.approx(dual[m].test_loss, abs=1e-6)
        assert dual[m].score == primal[m].score and dual[m].test_loss == pytest.approx(primal[m].test_loss, rel=1e-4)


def test_same_seed_same_scores_other_seed_other_losses():
    train, y, test, yt = make_round([8, 8])
    a = LinearScorer(**FAST, seed=7).score(train, y, test, yt, C)
    assert a == LinearScorer(**FAST, seed=7).score(train, y.int(), test, yt.to(torch.uint8), C)  # any int dtype
    b = LinearScorer(**FAST, seed=8).score(train, y, test, yt, C)
    assert any(a[m].test_loss != b[m].test_loss for m in a)


# ---------------------------------------------------------------------------------------------------------------------
# correctness against plain torch and Lightning


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_matches_plain_torch_reference(momentum):
    train, y, test, yt = make_round([12, 7, 12])
    scores = LinearScorer(**FAST, momentum=momentum, seed=3).score(train, y, test, yt, C)
    for m in train:
        ref = reference_probe(train[m], y, test[m], yt, **FAST, momentum=momentum, seed=3)
        assert round(scores[m].score * len(yt)) == round(ref.score * len(yt))  # same number of correct items
        assert scores[m].test_loss == pytest.approx(ref.test_loss, rel=1e-4, abs=1e-5)


def _probe_data(task: str, n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Features [n, 3, 10] and labels of ``task`` (class ids; 2 labels of 0/1; 2 real targets), and the outputs."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, 3, 10, generator=g)
    if task == "multiclass":
        return x, torch.randint(0, C, (n,), generator=g), C
    y = torch.randn(n, 2, generator=g)
    return x, (y > 0).float() if task == "multilabel" else y, 2


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore:.*LeafSpec")
@pytest.mark.parametrize("task, n", [("multiclass", 50), ("multilabel", 8), ("multilabel", 50),
                                     ("regression", 8), ("regression", 50)])  # n=8: the dual form (N <= D)
def test_lightning_trainer_trains_the_same_heads_as_fit(task, n):
    """On the task's loss (cross-entropy, binary cross-entropy, squared error)."""
    x, y, c = _probe_data(task, n)
    fast, slow = (LinearProbes(3, 10, c, seed=1, task=task) for _ in range(2))
    fast.fit(x, y, epochs=3, batch_size=16, generator=torch.Generator().manual_seed(5))
    loader = DataLoader(TensorDataset(x, y), batch_size=16,
                        sampler=RandomSampler(x, generator=torch.Generator().manual_seed(5)))
    L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(slow, loader)
    torch.testing.assert_close(slow.weight, fast.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(slow.bias, fast.bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["linear", "knn"])
def test_separable_features_score_one_and_random_features_score_chance(name):
    train, y, test, yt = make_round([6, 9], signal=20.0)
    assert all(s.score == 1.0 for s in get_scorer(name, **(FAST if name == "linear" else {})).score(
        train, y, test, yt, C).values())
    g = torch.Generator().manual_seed(9)
    y, yt = torch.randint(0, 10, (200,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    out = get_scorer(name).score({"r": torch.randn(200, 16, generator=g)}, y, {"r": torch.randn(2000, 16, generator=g)},
                                 yt, 10)["r"]
    assert abs(out.score - 0.1) < 0.04 and math.isfinite(out.test_loss)


def test_standardising_makes_the_score_scale_free():
    train, y, test, yt = make_round([8])
    base = LinearScorer(**FAST).score(train, y, test, yt, C)["m0"]
    scaled = LinearScorer(**FAST).score({"m0": train["m0"] * 1e3}, y, {"m0": test["m0"] * 1e3}, yt, C)["m0"]
    assert scaled.score == base.score and scaled.test_loss == pytest.approx(base.test_loss, rel=1e-3)
    raw = LinearScorer(**FAST, standardize=False).score(train, y, test, yt, C)["m0"]
    assert math.isfinite(raw.test_loss)


def test_knn_breaks_vote_ties_by_similarity():
    train, y = torch.tensor([[1.0, 0.0], [0.6, 0.8]]), torch.tensor([0, 1])
    test = torch.tensor([[0.8, 0.6]])  # cosine 0.8 to the class-0 item, 0.96 to the class-1 item; k=2 votes 1:1
    knn = get_scorer("knn", k=2)
    assert knn.score({"m": train}, y, {"m": test}, torch.tensor([1]), 2)["m"].score == 1.0
    assert knn.score({"m": train}, y, {"m": test}, torch.tensor([0]), 2)["m"].score == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# ranking


def test_rank_orders_by_score_then_test_loss_then_id():
    s = {"b": ProxyScore(0.9, 0.5), "a": ProxyScore(0.9, 0.5), "c": ProxyScore(0.9, 0.2),
         "d": ProxyScore(0.95, 3.0), "e": ProxyScore(0.1, 0.0), "n": ProxyScore(math.nan, 0.1)}
    assert rank(s, higher_is_better=True) == ["d", "c", "a", "b", "e", "n"]
    assert rank(s, higher_is_better=False) == ["e", "c", "a", "b", "d", "n"]
    assert rank({"x": ProxyScore(0.5, math.nan), "y": ProxyScore(0.5, 1.0)}, True) == ["y", "x"]


# ---------------------------------------------------------------------------------------------------------------------
# registry


def test_registry_builds_known_scorers_and_names_them_on_errors():
    assert {"linear", "knn"} <= set(available_scorers())
    linear, knn = get_scorer("linear", seed=3, epochs=5), get_scorer("knn", seed=3)
    assert isinstance(linear, LinearScorer) and linear.name == "linear" and linear.higher_is_better
    assert isinstance(knn, KNNScorer) and knn.name == "knn" and knn.higher_is_better
    with pytest.raises(ConfigError, match=r"unknown proxy scorer 'nope'; known scorers: .*knn.*linear"):
        get_scorer("nope")
    with pytest.raises(ConfigError, match="invalid options for proxy scorer 'linear'.*bogus"):
        get_scorer("linear", bogus=1)


@pytest.mark.parametrize("name, option", [("linear", dict(epochs=0)), ("linear", dict(lr=0)),
                                          ("linear", dict(lr=-0.1)), ("linear", dict(batch_size=0)),
                                          ("linear", dict(momentum=1.0)), ("linear", dict(seed=-1)),
                                          ("linear", dict(epochs=2.5)), ("linear", dict(standardize="yes")),
                                          ("knn", dict(k=0)), ("knn", dict(k=True))])
def test_bad_scorer_options_raise_config_error(name, option):
    with pytest.raises(ConfigError, match=f"option {next(iter(option))} must be"):
        get_scorer(name, **option)


def test_register_a_lower_is_better_scorer(monkeypatch):
    monkeypatch.setattr(score_mod, "SCORERS", score_mod.SCORERS.copy())

    @register_scorer("mean-norm")
    class MeanNorm(ProxyScorer):
        higher_is_better = False

        def score(self, train, train_labels, test, test_labels, num_classes):
            return {m: ProxyScore(float(x.norm(dim=1).mean()), 0.0) for m, x in test.items()}

    scorer = get_scorer("mean-norm")
    assert scorer.name == "mean-norm" and "mean-norm" in available_scorers()
    out = scorer.score({}, None, {"big": torch.ones(2, 3) * 5, "small": torch.ones(2, 3)}, None, 2)
    assert rank(out, scorer.higher_is_better) == ["small", "big"]
    with pytest.raises(ConfigError, match="already taken"):
        register_scorer("mean-norm")(type("Other", (ProxyScorer,), {}))
    with pytest.raises(TypeError, match="needs a ProxyScorer subclass"):
        register_scorer("plain")(object)


# ---------------------------------------------------------------------------------------------------------------------
# bad inputs


def _bad(case):
    train, y, test, yt = make_round([6, 6], n=20, t=10)
    n = C
    if case == "train rows":
        train["m1"] = train["m1"][:-1]
    elif case == "test rows":
        test["m0"] = test["m0"][:-2]
    elif case == "dims":
        test["m1"] = test["m1"][:, :5]
    elif case == "models":
        del test["m1"]
    elif case == "no models":
        train, test = {}, {}
    elif case == "no items":
        train, y = {m: x[:0] for m, x in train.items()}, y[:0]
    elif case == "empty features":
        train, test = {m: x[:, :0] for m, x in train.items()}, {m: x[:, :0] for m, x in test.items()}
    elif case == "label too big":
        y = y.clone(); y[3] = C
    elif case == "negative label":
        yt = yt.clone(); yt[0] = -1
    elif case == "float labels":
        y = y.float()
    elif case == "nan":
        train["m0"] = train["m0"].clone(); train["m0"][2, 1] = math.nan
    elif case == "1-d":
        test["m0"] = test["m0"][:, 0]
    elif case == "one class":
        n = 1
    return train, y, test, yt, n


@pytest.mark.parametrize("name", ["linear", "knn"])
@pytest.mark.parametrize("case, message", [
    ("train rows", "model 'm1' has 19 train feature rows but there are 20 train labels"),
    ("test rows", "model 'm0' has 8 test feature rows but there are 10 test labels"),
    ("dims", "model 'm1' has 6-dim train features but 5-dim test features"),
    ("models", r"same models; only in train: \['m1'\], only in test: \[\]"),
    ("no models", "no models to score"),
    ("no items", "no train items"),
    ("empty features", r"train features of model 'm0' must be a 2-D float tensor \[items, dim\] with dim >= 1"),
    ("label too big", r"train labels must lie in \[0, 3\] for num_classes=4, found labels from 0 to 4"),
    ("negative label", r"test labels must lie in \[0, 3\].*from -1"),
    ("float labels", "train labels must be a 1-D integer tensor, got a 1-D torch.float32 tensor"),
    ("nan", "train features of model 'm0' contain NaN or infinite values"),
    ("1-d", "test features of model 'm0' must be a 2-D float tensor"),
    ("one class", "num_classes must be an integer of at least 2, got 1"),
])
def test_bad_inputs_raise_data_error(name, case, message):
    train, y, test, yt, n = _bad(case)
    with pytest.raises(DataError, match=message):
        get_scorer(name).score(train, y, test, yt, n)


def test_a_diverged_linear_probe_is_one_config_error_naming_the_learning_rate():
    """lr=1e30 used to rank on a test loss of 1e31 without a word (issue 30, class 3)."""
    from alsatian_pl.errors import ConfigError
    from alsatian_pl.score import get_scorer
    g = torch.Generator().manual_seed(0)
    y, yt = torch.randint(0, 5, (200,), generator=g), torch.randint(0, 5, (100,), generator=g)
    train, test = {"a": torch.randn(200, 16, generator=g)}, {"a": torch.randn(100, 16, generator=g)}
    with pytest.raises(ConfigError, match=r"diverged .* lr=1e\+30: lower search.scorer.kwargs.lr"):
        get_scorer("linear", lr=1e30, epochs=5).score(train, y, test, yt, 5)
    assert get_scorer("linear", lr=0.1, epochs=5).score(train, y, test, yt, 5)["a"].test_loss < 5
