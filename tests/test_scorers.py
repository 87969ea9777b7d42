"""The transferability scorers (LogME, H-score, regularised H-score, GBC, TransRate): each against a plain numpy
implementation of its published formula on fixed inputs (computed here, not pasted), exact under batching, options,
and successive halving with each of them (alsatian = shift, the fine-tune hand-off)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from alsatian_pl.data import SearchDataModule
from alsatian_pl.errors import ConfigError, DataError
from alsatian_pl.finetune import FinetuneCallback, FinetuneModule
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.score import (GBCScorer, HScorer, LogMEScorer, RegularizedHScorer, TransferabilityScorer,
                               TransRateScorer, available_scorers, get_scorer, rank)
from alsatian_pl.store import BlockStore

CONF = Path(__file__).resolve().parents[1] / "conf"
NAMES = ["logme", "hscore", "hscore_reg", "gbc", "transrate"]
CLASSES = {"logme": LogMEScorer, "hscore": HScorer, "hscore_reg": RegularizedHScorer, "gbc": GBCScorer,
           "transrate": TransRateScorer}


def features(n, d, *, classes=4, signal=1.0, noise=1.0, seed=0):
    """Labels [n] and features [n, d] (float64 numpy): class centres times ``signal`` plus noise plus an offset."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)  # every class present
    centres = rng.normal(size=(classes, d)) * signal
    return centres[y] + noise * rng.normal(size=(n, d)) + 0.5, y


def ours(name, f, y, **options):
    """The scorer's score of one model with train features f [n, d] (float64) and labels y (test split: the same)."""
    t = {"m": torch.from_numpy(f)}
    out = get_scorer(name, **options).score(t, torch.from_numpy(y), t, torch.from_numpy(y), int(y.max()) + 1)
    return out["m"].score


# ---------------------------------------------------------------------------------------------------------------------
# the references: the papers' formulas in plain numpy, one model at a time


def logme_reference(f, y, tol=1e-6, max_iter=100):
    """You et al. 2021, Algorithm 1, per class: explicit A = αI + βFᵀF, m = βA⁻¹Fᵀy, the α/β updates, then the
    log evidence (eq. 2) at the final α, β; LogME = mean over classes of evidence / n."""
    n, d = f.shape
    ftf, sigma = f.T @ f, np.linalg.eigvalsh(f.T @ f)
    out = []
    for c in np.unique(y):
        yc = (y == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for step in range(max_iter):
            m = beta * np.linalg.solve(alpha * np.eye(d) + beta * ftf, f.T @ yc)
            gamma = np.sum(beta * sigma / (alpha + beta * sigma))
            new_alpha, new_beta = gamma / (m @ m), (n - gamma) / np.sum((f @ m - yc) ** 2)
            converged = abs(new_alpha / new_beta - alpha / beta) <= tol * alpha / beta
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        assert step < max_iter - 1, "the reference did not converge: pick inputs with an interior maximum"
        a = alpha * np.eye(d) + beta * ftf
        m = beta * np.linalg.solve(a, f.T @ yc)
        evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
                    - beta / 2 * np.sum((f @ m - yc) ** 2) - alpha / 2 * m @ m - np.linalg.slogdet(a)[1] / 2)
        out.append(evidence / n)
    return float(np.mean(out))


def hscore_reference(f, y):
    """Bao et al. 2019 (the authors' code): tr(pinv(cov(f)) cov(g)), g_i = the mean feature of item i's class."""
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    return float(np.trace(np.linalg.pinv(np.cov(f, rowvar=False), rcond=1e-15) @ np.cov(g, rowvar=False)))


def ledoit_wolf_reference(x):
    """Ledoit & Wolf 2004 (Lemma 3.2/3.3, norm ‖A‖² = tr(AAᵀ)/p) for centred x: (shrunk covariance, shrinkage)."""
    n, p = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / p
    d2 = np.sum((s - mu * np.eye(p)) ** 2) / p
    b2 = min(sum(np.sum((np.outer(row, row) - s) ** 2) / p for row in x) / n**2, d2)
    shrinkage = b2 / d2
    return (1 - shrinkage) * s + shrinkage * mu * np.eye(p), shrinkage


def hscore_reg_reference(f, y):
    """Ibrahim et al. 2022 (the authors' code): tr(pinv(cov_α(f)) (1 − α) cov(g)), cov_α the Ledoit-Wolf estimate of
    the centred features."""
    f = f - f.mean(0)
    cov, alpha = ledoit_wolf_reference(f)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    return float(np.trace(np.linalg.pinv(cov, rcond=1e-15) @ ((1 - alpha) * np.cov(g, rowvar=False))))


def gbc_reference(f, y, min_variance=1e-4):
    """Pándy et al. 2022 (the authors' code, diagonal Gaussians): −Σ_{a≠b} exp(−D_B(a, b))."""
    stats = {c: (f[y == c].mean(0), np.maximum(f[y == c].var(0), min_variance)) for c in np.unique(y)}
    total = 0.0
    for a, (mu1, var1) in stats.items():
        for b, (mu2, var2) in stats.items():
            if a != b:
                avg = (var1 + var2) / 2
                distance = np.sum((mu1 - mu2) ** 2 / avg) / 8 + 0.5 * (
                    np.sum(np.log(avg)) - 0.5 * np.sum(np.log(var1)) - 0.5 * np.sum(np.log(var2)))
                total += np.exp(-distance)
    return -total


def transrate_reference(f, y, eps=1e-4):
    """Huang et al. 2022 (the paper's code): R(Z) − mean_c R(Z_c), R(Z) = ½ logdet(I + ZᵀZ/(nε)), Z centred."""
    def rate(z):
        return 0.5 * np.linalg.slogdet(np.eye(z.shape[1]) + z.T @ z / (len(z) * eps))[1]
    z = f - f.mean(0)
    return rate(z) - np.mean([rate(z[y == c]) for c in np.unique(y)])


# ---------------------------------------------------------------------------------------------------------------------
# each scorer against its reference


@pytest.mark.parametrize("n, d, noise", [(150, 12, 3.0), (60, 80, 6.0)])
def test_logme_matches_algorithm_1(n, d, noise):
    f, y = features(n, d, noise=noise, seed=1)
    assert ours("logme", f, y) == pytest.approx(logme_reference(f, y), rel=1e-9, abs=1e-12)
    assert ours("logme", f, y, tol=1e-3) == pytest.approx(logme_reference(f, y, tol=1e-3), rel=1e-9)


def test_logme_reaches_the_noise_free_limit_when_labels_lie_in_the_features_span():
    """N < D and separable: the evidence grows in β up to its β → ∞ limit, max over α of log N(y; 0, FFᵀ/α)."""
    f, y = features(30, 90, signal=3.0, noise=0.3, seed=2)
    gram, limits = f @ f.T, []
    for c in np.unique(y):
        yc = (y == c).astype(np.float64)
        quad = yc @ np.linalg.solve(gram, yc)
        alpha = len(y) / quad  # the maximiser of -1/2 logdet(2π FFᵀ/α) - α/2 yᵀ(FFᵀ)⁻¹y
        limits.append((-0.5 * (np.linalg.slogdet(2 * np.pi * gram / alpha)[1]) - alpha / 2 * quad) / len(y))
    assert ours("logme", f, y) == pytest.approx(np.mean(limits), rel=1e-6)


@pytest.mark.parametrize("name, reference, shapes", [
    ("hscore", hscore_reference, [(200, 10), (120, 40)]),
    ("hscore_reg", hscore_reg_reference, [(200, 10), (120, 40), (50, 90)]),
    ("gbc", gbc_reference, [(200, 10), (40, 120)]),
    ("transrate", transrate_reference, [(200, 10), (40, 120)]),
])
def test_scorer_matches_its_published_formula(name, reference, shapes):
    for i, (n, d) in enumerate(shapes):
        f, y = features(n, d, classes=5, signal=0.7, noise=1.5, seed=10 + i)
        assert ours(name, f, y) == pytest.approx(reference(f, y), rel=1e-9, abs=1e-12), (n, d)


def test_options_reach_the_formula():
    f, y = features(90, 20, classes=3, seed=4)
    assert ours("transrate", f, y, eps=1e-2) == pytest.approx(transrate_reference(f, y, eps=1e-2), rel=1e-9)
    assert ours("gbc", f * 1e-3, y, min_variance=0.5) == pytest.approx(gbc_reference(f * 1e-3, y, 0.5), rel=1e-9)


def test_hscore_is_k_minus_1_once_items_do_not_outnumber_dims():
    f, y = features(40, 60, classes=5, seed=5)
    assert ours("hscore", f, y) == pytest.approx(4.0, rel=1e-9)


# ---------------------------------------------------------------------------------------------------------------------
# the scorer contract


def make_round(dims, n=90, t=40, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y, yt = torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (t,), generator=g)
    train, test = {}, {}
    for i, d in enumerate(dims):
        centres = torch.randn(classes, d, generator=g) * (0.3 + 0.2 * i)
        train[f"m{i}"] = centres[y] + torch.randn(n, d, generator=g) + 1.0
        test[f"m{i}"] = centres[yt] + torch.randn(t, d, generator=g) + 1.0
    return train, y, test, yt


def _close(a, b):
    return a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


@pytest.mark.parametrize("name", NAMES)
def test_a_models_score_is_the_same_alone_and_among_others(name):
    train, y, test, yt = make_round([24, 24, 150, 24, 150])  # two dims: N > D and N < D
    scorer = get_scorer(name)
    together = scorer.score(train, y, test, yt, 5)
    assert list(together) == list(train)
    variants = [scorer.score(dict(reversed(train.items())), y, test, yt, 5),
                get_scorer(name, max_chunk_bytes=1).score(train, y, test, yt, 5),  # one model per chunk
                {m: scorer.score({m: train[m]}, y, {m: test[m]}, yt, 5)[m] for m in train}]
    for other in variants:
        assert all(_close(other[m].score, together[m].score) and _close(other[m].test_loss, together[m].test_loss)
                   for m in train)
        assert rank(other, True) == rank(together, True)
    # test_loss: minus the same metric on the test items
    held_out = scorer.score(test, yt, test, yt, 5)
    assert all(_close(together[m].test_loss, -held_out[m].score) for m in train)


@pytest.mark.parametrize("name", NAMES)
def test_declares_higher_is_better_and_more_signal_scores_higher(name):
    cls = get_scorer(name)
    assert isinstance(cls, CLASSES[name]) and isinstance(cls, TransferabilityScorer) and cls.name == name
    assert "higher_is_better" in vars(TransferabilityScorer) and cls.higher_is_better is True
    train, y, test, yt = make_round([20, 20, 20, 20], n=200)  # class signal grows with the model index
    scores = cls.score(train, y, test, yt, 5)
    assert rank(scores, cls.higher_is_better)[0] == "m3" and rank(scores, cls.higher_is_better)[-1] == "m0"


@pytest.mark.parametrize("name, option", [
    ("logme", dict(tol=0)), ("logme", dict(tol=1.5)), ("logme", dict(max_iter=0)), ("logme", dict(max_iter=2.0)),
    ("gbc", dict(min_variance=0)), ("gbc", dict(min_variance=-1.0)), ("transrate", dict(eps=0)),
    ("transrate", dict(eps=math.inf)), ("hscore", dict(seed=-1)), ("hscore_reg", dict(max_chunk_bytes=0)),
    ("transrate", dict(eps=True))])
def test_bad_options_raise_config_error(name, option):
    with pytest.raises(ConfigError, match=f"option {next(iter(option))} must be"):
        get_scorer(name, **option)
    with pytest.raises(ConfigError, match=f"invalid options for proxy scorer '{name}'.*bogus"):
        get_scorer(name, bogus=1)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_data_error(name):
    train, y, test, yt = make_round([6, 6], n=20, t=10)
    with pytest.raises(DataError, match="model 'm1' has 19 train feature rows"):
        get_scorer(name).score({**train, "m1": train["m1"][:-1]}, y, test, yt, 5)
    with pytest.raises(DataError, match="train labels must lie in"):
        get_scorer(name).score(train, y, test, yt, 3)


@pytest.mark.parametrize("name", NAMES)
def test_config_group_entry_builds_the_scorer(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=[f"search/scorer={name}"])
    assert cfg.search.scorer.name == name and name in available_scorers()
    scorer = get_scorer(name, seed=0, **cfg.search.scorer.kwargs)
    assert isinstance(scorer, CLASSES[name])


# ---------------------------------------------------------------------------------------------------------------------
# successive halving with each scorer


@pytest.fixture(scope="module")
def data():
    dm = SearchDataModule(num_items=300, image_size=32, seed=0)
    dm.setup()
    return dm


def _search(zoo, data, strategy, scorer):
    return SuccessiveHalving(BlockStore(zoo.store.root), data, strategy=strategy, scorer=scorer, batch_size=32,
                             device="cpu", progress=False).run(zoo.models)


@pytest.mark.parametrize("name", NAMES)
def test_alsatian_and_shift_rank_the_same_with_each_scorer_and_hand_off_the_winner(zoo, data, name):
    a, s = _search(zoo, data, "alsatian", name), _search(zoo, data, "shift", name)
    assert [r.model for r in a.ranking] == [r.model for r in s.ranking] and len(a.ranking) == len(zoo.models)
    for ra, rs in zip(a.ranking, s.ranking):
        assert ra.eliminated_in_round == rs.eliminated_in_round
        assert _close(ra.score, rs.score) and _close(ra.test_loss, rs.test_loss)
    assert [r.eliminated_in_round for r in a.ranking][0] is None
    hand_off = FinetuneCallback(search=lambda dm: a.to_json(), store_root=zoo.store.root)
    module = FinetuneModule()
    L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, accelerator="cpu", logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              callbacks=[hand_off]).fit(module, datamodule=data)
    assert module.provenance["model"] == a.winner
