"""bench: each alsatian run's lower bound from the calibrations right before and after it (the timed passes
themselves are the benchmark's)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import harness as H  # noqa: E402
import report  # noqa: E402


def _cal(costs, seconds=1.0):
    return {"per_item_s": dict(costs), "tree_per_item_s": sum(costs.values()), "seconds": seconds}


def test_the_bracket_averages_block_by_block_and_reports_the_drift():
    b = H.bracket(_cal({"a": 1.0, "b": 3.0}), _cal({"a": 2.0, "b": 5.0}, seconds=2.0))
    assert b["per_item_s"] == {"a": 1.5, "b": 4.0}
    assert b["tree_per_item_s"] == [4.0, 7.0] and b["seconds"] == 3.0
    assert abs(b["drift"] - 3.0 / 5.5) < 1e-12
    assert H.bracket(_cal({"a": 2.0}), _cal({"a": 2.0}))["drift"] == 0.0


def test_the_bound_table_shows_the_drift_and_older_results_a_dash():
    assert report._drift({"calibration_drift": 0.123, "ratio_cell_calibration": 1.4}) == "12 % | 1.40"
    assert report._drift({}) == "— | —"
