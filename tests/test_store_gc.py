"""``BlockStore.gc`` / ``alsatian store gc`` next to a running import: it waits for the import's manifest, spares young
files when asked, and leaves the feature cache and search checkpoints that may live under the store alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

import alsatian_pl.store._store as store_module  # its _atomic_write: the store's one writer
from alsatian_pl.store import BlockStore
from alsatian_pl.zoo import reinit_block


@pytest.fixture
def copied(zoo, tmp_path):
    shutil.copytree(zoo.store.root, tmp_path / "store")
    store = BlockStore(tmp_path / "store")
    store.gc()  # what earlier tests left in the shared zoo's store (a damaged block moved aside, say)
    return store


def _variant(store: BlockStore, base: str, seed: int):
    """A model like ``base`` with a new last block: (its blocks as put_model takes them, its recipe, input size)."""
    m = store.manifest(base)
    last = store.load_block(m.hashes[-1])
    return [*m.hashes[:-1], reinit_block(last, seed=seed)], m.recipe, m.input_size


def test_gc_waits_for_an_import_between_its_blocks_and_its_manifest(copied, zoo, monkeypatch):
    blocks, recipe, size = _variant(copied, zoo.models[0], seed=7)
    written, go = threading.Event(), threading.Event()
    real = store_module._atomic_write

    def slow_manifest(path, data):  # the import stops after its block files, before its manifest
        if path.parent == copied.models_dir:
            written.set()
            assert go.wait(30)
        return real(path, data)

    monkeypatch.setattr(store_module, "_atomic_write", slow_manifest)
    importer = threading.Thread(target=lambda: copied.put_model("late", blocks, recipe=recipe, input_size=size))
    importer.start()
    assert written.wait(60)
    freed: list[int] = []
    collector = threading.Thread(target=lambda: freed.append(BlockStore(copied.root).gc()))
    collector.start()
    time.sleep(0.5)
    assert collector.is_alive()  # gc waits: the new block is in no manifest yet, and must not be collected
    go.set()
    importer.join(60)
    collector.join(60)
    assert freed == [0] and copied.verify() == [] and len(copied.load_model("late")) == len(blocks)


def test_grace_period_keeps_young_unused_blocks(copied, zoo):
    only_last = set(copied.manifest(zoo.models[5]).hashes) - {h for m in zoo.models[:5]
                                                             for h in copied.manifest(m).hashes}
    assert only_last
    copied.delete_model(zoo.models[5])
    paths = [copied.block_path(h) for h in only_last]
    for p in paths:  # just written (the copied files keep the session zoo's times, which may be older than 600 s)
        os.utime(p, (time.time(), time.time()))
    assert copied.gc(grace_s=600) == 0 and all(p.exists() for p in paths)
    old = time.time() - 3600
    for p in paths:
        os.utime(p, (old, old))
    assert copied.gc(grace_s=600) > 0 and not any(p.exists() for p in paths) and copied.verify() == []


def test_gc_keeps_feature_cache_entries_and_checkpoints_and_drops_their_stale_temporary_files(copied):
    kept = [copied.root / "features" / "ab" / "abcdef.safetensors", copied.root / "searches" / "run.safetensors",
            copied.root / "searches" / ".run.safetensors.123.tmp", copied.root / "tokenizers" / ".k.json.1.tmp"]
    stale = [copied.root / "blocks" / "zz" / ".x.safetensors.1.tmp", copied.root / "models" / ".m.json.2.tmp"]
    for p in kept + stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 10)
    assert copied.gc() == 20 and all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    old = time.time() - 2 * BlockStore.UNLOCKED_TMP_S
    for p in kept:  # a killed search's or a tokenizer's temporary file: collected once it is an hour old
        os.utime(p, (old, old))
    assert copied.gc() == 20 and not kept[-1].exists() and not kept[2].exists()
    assert kept[0].exists() and kept[1].exists()  # finished feature-cache entries and checkpoints stay


def test_cli_gc_grace_option(copied, zoo):
    copied.delete_model(zoo.models[5])
    now = time.time()
    for path in (copied.root / "blocks").rglob("*.safetensors"):  # just written, whatever the session zoo's age
        os.utime(path, (now, now))

    def gc(*args):
        return subprocess.run([sys.executable, "-m", "alsatian_pl.app.cli", "store", "--root", str(copied.root), "gc",
                               *args], capture_output=True, text=True, timeout=120,
                              env={"COLUMNS": "200", "PATH": ""})

    young = gc("--grace", "60")
    assert young.returncode == 0 and "freed 0 B" in young.stdout and "younger than 60 min kept" in young.stdout
    for value in ("-1", "nan", "inf"):
        bad = gc("--grace", value)
        assert bad.returncode == 2 and bad.stderr.startswith("error: --grace must be 0 or more"), value
    at_once = gc()
    assert at_once.returncode == 0 and "freed 0 B" not in at_once.stdout


def test_gc_keeps_the_heads_manifests_use(copied, zoo):
    import torch

    name = zoo.models[0]
    dim = copied.manifest(name).blocks[-1].out_shape[0]
    copied.put_head(name, {"fc.weight": torch.ones(3, dim), "fc.bias": torch.zeros(3)})
    assert copied.gc() == 0
    tensors, entry = copied.read_head(name)
    assert entry.out_features == 3 and torch.equal(tensors["fc.bias"], torch.zeros(3))
