"""Block weights for the executor: the :class:`WeightCache` (on an accelerator each block read from the store once
per search while the budget allows; on the CPU held until its last use in the plan), block placement on the compute
device, and readahead of the block files of coming steps."""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Hashable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .cache import tensor_bytes
from .stats import SearchStats, counter
from .store import BlockStore

__all__ = ["READAHEAD_BYTES", "place_block", "readahead_windows", "WeightCache"]

READAHEAD_BYTES = 256 * 2**20  # block files the OS is asked to read ahead of the running step (page cache only)


def place_block(block: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``block`` on ``device``, its 4-D weights in the layout inference runs fastest with.

    On an accelerator the copy to the device lays weights out channels-last. On the CPU the weights stay where the
    store mapped them (no copy): those whose bytes are already in channels-last order (1x1 kernels, one input
    channel per group, as in depthwise and pointwise convs) get channels-last strides for free, the rest keep theirs.
    Measured at 32 px, batch 64: EfficientNet-Lite0 runs 3-4x faster with channels-last weights, ResNet-18/152
    within noise of it, while copying ResNet weights to channels-last cost ~1 s per GiB (fresh pages).
    """
    if device.type != "cpu":
        return block.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    if channels_last:
        for module in block.modules():
            for t in module._parameters.values():
                if t is not None and t.dim() == 4 and t.is_contiguous():
                    n, c, h, w = t.shape
                    if c == 1 or h == w == 1:  # same bytes in both layouts: restride, no copy
                        t.data = t.data.as_strided(t.shape, (c * h * w, 1, w * c, c))
    return block


def readahead_windows(steps: Sequence, window: int = READAHEAD_BYTES) -> Iterator[list]:
    """For each step in turn, the later steps that newly enter a window of ``window`` weight bytes after it."""
    end = 1
    for i in range(len(steps)):
        end = max(end, i + 1)
        start, held = end, sum(s.weight_bytes for s in steps[i + 1:end])
        while end < len(steps) and held + steps[end].weight_bytes <= window:
            held += steps[end].weight_bytes
            end += 1
        yield steps[start:end]


class WeightCache:
    """Blocks loaded from the store, kept on the device within ``capacity`` bytes (None: unlimited), by key
    (the strategy's weight key: shared blocks, or each model's own copy).

    Eviction follows the plan (:meth:`schedule`, Belady): the block needed farthest ahead goes first, and blocks the
    plan does not need again go before any it does, the most recently used of them first (the next partition or round
    runs its steps in the same order, so the block used last is needed last again). Without a schedule: LRU.

    ``keep_done`` (default: off the CPU only): whether a block the scheduled plan does not use again stays held for
    later partitions and rounds. On the CPU a loaded block is a mapping of its store file (placing it copies
    nothing), so reading it again costs only the mapping and its checksum (about 4 ms for an 18 MiB ResNet block,
    warm), while holding it keeps its pages in the process's resident memory: there it is dropped at the next
    :meth:`get` after its last scheduled use. Measured on W1 (12 ResNet-18 checkpoints, bench/notes/reference.md):
    peak host RSS of the search 1.08 -> 0.96 GiB, loading +0.1 s; on EfficientNet-Lite0 Top 50% (335 small blocks),
    an interleaved A/B: peak 1.45 -> 1.02 GiB, loading +0.45 s, search time within its run-to-run spread
    (docs/guide/performance.md).

    ``prefetch`` starts reading a block on a background thread (file read and hash check, which release the GIL and
    use no torch kernels) so that it overlaps the current step's inference; a block being prefetched counts against
    ``capacity`` from the moment it is requested, so prefetching never exceeds the budget.
    """

    def __init__(self, store: BlockStore, device: torch.device, capacity: int | None = None,
                 channels_last: bool = False, stats: SearchStats | None = None, keep_done: bool | None = None):
        self.store, self.device, self.capacity, self.channels_last = store, device, capacity, channels_last
        self.keep_done = device.type != "cpu" if keep_done is None else keep_done
        self.stats = stats if stats is not None else SearchStats()
        self._blocks: OrderedDict[Hashable, tuple[nn.Module, int]] = OrderedDict()
        self._pending: dict[Hashable, tuple[Future[nn.Module], int]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.bytes = 0          # bytes of the loaded blocks held
        self._uses: dict[Hashable, list[int]] | None = None  # positions of each key in the scheduled gets
        self._cursor = 0        # gets done since the schedule was set
        self.pending_bytes = 0  # bytes of the blocks being prefetched

    loads = counter("weight_loads", "blocks read from the store")
    hits = counter("weight_hits", "blocks served from the cache")
    prefetched = counter("weight_prefetches", "loads started ahead of time")

    def schedule(self, keys: Iterable[Hashable]) -> None:
        """The keys the coming :meth:`get` calls ask for, in order (one partition of a round's plan)."""
        self._uses, self._cursor = defaultdict(list), 0
        for i, key in enumerate(keys):
            self._uses[key].append(i)

    def get(self, key: Hashable, block_hash: str) -> nn.Module:
        """The block ``block_hash`` (cached under ``key``), loading it from the store on a miss."""
        self._cursor += 1
        if not self.keep_done:
            self._drop_done(key)
        if key in self._blocks:
            self._blocks.move_to_end(key)
            self.stats.count("weight_hits")
            return self._blocks[key][0]
        if key in self._pending:
            future, nbytes = self._pending.pop(key)
            self.pending_bytes -= nbytes
            block = self._place(future.result())  # re-raises the store's error (e.g. CorruptBlockError) here
        else:
            block = self._place(self.store.load_block(block_hash))
        self.stats.count("weight_loads")
        nbytes = sum(tensor_bytes(t) for t in block.state_dict().values())
        self._blocks[key] = (block, nbytes)
        self.bytes += nbytes
        self.shrink(self.capacity)
        return block

    def prefetch(self, key: Hashable, block_hash: str, nbytes: int) -> bool:
        """Start loading ``block_hash`` in the background if it is not held and ``nbytes`` more fit the capacity."""
        if key in self._blocks or key in self._pending:
            return False
        if self.capacity is not None and self.bytes + self.pending_bytes + nbytes > self.capacity:
            return False
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alsatian-prefetch")
        self._pending[key] = (self._pool.submit(self.store.load_block, block_hash), nbytes)
        self.pending_bytes += nbytes
        self.stats.count("weight_prefetches")
        return True

    def advise(self, key: Hashable, block_hash: str) -> None:
        """If ``key`` is not held, let the OS read its block file in the background (no thread, no memory held)."""
        if key not in self._blocks and key not in self._pending:
            self.store.advise(block_hash)

    def _place(self, block: nn.Module) -> nn.Module:
        # On the calling thread: torch's parallel copies on a second thread would start a second OpenMP team that
        # competes with inference for the cores (measured: inference 7 s -> 11.5 s for resnet18 Top 50%).
        return place_block(block, self.device, self.channels_last)

    def shrink(self, capacity: int | None) -> None:
        """Evict blocks (in plan order, else least recently used) until at most ``capacity`` bytes are held, keeping
        the newest one."""
        self.capacity = capacity
        while capacity is not None and self.bytes + self.pending_bytes > capacity and len(self._blocks) > 1:
            self.bytes -= self._blocks.pop(self._victim())[1]

    def _drop_done(self, key: Hashable) -> None:
        """Drop the held blocks (other than ``key``) that the schedule does not use again after this get."""
        if self._uses is None:
            return
        now = self._cursor - 1
        for k in [k for k in self._blocks if k != key]:
            uses = self._uses.get(k, ())
            if bisect_left(uses, now) == len(uses):
                self.bytes -= self._blocks.pop(k)[1]

    def _victim(self) -> Hashable:
        """The block to evict: farthest next use in the schedule, one not needed again first (most recent of those
        first); the least recently used without a schedule. Never the newest."""
        held = list(self._blocks)[:-1]
        if self._uses is None:
            return held[0]

        def rank(i_key: tuple[int, Hashable]) -> tuple[int, int]:
            i, key = i_key
            uses = self._uses.get(key, ())
            at = bisect_left(uses, self._cursor)
            return (1, i) if at == len(uses) else (0, uses[at])
        return max(enumerate(held), key=rank)[1]

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Drop every block whose key is not in ``keys`` (those no surviving model runs again). Called after pruning,
        so survivors' blocks are not evicted in favour of dead ones."""
        keys = set(keys)
        for key in [k for k in self._blocks if k not in keys]:
            self.bytes -= self._blocks.pop(key)[1]
        for key in [k for k in self._pending if k not in keys]:
            future, nbytes = self._pending.pop(key)
            future.cancel()
            self.pending_bytes -= nbytes

    def close(self) -> None:
        """Stop the prefetch thread and drop blocks still being prefetched."""
        for future, _ in self._pending.values():
            future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending.clear()
        self.pending_bytes = 0
