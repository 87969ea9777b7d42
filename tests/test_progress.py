"""The search's progress where it runs: on a terminal a bar with the running round's steps; elsewhere (a log, a
pipe) plain lines for each round's start, plan, inference and end, and a resumed search says it resumed."""

from __future__ import annotations

import io

import pytest

from alsatian_pl import search
from alsatian_pl.data import SearchDataModule
from alsatian_pl.halving import ProgressBar

OPTIONS = dict(batch_size=32, device="cpu", progress=False, scorer_kwargs={"epochs": 2}, checkpoint_dir=None)


@pytest.fixture(scope="module")
def data():
    return SearchDataModule(num_items=300, image_size=32, seed=0)


def test_plain_progress_lines_when_not_a_terminal(zoo, data):
    stream = io.StringIO()
    result = search(zoo, data, callbacks=[ProgressBar(stream=stream, every_s=0)], **OPTIONS)
    lines = stream.getvalue().splitlines()
    rounds = len(result.rounds)
    assert lines[0] == f"search: {rounds} rounds over {len(zoo.models)} models"
    for r, report in enumerate(result.rounds, 1):
        start = f"round {r}/{rounds} · {report.models} models · {report.items} items"
        assert start in lines
        planned = [ln for ln in lines if ln.startswith(f"round {r}/{rounds}: ") and "planned" in ln]
        assert planned == [f"round {r}/{rounds}: {report.inference_steps} inference steps planned in "
                           f"{report.partitions} partition(s)"]
        done = next(ln for ln in lines if ln.startswith(f"round {r}/{rounds}: inference done"))
        assert f"step {report.inference_steps}/{report.inference_steps}" in done
        assert any(ln.startswith(f"round {r}/{rounds}: kept ") and f"of {report.models} models" in ln for ln in lines)
    assert "\x1b" not in stream.getvalue()  # no terminal control codes in a log


def test_the_terminal_bar_counts_the_rounds_steps(zoo, data):
    stream = io.StringIO()
    search(zoo, data, callbacks=[ProgressBar(stream=stream, plain=False)], **OPTIONS)
    text = stream.getvalue()
    assert "round 3/3" in text and "━" in text and "search: " not in text  # the bar (its last state), no lines


def test_step_text_counts_from_the_rounds_start():
    from alsatian_pl.halving.progress import _RoundSteps
    from alsatian_pl.stats import SearchStats

    stats = SearchStats()
    stats.count("inference_steps", 5)
    steps = _RoundSteps()
    steps.open(stats)
    assert steps.text() == ""  # nothing planned yet
    steps.planned = 4
    stats.count("inference_steps", 3)
    assert steps.done() == 3 and steps.text().startswith("step 3/4")


def test_the_run_says_what_the_zoo_is():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from alsatian_pl.app.config import describe_zoo, spec_of

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        r152 = compose("search", overrides=["models=resnet152_zoo"])
        effnet = compose("search", overrides=[])
        timm = compose("search", overrides=["models=timm_names", "models.names=[resnet18.a1_in1k,resnet50.a1_in1k,resnet34.a1_in1k,convnext_tiny.fb_in1k]"])
        where = compose("search", overrides=["models=resnet18_zoo", "+models.where.tags=[x]"])
    assert describe_zoo(spec_of(r152.models)) == "35 synthetic resnet152 variants (top_layers), random init (seed 0)"
    assert describe_zoo(spec_of(effnet.models)).endswith("of the weights efficientnet_lite0")
    assert describe_zoo(spec_of(timm.models)) == ("4 pretrained timm models (resnet18.a1_in1k, resnet50.a1_in1k, "
                                                "resnet34.a1_in1k and 1 more)")
    assert describe_zoo(spec_of(where.models)).endswith("random init (seed 0), cut by models.where")


def test_the_terminal_bar_fits_80_columns():
    import time

    from rich.console import Console

    from alsatian_pl.halving.progress import _RoundSteps, _StepsColumn
    from alsatian_pl.stats import SearchStats
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    stats, steps = SearchStats(), _RoundSteps()
    steps.open(stats)
    steps.planned, steps.planned_items, steps.started = 1234, 123_400_000, time.perf_counter() - 100
    steps.executed = steps.started + 100  # the rate over exactly 100 s, whatever the clock does meanwhile
    stats.count("inference_steps", 617)
    stats.items_inferred += 61_700_000
    buffer = io.StringIO()
    bar = ProgressBar(stream=buffer, plain=False)
    bar._steps = steps
    console = Console(file=buffer, width=80, force_terminal=True, color_system=None)
    progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=8), TimeElapsedColumn(),
                        _StepsColumn(steps), console=console)  # as ProgressBar draws it
    progress.add_task("round 10/10 · 1000 models", total=10, completed=9)
    console.print(progress.get_renderable())
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 80 and "step 617/1234, 61.7M items, 617k/s" in lines[0], lines


def test_the_rate_stops_with_the_rounds_inference():
    from alsatian_pl.halving.progress import _RoundSteps
    from alsatian_pl.stats import SearchStats

    stats, steps = SearchStats(), _RoundSteps()
    steps.open(stats)
    steps.planned, steps.planned_items, steps.started = 10, 1000, 100.0
    stats.count("inference_steps", 10)
    stats.items_inferred += 1000
    steps.executed = 105.0  # inference took 5 s: scoring afterwards does not lower the rate
    assert steps.text() == "step 10/10, 1000 items, 200/s"


def test_inside_a_step_the_items_move_batch_by_batch(zoo, data):
    """The items count goes up with every batch (a long step is not a frozen line), and every planned item-step is
    counted by the round's end; the scorer's progress (the probe's SGD steps) follows the inference."""
    from alsatian_pl.halving import SearchCallback
    from alsatian_pl.halving.progress import _compact

    seen = []

    class Watch(SearchCallback):
        def on_round_start(self, search, state):
            self.bar = next(c for c in search.callbacks if isinstance(c, ProgressBar))

        def on_round_executed(self, search, state):
            steps = self.bar._steps
            seen.append((steps.items(), steps.planned_items, steps.text()))

    result = search(zoo, data, callbacks=[ProgressBar(stream=io.StringIO(), every_s=0), Watch()],
                    **{**OPTIONS, "batch_size": 16})
    for (items, planned, text), report in zip(seen, result.rounds):
        assert items == planned == report.inference_steps * report.items and f" {_compact(items)} items" in text


def test_scoring_shows_the_probes_sgd_steps():
    import torch

    from alsatian_pl.score import ScoreProgress, get_scorer, reporting

    scorer, progress, seen = get_scorer("linear", epochs=3, batch_size=10), ScoreProgress(), []
    x = {m: torch.randn(40, 8) for m in "ab"}
    t = {m: torch.randn(20, 8) for m in "ab"}
    step = progress.advance
    progress.advance = lambda n=1: (step(n), seen.append(progress.text()))
    with reporting(scorer, progress):
        scorer.score(x, torch.arange(40) % 4, t, torch.arange(20) % 4, 4)
    assert seen[0].startswith("1/12 probe SGD steps") and seen[-1].startswith("12/12 probe SGD steps")
    assert "progress" not in vars(scorer) and progress.text() == ""  # the scorer's options are as before
