"""The front layer, the only code that imports Hydra: the entry points' config handling (``search``, ``finetune``,
``config``), the ``alsatian`` CLI (``cli``), Hydra sweeps (``sweep``), the error boundary (``boundary``), the report's
tables and plots (``report``, ``plots``). The engine (:mod:`alsatian_pl.halving` and below) never imports it.

Names load on first use (``alsatian_pl.app.cli`` starts without the search engine).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"run_search": "search", "make_logger": "search", "make_callbacks": "search",
            "LaunchedSuccessiveHalving": "search", "run_finetune": "finetune", "SearchReport": "report",
            "print_report": "report", "spec_of": "config", "zoos_spec": "config"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alsatian_pl.app' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
