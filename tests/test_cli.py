"""The ``alsatian store`` console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


def test_verify_finds_corruption_and_gc_frees_unused_blocks(zoo, tmp_path):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(zoo.store.root, root)
    store = BlockStore(root)
    assert alsatian(root, "verify").returncode == 0
    path = store.block_path(store.manifest(zoo.models[2]).hashes[-1])
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    bad = alsatian(root, "verify")
    assert bad.returncode == 1 and "corrupt" in bad.stdout and zoo.models[2] in bad.stdout
    only_2 = set(store.manifest(zoo.models[2]).hashes) - {h for m in zoo.models[:2] for h in store.manifest(m).hashes}
    store.delete_model(zoo.models[2])
    gc = alsatian(root, "gc")
    assert gc.returncode == 0 and "freed" in gc.stdout and not any(store.has_block(h) for h in only_2)


def test_unknown_model_and_missing_store_give_one_error_line(zoo, tmp_path):
    missing = alsatian(zoo.store.root, "info", "nope")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no model 'nope'")
    nowhere = alsatian(tmp_path / "absent", "ls")
    assert nowhere.returncode == 2 and "no block store" in nowhere.stderr and "Traceback" not in nowhere.stderr
