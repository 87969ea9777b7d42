"""The report as a person's terminal and a script's pipe see it: at 80 columns the ranking, time and rounds tables
fit (no line over 80 characters, no number split over two lines); in a pipe, plain full-width rows."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from alsatian_pl.app.output import Column, Output, plain_table
from alsatian_pl.app.report import print_report


def fake_report(n: int = 35, scale: int = 1) -> dict:
    """A report as results.json holds it: a 35-model zoo with long names, three rounds, large numbers."""
    ranking = [{"model": f"resnet152_zoo-f2a7d0292a-{i:03d}", "score": 0.8312 - i / 100, "test_loss": 1.2345 + i,
                "eliminated_in_round": None if i == 0 else min(2, i // 9)} for i in range(n)]
    rounds = [{"round": r, "models": n >> r, "items": 1280 << r, "partitions": 3, "inference_steps": 1234,
               "distinct_blocks": 567, "planned_peak_bytes": int(3.96 * 2**30) * scale,
               "observed_peak_bytes": int(3.91 * 2**30) * scale} for r in range(3)]
    times = {"prepare_data": 12.3456, "prepare_model": 45.6, "inference": 861.2, "proxy_scoring": 105.2,
             "planning": 0.51, "total": 1024.9}
    return {"strategy": "alsatian", "zoo": "resnet152_zoo", "ranking": ranking, "rounds": rounds,
            "timings_s": {k: v * scale for k, v in times.items()},
            "store": {"models": 107, "distinct_blocks": 2345, "logical_bytes": 12 * 2**30,
                      "physical_bytes": 3 * 2**30},
            "memory": {"peak_host_rss_bytes": 5 * 2**30},
            "results_file": "outputs/search/2026-12-07_01-45-31-123456/results.json"}


def _render(report: dict, terminal: bool, width: int = 80) -> str:
    buffer = io.StringIO()
    print_report(report, Console(file=buffer, width=width, force_terminal=terminal, color_system=None), top=10)
    return buffer.getvalue()


@pytest.mark.parametrize("scale", [1, 1000])
def test_the_report_fits_an_80_column_terminal_without_splitting_a_number(scale):
    report = fake_report(scale=scale)
    text = _render(report, terminal=True)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    table_lines = [line for line in lines if line.startswith(("│", "┃"))]
    numbers = {f"{v:.2f}" for v in report["timings_s"].values()} | {
        f"{r['score']:.4f}" for r in report["ranking"][:10]} | {str(r["items"]) for r in report["rounds"]}
    for number in numbers:  # each number whole in one table row, never cut by the column's width
        assert any(re.search(rf"(?<![\d.]){re.escape(number)}(?![\d.])", line) for line in table_lines), number
    assert not any(line.rstrip("│ ").endswith("…") for line in table_lines)  # nothing cut with an ellipsis
    for header in ("score", "test loss", "inference", "scoring", "planned", "observed"):
        assert header in text
    assert "rounds (peak memory in GiB)" in text if scale == 1 else "rounds (peak memory in TiB)" in text


def test_in_a_pipe_the_report_is_plain_rows_with_every_name_whole():
    report = fake_report()
    text = _render(report, terminal=False, width=40)
    assert "│" not in text and "━" not in text
    lines = text.splitlines()
    for row in report["ranking"][:10]:
        short = row["model"].rpartition("-")[2]
        assert sum(1 for line in lines if re.search(rf"\s{short}\s", line)) == 1
    assert "25 more rows in outputs/search/2026-12-07_01-45-31-123456/results.json" in lines
    assert "zoo resnet152_zoo" in lines and lines[0] == "ranking (alsatian)"
    assert any(line.split()[:2] == ["1", "35"] and line.split()[-2:] == ["4.0", "3.9"] for line in lines)


def test_plain_tables_and_json_output():
    columns = [Column("model"), Column("params", right=True), Column("tags")]
    rows = [["a-very-long-model-name-000", "1.5M", "zoo:x, y"], ["b", "12.0M", "-"]]
    assert plain_table("2 models", columns, rows) == [
        "2 models", "model                       params  tags", "a-very-long-model-name-000    1.5M  zoo:x, y",
        "b                            12.0M  -"]
    buffer = io.StringIO()
    out = Output(Console(file=buffer, width=20), json=True)
    out.table("t", columns, rows)
    out.line("hidden in json")
    out.data(models=["a", "b"])
    out.close()
    assert buffer.getvalue().strip().startswith("{") and '"models"' in buffer.getvalue()
    assert "hidden" not in buffer.getvalue()
