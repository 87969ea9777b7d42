"""BlockStore: round trips, dedup, partial loads, integrity, atomic writes, metadata queries, checkpoint import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from alsatian_pl.errors import CorruptBlockError, StoreError
from alsatian_pl.blocks import build_model, timm_recipe
from alsatian_pl.store import BlockStore
from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo, import_timm

SIZE = (3, 64, 64)


def _import(store, name="m0", arch="resnet18", seed=0, **kwargs):
    torch.manual_seed(seed)
    model = build_model(timm_recipe(arch, **kwargs)).eval()
    return model, store.import_model(name, model, recipe=timm_recipe(arch, **kwargs), input_size=SIZE)


def test_round_trip_gives_an_equal_model(store):
    model, man = _import(store)
    assert man.family == "resnet" and man.num_params == sum(p.numel() for p in model.parameters()) - 512 * 1000 - 1000
    loaded = store.load_model("m0")
    x = torch.randn(3, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.forward_head(model.forward_features(x), pre_logits=True),
                                   rtol=0, atol=0)
    assert man.blocks[-1].out_shape == (512,) and man.blocks[0].out_shape == (64, 16, 16)


def test_identical_blocks_are_stored_once(store):
    _, a = _import(store, "a", seed=0)
    _, b = _import(store, "b", seed=0)
    _, c = _import(store, "c", seed=1)
    assert a.hashes == b.hashes
    assert set(a.hashes) & set(c.hashes) == {a.hashes[-1]}  # only the parameterless pooling block coincides
    stats = store.stats()
    assert stats.models == 3 and stats.distinct_blocks == 2 * len(a.hashes) - 1


def test_dedup_on_a_35_model_top_layers_zoo(store):
    zoo = build_synthetic_zoo(store, ZooConfig("r18", "resnet18", 35, "top_layers", input_size=SIZE), progress=False)
    stats = store.stats()
    distinct = {b.hash: b.nbytes for m in zoo.manifests() for b in m.blocks}
    assert stats.models == 35 and stats.distinct_blocks == len(distinct)
    assert abs(stats.physical_bytes - sum(distinct.values())) <= 0.01 * stats.physical_bytes
    assert stats.physical_bytes < 0.6 * stats.logical_bytes


def test_partial_load_reads_only_the_requested_blocks(store, monkeypatch):
    _, man = _import(store)
    read = []
    import alsatian_pl.store._codec as codec

    original = codec._map_file  # every block file is read through it, once
    monkeypatch.setattr(codec, "_map_file", lambda path: read.append(Path(path).name) or original(path))
    part = store.load_blocks("m0", 3, 6)
    assert len(part) == 3
    assert sorted(read) == sorted(f"{h}.safetensors" for h in man.hashes[3:6])
    assert set(store.blocks_read) == set(man.hashes[3:6])
    x = torch.randn(2, *man.blocks[2].out_shape)
    full = store.load_model("m0")
    with torch.no_grad():
        torch.testing.assert_close(part(x), full[3:6](x), rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "header", "offsets", "empty"])
def test_damaged_block_gives_a_clear_error(store, damage):
    _, man = _import(store)
    _import(store, "m1")
    h = man.hashes[2]
    path = store.block_path(h)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "header":  # a header length larger than the file
        path.write_bytes((2**40).to_bytes(8, "little") + bytes(data[8:]))
    elif damage == "offsets":  # valid JSON, but a tensor's data range that no longer matches its shape
        n = int.from_bytes(data[:8], "little")
        header = bytes(data[8:8 + n]).replace(b'"data_offsets":[0,', b'"data_offsets":[4,', 1)
        assert header != bytes(data[8:8 + n])
        path.write_bytes(bytes(data[:8 + n]).replace(bytes(data[8:8 + n]), header) + bytes(data[8 + n:]))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(CorruptBlockError) as err:
        store.load_blocks("m0", 2, 3)
    assert h[:16] in str(err.value) and "m0" in str(err.value) and "m1" in str(err.value)
    assert store.verify() == [h]
    store.load_blocks("m0", 0, 2)  # the other blocks are still fine


def test_import_interrupted_mid_write_leaves_the_store_consistent(store, monkeypatch):
    _import(store, "ok")

    calls = {"n": 0}
    real_replace = os.replace

    def failing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        _import(store, "half", seed=7)
    monkeypatch.undo()
    assert store.model_names() == ["ok"]
    assert not list(store.root.rglob("*.tmp"))
    assert store.verify() == []
    store.load_model("ok")


def test_killed_import_process_leaves_the_store_readable(tmp_path):
    root = tmp_path / "store"
    store = BlockStore(root)
    _import(store, "ok")
    marker = tmp_path / "writing"
    child = textwrap.dedent(f"""
        import time, torch, alsatian_pl.store._store as st
        from alsatian_pl.blocks import build_model, timm_recipe
        from pathlib import Path
        real = st._atomic_write
        def slow(path, data):
            if path.suffix == ".safetensors" and not Path({str(marker)!r}).exists():
                import tempfile, os
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
                os.write(fd, data[: len(data) // 2])
                Path({str(marker)!r}).touch()
                time.sleep(60)
            real(path, data)
        st._atomic_write = slow
        torch.manual_seed(5)
        m = build_model(timm_recipe("resnet18")).eval()
        st.BlockStore({str(root)!r}).import_model("killed", m, recipe=timm_recipe("resnet18"), input_size=(3, 64, 64))
    """)
    proc = subprocess.Popen([sys.executable, "-c", child])
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert marker.exists()
    reopened = BlockStore(root)
    assert reopened.model_names() == ["ok"]
    assert reopened.verify() == []
    reopened.load_model("ok")
    assert reopened.gc() > 0 and not list(root.rglob("*.tmp"))
    assert reopened.verify() == [] and reopened.model_names() == ["ok"]


def test_metadata_queries(store):
    _import(store, "r18")
    _import(store, "mnv3", arch="mobilenetv3_small_050")
    store.put_model("r18-tagged", list(store.manifest("r18").hashes), recipe=timm_recipe("resnet18"),
                    input_size=SIZE, tags=["finetuned", "cars"])
    assert [m.name for m in store.models(arch="resnet18")] == ["r18", "r18-tagged"]
    assert [m.name for m in store.models(max_params=2_000_000)] == ["mnv3"]
    assert [m.name for m in store.models(tags=["cars"])] == ["r18-tagged"]
    assert store.models(arch="resnet18", tags=["cars", "missing"]) == []
    with pytest.raises(StoreError, match="no model 'nope'"):
        store.manifest("nope")
    with pytest.raises(StoreError, match="already exists"):
        _import(store, "r18")
    with pytest.raises(StoreError, match="invalid model name"):
        _import(store, "../evil")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_import_timm_from_a_local_checkpoint(store, tmp_path, suffix):
    torch.manual_seed(3)
    model = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    man = import_timm(store, "ck", "resnet18", checkpoint=path, input_size=SIZE)
    assert man.source == str(path)
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(store.load_model("ck")(x), model.forward_head(model.forward_features(x), True),
                                   rtol=0, atol=0)


def test_bad_checkpoint_and_bad_input_size(store, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(StoreError, match="cannot read checkpoint"):
        import_timm(store, "x", "resnet18", checkpoint=bad)
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), other)
    with pytest.raises(StoreError, match="does not fit"):
        import_timm(store, "x", "resnet18", checkpoint=other)
    with pytest.raises(StoreError, match="cannot run on inputs of size"):
        import_timm(store, "v", "vit_tiny_patch16_224", model_kwargs={"img_size": 112}, input_size=(3, 64, 64))
    assert store.model_names() == []
