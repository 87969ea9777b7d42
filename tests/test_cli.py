"""The ``alsatian store`` console script, run as a user runs it (a subprocess); verify (which loads the search
engine to check feature caches) and gc run the script's ``main`` in this process instead, as the script does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from alsatian_pl.store import BlockStore
from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    store = BlockStore(tmp_path_factory.mktemp("store"))
    cfg = ZooConfig("tiny", "mobilenetv3_small_050", num_models=3, distribution="top_layers", seed=1,
                    input_size=(3, 32, 32))
    return build_synthetic_zoo(store, cfg, progress=False)


def alsatian(root, *args):
    return subprocess.run([sys.executable, "-m", "alsatian_pl.app.cli", "store", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": ""})


@pytest.fixture
def here(monkeypatch, capsys):
    """``here(root, *args)``: the console script's ``main`` in this process, 200 columns wide: (status, stdout)."""
    from alsatian_pl.app.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(root, *args):
        status = main(["store", "--root", str(root), *args])
        return status, capsys.readouterr().out
    return run


def test_ls_info_du(zoo):
    ls = alsatian(zoo.store.root, "ls")
    assert ls.returncode == 0 and "3 models" in ls.stdout and all(m in ls.stdout for m in zoo.models)
    assert "mobilenetv3_small_050" in ls.stdout and "zoo:tiny" in ls.stdout
    only = alsatian(zoo.store.root, "ls", "--name", "*-001")
    assert "1 models" in only.stdout and zoo.models[1] in only.stdout and zoo.models[0] not in only.stdout
    info = alsatian(zoo.store.root, "info", zoo.models[1])
    manifest = zoo.store.manifest(zoo.models[1])
    assert info.returncode == 0 and manifest.hashes[0][:12] in info.stdout and "other model(s)" in info.stdout
    du = alsatian(zoo.store.root, "du")
    stats = zoo.store.stats()
    assert du.returncode == 0 and f"{stats.dedup_ratio:.2f}x" in du.stdout and "zoo:tiny" in du.stdout


def test_verify_finds_corruption_and_gc_frees_unused_blocks(zoo, tmp_path, here):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(zoo.store.root, root)
    store = BlockStore(root)
    assert here(root, "verify")[0] == 0
    path = store.block_path(store.manifest(zoo.models[2]).hashes[-1])
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    status, out = here(root, "verify")
    assert status == 1 and "corrupt" in out and zoo.models[2] in out
    only_2 = set(store.manifest(zoo.models[2]).hashes) - {h for m in zoo.models[:2] for h in store.manifest(m).hashes}
    from alsatian_pl.halving import FeatureCache
    from alsatian_pl.stats import SearchStats
    cache = FeatureCache(root / "features", None, SearchStats(), {})
    for i in range(2):
        cache.put(cache.key([f"b{i}"], "items"), torch.arange(64.0) + i, {f"b{i}": 1.0})
    entry = sorted((root / "features").glob("*/*.safetensors"))[0]
    data = bytearray(entry.read_bytes())
    data[-3] ^= 0x10  # a flipped bit in the features
    entry.write_bytes(bytes(data))
    status, out = here(root, "verify", "--json")
    report = json.loads(out)["feature_cache"]
    assert status == 1 and report["entries"] == 2 and not entry.exists()
    assert [d["path"] for d in report["damaged_deleted"]] == [str(entry)] and "checksum" in report["damaged_deleted"][0]["why"]
    store.delete_model(zoo.models[2])
    status, out = here(root, "gc")
    assert status == 0 and "freed" in out and not any(store.has_block(h) for h in only_2)


def test_unknown_model_and_missing_store_give_one_error_line(zoo, tmp_path):
    missing = alsatian(zoo.store.root, "info", "nope")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no model 'nope'")
    nowhere = alsatian(tmp_path / "absent", "ls")
    assert nowhere.returncode == 2 and "no block store" in nowhere.stderr and "Traceback" not in nowhere.stderr


def test_piped_output_is_one_whole_row_per_model(zoo):
    ls = alsatian(zoo.store.root, "ls")  # a pipe, not a terminal: plain rows at any width
    rows = [line for line in ls.stdout.splitlines() if any(m in line for m in zoo.models)]
    assert len(rows) == 3 and all(sum(m in row for m in zoo.models) == 1 for row in rows)
    assert "│" not in ls.stdout and "━" not in ls.stdout  # no rich box drawing in a pipe
    narrow = subprocess.run([sys.executable, "-m", "alsatian_pl.app.cli", "store", "--root", str(zoo.store.root),
                             "ls"], capture_output=True, text=True, timeout=120, env={"COLUMNS": "40", "PATH": ""})
    assert [line for line in narrow.stdout.splitlines() if zoo.models[0] in line] == [rows[0]]


@pytest.mark.parametrize("command", [["ls"], ["info", "MODEL"], ["verify"], ["du"], ["gc"]])
def test_every_command_takes_json(zoo, command, tmp_path, capsys):
    import json
    import shutil
    from alsatian_pl.app.cli import main
    root = zoo.store.root
    if command == ["gc"]:
        root = tmp_path / "copy"
        shutil.copytree(zoo.store.root, root)
    args = [zoo.models[1] if a == "MODEL" else a for a in command]
    assert main(["store", "--root", str(root), *args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    if command == ["ls"]:
        assert {m["name"] for m in doc["models"]} == set(zoo.models)
        assert all(m["arch"] == "mobilenetv3_small_050" for m in doc["models"])
    elif command[0] == "info":
        assert doc["model"]["name"] == zoo.models[1] and len(doc["blocks"]) == len(
            zoo.store.manifest(zoo.models[1]).blocks)
        assert set(zoo.models) - {zoo.models[1]} <= {u for b in doc["blocks"] for u in b["used_by"]}
    elif command == ["verify"]:
        assert doc["corrupt"] == [] and doc["blocks"] > 0
    elif command == ["du"]:
        assert doc["rows"][0]["models"] == "all" and doc["rows"][0]["count"] == 3
    else:
        assert doc["freed_bytes"] == 0


def test_info_takes_the_short_name_a_ranking_prints(zoo):
    short = zoo.models[2].rpartition("-")[2]
    info = alsatian(zoo.store.root, "info", short)
    assert info.returncode == 0 and info.stdout.startswith(zoo.models[2])
    typo = alsatian(zoo.store.root, "info", zoo.models[2][:-1] + "x")
    assert typo.returncode == 2 and f"did you mean {zoo.models[2]}" in typo.stderr


def test_terminal_tables_fit_80_columns(zoo):
    import io
    import argparse
    from rich.console import Console
    from alsatian_pl.app.cli import COMMANDS
    from alsatian_pl.app.output import Output
    for name, extra in (("ls", dict(arch=None, family=None, tag=None, name=None, source=None, min_params=None,
                                    max_params=None)), ("du", {})):
        buffer = io.StringIO()
        COMMANDS[name](zoo.store, argparse.Namespace(**extra), Output(Console(file=buffer, width=80,
                                                                                force_terminal=True, color_system=None)))
        lines = buffer.getvalue().splitlines()
        assert lines and max(len(line) for line in lines) <= 80, buffer.getvalue()


def test_help_says_what_each_command_does_with_an_example(capsys):
    from alsatian_pl.app.cli import main
    for argv in (["--help"], ["store", "--help"], *(["store", name, "--help"] for name in (
            "ls", "info", "verify", "gc", "du"))):
        with pytest.raises(SystemExit) as done:
            main(argv)
        text = capsys.readouterr().out
        assert done.value.code == 0 and "example:" in text and "alsatian store" in text, argv
        assert "--json" in text or len(argv) < 3


def test_root_may_follow_the_command_and_names_the_same_store(zoo, tmp_path):
    before = subprocess.run([sys.executable, "-m", "alsatian_pl.app.cli", "store", "--root", str(zoo.store.root),
                             "ls", "--json"], capture_output=True, text=True, timeout=120)
    after = subprocess.run([sys.executable, "-m", "alsatian_pl.app.cli", "store", "ls", "--json", "--root",
                            str(zoo.store.root)], capture_output=True, text=True, timeout=120)
    assert before.returncode == after.returncode == 0 and before.stdout == after.stdout, after.stderr
    nowhere = subprocess.run([sys.executable, "-m", "alsatian_pl.app.cli", "store", "ls", "--root",
                              str(tmp_path / "absent")], capture_output=True, text=True, timeout=120)
    assert nowhere.returncode == 2 and nowhere.stderr.startswith(f"error: no block store at {tmp_path / 'absent'}")


def test_ctrl_c_or_a_bug_in_a_store_command_is_one_line(zoo, monkeypatch, capsys):
    from alsatian_pl.app import cli

    monkeypatch.setitem(cli.COMMANDS, "ls", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert cli.main(["store", "--root", str(zoo.store.root), "ls"]) == 130
    assert capsys.readouterr().err.startswith("error: interrupted (Ctrl-C)")
    monkeypatch.setitem(cli.COMMANDS, "ls", lambda *a: 1 / 0)
    assert cli.main(["store", "--root", str(zoo.store.root), "ls"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: this is a bug in alsatian-pl") and "ZeroDivisionError" in err
