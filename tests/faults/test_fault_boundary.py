"""The boundary itself: a bug keeps its traceback behind one line that says it is a bug (exit status 1); Hydra's
own errors and alsatian-pl's warnings read as one line each."""

from __future__ import annotations

import io
import os

from _harness import in_process, one_error_line, run, script


def test_a_bug_shows_its_traceback_behind_one_line(capsys):
    status, err = in_process(capsys, lambda: 1 / 0)
    assert status == 1 and "Traceback" in err and "ZeroDivisionError" in err
    assert err.splitlines()[0].startswith("error: this is a bug in alsatian-pl")


def test_warnings_of_alsatian_pl_read_as_one_line():
    from alsatian_pl.app import boundary
    from alsatian_pl.errors import AlsatianWarning

    out = io.StringIO()
    boundary._show_warning(AlsatianWarning("zoo z cannot be reused"), AlsatianWarning,
                           os.path.join(os.sep, "x", "alsatian_pl", "zoo", "_record.py"), 3, file=out)
    assert out.getvalue() == "warning: zoo z cannot be reused\n"


def test_each_line_is_one_write_so_two_ranks_on_one_stderr_cannot_run_their_lines_together(monkeypatch):
    """Two ranks of a distributed search print to one stderr: with ``print``'s separate newline write their two
    'interrupted' lines once came out as one ('error: …error: …' then two newlines)."""
    from alsatian_pl.app import boundary
    from alsatian_pl.errors import SearchInterrupted

    class Writes(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def write(self, text: str) -> int:
            self.calls.append(text)
            return super().write(text)

    err = Writes()
    monkeypatch.setattr("sys.stderr", err)
    line, _ = boundary._report(SearchInterrupted("interrupted in round 1 of 2; nothing was saved"))
    boundary._show_warning(UserWarning("w"), UserWarning, os.path.join(os.sep, "alsatian_pl", "a.py"), 1)
    assert err.calls == [line + "\n", "warning: w\n"] and line.startswith("error: interrupted in round 1")


def test_hydra_errors_before_the_job_read_as_one_line(tmp_path):
    proc = run(script("search.py", "dataset=nonexistent", f"hydra.run.dir={tmp_path}"))
    assert proc.returncode == 2
    one_error_line(proc.stderr, "Could not find 'dataset/nonexistent'", "fashion_mnist")
