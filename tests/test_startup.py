"""Start-up: a command that runs no model imports none of the ML stack (issue 31, item 4).

Each command runs as a user runs it (a subprocess) under ``python -X importtime``, whose report names every module
the process imported; the test fails when one of ``HEAVY`` is among them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alsatian_pl.store import BlockStore
from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torch._dynamo", "torchvision", "timm", "lightning", "torchmetrics", "transformers", "matplotlib",
         "numpy", "hydra", "omegaconf")  # the CLI: none of them; search.py's help and config errors: Hydra only
_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", re.M)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    store = BlockStore(tmp_path_factory.mktemp("store"))
    cfg = ZooConfig("tiny", "mobilenetv3_small_050", num_models=2, distribution="top_layers", seed=1,
                    input_size=(3, 32, 32))
    return build_synthetic_zoo(store, cfg, progress=False)


def imports(*args: str) -> tuple[int, set[str]]:
    """Exit status and the modules imported by ``python -X importtime ARGS`` run from the repository root."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    run = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=env)
    return run.returncode, set(_IMPORTED.findall(run.stderr))


def heavy(modules: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(m for m in HEAVY if m in modules and m not in allowed)


@pytest.mark.parametrize("command", [["ls"], ["ls", "--json"], ["du"], ["info", "001"], ["verify"], ["gc"],
                                     ["ls", "--help"]])
def test_store_commands_import_no_ml_stack(zoo, command):
    status, modules = imports("-m", "alsatian_pl.app.cli", "store", "--root", str(zoo.store.root), *command)
    assert status == 0 and "alsatian_pl.store" in modules
    assert heavy(modules) == [], f"alsatian store {' '.join(command)} imported {heavy(modules)}"


def test_cli_help_and_errors_import_no_ml_stack(tmp_path):
    for args, expected in [(["--help"], 0), (["store", "--root", str(tmp_path / "none"), "ls"], 2),
                           (["store", "nope"], 2)]:
        status, modules = imports("-m", "alsatian_pl.app.cli", *args)
        assert status == expected and "alsatian_pl.store" in modules
        assert heavy(modules) == [], f"alsatian {' '.join(args)} imported {heavy(modules)}"


@pytest.mark.parametrize("args", [["search.py", "--help"], ["train.py", "--help"], ["search.py", "--cfg", "job"],
                                  ["search.py", "search.no_such_option=1"]])
def test_entry_points_help_and_config_errors_import_no_engine(args):
    status, modules = imports(*args)
    assert status == (2 if "=" in args[-1] else 0) and "hydra" in modules
    assert heavy(modules, allowed=("hydra", "omegaconf")) == [], f"{' '.join(args)} imported {heavy(modules)}"


def test_the_check_sees_what_a_command_imports(zoo):
    """The control: a process that imports one of ``HEAVY`` is reported as doing so (numpy: the cheapest of them)."""
    status, modules = imports("-c", "import numpy")
    assert status == 0 and heavy(modules) == ["numpy"]
