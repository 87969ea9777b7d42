"""The cache service (paper §4.3): holds task-tree node outputs between plan steps and accounts every byte exactly
as the planner does (resident + intermediates + the running step's weights and activations), in up to three tiers:
the compute device, host memory (on an accelerator, beyond ``device_capacity``) and, with a ``spill_dir``, disk."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors.torch import load_file, save_file

from .errors import BudgetTooSmallError
from .stats import SearchStats, counter
from .units import format_bytes

__all__ = ["tensor_bytes", "CacheService"]


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements."""
    return t.numel() * t.element_size()


class CacheService:
    """Node outputs by node id, and the bytes the memory model counts.

    ``reserve`` holds the round's resident bytes, ``put``/``release`` the intermediates, ``hold_weights`` the weights
    and one batch's activations of the running step (or the scoring phase's working set); ``peak`` is the largest
    total since :meth:`reset_peak`. An output that would take the device tier past ``device_capacity`` bytes goes to
    ``host`` memory instead (the executor moves each batch back as it reads it). With a ``spill_dir`` and a ``capacity``, least-recently-used outputs are written to disk
    (safetensors) whenever memory would exceed ``capacity``, and read back when a step needs them.
    """

    def __init__(self, *, device: torch.device | str = "cpu", device_capacity: int | None = None,
                 host: torch.device | str = "cpu", capacity: int | None = None, spill_dir: str | Path | None = None,
                 stats: SearchStats | None = None):
        self.device, self.host = torch.device(device), torch.device(host)
        self.device_capacity, self.capacity = device_capacity, capacity
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self.stats = stats if stats is not None else SearchStats()
        self.resident = self.intermediates = self.weights = self.peak = 0
        self._entries: dict[int, torch.Tensor] = {}  # least recently used first
        self._on_device: set[int] = set()
        self._device_bytes = 0
        self._spilled: dict[int, tuple[Path, int, torch.device]] = {}

    @property
    def in_use(self) -> int:
        return self.resident + self.intermediates + self.weights

    hits = counter("cache_hits", "cached outputs read")
    spilled_bytes = counter("spilled_bytes", "bytes written to the disk tier")
    moved_to_host_bytes = counter("moved_to_host_bytes", "bytes that went to the host tier")

    def _bump(self) -> None:
        self.peak = max(self.peak, self.in_use)

    def reset_peak(self) -> None:
        self.peak = self.in_use

    def reserve(self, nbytes: int) -> None:
        """Hold ``nbytes`` resident bytes (replacing the previous reservation)."""
        self.resident = nbytes
        self._bump()

    def put(self, node: int, value: torch.Tensor) -> None:
        """Cache ``value`` as node ``node``'s output, in the device tier while it has room, else in host memory."""
        nbytes = tensor_bytes(value)
        if self.device_capacity is not None and self._device_bytes + nbytes > self.device_capacity:
            value = value.to(self.host)
            self.stats.count("moved_to_host_bytes", nbytes)
        else:
            self._on_device.add(node)
            self._device_bytes += nbytes
        self._entries[node] = value
        self.intermediates += nbytes
        self._bump()

    def get(self, node: int) -> torch.Tensor:
        """Node ``node``'s output (read back from disk first if it was spilled)."""
        self.stats.count("cache_hits")
        if node in self._spilled:
            path, nbytes, device = self._spilled.pop(node)
            self.make_room(nbytes, keep=())
            value = load_file(path, device=str(device))["x"]
            path.unlink()
            self._entries[node] = value
            self.intermediates += nbytes
            self._bump()
        self._entries[node] = self._entries.pop(node)  # most recently used last
        return self._entries[node]

    def release(self, node: int) -> None:
        """Drop node ``node``'s output: no later step reads it."""
        if node in self._spilled:
            self._spilled.pop(node)[0].unlink()
            return
        self._forget(node)

    def clear(self) -> None:
        """Drop every node output (a plan stopped part-way: nothing reads them again)."""
        for node in [*self._entries, *self._spilled]:
            self.release(node)

    def _forget(self, node: int) -> torch.Tensor:
        value = self._entries.pop(node)
        self.intermediates -= tensor_bytes(value)
        if node in self._on_device:
            self._on_device.discard(node)
            self._device_bytes -= tensor_bytes(value)
        return value

    def make_room(self, nbytes: int, keep: Iterable[int] = ()) -> None:
        """Spill least-recently-used entries (not those in ``keep``) until ``nbytes`` more fit in ``capacity``;
        BudgetTooSmallError when even spilling everything else is not enough. No-op without a spill folder."""
        if self.spill_dir is None or self.capacity is None:
            return
        keep = set(keep)
        for node in [n for n in self._entries if n not in keep]:
            if self.in_use + nbytes <= self.capacity:
                break
            self._spill(node)
        if self.in_use + nbytes > self.capacity:
            needed = self.in_use + nbytes
            raise BudgetTooSmallError(
                f"The cache budget {format_bytes(self.capacity)} is too small even with spilling to disk: this step "
                f"needs {format_bytes(needed)} in memory (resident data, its input, its output and its weights). "
                f"Raise search.cache_budget to at least {format_bytes(needed)} or lower the batch size.", needed=needed)

    def _spill(self, node: int) -> None:
        assert self.spill_dir is not None
        value = self._forget(node)
        path = self.spill_dir / f"node-{node}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"x": value.contiguous()}, path)
        self._spilled[node] = (path, tensor_bytes(value), value.device)
        self.stats.count("spilled_bytes", tensor_bytes(value))

    @contextmanager
    def hold_weights(self, nbytes: int) -> Iterator[None]:
        """Count ``nbytes`` held only while a step runs (its weights and activations) or the round is scored (the
        scorer's working set), for the duration of the ``with`` body."""
        self.weights += nbytes
        self._bump()
        try:
            yield
        finally:
            self.weights -= nbytes
