"""Fixtures of the fault suite: one tiny store with the zoo built, searched once for the reference ranking."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from _harness import compose


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> tuple[Path, list[str]]:
    """(store root, reference ranking) of the tiny zoo, searched once; copy it (``fresh_store``) before damaging it."""
    from alsatian_pl.app import run_search

    root = tmp_path_factory.mktemp("built") / "store"
    _, report = run_search(compose(f"store.root={root}", "search.checkpoint_dir=null"))
    return root, [r["model"] for r in report["ranking"]]


@pytest.fixture
def fresh_store(built, tmp_path) -> Path:
    """A private copy of the built store."""
    root = tmp_path / "store"
    shutil.copytree(built[0], root)
    return root


@pytest.fixture(autouse=True)
def _quiet_stale_log_handlers(monkeypatch):
    """Lightning's log handlers keep the stderr of the test that imported it; a later test's capture would show
    their '--- Logging error ---' reports (not the code under test) in its stderr."""
    monkeypatch.setattr(logging, "raiseExceptions", False)
