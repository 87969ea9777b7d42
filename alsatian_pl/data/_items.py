"""A round's items as the executor streams them: rows of a compact prepared set (uint8 pixels, int32 token ids),
read batch by batch (from memory or from the prepared-data cache on disk) and made model-ready on the device.

``Items`` is what the search passes around instead of one big float tensor: ``len``, ``shape`` (model-ready), slices
and ``+`` give new views without reading anything; ``items[a:b].to(device)`` reads those rows and converts them there.
Reading rows from memory or from disk gives the same bytes, so the model-ready batches are bit-identical.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, Sequence

import numpy as np
import torch


class Rows(Protocol):
    """A prepared set: ``read(index)`` gives rows ``index`` (in that order) as one CPU tensor."""

    row_shape: tuple[int, ...]
    dtype: torch.dtype
    key: str  # the identity of the bytes (content hash, or the prepared-data cache key)
    resident_bytes: int  # what it holds in memory (0 for a set on disk)

    def read(self, index: np.ndarray) -> torch.Tensor: ...


class MemoryRows:
    """Rows held in a tensor (text, or images without a prepared-data cache)."""

    def __init__(self, rows: torch.Tensor):
        self.rows, self.row_shape, self.dtype = rows, tuple(rows.shape[1:]), rows.dtype
        self.resident_bytes = rows.numel() * rows.element_size()
        self._key: str | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            h = hashlib.sha256(f"{self.dtype}{tuple(self.rows.shape)}".encode())
            h.update(self.rows.contiguous().view(torch.uint8).numpy().data)
            self._key = h.hexdigest()
        return self._key

    def read(self, index: np.ndarray) -> torch.Tensor:
        return self.rows[torch.from_numpy(np.asarray(index, dtype=np.int64))]


class ToPixels:
    """uint8 ``[n, C, S, S]`` (C = 1 or 3) to float32 ``[n, 3, S, S]``: scaled to [0, 1], normalised by mean/std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.key = f"pixels{self.mean}{self.std}"

    def shape(self, row_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (3, *row_shape[1:])

    def bytes_per_item(self, row_shape: tuple[int, ...]) -> int:
        return 4 * int(np.prod(self.shape(row_shape)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.float().div_(255).expand(-1, 3, -1, -1).sub(mean).div_(std)


class ToIds:
    """int32 token ids and masks ``[n, 2, L]`` to the int64 the text blocks take."""

    key = "ids"

    def shape(self, row_shape: tuple[int, ...]) -> tuple[int, ...]:
        return row_shape

    def bytes_per_item(self, row_shape: tuple[int, ...]) -> int:
        return 8 * int(np.prod(row_shape))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.long()


class AsIs:
    """Items a custom source prepared model-ready itself (``Source.prepare``): read as they are."""

    key = "as-is"

    def shape(self, row_shape: tuple[int, ...]) -> tuple[int, ...]:
        return row_shape

    def bytes_per_item(self, row_shape: tuple[int, ...]) -> int:
        return 0  # the rows read are the model-ready batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


Convert = ToPixels | ToIds | AsIs


class Items:
    """Rows ``index`` of ``rows``, made model-ready by ``convert`` when read (see the module docstring)."""

    def __init__(self, rows: Rows, index: np.ndarray, convert: Convert):
        self.rows, self.index, self.convert = rows, np.asarray(index, dtype=np.int64), convert

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        """The model-ready shape, ``(n, *item_shape)``."""
        return (len(self), *self.convert.shape(self.rows.row_shape))

    @property
    def dtype(self) -> torch.dtype:
        """The model-ready dtype."""
        return {ToPixels: torch.float32, ToIds: torch.int64}.get(type(self.convert), self.rows.dtype)

    def __getitem__(self, part: slice) -> "Items":
        if not isinstance(part, slice):
            raise TypeError("Items take slices only (items[a:b]); read them with .to(device) or .tensor()")
        return Items(self.rows, self.index[part], self.convert)

    def take(self, positions: np.ndarray | Sequence[int]) -> "Items":
        """The items at ``positions`` (any order, repeats allowed)."""
        return Items(self.rows, self.index[np.asarray(positions, dtype=np.int64)], self.convert)

    def __add__(self, other: "Items") -> "Items":
        if other.rows is not self.rows or other.convert is not self.convert:
            raise ValueError("only items of the same prepared set can be joined")
        return Items(self.rows, np.concatenate([self.index, other.index]), self.convert)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> torch.Tensor:
        """These rows, read and made model-ready on ``device`` (read as stored, converted there)."""
        return self.convert(self.rows.read(self.index).to(device, non_blocking=non_blocking))

    def tensor(self) -> torch.Tensor:
        """All of them model-ready in one CPU tensor (for small sets: a round streams them instead)."""
        return self.to("cpu")

    @property
    def key(self) -> str:
        """The identity of the model-ready items: the prepared set's key, the rows and the conversion."""
        h = hashlib.sha256(f"{self.rows.key}|{self.convert.key}|".encode())
        h.update(self.index.tobytes())
        return h.hexdigest()

    def batch_bytes(self, batch_size: int) -> int:
        """Bytes one batch in flight takes: the rows as read plus their model-ready copy."""
        return min(batch_size, len(self)) * self.in_flight_item_bytes

    @property
    def in_flight_item_bytes(self) -> int:
        """Bytes per item of a batch in flight (as read, plus model-ready)."""
        stored = self.rows.dtype.itemsize * int(np.prod(self.rows.row_shape))
        return stored + self.convert.bytes_per_item(self.rows.row_shape)
