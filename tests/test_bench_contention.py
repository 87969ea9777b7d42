"""bench/bench_contention.py: the run order and the goals' arithmetic (the timed runs themselves are a benchmark)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_contention as bc  # noqa: E402


def test_arms_alternate_quiet_and_loaded_and_rotate_the_order():
    assert bc.arms(3, 4) == [0, 4, 4, 0, 0, 4]


def _run(busy, search_s, wall_s, ranking=("a", "b")):
    return {"busy": busy, "search_s": search_s, "wall_s": wall_s, "cpu_s": 1.0, "threads": 2, "ranking": list(ranking)}


def test_summary_divides_the_loaded_time_by_the_fair_share():
    runs = [_run(0, 2.0, 3.0), _run(4, 9.0, 20.0), _run(4, 12.0, 30.0), _run(0, 2.2, 3.2)]
    s = bc.summarise(runs, busy=4, cores=2)
    assert s["fair_factor"] == 3.0                     # 2 threads among 6 runnable on 2 cores: a third of each core
    assert s["quiet"]["search_s"] == 2.1 and s["loaded"]["search_s"] == 10.5
    # paired: (2.0, 9.0) and (2.2, 12.0) ran as pairs; the median of their ratios, not the ratio of medians
    assert abs(s["loaded_over_fair"] - (9.0 / 6.0 + 12.0 / 6.6) / 2) < 1e-12
    assert abs(s["quiet_wall_over_search"] - (3.0 / 2.0 + 3.2 / 2.2) / 2) < 1e-12
    assert s["same_ranking"]


def test_summary_notices_a_ranking_that_changed():
    runs = [_run(0, 2.0, 3.0), _run(1, 3.0, 4.0, ranking=("b", "a"))]
    assert not bc.summarise(runs, busy=1, cores=2)["same_ranking"]


def test_one_thread_on_two_cores_is_slowed_only_when_the_spinners_outnumber_the_free_core():
    s = bc.summarise([{**_run(0, 1.0, 2.0), "threads": 1}, {**_run(1, 1.0, 2.0), "threads": 1}], busy=1, cores=2)
    assert s["fair_factor"] == 1.0
    s = bc.summarise([{**_run(0, 1.0, 2.0), "threads": 1}, {**_run(2, 1.0, 2.0), "threads": 1}], busy=2, cores=2)
    assert s["fair_factor"] == 1.5  # 3 runnable threads on 2 cores: two thirds of a core
