"""The public Python API as a notebook user meets it: the README's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import alsatian_pl as ap

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its <!-- api-example --> block"
    return match.group(1)


def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), scope)
    result = scope["result"]
    assert isinstance(result, ap.SearchResult) and len(result.ranking) == 4 and result.strategy == "alsatian"
    assert result.winner in capsys.readouterr().out
    assert (tmp_path / ".alsatian" / "store" / "blocks").is_dir()


def test_public_names_resolve():
    for name in ap.__all__:
        assert getattr(ap, name) is not None
    assert "linear" in ap.available_scorers() and set(ap.STRATEGIES) == {"alsatian", "shift", "base"}
