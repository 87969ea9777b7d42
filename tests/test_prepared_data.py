"""Data at scale: the prepared-data cache on disk (decoded once, reused, invalidated, self-healing), parallel decoding,
streaming per round with bit-identical results, budgets that no longer count the prepared set, and bad data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alsatian_pl.data import SearchDataModule
from alsatian_pl.data import _sources
from alsatian_pl.data._images import resize_pixels
from alsatian_pl.errors import DataError
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.store import BlockStore


def folder(root: Path, per_class: int = 12, classes: int = 3, size: tuple[int, int] = (36, 24)) -> Path:
    """JPEG and PNG files of noisy gradients, one subfolder per class."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            ramp = np.linspace(0, 255, size[0])[None, :, None] * (c + 1) / classes
            pixels = np.clip(ramp + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / (f"{k}.jpg" if k % 2 else f"{k}.png"))
    return root


def module(path: Path, cache: Path | None, **kw) -> SearchDataModule:
    dm = SearchDataModule(name="image_folder", path=str(path), image_size=16, test_fraction=0.25,
                          data_cache=None if cache is None else str(cache), num_workers=0, **kw)
    dm.setup(num_rounds=2)
    return dm


def everything(dm: SearchDataModule) -> torch.Tensor:
    return (dm.train_items()[0] + dm.test_items()[0]).tensor()


def test_a_second_search_reuses_the_prepared_items_bit_for_bit(tmp_path):
    images = folder(tmp_path / "images")
    first = module(images, tmp_path / "cache")
    second = module(images, tmp_path / "cache")
    in_memory = module(images, None)
    assert first.describe()["prepared"]["decoded"] == 36 and second.describe()["prepared"]["decoded"] == 0
    assert second.describe()["prepared"]["reused"] == 36
    assert torch.equal(everything(first), everything(second)) and torch.equal(everything(second), everything(in_memory))
    assert first.held_bytes == 8 * 36 and in_memory.held_bytes == 36 * (3 * 16 * 16 + 8)  # on disk: not held
    (cache_dir,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert np.load(cache_dir / "items.npy", mmap_mode="r").shape == (36, 3, 16, 16)  # a plain .npy


def test_another_subset_decodes_only_its_new_items(tmp_path):
    images = folder(tmp_path / "images", per_class=20)
    a = SearchDataModule(name="image_folder", path=str(images), image_size=16, num_items=24, seed=0,
                         data_cache=str(tmp_path / "cache"), num_workers=0)
    b = SearchDataModule(name="image_folder", path=str(images), image_size=16, num_items=24, seed=1,
                         data_cache=str(tmp_path / "cache"), num_workers=0)
    a.setup(), b.setup()
    overlap = len(set(a._prepared().order) & set(b._prepared().order))
    assert b.describe()["prepared"] == {**b.describe()["prepared"], "decoded": 24 - overlap, "reused": overlap}


def test_a_changed_file_prepares_again_and_drops_the_stale_set(tmp_path):
    images = folder(tmp_path / "images")
    before = everything(module(images, tmp_path / "cache"))
    target = images / "c1" / "0.png"
    Image.fromarray(np.zeros((24, 36, 3), dtype=np.uint8)).save(target)
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match="files of this dataset changed"):
        again = module(images, tmp_path / "cache")
    assert again.describe()["prepared"]["decoded"] == 36 and not torch.equal(everything(again), before)
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1


def _cache_dir(root: Path) -> Path:
    (found,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return found


def test_a_damaged_row_is_decoded_again_with_a_warning(tmp_path):
    images = folder(tmp_path / "images")
    reference = everything(module(images, None))
    module(images, tmp_path / "cache")
    data = _cache_dir(tmp_path / "cache") / "items.npy"
    with open(data, "r+b") as f:  # flip a byte in the middle of the file
        f.seek(data.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    dm = module(images, tmp_path / "cache")
    with pytest.warns(UserWarning, match="was damaged on disk; decoded it again"):
        healed = everything(dm)
    assert torch.equal(healed, reference)
    assert torch.equal(everything(module(images, tmp_path / "cache")), reference)  # rewritten: no warning needed


@pytest.mark.parametrize("damage", ["index", "truncate"])
def test_a_damaged_cache_is_prepared_again_with_a_warning(tmp_path, damage):
    images = folder(tmp_path / "images")
    reference = everything(module(images, tmp_path / "cache"))
    found = _cache_dir(tmp_path / "cache")
    if damage == "index":
        (found / "index.json").write_text((found / "index.json").read_text()[:-40])
    else:
        os.truncate(found / "items.npy", (found / "items.npy").stat().st_size - 100)
    with pytest.warns(UserWarning, match="prepared-data cache .* is damaged"):
        again = module(images, tmp_path / "cache")
    assert again.describe()["prepared"]["decoded"] == 36 and torch.equal(everything(again), reference)


def test_a_killed_prepare_keeps_only_what_it_finished(tmp_path, monkeypatch):
    images = folder(tmp_path / "images", per_class=40)
    decode = _sources.FolderSource.decode

    def dies_after_one_batch(self, indices, workers, writer=None):
        batches = decode(self, indices, workers, writer)
        yield next(batches)
        raise KeyboardInterrupt

    monkeypatch.setattr(_sources.FolderSource, "decode", dies_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        module(images, tmp_path / "cache")
    monkeypatch.setattr(_sources.FolderSource, "decode", decode)
    dm = module(images, tmp_path / "cache")
    assert dm.describe()["prepared"] == {**dm.describe()["prepared"], "decoded": 120 - 32, "reused": 32}
    assert torch.equal(everything(dm), everything(module(images, None)))


def test_parallel_decoding_gives_the_same_pixels(tmp_path):
    images = folder(tmp_path / "images", per_class=100, size=(20, 14))
    serial = module(images, None)
    for cache in (None, tmp_path / "cache"):  # the workers hand pixels back, or write them into the cache file
        parallel = SearchDataModule(name="image_folder", path=str(images), image_size=16, test_fraction=0.25,
                                    num_workers=2, data_cache=None if cache is None else str(cache))
        parallel.setup(num_rounds=2)
        assert torch.equal(everything(serial), everything(parallel))


def test_prepared_pixels_match_torchvisions_decode_and_resize(tmp_path):
    """The reference: torchvision's ImageFolder loader (PIL, RGB) and its antialiased bilinear resize."""
    from torchvision.datasets.folder import pil_loader
    from torchvision.transforms import v2

    images = folder(tmp_path / "images", per_class=4, size=(36, 24))
    dm = module(images, None)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    resize = v2.Compose([v2.PILToTensor(), v2.Resize((16, 16), antialias=True)])
    source = _sources.folder_source(dm.spec)
    x = everything(dm)
    for k, index in enumerate(dm._prepared().order):
        ours = torch.round((x[k] * std + mean) * 255)
        reference = resize(pil_loader(str(source.files[index]))).float()
        assert (ours - reference).abs().max() <= 1, source.files[index]


# -- streaming and the budget

def _search(zoo, dm, **kw):
    kw = {"batch_size": 32, "device": "cpu", "progress": False, "scorer_kwargs": {"epochs": 5}, **kw}
    return SuccessiveHalving(BlockStore(zoo.store.root), dm, **kw).run(zoo.models)


def _scores(result):
    return [(r.model, r.score, r.test_loss, r.eliminated_in_round) for r in result.ranking]


def test_streaming_from_disk_gives_bit_identical_scores_and_a_budget_below_the_data(zoo, tmp_path):
    in_memory = SearchDataModule(num_items=300, image_size=32, seed=0)
    on_disk = SearchDataModule(num_items=300, image_size=32, seed=0, data_cache=str(tmp_path / "cache"))
    assert torch.equal(everything(in_memory), everything(on_disk))
    reference = _search(zoo, in_memory)
    streamed = _search(zoo, on_disk)
    assert _scores(streamed) == _scores(reference)  # exactly: same bytes, same arithmetic
    data_bytes = 300 * 3 * 32 * 32 * 4  # the model-ready set, if it were held: 3.5 MiB
    needed = max(r.planned_peak_bytes for r in reference.rounds)  # the unbudgeted round's peak
    assert all(r.planned_peak_bytes < data_bytes + 8 * 2**20 for r in reference.rounds)
    budget = max(r.planned_peak_bytes for r in streamed.rounds)  # with the set held, the rounds needed more
    assert needed > budget
    tight = _search(zoo, on_disk, cache_budget=budget)
    assert _scores(tight) == _scores(reference)
    assert all(r.planned_peak_bytes <= budget for r in tight.rounds)
    shift = _scores(_search(zoo, on_disk, strategy="shift"))
    assert [m for m, *_ in shift] == [m for m, *_ in _scores(reference)]
    assert all(abs(a[1] - b[1]) <= 1e-5 for a, b in zip(shift, _scores(reference)))


# -- bad data

def test_an_unreadable_image_names_the_file_or_is_skipped_and_counted(tmp_path):
    images = folder(tmp_path / "images")
    broken = images / "c2" / "3.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated
    (images / "c0" / "notes.txt").write_text("not an image")
    (images / "c1" / ".DS_Store").write_bytes(b"\0\0")
    for cache in (None, tmp_path / "cache"):
        with pytest.raises(DataError, match=f"{broken}.*skip_unreadable=true"):
            module(images, cache)
    with pytest.warns(UserWarning) as warned:
        dm = module(images, tmp_path / "cache", skip_unreadable=True)
    said = " ".join(str(w.message) for w in warned)
    assert "ignored 2 file" in said and f"skipped 1 image(s) that cannot be read (dataset.skip_unreadable=true), " \
                                        f"e.g. {broken}" in said
    prepared = dm.describe()["prepared"]
    assert prepared["skipped_unreadable"] == 1 and prepared["skipped_files"] == [str(broken)]
    assert prepared["ignored_files"] == 2 and dm.describe()["items"] == 35
    assert module(images, tmp_path / "cache", skip_unreadable=True).describe()["prepared"]["decoded"] == 0


def test_an_oversized_image_is_refused_clearly(tmp_path, monkeypatch):
    images = folder(tmp_path / "images", per_class=6)
    Image.new("RGB", (400, 300)).save(images / "c0" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # 400 x 300 = 120,000 pixels: a "bomb" here
    with pytest.raises(DataError, match="huge.png is too large to decode safely"):
        module(images, None)


def test_a_symlink_loop_and_an_empty_class_folder_are_named(tmp_path):
    images = folder(tmp_path / "images", per_class=4)
    (images / "empty").mkdir()
    with pytest.warns(UserWarning, match="1 class folder.* hold no images and are left out: empty"):
        assert module(images, None).class_names == ["c0", "c1", "c2"]
    os.symlink(images / "c1", images / "c1" / "again")
    with pytest.raises(DataError, match="symbolic-link loop: .*again points back to"):
        module(images, None)


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "P"])
def test_cmyk_16_bit_and_palette_images_are_converted(tmp_path, mode):
    rng = np.random.default_rng(1)
    images = folder(tmp_path / "images", per_class=4)
    rgb = rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)
    if mode == "I;16":
        wide = (rgb[..., 0].astype(np.uint16) * 257)
        image, expected = Image.fromarray(wide), np.repeat(rgb[..., :1], 3, axis=2)
    elif mode == "CMYK":
        image = Image.fromarray(rgb).convert("CMYK")
        expected = np.asarray(image.convert("RGB"))
    else:
        image = Image.fromarray(rgb).convert("P")
        expected = np.asarray(image.convert("RGB"))
    name = f"special.{'tiff' if mode == 'CMYK' else 'png'}"
    image.save(images / "c0" / name)
    dm = SearchDataModule(name="image_folder", path=str(images), image_size=24, test_fraction=0.25, num_workers=0,
                          mean=(0, 0, 0), std=(1, 1, 1))
    dm.setup()
    source = _sources.folder_source(dm.spec)
    k = [source.files[i].name for i in dm._prepared().order].index(name)
    reference = resize_pixels(torch.from_numpy(np.ascontiguousarray(expected.transpose(2, 0, 1))), 24)
    ours = torch.round(everything(dm)[k] * 255)
    assert (ours - reference.float()).abs().max() <= 1
