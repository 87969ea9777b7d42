"""Dataset registry: each entry turns a :class:`DataSpec` into a :class:`Source` that knows its labels up front and
prepares model-ready items once. Image sources: Fashion-MNIST (embedded or Debian), class-per-subfolder folders; text
sources are in ``_text``."""

from __future__ import annotations

import gzip
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from ..registry import Registry
from ._images import decode_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
FASHION_MNIST_NPZ = "fashion_mnist_3000.npz"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian/Ubuntu package ``dataset-fashion-mnist``
_BATCH = 512


@dataclass(frozen=True)
class DataSpec:
    """What to load and how to prepare it; the constructor arguments of ``SearchDataModule``."""

    name: str
    path: str | None
    num_items: int | None
    image_size: int
    test_fraction: float
    seed: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_length: int = 128  # text: tokens per item (truncated / padded)
    tokenizer: str | None = None  # text: tokenizer.json, model folder or all-MiniLM-L6-v2 (None: all-MiniLM-L6-v2)
    text_column: str = "text"  # text files: the columns holding the text and the label
    label_column: str = "label"


class Source(ABC):
    """A dataset before preparation: ``labels`` (int64 in ``0..len(class_names)-1``) and ``class_names`` are cheap."""

    labels: np.ndarray
    class_names: list[str]

    @abstractmethod
    def prepare(self, indices: np.ndarray) -> torch.Tensor:
        """Model-ready items for ``indices``, in that order (images: float32 ``[n, 3, S, S]``; text: int64
        ``[n, 2, max_length]``, token ids and attention mask); called once."""


DATASETS: Registry[Callable[[DataSpec], Source]] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Callable[[DataSpec], Source]], Callable[[DataSpec], Source]]:
    """Decorator: make ``factory(spec) -> Source`` available as ``SearchDataModule(name=name)``."""
    return DATASETS.register(name)


def make_source(spec: DataSpec) -> Source:
    """The registered source for ``spec.name`` (validated by ``SearchDataModule``)."""
    return DATASETS.get(spec.name)(spec)


def to_pixels(images: torch.Tensor, spec: DataSpec, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) ``[n, C, H, W]`` (C = 1 or 3) to float32 ``[n, 3, S, S]`` (written into ``out``
    if given): scale to [0, 1], bilinear antialiased resize, grayscale repeated to three channels, normalised with
    ``spec.mean/std``."""
    x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
    size = (spec.image_size, spec.image_size)
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return torch.sub(x.expand(-1, 3, -1, -1), mean, out=out).div_(std)


class ArraySource(Source):
    """Images already in memory: uint8 ``[N, H, W]`` (grayscale) or ``[N, H, W, 3]``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: list[str], spec: DataSpec):
        self.images, self.labels, self.class_names, self.spec = images, labels.astype(np.int64), class_names, spec

    def prepare(self, indices: np.ndarray) -> torch.Tensor:
        size = self.spec.image_size
        out = torch.empty((len(indices), 3, size, size), dtype=torch.float32)
        for start in range(0, len(indices), _BATCH):
            batch = torch.from_numpy(self.images[indices[start:start + _BATCH]])
            batch = batch.unsqueeze(1) if batch.ndim == 3 else batch.permute(0, 3, 1, 2)
            to_pixels(batch, self.spec, out=out[start:start + _BATCH])
        return out


def read_idx(path: Path) -> np.ndarray:
    """An array from an IDX file (the MNIST format), gzipped or not."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            data = file.read()
        if data[:2] != b"\0\0" or data[2] != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        ndim = data[3]
        shape = tuple(int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}; replace it with an intact copy") from exc


FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]


def fashion_mnist_embedded() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images uint8 [3000, 28, 28], labels, class_names)``: the balanced subset in ``alsatian_pl/datasets``."""
    npz_file = resources.files("alsatian_pl").joinpath("datasets", FASHION_MNIST_NPZ)
    with npz_file.open("rb") as file, np.load(file) as npz:
        return npz["images"], npz["labels"], [str(name) for name in npz["class_names"]]


@register_dataset("fashion_mnist")
def fashion_mnist(spec: DataSpec) -> Source:
    """Fashion-MNIST: the embedded 3,000 items when ``num_items`` fits, else the training set of the Debian package
    (or of the IDX files in ``spec.path``)."""
    embedded = fashion_mnist_embedded()
    if spec.path is None and (spec.num_items is None or spec.num_items <= len(embedded[1])):
        return ArraySource(*embedded, spec)
    folder = Path(spec.path) if spec.path is not None else FASHION_MNIST_DIR
    files = [folder / f"train-{kind}-idx{dim}-ubyte.gz" for kind, dim in (("images", 3), ("labels", 1))]
    if not all(file.is_file() for file in files):
        why = (f"dataset.path={spec.path} does not hold" if spec.path is not None else
               f"num_items={spec.num_items} needs the full training set, but {folder} does not hold")
        raise DataError(
            f"Fashion-MNIST: {why} {files[0].name} and {files[1].name}. Install them with `sudo apt install "
            f"dataset-fashion-mnist` (Debian/Ubuntu, puts them in {FASHION_MNIST_DIR}), or set dataset.path to a "
            f"folder holding them, or use dataset.path=null and num_items <= {len(embedded[1])} (the subset shipped "
            "with alsatian-pl)")
    images, labels = read_idx(files[0]), read_idx(files[1])
    if len(images) != len(labels):
        raise DataError(f"Fashion-MNIST in {folder}: {len(images)} images but {len(labels)} labels; "
                        "reinstall the files")
    return ArraySource(images, labels, FASHION_MNIST_CLASSES, spec)


class FolderSource(Source):
    """Image files decoded with PIL (every mode to the same intensities: ``_images.decode_image``); ``files[k]`` has
    label ``labels[k]``."""

    def __init__(self, files: list[Path], labels: np.ndarray, class_names: list[str], spec: DataSpec):
        self.files, self.labels, self.class_names, self.spec = files, labels, class_names, spec

    def prepare(self, indices: np.ndarray) -> torch.Tensor:
        from rich.progress import track

        size = self.spec.image_size
        out = torch.empty((len(indices), 3, size, size), dtype=torch.float32)
        steps = track(enumerate(indices), total=len(indices), description=f"Preparing {len(indices)} images",
                      transient=True, disable=len(indices) < 200)
        for k, index in steps:
            to_pixels(decode_image(self.files[index], size), self.spec, out=out[k:k + 1])
        return out


def _layout(path: Path) -> str:
    return f"one subfolder per class holding that class's images, e.g. {path}/<class name>/<image>.jpg"


def folder_source(spec: DataSpec, hint: str = "") -> Source:
    """Images in ``spec.path/<class>/**/<image>``; classes are the sorted subfolders that hold images."""
    if spec.path is None:
        raise DataError(f"dataset {spec.name!r} needs a folder: set dataset.path=/path/to/images "
                        "(one subfolder per class)")
    path = Path(spec.path).expanduser()
    if not path.is_dir():
        where = "is a file, not a folder" if path.exists() else "does not exist"
        resolved = "" if path.is_absolute() else f" (resolved: {path.resolve()})"
        raise DataError(f"image folder {path}{resolved} {where}. Set dataset.path to a folder with "
                        f"{_layout(path)}.{hint}")
    classes, files, labels = [], [], []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                        and not f.name.startswith("."))
        if images:
            labels += [len(classes)] * len(images)
            classes.append(folder.name)
            files += images
    if not files:
        loose = sum(1 for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        found = f"found {loose} images directly in it but no class subfolders" if loose else "found no images in it"
        raise DataError(f"empty dataset: {found} ({path}). Expected {_layout(path)}; image types: "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))}.{hint}")
    return FolderSource(files, np.asarray(labels, dtype=np.int64), classes, spec)


register_dataset("image_folder")(folder_source)

_CARS_HINT = (
    " To use Stanford Cars (196 car models, 16,185 images): download it (e.g. the class-folder copy 'car_data' on "
    "Kaggle, or torchvision.datasets.StanfordCars and save each image under its class name), then put every image in "
    "a folder named after its car model, e.g. stanford_cars/Acura TL Sedan 2012/00001.jpg; training and test images "
    "may be mixed, the search makes its own test split. Place stanford_cars/ under $ALSATIAN_DATA_DIR "
    "(default: ./data) or set dataset.path=/path/to/stanford_cars.")


@register_dataset("stanford_cars")
def stanford_cars(spec: DataSpec) -> Source:
    """Stanford Cars laid out as an image folder (one subfolder per car model); a missing folder explains the layout."""
    return folder_source(spec, hint=_CARS_HINT)
