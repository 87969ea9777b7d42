"""The prepared-data cache (``dataset.data_cache``, default ``<store>/data``): every image decoded and resized once,
kept on disk as uint8 rows, read back row by row by later rounds and later searches.

One folder per prepared set, named by its key (the source's identity: every file's path, label, size and mtime, or
the pixels of an in-memory set; the image size; the decoder version)::

    <data_cache>/<key>/items.npy    uint8 [N, 3, S, S], one row per item of the dataset (a .npy file: numpy can open
                                    it with np.load(mmap_mode="r")); rows not prepared yet are holes of a sparse file
    <data_cache>/<key>/index.json   sealed (checksummed) JSON: per row its state (empty / prepared / unreadable) and
                                    the CRC-32 of its bytes; the reasons unreadable files were skipped

Rows are filled on demand (a subset of a large folder decodes only its items; another seed adds the missing ones).
A row counts as prepared only once the index written after it says so, and the index is replaced atomically, so a
killed process leaves at worst rows that are prepared again. Every row read is checked against its CRC-32 (about
7 GB/s): a damaged row is decoded again from its file, with a warning; a damaged index or a data file of the wrong
size is discarded and prepared again, with a warning. Rows are read with positioned reads (``preadv``), not a memory
map: the pages they come from stay in the OS page cache (reclaimable, shared, not this process's resident memory),
and the search holds only the batches in flight.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import AlsatianError, DataError, DiskError
from ..io import os_error_message, read_json, write_json
from ._sources import DISK_FAILURE, Decoded, ImageSource, RowWriter, pwrite_all, unreadable

FORMAT = 1
DECODER = "pil-draft/torchvision-bilinear-antialias/uint8-rgb/1"  # change it when prepared pixels would change
_EMPTY, _READY, _UNREADABLE = 0, 1, 2
_SAVE_EVERY = 4096  # rows between index saves while filling (what a killed process keeps)


def cache_key(source: ImageSource) -> str:
    """The name of a source's prepared set."""
    return hashlib.sha256(f"{FORMAT}|{DECODER}|{source.spec.image_size}|{source.identity()}".encode()).hexdigest()


def source_id(source: ImageSource) -> str:
    """What stays the same when the files of a dataset change (its earlier prepared sets are then out of date)."""
    where = str(Path(source.spec.path).expanduser().resolve()) if source.spec.path else ""
    return hashlib.sha256(f"{source.spec.name}|{where}|{source.spec.image_size}".encode()).hexdigest()


class DiskRows:
    """A prepared set on disk (see the module docstring); ``read`` gives rows, ``fill`` prepares missing ones."""

    dtype = torch.uint8
    resident_bytes = 0

    def __init__(self, folder: Path, meta: dict[str, Any]):
        self.folder, self.key = folder, meta["key"]
        self.row_shape = tuple(meta["shape"][1:])
        self.num_rows, self.offset = meta["shape"][0], meta["offset"]
        self.row_bytes = int(np.prod(self.row_shape))
        self.status = np.frombuffer(base64.b64decode(meta["status"]), dtype=np.uint8).copy()
        self.crc = np.frombuffer(base64.b64decode(meta["crc"]), dtype=np.uint32).copy()
        self.unreadable = {int(k): v for k, v in meta["unreadable"].items()}
        self._meta = {k: meta[k] for k in ("format", "decoder", "key", "source_id", "shape", "offset")}
        self._checked = np.zeros(self.num_rows, dtype=bool)  # rows whose CRC this process has checked
        self._fd: int | None = None
        self.source: ImageSource | None = None  # set by fill; decodes a damaged row again
        if len(self.status) != self.num_rows or len(self.crc) != self.num_rows:
            raise ValueError("the index does not match the data file's shape")

    # -- opening
    @classmethod
    def open(cls, root: Path, source: ImageSource) -> "DiskRows":
        """The source's prepared set under ``root``: opened, or created empty (replacing a damaged one and the
        source's out-of-date sets)."""
        key = cache_key(source)
        folder = root / key[:32]
        if folder.exists():
            try:
                return cls._load(folder, key)
            except (AlsatianError, ValueError, OSError) as exc:
                warnings.warn(f"the prepared-data cache {folder} is damaged ({_why(exc)}); preparing the items again",
                              stacklevel=3)
                shutil.rmtree(folder, ignore_errors=True)
        _drop_stale(root, source_id(source), key)
        return cls._create(folder, key, source)

    @classmethod
    def _load(cls, folder: Path, key: str) -> "DiskRows":
        meta = read_json(folder / "index.json", "prepared-data index", "it is prepared again")
        if meta.get("format") != FORMAT or meta.get("key") != key or meta.get("decoder") != DECODER:
            raise ValueError("written by another version")
        rows = cls(folder, meta)
        size = (folder / "items.npy").stat().st_size
        if size != rows.offset + rows.num_rows * rows.row_bytes:
            raise ValueError(f"items.npy has {size} bytes, expected {rows.offset + rows.num_rows * rows.row_bytes}")
        return rows

    @classmethod
    def _create(cls, folder: Path, key: str, source: ImageSource) -> "DiskRows":
        size = source.spec.image_size
        shape = (len(source.labels), 3, size, size)
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            array = np.lib.format.open_memmap(tmp / "items.npy", mode="w+", dtype=np.uint8, shape=shape)
            offset = array.offset
            del array  # a sparse file: rows take disk space as they are prepared
            meta = {"format": FORMAT, "decoder": DECODER, "key": key, "source_id": source_id(source),
                    "shape": list(shape), "offset": offset}
            rows = cls(tmp, {**meta, "status": _b64(np.zeros(shape[0], np.uint8)),
                             "crc": _b64(np.zeros(shape[0], np.uint32)), "unreadable": {}})
            rows._save()
            os.rename(tmp, folder)
        except FileExistsError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process made it first: use theirs
            return cls._load(folder, key)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if folder.is_dir():
                return cls._load(folder, key)
            raise DiskError(f"cannot create the prepared-data cache: {os_error_message(exc, folder)}") from None
        rows.folder = folder
        return rows

    # -- filling
    def fill(self, source: ImageSource, rows: np.ndarray, *, workers: int, stop_on_error: bool,
             progress: Callable[[int], None] = lambda n: None) -> int:
        """Prepare ``rows`` not prepared yet (decoded by ``source``); returns how many were decoded now. An
        unreadable file is recorded; with ``stop_on_error`` the first one raises DataError naming it."""
        self.source = source
        with self._locked():
            self._reload()
            todo = np.unique(rows[self.status[rows] == _EMPTY])
            progress(len(rows) - len(todo))
            done = 0
            try:
                writer = RowWriter(self.folder / "items.npy", self.offset, self.row_bytes, todo)
                for batch in source.decode(todo, workers, writer):
                    self._record(todo, batch)
                    done += len(batch.positions)
                    progress(len(batch.positions))
                    if batch.errors and stop_on_error:
                        raise unreadable(next(iter(batch.errors.values())))
                    if done % _SAVE_EVERY < len(batch.positions):
                        self._save()
            finally:
                self._save()
        return done

    def _record(self, todo: np.ndarray, batch: Decoded) -> None:
        """Note a decoded batch: its rows prepared (written here unless the decoding process wrote them), or
        unreadable; a disk failure in a decoding process raises DiskError."""
        rows = todo[batch.positions]
        failed = {int(rows[i]): batch.errors[int(p)] for i, p in enumerate(batch.positions) if int(p) in batch.errors}
        disk = next((why for why in failed.values() if why.startswith(DISK_FAILURE)), None)
        if disk is not None:
            raise DiskError(f"cannot write prepared items: {disk[len(DISK_FAILURE):]}")
        if batch.pixels is not None:
            pixels = batch.pixels.numpy()
            good = np.array([int(r) not in failed for r in rows])
            good_pixels, good_rows = pixels[good], rows[good]  # once: each run below is a view of them
            for run in _runs(good_rows):
                self._pwrite(good_pixels[run[0]:run[-1] + 1], int(good_rows[run[0]]))
            crcs = [zlib.crc32(pixels[k]) for k in range(len(rows))]
        else:
            crcs = batch.crcs
        for k, r in enumerate(rows):
            if int(r) in failed:
                self.status[r], self.unreadable[int(r)] = _UNREADABLE, failed[int(r)]
            else:
                self.status[r], self.crc[r], self._checked[r] = _READY, crcs[k], True

    def _pwrite(self, block: np.ndarray, first_row: int) -> None:
        try:
            pwrite_all(self._file(), block, self.offset + first_row * self.row_bytes)
        except OSError as exc:
            raise DiskError(f"cannot write prepared items: {os_error_message(exc, self.folder / 'items.npy')}") from None

    # -- reading
    def read(self, index: np.ndarray) -> torch.Tensor:
        """Rows ``index`` (prepared ones), in that order, as uint8 ``[n, 3, S, S]``; each row's CRC is checked the
        first time this process reads it."""
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(index, kind="stable")
        rows = index[order]
        if len(rows) and (self.status[rows] != _READY).any():
            raise AlsatianError(f"internal error: reading {int((self.status[rows] != _READY).sum())} rows of "
                                f"{self.folder} that are not prepared")
        out = np.empty((len(rows), *self.row_shape), dtype=np.uint8)
        for run in _runs(rows):
            self._pread(out[run[0]:run[-1] + 1], int(rows[run[0]]))
        for k in np.flatnonzero(~self._checked[rows]):
            self._check(out, k, int(rows[k]))
        result = np.empty_like(out)
        result[order] = out
        return torch.from_numpy(result)

    def _pread(self, into: np.ndarray, first_row: int) -> None:
        view, at = memoryview(into).cast("B"), self.offset + first_row * self.row_bytes
        while view:
            got = os.preadv(self._file(), [view], at)
            if got == 0:
                raise DataError(f"prepared-data file {self.folder / 'items.npy'} is shorter than its index says; "
                                "delete the folder and run again")
            view, at = view[got:], at + got

    def _check(self, out: np.ndarray, k: int, row: int) -> None:
        """Row ``row`` (read into ``out[k]``) against its CRC; a damaged row is decoded again and rewritten."""
        if zlib.crc32(out[k]) != self.crc[row]:
            if self.source is None:
                raise DataError(f"prepared-data row {row} in {self.folder} is damaged; delete the folder and run again")
            warnings.warn(f"prepared-data row {row} ({self.source.item_name(row)}) in {self.folder} was damaged on "
                          "disk; decoded it again", stacklevel=4)
            _, pixels, errors, _ = next(self.source.decode(np.array([row]), 0))
            if errors or pixels is None or zlib.crc32(pixels[0].numpy()) != self.crc[row]:
                raise DataError(f"prepared-data row {row} ({self.source.item_name(row)}) is damaged and its file no "
                                "longer decodes to the same pixels; delete the folder and run again")
            out[k] = pixels[0].numpy()
            self._pwrite(out[k:k + 1], row)
        self._checked[row] = True

    # -- files
    def _file(self) -> int:
        if self._fd is None:
            path = self.folder / "items.npy"
            try:
                self._fd = os.open(path, os.O_RDWR)
            except PermissionError:
                self._fd = os.open(path, os.O_RDONLY)
        return self._fd

    def _save(self) -> None:
        write_json(self.folder / "index.json", {**self._meta, "status": _b64(self.status), "crc": _b64(self.crc),
                                                "unreadable": {str(k): v for k, v in self.unreadable.items()}},
                   sealed=True)

    def _reload(self) -> None:
        """Take the rows another process prepared meanwhile (called under the lock)."""
        fresh = DiskRows._load(self.folder, self.key)
        newer = (fresh.status != _EMPTY) & (self.status == _EMPTY)
        self.status[newer], self.crc[newer] = fresh.status[newer], fresh.crc[newer]
        self.unreadable.update(fresh.unreadable)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}  # another process opens the file itself

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # type: ignore[arg-type]


def _runs(rows: np.ndarray) -> list[np.ndarray]:
    """Positions of ``rows`` (sorted) split where the row numbers stop being consecutive."""
    if not len(rows):
        return []
    return np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows) != 1) + 1)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def _why(exc: BaseException) -> str:
    return str(exc).split("; ")[0]


def _drop_stale(root: Path, source: str, key: str) -> None:
    """Delete the prepared sets of the same dataset made from files that have changed since."""
    if not root.is_dir():
        return
    for index in root.glob("*/index.json"):
        try:
            meta = read_json(index, "prepared-data index", "")
        except AlsatianError:
            continue
        if meta.get("source_id") == source and meta.get("key") != key:
            warnings.warn(f"the files of this dataset changed since {index.parent} was prepared; preparing again",
                          stacklevel=4)
            shutil.rmtree(index.parent, ignore_errors=True)
