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
    steps.planned, steps.started = 1234, time.perf_counter() - 100
    stats.count("inference_steps", 617)
    buffer = io.StringIO()
    bar = ProgressBar(stream=buffer, plain=False)
    bar._steps = steps
    console = Console(file=buffer, width=80, force_terminal=True, color_system=None)
    progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=8), TimeElapsedColumn(),
                        _StepsColumn(steps), console=console)  # as ProgressBar draws it
    progress.add_task("round 10/10 · 1000 models · 99999 items", total=10, completed=9)
    console.print(progress.get_renderable())
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 80 and "step 617/1234, 6.2/s" in lines[0], lines


def test_the_rate_stops_with_the_rounds_inference():
    from alsatian_pl.halving.progress import _RoundSteps
    from alsatian_pl.stats import SearchStats

    stats, steps = SearchStats(), _RoundSteps()
    steps.open(stats)
    steps.planned, steps.started = 10, 100.0
    stats.count("inference_steps", 10)
    steps.executed = 105.0  # inference took 5 s: scoring afterwards does not lower the rate
    assert steps.text() == "step 10/10, 2.0/s"
