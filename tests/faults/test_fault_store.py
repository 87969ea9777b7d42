"""Damaged internal files and stale caches: a damaged zoo record, manifest or block is named in one line or healed
by running the same command again (the zoo is re-imported by itself), and no cache serves an old import or an old
tokenizer for a file rewritten in place with the same size and modification time."""

from __future__ import annotations

import json
import os

import pytest

from _harness import assert_intact, compose, in_process, one_error_line


def _search(capsys, store, *overrides):
    from alsatian_pl.app import run_search

    holder = {}

    def run():
        holder["report"] = run_search(compose(f"store.root={store}", "search.checkpoint_dir=null", *overrides))[1]
    status, err = in_process(capsys, run)
    return status, err, [r["model"] for r in holder.get("report", {}).get("ranking", [])]


def _first(store, pattern):
    return sorted(store.glob(pattern))[0]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _swap_blocks(path):
    manifest = json.loads(path.read_text())
    manifest["blocks"][1], manifest["blocks"][2] = manifest["blocks"][2], manifest["blocks"][1]
    path.write_text(json.dumps(manifest))  # valid JSON, a plausible manifest: only its checksum tells


def _wrong_shape(path):
    path.write_text(json.dumps({"name": "x", "models": "not a list", "config": {}}))


DAMAGE = {
    "zoo record truncated": ("zoos/*.json", _truncate),
    "zoo record of another shape": ("zoos/*.json", _wrong_shape),
    "zoo record edited": ("zoos/*.json", lambda p: p.write_text(p.read_text().replace('"mobilenet', '"resnet'))),
    "manifest truncated": ("models/*.json", _truncate),
    "manifest with its blocks out of order": ("models/*.json", _swap_blocks),
    "manifest deleted": ("models/*.json", os.unlink),
    "block deleted": ("blocks/*/*.safetensors", os.unlink),
    "block truncated": ("blocks/*/*.safetensors", _truncate),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_the_same_command_heals_a_damaged_store(damage, built, fresh_store):
    """The zoo step of the same command (``spec.build``) finds the damage, says so and re-imports: every model is
    again exactly what it was (so it ranks the same; the full search is run in the next test)."""
    from hydra.utils import instantiate

    from alsatian_pl.errors import AlsatianWarning
    from alsatian_pl.store import BlockStore

    pattern, harm = DAMAGE[damage]
    before = {m.name: m.hashes for m in BlockStore(fresh_store).models()}
    harm(_first(fresh_store, pattern))
    with pytest.warns(AlsatianWarning, match="cannot be reused"):
        zoo = instantiate(compose(f"store.root={fresh_store}").models).build(BlockStore(fresh_store), progress=False)
    assert {m.name: m.hashes for m in zoo.manifests()} == before
    assert_intact(fresh_store)


def test_a_block_damaged_in_place_is_named_once_then_healed(built, fresh_store, capsys):
    from alsatian_pl.errors import AlsatianWarning
    from alsatian_pl.store import BlockStore

    store = BlockStore(fresh_store)
    h = store.manifest(built[1][0]).hashes[0]  # the stem all models share: read first
    blob = bytearray(store.block_path(h).read_bytes())
    blob[-3] ^= 0xFF  # same size: only the hash check sees it
    store.block_path(h).write_bytes(bytes(blob))
    status, err, _ = _search(capsys, fresh_store)
    assert status == 2
    line = one_error_line(err, h[:16], "does not match its content hash", "Run the same command again")
    assert "moved aside" in line and not store.has_block(h)
    with pytest.warns(AlsatianWarning, match="misses 1 block or head file"):
        status, err, ranking = _search(capsys, fresh_store)
    assert status == 0 and ranking == built[1] and store.verify() == []


def test_a_checkpoint_rewritten_in_place_is_imported_again(tmp_path):
    import timm
    import torch

    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import import_checkpoint_folder

    folder, store = tmp_path / "ckpts", BlockStore(tmp_path / "store")
    folder.mkdir()
    path = folder / "a.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), path)
    kwargs = dict(name="ck", path=str(folder), arch="mobilenetv3_small_050", input_size=(3, 32, 32), progress=False)
    first = import_checkpoint_folder(store, **kwargs)
    stat = path.stat()
    torch.manual_seed(1)
    torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    second = import_checkpoint_folder(store, **kwargs)
    assert second.name != first.name
    assert store.manifest(second.models[0]).hashes[0] != store.manifest(first.models[0]).hashes[0]


def test_a_base_checkpoint_rewritten_in_place_rebuilds_the_zoo(tmp_path):
    import timm
    import torch

    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

    path, store = tmp_path / "base.pth", BlockStore(tmp_path / "store")
    torch.manual_seed(0)
    torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), path)
    config = ZooConfig("z", "mobilenetv3_small_050", num_models=2, checkpoint=str(path), input_size=(3, 32, 32))
    before = store.manifest(build_synthetic_zoo(store, config, progress=False).models[0]).hashes
    stat = path.stat()
    torch.manual_seed(1)
    torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = store.manifest(build_synthetic_zoo(store, config, progress=False).models[0]).hashes
    assert after[0] != before[0]


def test_a_tokenizer_rewritten_in_place_gets_a_new_key(tmp_path):
    from tokenizers import Tokenizer, models

    from alsatian_pl.data._text import tokenizer_key

    path = tmp_path / "tokenizer.json"

    def write(words):
        vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", *words])}
        Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")).save(str(path))

    write(["good", "bad"])
    key, stat = tokenizer_key(str(path)), path.stat()
    write(["goad", "bed"])  # same length, same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and tokenizer_key(str(path)) != key


def test_a_damaged_results_file_in_a_sweep_is_listed_as_a_failed_job(tmp_path):
    from rich.console import Console

    from alsatian_pl.app.sweep import summarize

    good, bad = tmp_path / "0" / "results.json", tmp_path / "1" / "results.json"
    for p in (good, bad):
        p.parent.mkdir()
    good.write_text(json.dumps({"config": {"search": {"cache_budget": "1GB"}}, "ranking": [{"model": "m1"}],
                                "timings_s": {"total": 1.0}, "rounds": [],
                                "memory": {"peak_cache_bytes": 1, "peak_host_rss_bytes": 1,
                                           "peak_accelerator_bytes": 0}}))
    bad.write_text('{"config": {"search"')
    console = Console(record=True, width=200)
    summary = summarize([good, bad], tmp_path, console)
    assert [j["job"] for j in summary["jobs"]] == ["0"] and summary["failed_jobs"][0]["job"] == "1"
    assert "damaged" in summary["failed_jobs"][0]["error"] and "job 1 failed" in console.export_text()
    assert json.loads((tmp_path / "summary.json").read_text())["failed_jobs"][0]["job"] == "1"
