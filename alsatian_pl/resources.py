"""The machine a search runs on: the compute device, its free memory, and this process's host memory (Linux
``/proc``), for the search driver and the benchmarks alike; and :class:`TensorPeak`, the peak bytes of the tensors a
piece of code allocates (on the meta device: from shapes alone)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from functools import lru_cache
from typing import Any, Iterator

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import ConfigError

__all__ = ["DEVICE_HEADROOM", "resolve_device", "device_capacity", "reset_peak_memory", "peak_rss", "rss_now",
           "release_free_memory", "peak_accelerator_bytes", "TensorPeak"]

DEVICE_HEADROOM = 0.9  # share of an accelerator's free memory the device tier of the cache may fill


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; through Lightning Fabric's accelerator selection."""
    if isinstance(device, torch.device):
        return device
    from lightning.fabric import Fabric

    accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "cuda", "gpu": "cuda"}.get(str(device))
    if accelerator is None:
        raise ConfigError(f"search.device must be auto, cpu or cuda, got {device!r}")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError("search.device=cuda but no CUDA device is available; use search.device=auto or cpu")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    return Fabric(accelerator=accelerator, devices=1).device


def device_capacity(device: torch.device, budget: int | None, reserve: int = 0) -> int | None:
    """Bytes of cached outputs the accelerator's tier takes now: ``DEVICE_HEADROOM`` of its free memory less
    ``reserve`` (what the round still allocates there), at most ``budget``; None on the CPU (one tier: host memory).

    Free memory counts what torch's caching allocator holds unused (reserved less allocated): ``mem_get_info`` sees
    it as taken, so without it the tier would shrink round after round by the blocks earlier rounds freed."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    capacity = max(0, int(free * DEVICE_HEADROOM) - reserve)
    return capacity if budget is None else min(capacity, budget)


def reset_peak_memory(device: torch.device) -> None:
    """Restart the peak counters: the process's peak RSS (Linux: VmHWM via /proc/self/clear_refs) and the
    accelerator's peak allocation, so each search has its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _status(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in bytes, None where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """Peak resident memory in bytes since :func:`reset_peak_memory` (else since the process started)."""
    peak = _status("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def host_memory_bytes() -> int:
    """This machine's physical memory in bytes (0 where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def rss_now() -> int:
    """Current resident set size of this process in bytes (0 where unknown)."""
    return _status("VmRSS") or 0


@lru_cache(maxsize=1)
def _libc() -> Any:
    """glibc, where this process runs on it (None elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Hand the host memory the allocator keeps from freed tensors back to the OS (glibc ``malloc_trim``; a no-op
    elsewhere), so that a search phase does not start above what it holds. Called between a round's phases: freed
    activations of one phase would otherwise stay resident under the next phase's peak."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def peak_accelerator_bytes(device: torch.device) -> int:
    """Peak accelerator memory allocated since :func:`reset_peak_memory` (0 on the CPU)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


class TensorPeak(TorchDispatchMode):
    """``with TensorPeak() as p: ...``: ``p.peak`` is the most bytes that tensors allocated inside the block held at
    once (storages of op outputs that alias no input, counted until they are freed); ``p.live`` what is still held.

    Exact at the granularity of tensor ops, on any device, the meta device included (where it costs no memory):
    tensors that existed before (inputs, weights) and views or in-place results of them count 0; scratch memory a
    kernel allocates and frees inside one op (a BLAS or LAPACK workspace) is not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[int, tuple[StorageWeakRef, int]] = {}
        self.live = self.peak = 0

    def __exit__(self, *exc: Any) -> Any:
        self._sweep()
        return super().__exit__(*exc)

    def _sweep(self) -> None:
        """Forget what died since the last sweep."""
        for key, (ref, nbytes) in list(self._held.items()):
            if ref.expired():
                del self._held[key]
                self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            storage = t.untyped_storage()
            key = storage._cdata
            if key in inputs:
                continue
            known = self._held.get(key)
            if known is not None and not known[0].expired():
                continue
            if known is not None:  # a freed storage's address, taken by a new one
                self.live -= known[1]
            self._held[key] = (StorageWeakRef(storage), storage.nbytes())
            self.live += storage.nbytes()
        # ``live`` still counts what died since the last sweep: it is at least what is held, so the peak can only
        # rise where it passes the peak; sweep there (not after every op: the sweep walks every held storage)
        if self.live > self.peak:
            self._sweep()
            self.peak = max(self.peak, self.live)
        return out


def _tensors(tree: Any) -> Iterator[torch.Tensor]:
    """The tensors in an op's arguments or outputs (nested in tuples, lists and dicts)."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (tuple, list)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)
