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


def _ranked(*rows):
    return {"ranking": [{"model": m, "score": s, "test_loss": l, "eliminated_in_round": None} for m, s, l in rows],
            "rounds": [{}]}


def test_the_exactness_check_compares_test_losses_too():
    """Accuracy moves in steps of 1/n: features that moved a little show only in the test loss."""
    a = _ranked(("x", 0.9, 0.30), ("y", 0.8, 0.50))
    assert H.check_cell({"alsatian": a, "shift": a, "base": a})["exact"]
    moved = _ranked(("x", 0.9, 0.31), ("y", 0.8, 0.50))
    c = H.check_cell({"alsatian": a, "shift": moved, "base": a})
    assert not c["exact"] and abs(c["max_test_loss_diff_alsatian_shift"] - 0.01) < 1e-12


def test_comparing_two_folders_without_results_is_not_identical(tmp_path):
    import compare_runs

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert compare_runs.compare(tmp_path / "a", tmp_path / "b") == [
        f"no search result (a JSON with a ranking and rounds) found in both {tmp_path / 'a'} and {tmp_path / 'b'}"]
