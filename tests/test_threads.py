"""search.threads and the OpenMP wait policy (alsatian_pl/threads.py): threads sized to the cores a process may use,
applied for one search and recorded, idle threads that sleep instead of spinning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alsatian_pl import threads
from alsatian_pl.data import SearchDataModule
from alsatian_pl.errors import ConfigError
from alsatian_pl.halving import SuccessiveHalving

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, cpus", [("200000 100000\n", 2.0), ("150000 100000", 1.5), ("max 100000", None),
                                        ("garbage", None)])
def test_the_cgroup_quota_is_read_as_cpus(tmp_path, text, cpus):
    (tmp_path / "cpu.max").write_text(text)
    missing = (tmp_path / "none", tmp_path / "none")
    assert threads.cgroup_cpus(tmp_path / "cpu.max", missing) == cpus


def test_cgroup_v1_quota_and_no_cgroup_at_all(tmp_path):
    (tmp_path / "quota").write_text("300000\n")
    (tmp_path / "period").write_text("100000\n")
    assert threads.cgroup_cpus(tmp_path / "none", (tmp_path / "quota", tmp_path / "period")) == 3.0
    (tmp_path / "quota").write_text("-1\n")
    assert threads.cgroup_cpus(tmp_path / "none", (tmp_path / "quota", tmp_path / "period")) is None
    assert threads.cgroup_cpus(tmp_path / "none", (tmp_path / "none", tmp_path / "none")) is None


def test_auto_shares_the_usable_cores_between_the_ranks_here(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    assert threads.resolve("auto") == 8 and threads.resolve("auto", ranks=2) == 4
    assert threads.resolve("auto", ranks=16) == 1  # never zero
    assert threads.resolve(3) == 3 and threads.resolve(None) is None


def test_the_quota_caps_the_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: 2.5)
    assert threads.usable_cpus() == 3
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: None)
    assert threads.usable_cpus() == 16


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "many", "AUTO"])
def test_a_bad_setting_is_one_clear_line(value):
    with pytest.raises(ConfigError, match="search.threads must be auto") as exc:
        threads.check_threads(value)
    assert "\n" not in str(exc.value)


def test_using_sets_the_threads_for_the_search_and_restores_them():
    before = torch.get_num_threads()
    with threads.using(1) as used:
        assert used == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with threads.using(None) as used:
        assert used == before


def test_a_search_runs_with_its_threads_and_records_them(zoo):
    data = SearchDataModule(num_items=60, image_size=32, seed=0)
    before = torch.get_num_threads()
    result = SuccessiveHalving(zoo.store, data, device="cpu", progress=False, batch_size=32, threads=1,
                               scorer_kwargs={"epochs": 2}).run(zoo.models[:2])
    assert torch.get_num_threads() == before
    assert result.threads["setting"] == 1 and result.threads["used"] == 1 and result.threads["ranks_here"] == 1
    assert result.to_json()["threads"]["usable_cpus"] == threads.usable_cpus()
    with pytest.raises(ConfigError, match="search.threads must be auto"):
        SuccessiveHalving(zoo.store, data, device="cpu", progress=False, threads=0)


def test_importing_the_package_first_makes_openmp_wait_passively():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, alsatian_pl; print(os.environ.get('OMP_WAIT_POLICY'))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert run.stdout.strip() == "PASSIVE"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**env, "OMP_WAIT_POLICY": "active"}, timeout=60)
    assert run.stdout.strip() == "active"  # the user's choice stands


def test_after_torch_is_loaded_the_policy_is_left_alone(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "torch" in sys.modules and threads.wait_passively() is False
    assert "OMP_WAIT_POLICY" not in os.environ  # too late for OpenMP to read it: not pretended
