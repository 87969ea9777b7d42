"""``python search.py search.devices=2 search.accelerator=cpu``: two processes (Lightning Fabric, gloo) rank and score
as one does; rank 0 alone writes results.json and the plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from alsatian_pl.app import run_search
from alsatian_pl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["models=store", "dataset.num_items=300", "dataset.image_size=32", "++search.scorer.kwargs.epochs=10",
         "search.progress=false", "search.batch_size=32", "search.device=cpu"]


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("search", overrides=[*SMALL, *overrides])


def test_search_py_on_two_cpu_processes_gives_the_one_process_ranking(zoo, tmp_path):
    store = f"store.root={zoo.store.root}"
    single = run_search(_compose(store, "search.checkpoint_dir=null", "~logger"), tmp_path / "single")[1]
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "search.py"), *SMALL, store, "search.devices=2",
                           "search.accelerator=cpu", f"search.checkpoint_dir={tmp_path / 'ckpt'}",
                           f"hydra.run.dir={run}"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results: ") == 1 and proc.stdout.count("ranking (alsatian") == 1  # rank 0 reports
    multi = json.loads((run / "results.json").read_text())
    assert [r["model"] for r in multi["ranking"]] == [r["model"] for r in single["ranking"]]
    for a, b in zip(multi["ranking"], single["ranking"]):
        assert abs(a["score"] - b["score"]) <= 1e-6 and a["eliminated_in_round"] == b["eliminated_in_round"]
    assert multi["distributed"]["world_size"] == 2 and multi["candidates"] == single["candidates"]
    assert (run / "ranking.png").is_file() and (run / "time.png").is_file()
    assert len(list((run / "logs").glob("version_*/metrics.csv"))) == 1  # rank 0 alone logs
    assert not list(run.rglob("*.tmp")) and not list((tmp_path / "ckpt").rglob("*.safetensors"))


@pytest.mark.parametrize(("override", "key"), [("search.devices=0", "search.devices"),
                                               ("search.num_nodes=abc", "search.num_nodes"),
                                               ("search.accelerator=tpu", "search.accelerator")])
def test_bad_launch_options_are_refused_before_anything_runs(zoo, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        run_search(_compose(f"store.root={zoo.store.root}", override), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_accelerator_this_machine_lacks_or_the_device_contradicts_is_refused_before_anything_runs(
        zoo, tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="search.accelerator=gpu, but this machine has no CUDA device"):
        run_search(_compose(f"store.root={zoo.store.root}", "search.accelerator=gpu"), tmp_path / "out")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU here, but the search set to the CPU
    with pytest.raises(ConfigError, match="search.accelerator=cuda with search.device=cpu: the two disagree"):
        run_search(_compose(f"store.root={zoo.store.root}", "search.accelerator=cuda"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_devices_auto_is_every_gpu_on_a_gpu_accelerator_and_one_process_elsewhere(monkeypatch):
    import torch

    from alsatian_pl.distributed import resolve_devices
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_devices("auto", "auto") == 4 and resolve_devices("auto", "gpu") == 4
    assert resolve_devices("auto", "cpu") == 1 and resolve_devices(2, "cpu") == 2
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_devices("auto", "auto") == 1


def test_search_py_with_devices_auto_runs_on_this_cpu(zoo, tmp_path):
    _, report = run_search(_compose(f"store.root={zoo.store.root}", "search.devices=auto", "~logger",
                                    "search.checkpoint_dir=null"), tmp_path / "out")
    assert report["ranking"] and (tmp_path / "out" / "results.json").is_file()
