"""What a person looks at: short model names, the ranking plot and the time-breakdown plot."""

from __future__ import annotations

from alsatian_pl.app.plots import ranking_plot, time_plot
from alsatian_pl.units import display_names


def test_display_names_keep_the_distinguishing_part():
    names = [f"effnet_lite0_zoo-9555119592-{i:03d}" for i in (0, 7, 12)]
    assert display_names(names) == {n: n[-3:] for n in names}
    stems = ["ckpts-3f2a1b0c9d-resnet50_flowers", "ckpts-3f2a1b0c9d-resnet50_birds"]
    assert display_names(stems) == {stems[0]: "resnet50_flowers", stems[1]: "resnet50_birds"}
    assert display_names(["only-one"]) == {"only-one": "only-one"}
    assert display_names(["zoo-1", "zoo-1x"]) == {"zoo-1": "1", "zoo-1x": "1x"}


def test_plots_are_written_as_png(tmp_path):
    report = {"strategy": "alsatian", "rounds": [{}, {}],
              "ranking": [{"model": f"zoo-abc-{i:03d}", "score": 0.9 - i / 10, "test_loss": 0.1,
                           "eliminated_in_round": None if i == 0 else (1 if i == 1 else 0)} for i in range(4)],
              "timings_s": {"prepare_data": 0.1, "prepare_model": 0.2, "inference": 1.0, "proxy_scoring": 0.5,
                            "planning": 0.01, "checkpoint": 0.05, "total": 2.0}}
    for draw, name in ((ranking_plot, "ranking.png"), (time_plot, "time.png")):
        path = draw(report, tmp_path / name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_the_ranking_plot_spans_the_scores_and_names_the_scorer():
    from alsatian_pl.app.plots import ranking_title, score_range

    low, high = score_range([0.83, 0.7, 0.55])
    assert 0.5 < low < 0.55 and 0.83 < high < 0.9  # not from 0: the spread stays visible
    assert score_range([-3.0, -1.0]) == (-3.2, -0.8) and score_range([0.5, 0.5]) == (0.475, 0.525)
    report = {"strategy": "alsatian", "rounds": [{}], "ranking": [{}] * 3,
              "config": {"search": {"scorer": {"name": "logme", "kwargs": {}}}}}
    assert ranking_title(report) == "ranking by logme score (alsatian, 3 models, 1 rounds)"
    assert ranking_title({**report, "config": {}}).startswith("ranking by proxy score")


def test_plots_that_cannot_be_written_are_a_warning_not_the_end_of_the_run(tmp_path, monkeypatch):
    """A full disk (or any drawing failure) while plotting is one warning that points to results.json, not an error
    (the report writes results.json before the plots)."""
    import pytest

    import alsatian_pl.app.plots as plots
    from alsatian_pl.app.report import _plots
    from alsatian_pl.errors import AlsatianWarning

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "ranking_plot", full)
    with pytest.warns(AlsatianWarning, match="no plots: .*No space left on device.*results.json holds everything"):
        _plots({"ranking": [], "timings_s": {}}, tmp_path)
