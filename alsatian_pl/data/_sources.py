"""Dataset registry: each entry turns a :class:`DataSpec` into a :class:`Source` that knows its labels up front and
prepares model-ready items once. Image sources: Fashion-MNIST (embedded or Debian), class-per-subfolder folders; text
sources are in ``_text``."""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..io import os_error_message
from ..registry import Registry
from ._images import prepare_image, resize_pixels

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
    text_column: str = "text"  # text files and tables: the columns holding the text and the label(s)
    label_column: str | tuple[str, ...] = "label"  # several columns (tables): several targets
    image_column: str | None = None  # tables: the column of image paths or encoded images (None: a text table)
    skip_unreadable: bool = False  # leave out items that cannot be read (tables: also rows missing a value)
    task: str = "auto"  # auto | multiclass | multilabel | regression (data/_tasks.py)


class Decoded(NamedTuple):
    """One batch of decoded items: ``positions`` into the indices asked for; uint8 ``pixels [b, 3, S, S]`` (None
    when a writer stored them); ``crcs`` of the rows a writer stored; ``errors``: position -> why it could not be
    decoded."""

    positions: np.ndarray
    pixels: torch.Tensor | None
    errors: dict[int, str]
    crcs: np.ndarray | None = None


def pwrite_all(fd: int, array: np.ndarray, at: int) -> None:
    """Write all of ``array``'s bytes (C-contiguous) at offset ``at`` of ``fd``, however many calls it takes."""
    data = memoryview(array).cast("B")
    while data:
        written = os.pwrite(fd, data, at)
        data, at = data[written:], at + written


def unreadable(why: str) -> DataError:
    """The error that stops a prepare at an image that cannot be decoded (``why`` names the file)."""
    return DataError(f"{why} (or set dataset.skip_unreadable=true to skip files that cannot be read)")


class RowWriter:
    """Writes decoded items straight into rows of a prepared-data file (in whichever process decodes them), so the
    pixels never travel between processes: ``writer(k, pixels)`` stores position ``k`` and returns its CRC-32."""

    def __init__(self, path: Path, offset: int, row_bytes: int, rows: np.ndarray):
        self.path, self.offset, self.row_bytes, self.rows = path, offset, row_bytes, rows
        self._fd: int | None = None

    def __call__(self, k: int, pixels: torch.Tensor) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY)
        array = np.ascontiguousarray(pixels.numpy())
        pwrite_all(self._fd, array, self.offset + int(self.rows[k]) * self.row_bytes)
        return zlib.crc32(array)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}


class Source(ABC):
    """A dataset before preparation; ``labels``, ``class_names`` and ``task`` are cheap (no item is decoded).

    The label contract, by ``task`` (the data module checks it, ``_tasks.resolve``):

    - ``"multiclass"`` (the default): ``labels`` int64 [N], class ids in ``0..len(class_names)-1``; ``class_names``
      names the classes.
    - ``"multilabel"``: ``labels`` float32 [N, L] of 0/1 (an item may have no label); ``class_names`` names the L
      labels.
    - ``"regression"``: ``labels`` float32 [N, T] of real targets, T >= 1 (one target is [N, 1]); ``class_names``
      names the T targets.

    With ``dataset.task=auto`` a source's own ``task`` is used when it is not the default; a multiclass source's
    labels may also be read as another task when ``dataset.task`` asks for it (class ids one-hot as labels, or as one
    number). The data module's chunks and test items return label tensors of these shapes.
    """

    labels: np.ndarray
    class_names: list[str]
    task: str = "multiclass"
    notes: dict[str, int] = {}  # what the source left out while listing it (e.g. non-image files), for results.json


class ImageSource(Source):
    """Images: each item is prepared to uint8 ``[3, S, S]`` (S = ``spec.image_size``) by :meth:`decode`."""

    spec: DataSpec

    @abstractmethod
    def identity(self) -> str:
        """A digest of everything the prepared items depend on (files with their sizes and mtimes, or the pixels)."""

    @abstractmethod
    def decode(self, indices: np.ndarray, workers: int, writer: RowWriter | None = None) -> Iterator[Decoded]:
        """Batches that together cover ``indices`` in order, decoded by ``workers`` processes where that pays (0:
        this process); with a ``writer`` the decoding process may store the pixels itself (``Decoded.crcs``)."""

    def item_name(self, index: int) -> str:
        """What item ``index`` is, for messages."""
        return f"item {index}"


DATASETS: Registry[Callable[[DataSpec], Source]] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Callable[[DataSpec], Source]], Callable[[DataSpec], Source]]:
    """Decorator: make ``factory(spec) -> Source`` available as ``SearchDataModule(name=name)``."""
    return DATASETS.register(name)


def make_source(spec: DataSpec) -> Source:
    """The registered source for ``spec.name`` (validated by ``SearchDataModule``)."""
    return DATASETS.get(spec.name)(spec)


class ArraySource(ImageSource):
    """Images already in memory: uint8 ``[N, H, W]`` (grayscale) or ``[N, H, W, 3]``; resized in this process."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: list[str], spec: DataSpec,
                 task: str = "multiclass"):
        self.images, self.class_names, self.spec, self.task = images, class_names, spec, task
        self.labels = labels.astype(np.int64) if task == "multiclass" else labels.astype(np.float32)

    def identity(self) -> str:
        h = hashlib.sha256(f"{self.images.dtype}{self.images.shape}".encode())
        h.update(np.ascontiguousarray(self.images).data)
        return h.hexdigest()

    def decode(self, indices: np.ndarray, workers: int, writer: RowWriter | None = None) -> Iterator[Decoded]:
        for start in range(0, len(indices), _BATCH):  # in this process: resizing arrays is vectorised and quick
            batch = torch.from_numpy(self.images[indices[start:start + _BATCH]])
            batch = batch.unsqueeze(1) if batch.ndim == 3 else batch.permute(0, 3, 1, 2)
            pixels = resize_pixels(batch, self.spec.image_size).expand(-1, 3, -1, -1).contiguous()
            yield Decoded(np.arange(start, start + len(batch)), pixels, {})


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
    folder = Path(spec.path).expanduser() if spec.path is not None else FASHION_MNIST_DIR
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


class FolderSource(ImageSource):
    """Image files decoded with PIL (every mode to the same intensities: ``_images.prepare_image``), in worker
    processes when there are many; ``files[k]`` has label ``labels[k]``."""

    def __init__(self, files: list[Path], labels: np.ndarray, class_names: list[str], spec: DataSpec,
                 notes: dict[str, int] | None = None):
        self.files, self.labels, self.class_names, self.spec = files, labels, class_names, spec
        self.notes = notes or {}

    def identity(self) -> str:
        h = hashlib.sha256(str(Path(self.spec.path or "").expanduser().resolve()).encode())
        for f, label in zip(self.files, self.labels):
            try:
                st = f.stat()
            except OSError as exc:
                raise DataError(f"cannot read image {f}: {exc.strerror}. Delete or replace the file") from None
            h.update(f"{f}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def item_name(self, index: int) -> str:
        return str(self.files[index])

    def decode(self, indices: np.ndarray, workers: int, writer: RowWriter | None = None) -> Iterator[Decoded]:
        return decode_files([self.files[i] for i in indices], self.spec.image_size, workers, writer)


def decode_files(files: Sequence[Any], size: int, workers: int, writer: RowWriter | None = None
                 ) -> Iterator[Decoded]:
    """:meth:`ImageSource.decode` of ``files`` (paths, or file objects that PIL opens and ``str()`` names), in
    worker processes when there are many."""
    parallel = workers > 0 and len(files) >= _PARALLEL_FROM
    dataset = _FileDecode(files, size, writer if parallel else None)
    if not parallel:
        yield from (_collate([dataset[k] for k in range(s, min(s + 32, len(dataset)))])
                    for s in range(0, len(dataset), 32))
        return
    from torch.utils.data import DataLoader

    resize_pixels(torch.zeros((1, 2, 2), dtype=torch.uint8), 1)  # import torchvision once, before the workers fork
    yield from DataLoader(dataset, batch_size=32, num_workers=min(workers, len(files) // 32 + 1),
                          collate_fn=_collate, worker_init_fn=_one_thread, prefetch_factor=4)


DISK_FAILURE = "\0disk: "  # an error that is the disk's (a full disk, say), not the image's
_PARALLEL_FROM = 256  # fewer images decode in this process (starting workers costs more than it saves)


class _FileDecode:
    """A map-style dataset: position -> (position, uint8 [3, S, S] or None once written, why it failed or "", CRC)."""

    def __init__(self, files: Sequence[Any], size: int, writer: RowWriter | None):
        self.files, self.size, self.writer = files, size, writer

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor | None, str, int]:
        try:
            pixels = prepare_image(self.files[k], self.size)
        except DataError as exc:
            return k, torch.zeros((3, self.size, self.size), dtype=torch.uint8), str(exc), 0
        if self.writer is None:
            return k, pixels, "", 0
        try:
            return k, None, "", self.writer(k, pixels)
        except OSError as exc:  # reported by the main process (an exception here would arrive wrapped in a traceback)
            return k, None, DISK_FAILURE + os_error_message(exc, self.writer.path), 0


def _collate(items: list[tuple[int, torch.Tensor | None, str, int]]) -> Decoded:
    positions = np.array([k for k, *_ in items])
    errors = {k: why for k, _, why, _ in items if why}
    if all(x is not None for _, x, _, _ in items):
        return Decoded(positions, torch.stack([x for _, x, _, _ in items]), errors)  # type: ignore[misc]
    return Decoded(positions, None, errors, np.array([c for *_, c in items], dtype=np.uint32))


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # each decoding process on one core; the processes share the machine


def _layout(path: Path) -> str:
    return f"one subfolder per class holding that class's images, e.g. {path}/<class name>/<image>.jpg"


def _class_files(folder: Path) -> tuple[list[Path], int]:
    """The image files under ``folder`` (links followed, sorted) and how many other files it holds; DataError on a
    symbolic-link loop."""
    images, other = [], 0
    for root, dirs, names in os.walk(folder, followlinks=True):
        here = Path(root).resolve()
        for d in dirs:
            real = (Path(root) / d).resolve()
            if here.is_relative_to(real):
                raise DataError(f"symbolic-link loop: {Path(root) / d} points back to {real}; remove the link or "
                                "replace it with the folder's images")
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            f = Path(root) / name
            if f.suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") and f.is_file():
                images.append(f)
            else:
                other += 1
    return sorted(images), other


def folder_source(spec: DataSpec, hint: str = "") -> Source:
    """Images in ``spec.path/<class>/**/<image>``; classes are the sorted subfolders that hold images (other files
    are ignored and empty subfolders left out, each with a warning)."""
    path = _image_root(spec, hint)
    classes, files, labels, other, empty = [], [], [], 0, []
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    _refuse_aliases(path, folders)
    for folder in folders:
        images, ignored = _class_files(folder)
        other += ignored
        if images:
            labels += [len(classes)] * len(images)
            classes.append(folder.name)
            files += images
        else:
            empty.append(folder.name)
    if not files:
        loose = sum(1 for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        found = f"found {loose} images directly in it but no class subfolders" if loose else "found no images in it"
        raise DataError(f"empty dataset: {found} ({path}). Expected {_layout(path)}; image types: "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))}.{hint}")
    if empty:
        warnings.warn(f"{len(empty)} class folder(s) in {path} hold no images and are left out: "
                      f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}", stacklevel=2)
    if other:
        warnings.warn(f"ignored {other} file(s) in {path} that are not images ({', '.join(sorted(IMAGE_SUFFIXES))})",
                      stacklevel=2)
    notes = {"ignored_files": other, "empty_class_folders": len(empty)}
    return FolderSource(files, np.asarray(labels, dtype=np.int64), classes, spec, notes)


def _refuse_aliases(path: Path, folders: list[Path]) -> None:
    """DataError when two class folders are one folder (a link to another): its images would count twice, under
    two labels that no model can tell apart."""
    seen: dict[Path, str] = {}
    for folder in folders:
        real = folder.resolve()
        if real in seen:
            raise DataError(f"class folders {seen[real]!r} and {folder.name!r} in {path} are one folder ({real}: a "
                            "link): its images would be two classes at once; remove the link or give each class its "
                            "own folder")
        seen[real] = folder.name


def _image_root(spec: DataSpec, hint: str) -> Path:
    if spec.path is None:
        raise DataError(f"dataset {spec.name!r} needs a folder: set dataset.path=/path/to/images "
                        "(one subfolder per class)")
    path = Path(spec.path).expanduser()
    if not path.is_dir():
        where = "is a file, not a folder" if path.exists() else "does not exist"
        resolved = "" if path.is_absolute() else f" (resolved: {path.resolve()})"
        raise DataError(f"image folder {path}{resolved} {where}. Set dataset.path to a folder with "
                        f"{_layout(path)}.{hint}")
    return path


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
