"""The successive-halving schedule: the paper's by default; the opt-in robust knobs min_class_items (a larger first
chunk, empty rounds merged away) and noise_margin (keep the models within the scorer's standard errors of the cut)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alsatian_pl.data import SearchDataModule
from alsatian_pl.data._split import chunk_bounds, class_prefix, stratified_split
from alsatian_pl.errors import AlsatianWarning, ConfigError, DataError
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.halving import PAPER, Schedule
from alsatian_pl.score import ProxyScore, ProxyScorer, binomial_stderr, get_scorer
from alsatian_pl.store import BlockStore
from alsatian_pl.halving import get_strategy


@pytest.fixture(scope="module")
def data():
    dm = SearchDataModule(num_items=300, image_size=32, seed=0)  # 240 training items, 10 classes, 60 test items
    dm.setup()
    return dm


def _search(zoo, data, strategy="alsatian", **kwargs):
    kwargs = {"batch_size": 32, "device": "cpu", "progress": False, "scorer_kwargs": {"epochs": 10}, **kwargs}
    if isinstance(kwargs.get("scorer"), ProxyScorer):
        kwargs.pop("scorer_kwargs")
    return SuccessiveHalving(BlockStore(zoo.store.root), data, strategy=strategy, **kwargs).run(zoo.models)


def _scores(result):
    return [(r.model, r.score, r.test_loss, r.eliminated_in_round) for r in result.ranking]


def _paper_bounds(n, rounds):
    return [round_half_up(n * (2**i - 1) / (2**rounds - 1)) for i in range(rounds + 1)]


def round_half_up(x):
    return math.floor(x + 0.5)


class TableScorer(ProxyScorer):
    """Fixed scores by model index (the zoo's models in order), each with the same standard error."""

    name = "table"
    reports_stderr = True

    def __init__(self, names, values, stderr=0.02):
        self.table, self.stderr = dict(zip(names, values)), stderr

    def score(self, train, train_labels, test, test_labels, num_classes):
        return {m: ProxyScore(self.table[m], 0.0, self.stderr) for m in train}


class NoErrorScorer(TableScorer):
    reports_stderr = False

    def score(self, train, train_labels, test, test_labels, num_classes):
        return {m: ProxyScore(self.table[m], 0.0) for m in train}


TABLE = [0.90, 0.80, 0.70, 0.69, 0.50, 0.40]  # with stderr 0.02: 0.69 lies within 1 SE of the round-1 cut (0.70)


# -- defaults: the paper's schedule


@given(st.integers(1, 100_000), st.integers(1, 12))
def test_null_knob_gives_the_papers_bounds(num_train, rounds):
    assert chunk_bounds(num_train, rounds, None) == chunk_bounds(num_train, rounds) == _paper_bounds(num_train, rounds)


def test_null_knobs_give_the_papers_survivor_counts():
    assert PAPER.is_paper and Schedule(None, None) == PAPER and get_strategy("alsatian").schedule is PAPER
    strategy = get_strategy("shift")
    for alive in range(1, 40):
        ranked = [f"m{i}" for i in range(alive)]
        scores = {m: ProxyScore(1.0 - i / 100, 0.0, 0.01) for i, m in enumerate(ranked)}
        for result in (1, 2, 5):
            for rounds in (1, 2, 4):
                for r in range(rounds):
                    paper = result if r == rounds - 1 else max(result, math.ceil(alive / 2))
                    assert strategy.survivors(ranked, r, rounds, result) == paper
                    assert strategy.keep(ranked, scores, r, rounds, result, True) == ranked[:paper]


def test_null_knobs_search_is_the_default_search(zoo, data):
    table = TableScorer(zoo.models, TABLE)
    default, explicit = _search(zoo, data, scorer=table), _search(zoo, data, scorer=table, min_class_items=None,
                                                                  noise_margin=None)
    assert _scores(default) == _scores(explicit) and default.rounds == explicit.rounds
    assert [r.kept for r in default.rounds] == [3, 2, 1] and data.chunk_sizes == [34, 69, 137]


# -- min_class_items: the cut


@settings(max_examples=300)
@given(st.integers(1, 100_000), st.integers(1, 12), st.integers(1, 200_000))
def test_min_first_bounds_partition_double_and_dominate_the_papers(num_train, rounds, min_first):
    bounds, paper = chunk_bounds(num_train, rounds, min_first), chunk_bounds(num_train, rounds)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == num_train and 1 <= len(sizes) <= rounds
    if paper[1] >= min_first:  # the paper's D1 is large enough already: the paper's chunks
        assert bounds == paper
        return
    assert np.all(sizes > 0)  # strictly increasing: no empty round (they are merged away)
    assert sizes[0] == min(min_first, num_train)
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:-1]))  # doubling until the items run out
    assert len(sizes) == 1 or 0 < sizes[-1] <= 2 * sizes[-2]
    assert all(b >= p for b, p in zip(bounds, paper))  # every round trains on at least the paper's items
    if len(sizes) < rounds:  # merged: the doubling would have run past the items
        assert min(min_first, num_train) * (2 ** len(sizes) - 1) >= num_train


@settings(max_examples=100)
@given(st.lists(st.integers(2, 40), min_size=2, max_size=8), st.integers(1, 30), st.integers(1, 6),
       st.integers(0, 2**32 - 1))
def test_first_chunk_holds_min_class_items_of_every_class(counts, k, rounds, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    train, _ = stratified_split(labels, 0.2, np.random.default_rng(seed))
    y = labels[train]  # the round-robin training order the data module keeps
    bounds = chunk_bounds(len(y), rounds, class_prefix(y, k))
    first = np.bincount(y[:bounds[1]], minlength=len(counts))
    available = np.bincount(y, minlength=len(counts))
    assert np.all(first >= np.minimum(k, available))
    if np.all(available >= k):
        assert bounds[1] >= min(k * len(counts), len(y))


def test_data_module_cuts_the_robust_chunks(data):
    data.setup_rounds(3, min_class_items=5)
    assert data.chunk_sizes == [50, 100, 90]  # D1 = 5 x 10 classes, D2 doubles, D3 takes the 90 left
    assert torch.bincount(data.chunk(0)[1], minlength=10).tolist() == [5] * 10
    data.setup_rounds(3, min_class_items=10)
    assert data.chunk_sizes == [100, 140]  # D3 would be empty: merged away
    data.setup_rounds(3, min_class_items=1)
    assert data.chunk_sizes == [34, 69, 137]  # 10 items: the paper's D1 (34) holds more
    data.setup_rounds(1, min_class_items=10)
    assert data.chunk_sizes == [240]  # one round (base): all training items, as without the knob
    data.setup_rounds(3)
    assert data.chunk_sizes == [34, 69, 137]
    with pytest.raises(DataError, match="search.min_class_items must be a positive whole number"):
        data.setup_rounds(3, min_class_items=0)


def test_min_class_items_lets_a_small_dataset_run_in_fewer_rounds(zoo):
    small = SearchDataModule(num_items=40, image_size=32)  # 30 training items: the paper's 3 rounds need 70
    with pytest.raises(DataError, match="or set search.min_class_items"):
        _search(zoo, small)
    with pytest.warns(AlsatianWarning, match=r"after 2 of the 3 rounds: the search runs only those"):
        result = _search(zoo, small, scorer=TableScorer(zoo.models, TABLE), min_class_items=1)
    assert small.chunk_sizes == [10, 20] and [r.items for r in result.rounds] == [10 + 10, 20]
    assert [r.models for r in result.rounds] == [6, 3] and [r.kept for r in result.rounds] == [3, 1]
    assert result.winner == zoo.models[0]


@pytest.mark.parametrize(("knobs", "chunks"), [({"min_class_items": 5}, [50, 100, 90]),
                                               ({"noise_margin": 1.0}, [34, 69, 137])])
def test_alsatian_and_shift_agree_with_each_knob(zoo, data, knobs, chunks):
    a, s = _search(zoo, data, "alsatian", **knobs), _search(zoo, data, "shift", **knobs)
    assert [r.model for r in a.ranking] == [r.model for r in s.ranking]
    for (_, sa, la, ra), (_, ss, ls, rs) in zip(_scores(a), _scores(s)):
        assert abs(sa - ss) <= 1e-5 and abs(la - ls) <= 1e-5 and ra == rs
    assert [r.kept for r in a.rounds] == [r.kept for r in s.rounds] and a.rounds[-1].kept == 1
    assert data.chunk_sizes == chunks
    test_items = len(data.test_items()[1])
    assert [r.items for r in a.rounds] == [chunks[0] + test_items, *chunks[1:]]  # the documented items per round
    assert [r.models for r in a.rounds[1:]] == [r.kept for r in a.rounds[:-1]]
    if "noise_margin" in knobs:  # accuracies 0.43-0.53 on 60 test items (SE ~0.065): the margin keeps extra models
        assert [r.kept for r in a.rounds] != [3, 2, 1]  # the paper's counts for 6 models


def test_min_class_items_covering_the_data_is_exhaustive_scoring(zoo, data):
    with pytest.warns(AlsatianWarning, match="after 1 of the 3 rounds"):
        one = _search(zoo, data, min_class_items=1000)
    base = _search(zoo, data, "base")
    assert len(one.rounds) == 1 and one.rounds[0].items == 240 + 60
    assert [r.model for r in one.ranking] == [r.model for r in base.ranking]
    assert all(abs(x[1] - y[1]) <= 1e-5 for x, y in zip(_scores(one), _scores(base)))


# -- noise_margin: who survives


def test_noise_margin_keeps_the_models_within_the_margin_of_the_cut():
    schedule, ranked = Schedule(noise_margin=1.0), ["a", "b", "c", "d", "e", "f"]
    scores = dict(zip(ranked, [ProxyScore(v, 0.0, 0.02) for v in TABLE]))
    assert schedule.keep(ranked, scores, 3, final=False, higher_is_better=True) == ["a", "b", "c", "d"]
    assert schedule.keep(ranked, scores, 3, final=True, higher_is_better=True) == ["a", "b", "c"]
    assert Schedule(noise_margin=0.0).keep(ranked, scores, 3, final=False, higher_is_better=True) == ["a", "b", "c"]
    assert Schedule(noise_margin=11.0).keep(ranked, scores, 3, final=False, higher_is_better=True) == ranked[:5]
    # each model's own standard error decides, so the kept set need not be a prefix of the ranking
    mixed = {**scores, "d": ProxyScore(0.69, 0.0, 0.0), "e": ProxyScore(0.50, 0.0, 0.5), "f": ProxyScore(0.4, 0.0)}
    assert schedule.keep(ranked, mixed, 3, final=False, higher_is_better=True) == ["a", "b", "c", "e"]
    ties = {**scores, "d": ProxyScore(0.70, 1.0, 0.0)}  # tied with the cut score, ranked after it by test loss
    assert Schedule(noise_margin=0.0).keep(ranked, ties, 3, final=False, higher_is_better=True) == ranked[:4]
    nan = {**scores, "d": ProxyScore(math.nan, 0.0, 0.02)}
    assert schedule.keep(ranked, nan, 3, final=False, higher_is_better=True) == ranked[:3]
    low = dict(zip(ranked, [ProxyScore(v, 0.0, 0.02) for v in (0.1, 0.2, 0.3, 0.31, 0.5, 0.6)]))  # lower is better
    assert schedule.keep(ranked, low, 3, final=False, higher_is_better=False) == ranked[:4]
    assert schedule.keep(ranked, scores, 6, final=False, higher_is_better=True) == ranked


def test_accuracy_scorers_report_the_binomial_standard_error():
    assert binomial_stderr(0.75, 48) == pytest.approx(math.sqrt(0.75 * 0.25 / 48))
    assert binomial_stderr(1.0, 10) == 0.0 and binomial_stderr(math.nan, 10) is None
    gen = torch.Generator().manual_seed(0)
    y, yt = torch.arange(40) % 4, torch.arange(20) % 4
    train = {"m": torch.randn(40, 8, generator=gen) + y[:, None]}
    test = {"m": torch.randn(20, 8, generator=gen) + yt[:, None]}
    for name in ("linear", "knn"):
        scorer = get_scorer(name, **({"epochs": 5} if name == "linear" else {}))
        p = scorer.score(train, y, test, yt, 4)["m"]
        assert scorer.reports_stderr and p.stderr == pytest.approx(math.sqrt(p.score * (1 - p.score) / 20))
        assert p == ProxyScore(p.score, p.test_loss)  # the standard error is not part of a score's identity
    logme = get_scorer("logme")
    assert not logme.reports_stderr and logme.score(train, y, test, yt, 4)["m"].stderr is None


def test_noise_margin_in_a_search_keeps_extra_models_and_ends_with_result_size(zoo, data):
    table = TableScorer(zoo.models, TABLE)
    result = _search(zoo, data, scorer=table, noise_margin=1.0)
    assert [r.models for r in result.rounds] == [6, 4, 2] and [r.kept for r in result.rounds] == [4, 2, 1]
    out = {r.model: r.eliminated_in_round for r in result.ranking}
    assert [out[m] for m in zoo.models] == [None, 2, 1, 1, 0, 0]  # model 3 (0.69) went on past round 1
    wide = _search(zoo, data, scorer=table, noise_margin=6.0)  # 0.12: in round 2 models 2 and 3 are within it
    assert [r.kept for r in wide.rounds] == [4, 4, 1] and wide.winner == zoo.models[0]
    two = _search(zoo, data, scorer=TableScorer(zoo.models, TABLE, stderr=1.0), noise_margin=1.0, result_size=2)
    assert [r.kept for r in two.rounds] == [6, 2] and [r.model for r in two.ranking[:2]] == zoo.models[:2]


def test_noise_margin_without_standard_errors_warns_once_and_keeps_nobody_extra(zoo, data):
    with pytest.warns(AlsatianWarning, match="keeps nobody extra with scorer 'logme'"):
        SuccessiveHalving(zoo.store, data, scorer="logme", noise_margin=1.0, device="cpu", progress=False,
                          confidence=None)
    with warnings.catch_warnings():  # with a confidence level, logme's jackknife gives its standard error
        warnings.simplefilter("error", AlsatianWarning)
        SuccessiveHalving(zoo.store, data, scorer="logme", noise_margin=1.0, device="cpu", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = NoErrorScorer(zoo.models, TABLE)
        result = _search(zoo, data, scorer=plain, noise_margin=1.0)
    assert sum("keeps nobody extra" in str(w.message) for w in caught) == 1
    assert [r.kept for r in result.rounds] == [3, 2, 1]
    assert _scores(result) == _scores(_search(zoo, data, scorer=plain))


def test_bad_knob_values_are_one_config_error(zoo, data):
    for kwargs, words in [({"min_class_items": 0}, "search.min_class_items must be a positive whole number"),
                          ({"min_class_items": 2.5}, "search.min_class_items"),
                          ({"min_class_items": True}, "search.min_class_items"),
                          ({"min_class_items": "5"}, "search.min_class_items"),
                          ({"noise_margin": -0.5}, "search.noise_margin must be a number, 0 or more"),
                          ({"noise_margin": math.inf}, "search.noise_margin"),
                          ({"noise_margin": "1"}, "search.noise_margin"),
                          ({"noise_margin": False}, "search.noise_margin")]:
        with pytest.raises(ConfigError, match=words):
            SuccessiveHalving(zoo.store, data, device="cpu", progress=False, **kwargs)


# -- resume


def test_resume_with_the_knobs_continues_and_other_knobs_start_over(zoo, data, tmp_path, monkeypatch,
                                                                   ctrl_c_in_round):
    from alsatian_pl.errors import SearchInterrupted
    table, knobs = TableScorer(zoo.models, TABLE), {"noise_margin": 1.0, "min_class_items": 5}
    ctrl_c_in_round(1)
    with pytest.raises(SearchInterrupted, match="round 1 is saved"):
        _search(zoo, data, scorer=table, checkpoint_dir=tmp_path, **knobs)
    monkeypatch.undo()
    saved = list(tmp_path.glob("search-*.safetensors"))
    assert len(saved) == 1
    with pytest.warns(UserWarning, match=rf"no saved round matches.*{saved[0].name} holds rounds of this search run "
                                         r"with search.min_class_items=5, search.noise_margin=1.0"):
        other = _search(zoo, data, scorer=table, checkpoint_dir=tmp_path, resume=True, min_class_items=5)
    assert other.resumed_from_round is None and [r.kept for r in other.rounds] == [3, 2, 1]
    assert saved[0].exists()  # the other schedule's saved rounds stay
    resumed = _search(zoo, data, scorer=table, checkpoint_dir=tmp_path, resume=True, **knobs)
    reference = _search(zoo, data, scorer=table, **knobs)
    assert resumed.resumed_from_round == 1 and _scores(resumed) == _scores(reference)
    assert [r.kept for r in resumed.rounds] == [r.kept for r in reference.rounds] == [4, 2, 1]
    assert [r.items for r in resumed.rounds] == [r.items for r in reference.rounds] == [50 + 60, 100, 90]
    assert not saved[0].exists()
