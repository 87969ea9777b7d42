"""Cache-budget sweeps: ``search.py -m`` ends with one summary; rankings must not depend on the budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from alsatian_pl.app.sweep import summarize

ROOT = Path(__file__).resolve().parents[1]
TINY = ["models.arch=mobilenetv3_small_050", "models.num_models=4", "models.checkpoint=null",
        "dataset.num_items=300", "dataset.image_size=32", "++search.scorer.kwargs.epochs=5", "search.progress=false"]


def test_multirun_over_two_budgets_writes_one_summary(tmp_path):
    sweep = tmp_path / "sweep"
    run = subprocess.run([sys.executable, "search.py", "-m", *TINY, f"store.root={tmp_path / 'store'}",
                          f"hydra.sweep.dir={sweep}", "search.cache_budget=12MB,null"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert [j["cache_budget"] for j in summary["jobs"]] == ["12MB", None]
    assert [j["label"] for j in summary["jobs"]] == ["search.cache_budget=12MB", "search.cache_budget=null"]
    assert summary["rankings_identical"] and summary["jobs"][0]["ranking"] == summary["jobs"][1]["ranking"]
    assert summary["jobs"][0]["peak_cache_bytes"] <= 12 * 2**20
    assert all(j["total_s"] > 0 for j in summary["jobs"])
    assert (sweep / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rankings identical in all 2 jobs" in run.stdout


def _fake(path: Path, ranking: list[str], budget: str) -> Path:
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "config": {"search": {"cache_budget": budget}}, "ranking": [{"model": m} for m in ranking],
        "timings_s": {"total": 1.0}, "rounds": [{"planned_peak_bytes": 10, "partitions": 1}],
        "memory": {"peak_cache_bytes": 10, "peak_host_rss_bytes": 100, "peak_accelerator_bytes": 0}}))
    return path


def test_differing_rankings_are_reported_loudly(tmp_path):
    a = _fake(tmp_path / "0" / "results.json", ["m1", "m2"], "1GB")
    b = _fake(tmp_path / "1" / "results.json", ["m2", "m1"], "8GB")
    console = Console(record=True, width=200)
    summary = summarize([a, b], tmp_path, console)
    assert not summary["rankings_identical"] and summary["differing_jobs"] == ["1"]
    assert [j["first_difference"] for j in summary["jobs"]] == [None, 1]
    assert "RANKINGS DIFFER" in console.export_text()
    assert json.loads((tmp_path / "summary.json").read_text())["rankings_identical"] is False


def test_a_time_difference_between_identical_plans_is_called_load(tmp_path):
    from alsatian_pl.app.sweep import timing_note
    jobs = [{"job": "0", "total_s": 10.0, "plan": [[1, 8, 94]]}, {"job": "1", "total_s": 17.0, "plan": [[1, 8, 94]]},
            {"job": "2", "total_s": 30.0, "plan": [[3, 24, 94]]}]
    note = timing_note(jobs)
    assert note is not None and note.startswith("jobs 0 and 1 ran identical plans yet differ 1.7x in time")
    assert timing_note([jobs[0], jobs[2]]) is None  # different plans: the time may differ for a reason
    assert timing_note([jobs[0], {**jobs[1], "total_s": 11.0}]) is None  # within 20%
    a = _fake(tmp_path / "0" / "results.json", ["m1", "m2"], "1GB")
    b = _fake(tmp_path / "1" / "results.json", ["m1", "m2"], "8GB")
    b.write_text(b.read_text().replace('"total": 1.0', '"total": 2.0'))
    console = Console(record=True, width=200)
    summarize([a, b], tmp_path, console)
    assert "note: jobs 0 and 1 ran identical plans yet differ 2.0x in time" in console.export_text()
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"
