"""How sure a search is: the jackknife replicates every scorer attaches, intervals, the confident set, the ensemble
scorer and its agreement, and that all of it is the same under every strategy and after a resume."""

from __future__ import annotations

import math

import pytest
import torch

from alsatian_pl.errors import ConfigError, SearchInterrupted
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.score import JACKKNIFE_GROUPS, ProxyScore, available_scorers, could_be_best, get_scorer, interval
from alsatian_pl.score._confidence import (hit_replicates, jackknife_groups, jackknife_se, leave_out_means,
                                           t_quantile)

SCORERS = [s for s in available_scorers() if s not in ("leep", "nce")]


def _features(seed=0, n=240, t=120, d=24, c=4):
    """Five models of decreasing class separation, and a sixth identical to the second."""
    g = torch.Generator().manual_seed(seed)
    y, yt = torch.randint(0, c, (n,), generator=g), torch.randint(0, c, (t,), generator=g)
    centres = torch.randn(c, d, generator=g)
    train, test = {}, {}
    for i, scale in enumerate([0.4, 0.8, 1.0, 2.0, 6.0]):
        train[f"m{i}"] = centres[y] / scale + torch.randn(n, d, generator=g)
        test[f"m{i}"] = centres[yt] / scale + torch.randn(t, d, generator=g)
    train["twin"], test["twin"] = train["m1"].clone(), test["m1"].clone()
    return train, y, test, yt, c


def _scored(name, groups=JACKKNIFE_GROUPS, **kwargs):
    scorer = get_scorer(name, **({"epochs": 5} if name == "linear" else {}), **kwargs)
    scorer.jackknife = groups
    scores = scorer.score(*_features())
    return scorer, scorer.combine(scores)


# -- the statistics


T_TABLE = {  # Student's t quantiles (scipy.stats.t.ppf, 4 decimals) at p = 0.8, 0.9, 0.95, 0.975
    5: (0.9195, 1.4759, 2.0150, 2.5706), 9: (0.8834, 1.3830, 1.8331, 2.2622),
    19: (0.8610, 1.3277, 1.7291, 2.0930), 100: (0.8452, 1.2901, 1.6602, 1.9840),
    math.inf: (0.841621, 1.281552, 1.644854, 1.959964)}


@pytest.mark.parametrize("df", list(T_TABLE))
def test_t_quantile_matches_the_table(df):
    for p, expected in zip((0.8, 0.9, 0.95, 0.975), T_TABLE[df]):
        assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)


def test_groups_depend_on_seed_and_count_alone_and_are_balanced():
    a, b = jackknife_groups(103, seed=7), jackknife_groups(103, seed=7)
    assert torch.equal(a, b) and not torch.equal(a, jackknife_groups(103, seed=8))
    sizes = torch.bincount(a, minlength=JACKKNIFE_GROUPS)
    assert int(sizes.max() - sizes.min()) <= 1 and int(sizes.sum()) == 103
    assert jackknife_groups(JACKKNIFE_GROUPS - 1, seed=0) is None  # fewer items than groups: no replicates


def test_jackknife_of_a_mean_is_the_spread_of_the_group_means():
    """For equal groups, the delete-a-group jackknife variance of a mean is var(group means) / G (ddof 1)."""
    g = torch.Generator().manual_seed(0)
    hits = (torch.rand(1, 200, generator=g) < 0.7).double()
    group = jackknife_groups(200, seed=3)
    reps = leave_out_means(hits, group)[0].tolist()
    means = torch.stack([hits[0, group == k].mean() for k in range(JACKKNIFE_GROUPS)])
    assert jackknife_se(reps) == pytest.approx(math.sqrt(float(means.var()) / JACKKNIFE_GROUPS), rel=1e-9)
    assert hit_replicates(["a"], hits, seed=3, groups=JACKKNIFE_GROUPS)["a"] == reps


# -- every scorer


@pytest.mark.parametrize("name", SCORERS)
def test_every_scorer_gives_replicates_without_changing_its_scores(name):
    scorer, scores = _scored(name)
    _, plain = _scored(name, groups=0)
    assert scorer.gives_replicates
    for m, p in scores.items():
        assert p == plain[m] and plain[m].replicates is None  # score and test loss unchanged
        assert len(p.replicates) == JACKKNIFE_GROUPS and all(math.isfinite(v) for v in p.replicates)
        assert p.stderr is not None and math.isfinite(p.stderr)


@pytest.mark.parametrize("name", SCORERS)
def test_identical_models_get_identical_scores_and_are_in_or_out_together(name):
    scorer, scores = _scored(name)
    twin, m1 = scores["twin"], scores["m1"]
    assert (twin.score, twin.test_loss, twin.replicates) == (m1.score, m1.test_loss, m1.replicates)
    best = could_be_best(scores, 0.9, scorer.higher_is_better)
    assert best is not None and ("twin" in best) == ("m1" in best)


@pytest.mark.parametrize("name", SCORERS)
def test_intervals_hold_the_score_widen_with_the_level_and_stay_in_range(name):
    scorer, scores = _scored(name)
    lo, hi = scorer.score_range
    for p in scores.values():
        narrow, wide = interval(p, 0.8, scorer.score_range), interval(p, 0.95, scorer.score_range)
        assert lo <= wide[0] <= narrow[0] <= p.score <= narrow[1] <= wide[1] <= hi


def test_a_lone_model_gets_replicates_too():
    """The linear probe pads a lone head with a partner (another gemm path otherwise); its hits are its own."""
    train, y, test, yt, c = _features()
    scorer = get_scorer("linear", epochs=5)
    scorer.jackknife = JACKKNIFE_GROUPS
    alone = scorer.score({"m0": train["m0"]}, y, {"m0": test["m0"]}, yt, c)["m0"]
    assert len(alone.replicates) == JACKKNIFE_GROUPS and interval(alone, 0.9) is not None


def test_the_confident_set_keeps_the_winner_and_drops_a_clearly_worse_model():
    scorer, scores = _scored("logme")
    best = could_be_best(scores, 0.9, True)
    assert best[0] == "m0" and "m4" not in best
    assert set(could_be_best(scores, 0.5, True)) <= set(best) <= set(could_be_best(scores, 0.99, True))


def test_a_score_without_uncertainty_leaves_the_set_unknown():
    scores = {"a": ProxyScore(0.9, 0.1), "b": ProxyScore(0.8, 0.2)}
    assert could_be_best(scores, 0.9, True) is None and interval(scores["a"], 0.9) is None
    with_errors = {"a": ProxyScore(0.9, 0.1, 0.01), "b": ProxyScore(0.89, 0.2, 0.01), "c": ProxyScore(0.5, 0.3, 0.01)}
    assert could_be_best(with_errors, 0.9, True) == ["a", "b"]  # unpaired: the scores' own standard errors


# -- the ensemble


def test_ensemble_combines_member_ranks_and_identical_models_tie():
    scorer, scores = _scored("ensemble", members=["linear", "logme", "knn"])
    assert set(scores["m0"].members) == {"linear", "logme", "knn"}
    assert all(0 <= p.score <= 1 for p in scores.values())
    assert scores["twin"].score == scores["m1"].score and scores["twin"].replicates == scores["m1"].replicates
    assert max(scores, key=lambda m: scores[m].score) == "m0" and min(scores, key=lambda m: scores[m].score) == "m4"


@pytest.mark.parametrize("members, words", [(["linear"], "at least two scorers"), ("linear", "at least two"),
                                            (["linear", "ensemble"], "cannot contain the ensemble"),
                                            (["linear", "nosuch"], "nosuch")])
def test_bad_ensemble_members_are_one_config_error(members, words):
    with pytest.raises(ConfigError, match=words):
        get_scorer("ensemble", members=members)


# -- searches


def _search(zoo, data, strategy="alsatian", **kwargs):
    kwargs = {"batch_size": 32, "device": "cpu", "progress": False, **kwargs}
    return SuccessiveHalving(zoo.store, data, strategy=strategy, **kwargs).run(zoo.models)


def _answer(result):
    return ([(r.model, r.score, r.test_loss, r.eliminated_in_round, r.score_interval) for r in result.ranking],
            result.confident_set, result.pruned_contenders, result.agreement)


@pytest.fixture(scope="module")
def data():
    from alsatian_pl.data import SearchDataModule
    dm = SearchDataModule(num_items=300, image_size=32, seed=0)
    dm.setup()
    return dm


def test_ensemble_search_is_exact_across_strategies_and_reports_agreement(zoo, data):
    scorer = {"name": "ensemble", "kwargs": {"members": {"linear": {"epochs": 5}, "knn": {}}}}
    alsatian, shift = (_search(zoo, data, s, scorer=scorer) for s in ("alsatian", "shift"))
    assert _answer(alsatian) == _answer(shift)
    assert alsatian.confidence == 0.9 and alsatian.winner in alsatian.confident_set
    assert set(alsatian.agreement) == {"linear~knn", "mean"} and -1 <= alsatian.agreement["mean"] <= 1
    assert alsatian.rounds[0].agreement == alsatian.agreement
    survivors = [r for r in alsatian.ranking if r.eliminated_in_round is None]
    assert all(r.score_interval is not None for r in survivors)


def test_confidence_off_gives_no_intervals_and_the_same_ranking(zoo, data):
    kw = {"scorer_kwargs": {"epochs": 5}}
    on, off = _search(zoo, data, **kw), _search(zoo, data, confidence=None, **kw)
    assert [(r.model, r.score, r.test_loss) for r in on.ranking] == [(r.model, r.score, r.test_loss)
                                                                     for r in off.ranking]
    assert off.confident_set is None and off.pruned_contenders == [] and off.confidence is None
    assert all(r.score_interval is None for r in off.ranking)
    assert on.winner in on.confident_set and all(r.score_interval for r in on.ranking)  # linear: every round


@pytest.mark.parametrize("bad", [0.3, 1.0, 1.5, True, "0.9", math.nan])
def test_bad_confidence_is_one_config_error(zoo, data, bad):
    with pytest.raises(ConfigError, match="search.confidence must be a level"):
        SuccessiveHalving(zoo.store, data, confidence=bad, device="cpu", progress=False)


def test_a_resumed_search_keeps_the_intervals_and_the_confident_set(zoo, data, tmp_path, monkeypatch,
                                                                     ctrl_c_in_round):
    kw = {"scorer": {"name": "ensemble", "kwargs": {"members": {"linear": {"epochs": 5}, "logme": {}}}}}
    ctrl_c_in_round(2)
    with pytest.raises(SearchInterrupted, match="rounds 1-2 are saved"):
        _search(zoo, data, checkpoint_dir=tmp_path, **kw)
    monkeypatch.undo()
    resumed = _search(zoo, data, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.resumed_from_round == 2 and _answer(resumed) == _answer(_search(zoo, data, **kw))
