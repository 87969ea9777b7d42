"""Data stage: stratified split, doubling chunks, preparation once, image folders, clear errors, Hydra configs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from alsatian_pl.data import DATASETS, SearchDataModule, Source, num_rounds
from alsatian_pl.data import _sources
from alsatian_pl.data._split import chunk_bounds, interleave, num_test_items, stratified_split
from alsatian_pl.errors import DataError

CONF = Path(__file__).resolve().parents[1] / "conf"


class IdSource(Source):
    """Items are their own source indices, so tests can follow every item through split and chunks."""

    def __init__(self, labels: np.ndarray):
        self.labels, self.class_names, self.calls = labels, [f"c{k}" for k in range(labels.max() + 1)], 0

    def prepare(self, indices: np.ndarray) -> torch.Tensor:
        self.calls += 1
        return torch.from_numpy(indices.astype(np.int64))[:, None]


@pytest.fixture
def ids(monkeypatch):
    """Register dataset 'ids': 10 unbalanced classes, 400 items; returns the source for inspection."""
    labels = np.random.default_rng(1).choice(10, size=400, p=np.linspace(1, 3, 10) / np.linspace(1, 3, 10).sum())
    source = IdSource(labels)
    monkeypatch.setitem(DATASETS, "ids", lambda spec: source)
    return source


def item_ids(x) -> list[int]:
    return x.tensor()[:, 0].tolist()


# -- pure split arithmetic

@pytest.mark.parametrize(("models", "result", "rounds"), [(1, 1, 1), (2, 1, 1), (3, 1, 2), (8, 1, 3), (9, 1, 4),
                                                         (100, 10, 4), (5, 10, 1), (64, 2, 5)])
def test_num_rounds(models, result, rounds):
    assert num_rounds(models, result) == rounds


@given(st.integers(1, 100_000), st.integers(1, 12))
def test_chunk_bounds_double_and_cover(num_train, rounds):
    bounds = chunk_bounds(num_train, rounds)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == num_train and len(sizes) == rounds
    ideal = num_train / (2**rounds - 1) * 2.0 ** np.arange(rounds)
    assert np.all(np.abs(sizes - ideal) <= 1)  # hence |D_{i+1}| = 2|D_i| up to rounding


@settings(max_examples=50)
@given(st.lists(st.integers(2, 30), min_size=2, max_size=8), st.floats(0.05, 0.9), st.integers(0, 2**32 - 1))
def test_stratified_split(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    train, test = stratified_split(labels, fraction, np.random.default_rng(seed))
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    expected = num_test_items(np.array(counts), fraction)
    assert np.bincount(labels[test], minlength=len(counts)).tolist() == expected.tolist()
    assert len(set(labels[train[:len(counts)]])) == len(counts)  # the first C training items hold every class


def test_interleave_is_round_robin():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 3)
    order = interleave(labels, np.random.default_rng(0))
    assert labels[order].tolist() == [0, 1, 2, 0, 1, 2, 0, 2, 0, 0]


# -- SearchDataModule

def test_chunks_double_and_cover_train_set_once(ids):
    dm = SearchDataModule(name="ids", test_fraction=0.25)
    dm.setup_rounds(4)
    sizes = dm.chunk_sizes
    assert len(sizes) == 4 and all(abs(b - 2 * a) <= 1 for a, b in zip(sizes, sizes[1:-1]))
    assert sizes[-1] >= 2 * sizes[-2] - 1
    chunks = [item_ids(dm.chunk(i)[0]) for i in range(4)]
    train = [i for c in chunks for i in c]
    assert len(train) == len(set(train)) == sum(sizes) == len(dm.train_items(3)[0])
    assert train == item_ids(dm.train_items()[0])
    assert item_ids(dm.train_items(1)[0]) == chunks[0] + chunks[1]
    test = item_ids(dm.test_items()[0])
    assert set(train).isdisjoint(test) and sorted(train + test) == list(range(400))
    for i in range(4):  # labels travel with their items
        x, y = dm.chunk(i)
        assert y.tolist() == ids.labels[x.tensor()[:, 0].numpy()].tolist()


@pytest.mark.parametrize("seed", range(5))
def test_every_class_in_first_chunk(ids, seed):
    dm = SearchDataModule(name="ids", seed=seed)
    dm.setup(num_rounds=5)  # ~320 training items, 10 classes: D1 has 10 or 11 items
    assert set(dm.chunk(0)[1].tolist()) == set(range(10))


def test_test_split_is_stratified(ids):
    dm = SearchDataModule(name="ids", test_fraction=0.3)
    counts = np.bincount(ids.labels, minlength=10)
    assert torch.bincount(dm.test_items()[1], minlength=10).tolist() == num_test_items(counts, 0.3).tolist()
    assert torch.bincount(dm.train_items()[1], minlength=10).tolist() == (counts - num_test_items(counts, 0.3)).tolist()


def test_preparation_happens_once(ids):
    dm = SearchDataModule(name="ids")
    dm.setup("fit")
    dm.setup(num_rounds=3)
    for rounds in (3, 2, 4):
        dm.setup_rounds(rounds)
        for i in range(rounds):
            dm.chunk(i)
            dm.train_items(i)
        dm.test_items()
        dm.describe()
    next(iter(dm.train_dataloader()))
    next(iter(dm.val_dataloader()))
    assert dm.num_classes == 10 and dm.item_bytes == 8
    assert ids.calls == 1


def test_preparation_once_on_fashion_mnist(monkeypatch):
    calls = []
    decode = _sources.ArraySource.decode
    monkeypatch.setattr(_sources.ArraySource, "decode",
                        lambda self, idx, w, *rest: calls.append(len(idx)) or decode(self, idx, w, *rest))
    dm = SearchDataModule(num_items=300, image_size=16)
    dm.setup(num_rounds=2)
    dm.setup_rounds(3)
    dm.chunk(2)
    dm.train_items(1)
    dm.test_items()
    assert calls == [300]


def test_same_seed_same_chunks(ids):
    def chunks(seed):
        dm = SearchDataModule(name="ids", seed=seed)
        dm.setup(num_rounds=3)
        return [item_ids(dm.chunk(i)[0]) for i in range(3)] + [item_ids(dm.test_items()[0])]

    assert chunks(7) == chunks(7)
    assert chunks(7) != chunks(8)


def test_fashion_mnist_embedded():
    dm = SearchDataModule(num_items=500, image_size=32, seed=3)
    dm.setup(num_rounds=3)
    assert dm.num_classes == 10 and dm.class_names[0] == "T-shirt/top" and dm.class_names[-1] == "Ankle boot"
    items, y = dm.test_items()
    x = items.tensor()
    assert items.shape == x.shape == (100, 3, 32, 32) and x.dtype == items.dtype == torch.float32
    assert y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [10] * 10  # class-balanced subset, stratified split
    assert torch.allclose(x[:, 0] * 0.229 + 0.485, x[:, 1] * 0.224 + 0.456, atol=1e-6)  # gray replicated to 3 channels
    assert dm.item_bytes == 3 * 32 * 32  # uint8 pixels
    described = dm.describe()
    assert described.pop("prepared") == {"data_cache": None, "decoded": 500, "reused": 0,
                                         "seconds": round(dm.prepare_seconds, 3), "skipped_unreadable": 0}
    assert described == {"name": "fashion_mnist", "path": None, "items": 500, "task": "multiclass", "classes": 10, "image_size": 32,
                         "train_size": 400, "test_size": 100, "chunk_sizes": [57, 114, 229], "item_bytes": 3072,
                         "in_flight_item_bytes": 3072 * 5, "held_bytes": 500 * (3072 + 8), "seed": 3}  # every item in memory and its int64 label
    pixels = x * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_dataloaders(ids):
    dm = SearchDataModule(name="ids")
    dm.batch_size = 50
    train = [y for _, y in dm.train_dataloader()]
    n = len(dm.train_items()[1])
    assert [len(y) for y in train] == [50] * (n // 50) + [n % 50] and n % 50
    assert sorted(torch.cat(train).tolist()) == sorted(dm.train_items()[1].tolist())
    assert sum(len(y) for _, y in dm.val_dataloader()) == len(dm.test_items()[1]) == 400 - n


@pytest.mark.integration
@pytest.mark.skipif(not (_sources.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_beyond_embedded_reads_debian_package():
    dm = SearchDataModule(num_items=5000, image_size=8)
    assert dm.describe()["items"] == 5000 and torch.bincount(dm.test_items()[1]).tolist() == [100] * 10


# -- image folders

def write_images(root: Path, classes: dict[str, int]) -> None:
    """PNG/JPEG files of assorted sizes and modes, one subfolder per class."""
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "P"]
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for k in range(count):
            array = rng.integers(0, 256, size=(20 + k, 30 + 2 * c, 3), dtype=np.uint8)
            image = Image.fromarray(array).convert(modes[k % len(modes)])
            image.save(root / name / (f"{k}.jpg" if k == 1 and image.mode in ("RGB", "L") else f"{k}.png"))


def test_image_folder(tmp_path):
    write_images(tmp_path, {"cat": 6, "dog": 5, "emu": 7})
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (40, 25), (255, 255, 255)).save(tmp_path / "cat" / "white.png")
    dm = SearchDataModule(name="image_folder", path=str(tmp_path), image_size=12, test_fraction=0.25)
    dm.setup(num_rounds=2)
    assert dm.class_names == ["cat", "dog", "emu"] and dm.describe()["items"] == 19
    x, y = dm.train_items()
    x = x.tensor()
    assert x.shape == (len(y), 3, 12, 12) and torch.isfinite(x).all()
    assert set(dm.chunk(0)[1].tolist()) == {0, 1, 2}
    white = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    everything = torch.cat([x, dm.test_items()[0].tensor()])
    assert any(torch.allclose(item, white.view(3, 1, 1).expand(3, 12, 12), atol=1e-5) for item in everything)


def test_image_folder_subset(tmp_path):
    write_images(tmp_path, {"a": 10, "b": 10})
    dm = SearchDataModule(name="image_folder", path=str(tmp_path), num_items=8, image_size=8, test_fraction=0.25)
    assert torch.bincount(dm.test_items()[1]).tolist() == [1, 1] and len(dm.train_items()[1]) == 6


# -- clear errors

def test_error_empty_folder(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="empty dataset.*no images.*one subfolder per class"):
        SearchDataModule(name="image_folder", path=str(tmp_path)).setup()


def test_error_two_class_folders_that_are_one_folder(tmp_path):
    write_images(tmp_path, {"cat": 4, "dog": 4})
    (tmp_path / "kitten").symlink_to(tmp_path / "cat", target_is_directory=True)
    with pytest.raises(DataError, match="class folders 'cat' and 'kitten' .* are one folder"):
        SearchDataModule(name="image_folder", path=str(tmp_path)).setup()


def test_error_images_without_class_folders(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    with pytest.raises(DataError, match="1 images directly in it but no class subfolders"):
        SearchDataModule(name="image_folder", path=str(tmp_path)).setup()


def test_error_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*<class name>/<image>\.jpg"):
        SearchDataModule(name="image_folder", path=str(tmp_path / "nowhere")).setup()
    with pytest.raises(DataError, match="needs a folder: set dataset.path"):
        SearchDataModule(name="image_folder").setup()


def test_error_missing_stanford_cars_explains_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("ALSATIAN_DATA_DIR", str(tmp_path))
    dm = instantiate_config("cars")
    with pytest.raises(DataError) as error:
        dm.setup()
    message = str(error.value)
    assert str(tmp_path / "stanford_cars") in message and "does not exist" in message
    assert "Stanford Cars" in message and "ALSATIAN_DATA_DIR" in message and "Acura TL Sedan 2012/00001.jpg" in message


def test_error_too_few_items_for_rounds(ids):
    dm = SearchDataModule(name="fashion_mnist", num_items=50, image_size=8)
    with pytest.raises(DataError, match=r"3 rounds need at least 70 training items.*has 40.*at least 100 items"):
        dm.setup(num_rounds=3)
    small = SearchDataModule(name="ids")
    with pytest.raises(DataError, match="6 rounds need at least 630 training items"):
        small.setup_rounds(6)
    assert ids.calls == 1 and small.chunk_sizes == [len(small.train_items()[1])]  # the failed call changed nothing


def test_error_before_preparing_when_rounds_known(ids):
    with pytest.raises(DataError, match="too few items"):
        SearchDataModule(name="ids").setup(num_rounds=8)
    assert ids.calls == 0


def test_error_one_class(tmp_path):
    write_images(tmp_path, {"only": 5})
    with pytest.raises(DataError, match=r"one class only \('only'\).*at least two classes"):
        SearchDataModule(name="image_folder", path=str(tmp_path)).setup()


def test_error_class_too_small(tmp_path):
    write_images(tmp_path, {"a": 5, "b": 1})
    with pytest.raises(DataError, match=r"at least 2 items.*'b' \(1\); add images to these classes"):
        SearchDataModule(name="image_folder", path=str(tmp_path), num_items=4).setup()
    with pytest.raises(DataError, match="raise num_items to at least 20"):
        SearchDataModule(num_items=5).setup()


def test_error_corrupt_image(tmp_path):
    write_images(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG")
    with pytest.raises(DataError, match=r"cannot read image .*b[/\\]broken\.jpg"):
        SearchDataModule(name="image_folder", path=str(tmp_path)).setup()


def test_error_too_many_items(tmp_path):
    write_images(tmp_path, {"a": 3, "b": 3})
    with pytest.raises(DataError, match="has only 6 items but num_items=7"):
        SearchDataModule(name="image_folder", path=str(tmp_path), num_items=7).setup()


def test_error_fashion_mnist_without_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(_sources, "FASHION_MNIST_DIR", tmp_path)
    words = "num_items=3001 needs the full training set.*apt install dataset-fashion-mnist.*num_items <= 3000"
    with pytest.raises(DataError, match=words):
        SearchDataModule(num_items=3001).setup()


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"test_fraction": 0}, "test_fraction must be a number strictly between 0 and 1"),
    ({"test_fraction": 1.0}, "test_fraction must be"),
    ({"test_fraction": -0.2}, "test_fraction must be"),
    ({"image_size": 0}, "image_size must be a positive whole number"),
    ({"image_size": 32.5}, "image_size must be"),
    ({"num_items": 0}, "empty dataset"),
    ({"name": "imagenet"}, "unknown dataset name 'imagenet': use one of .*fashion_mnist.*image_folder"),
    ({"std": (1, 0, 1)}, "std > 0"),
])
def test_error_invalid_arguments(kwargs, words):
    with pytest.raises(DataError, match=words):
        SearchDataModule(**kwargs)


def test_error_invalid_rounds(ids):
    with pytest.raises(DataError, match="positive integer"):
        SearchDataModule(name="ids").setup(num_rounds=0)
    with pytest.raises(DataError, match="positive integer"):
        SearchDataModule(name="ids").setup_rounds(1.5)
    assert ids.calls == 1


# -- Hydra configs

def instantiate_config(name: str, *overrides: str) -> SearchDataModule:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(overrides=[f"+dataset={name}", *overrides])
    return instantiate(cfg.dataset)


def test_config_files_compose_and_instantiate(tmp_path):
    assert sorted(p.stem for p in (CONF / "dataset").glob("*.yaml")) == [
        "cars", "fashion_mnist", "fashion_mnist_mosaic", "fashion_mnist_rotation", "image_folder", "reuters_r8",
        "rotten_tomatoes", "table", "text_file", "twenty_newsgroups", "twenty_newsgroups_topics"]
    dm = instantiate_config("fashion_mnist", "dataset.image_size=8", "+search.seed=5")
    assert isinstance(dm, SearchDataModule) and dm.spec.seed == 5 and dm.spec.num_items == 2000
    assert dm.describe()["items"] == 2000 and dm.describe()["test_size"] == 400
    default = instantiate_config("fashion_mnist").spec
    assert default.seed == 0 and default.image_size == 64
    write_images(tmp_path, {"a": 3, "b": 3})
    folder = instantiate_config("image_folder", f"dataset.path={tmp_path}", "dataset.image_size=8")
    assert folder.class_names == ["a", "b"]
    assert instantiate_config("cars").spec.path.endswith("stanford_cars")


def test_image_folder_config_requires_path():
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue):
        instantiate_config("image_folder")


def test_a_test_split_too_small_to_tell_models_apart_is_a_warning():
    from alsatian_pl.errors import AlsatianWarning

    with pytest.warns(AlsatianWarning, match=r"only 10 test items \(test_fraction=0.01, 10 classes or strata\): "
                                             r"scores move in steps of 10.0 points"):
        SearchDataModule(num_items=1000, test_fraction=0.01, image_size=32).setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlsatianWarning)
        SearchDataModule(num_items=300, image_size=32).setup()  # 60 test items, 6 a class: no warning
