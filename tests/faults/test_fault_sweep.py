"""A sweep whose first job fails: the other jobs still run, the summary lists the failed job and why, and the sweep
ends with exit status 2 and one closing ``error:`` line after each failed job's own line."""

from __future__ import annotations

import json

from _harness import run, script


def test_a_failed_job_is_recorded_while_the_others_run(built, fresh_store, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run(script("search.py", "-m", f"store.root={fresh_store}", f"hydra.sweep.dir={sweep}",
                      "search.checkpoint_dir=null", "search.cache_budget=1B,4GB"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "[sweep job 0]" in errors[0] and "too small" in errors[0]
    assert errors[1].startswith("error: 1 sweep job(s) failed: job 0")
    summary = json.loads((sweep / "summary.json").read_text())
    assert [j["job"] for j in summary["jobs"]] == ["1"] and summary["jobs"][0]["ranking"] == built[1]
    failed = summary["failed_jobs"]
    assert [f["job"] for f in failed] == ["0"] and "cache budget 1 B is too small" in failed[0]["error"]
    assert failed[0]["label"] == "search.cache_budget=1B" and (sweep / "0" / "failed.json").is_file()
    assert "job 0 failed" in proc.stdout and (sweep / "summary.png").read_bytes()[:4] == b"\x89PNG"
