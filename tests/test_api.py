"""The public Python API as a notebook user meets it: the user guide's examples (docs/guide/api.md) run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import alsatian_pl as ap

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "api.md"  # the guide's Python API page


def _readme_example() -> str:
    text = API_PAGE.read_text()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/guide/api.md lost its <!-- api-example --> block"
    return match.group(1)


def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_example(), "docs/guide/api.md", "exec"), scope)
    result = scope["result"]
    assert isinstance(result, ap.SearchResult) and len(result.ranking) == 4 and result.strategy == "alsatian"
    assert result.winner in capsys.readouterr().out
    assert (tmp_path / ".alsatian" / "store" / "blocks").is_dir()


def test_public_names_resolve():
    for name in ap.__all__:
        assert getattr(ap, name) is not None
    assert "linear" in ap.available_scorers() and set(ap.STRATEGIES) == {"alsatian", "shift", "base"}


def test_readme_callback_example_sees_every_round(tmp_path, monkeypatch, capsys):
    """The guide's notebook callback runs after the API example, in the same scope, and sees every round."""
    monkeypatch.chdir(tmp_path)
    text = API_PAGE.read_text()
    match = re.search(r"<!-- callback-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/guide/api.md lost its <!-- callback-example --> block"
    scope: dict = {}
    exec(compile(_readme_example(), "docs/guide/api.md", "exec"), scope)
    exec(compile(match.group(1), "docs/guide/api.md", "exec"), scope)
    rounds = scope["watch"].rounds
    assert [r[:3] for r in rounds] == [(1, 4, 140), (2, 2, 160)]  # round 1 pushes the 60 test items too
    assert len(rounds[0][3]) == 2 and len(rounds[1][3]) == 1


def test_the_api_refuses_a_lone_name_or_missing_data_in_one_message(zoo):
    import pytest

    from alsatian_pl.errors import ConfigError

    data = ap.SearchDataModule(num_items=300, image_size=32)
    with pytest.raises(ConfigError, match=r"takes a list of stored model names or a zoo, got 'one': pass \[name\]"):
        ap.search("one", data, store=zoo.store)
    with pytest.raises(ConfigError, match="needs a SearchDataModule as data, got NoneType"):
        ap.search(zoo, None)
    with pytest.raises(ConfigError, match="store.root is empty"):
        ap.BlockStore("")


def test_byte_sizes_take_infinity_as_unlimited_and_refuse_nan():
    import pytest

    from alsatian_pl.errors import ConfigError
    from alsatian_pl.units import parse_bytes

    assert parse_bytes(float("inf")) is None and parse_bytes(1e400) is None and parse_bytes("inf") is None
    with pytest.raises(ConfigError, match="invalid byte size nan"):
        parse_bytes(float("nan"))


def test_search_without_a_store_is_a_config_error_that_says_what_to_pass():
    from alsatian_pl import search
    from alsatian_pl.data import SearchDataModule
    from alsatian_pl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"search\(\) needs the block store: pass store=BlockStore\(root\)"):
        search(["a", "b"], SearchDataModule(num_items=300))


def test_registry_errors_use_the_kinds_plural():
    from alsatian_pl.errors import ConfigError
    from alsatian_pl.halving.strategies import STRATEGIES

    with pytest.raises(ConfigError, match="known search strategies"):
        STRATEGIES.get("nope")
