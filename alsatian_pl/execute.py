"""The execution engine (paper §4.3): runs a round's plan steps over the round's items.

Block inference runs batch-wise under ``torch.inference_mode`` on the chosen device; node outputs live in a
:class:`CacheService` that counts bytes exactly as the planner does (resident + intermediates + running weights);
block weights come from a :class:`WeightCache` so that each block is read from the store at most once per search
while memory allows.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import AlsatianError, BudgetTooSmallError
from .plan import InferenceStep, ReleaseStep, RoundPlan, ScoreStep, TaskTree
from .store import BlockStore
from .units import format_bytes


class Timings(dict):
    """Seconds spent per phase (prepare_data, prepare_model, inference, proxy_scoring, planning)."""

    PHASES = ("prepare_data", "prepare_model", "inference", "proxy_scoring", "planning")

    def __init__(self, device: torch.device | None = None):
        super().__init__({p: 0.0 for p in self.PHASES})
        self._sync = device is not None and device.type == "cuda"

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``name`` (synchronising the accelerator first)."""
        if self._sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize()
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements."""
    return t.numel() * t.element_size()


@dataclass
class CacheService:
    """Holds node outputs between plan steps and accounts every byte the planner accounts for.

    ``reserve`` holds the round's resident bytes; ``put``/``release`` the intermediates; ``hold_weights`` the
    weights of the running step. ``peak`` is the largest total seen since :meth:`reset_peak`. Tiers: outputs stay on
    the compute device; on an accelerator, entries beyond ``device_capacity`` bytes go to host memory; with a
    ``spill_dir``, least-recently-used entries are written to disk (safetensors) whenever memory would exceed
    ``capacity`` bytes, and read back when a step needs them.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    device_capacity: int | None = None
    resident: int = 0
    intermediates: int = 0
    weights: int = 0
    peak: int = 0
    hits: int = 0
    moved_to_host_bytes: int = 0
    capacity: int | None = None
    spill_dir: Path | None = None
    spilled_bytes: int = 0
    _entries: dict[int, torch.Tensor] = field(default_factory=dict)
    _spilled: dict[int, tuple[Path, int, torch.device]] = field(default_factory=dict)
    _on_device: int = 0

    @property
    def in_use(self) -> int:
        return self.resident + self.intermediates + self.weights

    def _bump(self) -> None:
        self.peak = max(self.peak, self.in_use)

    def reset_peak(self) -> None:
        self.peak = self.in_use

    def reserve(self, nbytes: int) -> None:
        self.resident = nbytes
        self._bump()

    def put(self, node: int, value: torch.Tensor) -> None:
        nbytes = tensor_bytes(value)
        if (value.device.type != "cpu" and self.device_capacity is not None
                and self._on_device + nbytes > self.device_capacity):
            value = value.to("cpu", non_blocking=False)
            self.moved_to_host_bytes += nbytes
        elif value.device.type != "cpu":
            self._on_device += nbytes
        self._entries[node] = value
        self.intermediates += nbytes
        self._bump()

    def get(self, node: int) -> torch.Tensor:
        self.hits += 1
        if node in self._spilled:  # back from disk, making room first
            path, nbytes, device = self._spilled.pop(node)
            self.make_room(nbytes, keep=())
            value = load_file(path, device=str(device))["x"]
            path.unlink()
            self._entries[node] = value
            self.intermediates += nbytes
            self._bump()
        self._entries[node] = self._entries.pop(node)  # most recently used last
        return self._entries[node]

    def make_room(self, nbytes: int, keep: Iterable[int] = ()) -> None:
        """Spill least-recently-used entries (not those in ``keep``) until ``nbytes`` more fit in ``capacity``.

        Raises BudgetTooSmallError when even spilling everything else leaves too little room. No-op without a
        ``spill_dir`` or a ``capacity``.
        """
        if self.spill_dir is None or self.capacity is None:
            return
        keep = set(keep)
        for node in [n for n in self._entries if n not in keep]:
            if self.in_use + nbytes <= self.capacity:
                break
            value = self._entries.pop(node)
            size = tensor_bytes(value)
            path = Path(self.spill_dir) / f"node-{node}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"x": value.contiguous()}, path)
            self._spilled[node] = (path, size, value.device)
            self.intermediates -= size
            self.spilled_bytes += size
            if value.device.type != "cpu":
                self._on_device -= size
        if self.in_use + nbytes > self.capacity:
            needed = self.in_use + nbytes
            raise BudgetTooSmallError(
                f"The cache budget {format_bytes(self.capacity)} is too small even with spilling to disk: this step "
                f"needs {format_bytes(needed)} in memory (resident data, its input, its output and its weights). "
                f"Raise search.cache_budget to at least {format_bytes(needed)} or lower the batch size.", needed=needed)

    def release(self, node: int) -> None:
        if node in self._spilled:
            self._spilled.pop(node)[0].unlink()
            return
        value = self._entries.pop(node)
        self.intermediates -= tensor_bytes(value)
        if value.device.type != "cpu":
            self._on_device -= tensor_bytes(value)

    @contextmanager
    def hold_weights(self, nbytes: int) -> Iterator[None]:
        self.weights += nbytes
        self._bump()
        try:
            yield
        finally:
            self.weights -= nbytes


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
            for name, t in module._parameters.items():
                if t is not None and t.dim() == 4 and t.is_contiguous():
                    n, c, h, w = t.shape
                    if c == 1 or h == w == 1:  # same bytes in both layouts: restride, no copy
                        t.data = t.data.as_strided(t.shape, (c * h * w, 1, w * c, c))
    return block


class WeightCache:
    """Blocks loaded from the store, kept on the device (LRU) within ``capacity`` bytes (None: unlimited).

    ``prefetch`` starts reading a block on a background thread (file read and hash check, which release the GIL and
    use no torch kernels) so that it overlaps the current step's inference; a block being prefetched
    counts against ``capacity`` from the moment it is requested, so prefetching never exceeds the budget.
    """

    def __init__(self, store: BlockStore, device: torch.device, capacity: int | None = None,
                 channels_last: bool = False):
        self.store, self.device, self.capacity, self.channels_last = store, device, capacity, channels_last
        self._blocks: OrderedDict[Hashable, tuple[nn.Module, int]] = OrderedDict()
        self._pending: dict[Hashable, tuple[Future[nn.Module], int]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.bytes = 0          # bytes of the loaded blocks held
        self.pending_bytes = 0  # bytes of the blocks being prefetched
        self.loads = 0
        self.hits = 0
        self.prefetched = 0     # loads that were started ahead of time

    def get(self, key: Hashable, block_hash: str) -> nn.Module:
        """The block ``block_hash`` (cached under ``key``), loading it from the store on a miss."""
        if key in self._blocks:
            self._blocks.move_to_end(key)
            self.hits += 1
            return self._blocks[key][0]
        if key in self._pending:
            future, nbytes = self._pending.pop(key)
            self.pending_bytes -= nbytes
            block = self._place(future.result())  # re-raises the store's error (e.g. CorruptBlockError) here
        else:
            block = self._place(self.store.load_block(block_hash))
        self.loads += 1
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
        self.prefetched += 1
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
        """Evict least-recently-used blocks until at most ``capacity`` bytes are held (keeping the newest one)."""
        self.capacity = capacity
        while capacity is not None and self.bytes + self.pending_bytes > capacity and len(self._blocks) > 1:
            _, (_, nbytes) = self._blocks.popitem(last=False)
            self.bytes -= nbytes

    def retain(self, hashes: Iterable[str], owners: Iterable[str]) -> None:
        """Drop the blocks no surviving model runs again: hashes not in ``hashes``, or copies owned by a model not in
        ``owners`` (the baselines' per-model keys). Called after pruning, so survivors' blocks are not evicted in
        favour of dead ones."""
        hashes, owners = set(hashes), set(owners)

        def dead(key: Hashable) -> bool:
            block_hash, owner = key if isinstance(key, tuple) else (key, None)
            return block_hash not in hashes or (owner is not None and owner not in owners)

        for key in [k for k in self._blocks if dead(k)]:
            self.bytes -= self._blocks.pop(key)[1]
        for key in [k for k in self._pending if dead(k)]:
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


def _readahead(steps: list[InferenceStep], window: int) -> Iterator[list[InferenceStep]]:
    """For each step in turn, the later steps that newly enter a window of ``window`` weight bytes after it."""
    end = 1
    for i in range(len(steps)):
        end = max(end, i + 1)
        start, held = end, sum(s.weight_bytes for s in steps[i + 1:end])
        while end < len(steps) and held + steps[end].weight_bytes <= window:
            held += steps[end].weight_bytes
            end += 1
        yield steps[start:end]


FeatureSink = Callable[[str, int, torch.Tensor], None]  # (model id, first item index, features of those items)


READAHEAD_BYTES = 256 * 2**20  # block files the OS is asked to read ahead of the running step (page cache only)


class Executor:
    """Runs :class:`RoundPlan` steps. ``share_weights=False`` keys weights per model (the baselines load their own)."""

    def __init__(self, store: BlockStore, *, device: torch.device, batch_size: int, timings: Timings,
                 cache: CacheService, weights: WeightCache, share_weights: bool = True, prefetch: bool = True):
        self.store, self.device, self.batch_size, self.prefetch = store, device, batch_size, prefetch
        self.timings, self.cache, self.weights, self.share_weights = timings, cache, weights, share_weights
        self.block_runs = 0          # block applications (one block over one partition of items)
        self.inference_steps = 0
        self.block_seconds: dict[str, float] = {}   # measured inference seconds per block hash
        self.block_items: dict[str, int] = {}       # items each block hash was applied to

    def run_round(self, plan: RoundPlan, tree: TaskTree, inputs: torch.Tensor, sink: FeatureSink) -> None:
        """Run ``plan`` once per partition of ``inputs``; each model's features reach ``sink`` partition by partition."""
        for p in range(plan.partitions):
            start = p * plan.partition_items
            part = inputs[start:start + plan.partition_items]
            leaves: dict[int, torch.Tensor] = {}
            inference = [s for s in plan.steps if isinstance(s, InferenceStep)]
            upcoming = iter(inference[1:])
            ahead = _readahead(inference, READAHEAD_BYTES)
            for step in plan.steps:
                if isinstance(step, InferenceStep):
                    leaves.clear()
                    nxt = next(upcoming, None)
                    with self.timings.phase("prepare_model"):
                        if nxt is not None and self.prefetch:  # the next step's weights load while this step runs
                            for b in nxt.blocks:
                                self.weights.prefetch(self._key(b.hash, nxt), b.hash, b.weight_bytes)
                        for later in next(ahead):  # the OS reads the files of the steps ahead in the background
                            for b in later.blocks:
                                self.weights.advise(self._key(b.hash, later), b.hash)
                    x = part if step.input == TaskTree.ROOT else self.cache.get(step.input)
                    cached_out = step.blocks[-1].out_bytes * len(x) if tree.node(step.output).children else 0
                    self.cache.make_room(step.weight_bytes + cached_out, keep=(step.input,))
                    with self.cache.hold_weights(step.weight_bytes):  # input, output and weights held together
                        out = self._infer(step, x)
                        if tree.node(step.output).children:
                            self.cache.put(step.output, out)
                        else:
                            leaves[step.output] = out  # a model's features: written into its reserved buffer
                elif isinstance(step, ScoreStep):
                    feats = leaves[step.features] if step.features in leaves else self.cache.get(step.features)
                    sink(step.model, start, feats)
                elif isinstance(step, ReleaseStep):
                    self.cache.release(step.node)
                else:  # pragma: no cover - the planner emits only these three kinds
                    raise TypeError(f"unknown plan step {step!r}")
            if self.cache.intermediates:
                raise AlsatianError("internal error: the plan left intermediates in the cache")

    def _key(self, block_hash: str, step: InferenceStep) -> Hashable:
        """Weight-cache key: the block (shared weights), or the block of one model (the baselines' own copies)."""
        return (block_hash, None if self.share_weights else min(step.models))

    def _infer(self, step: InferenceStep, x: torch.Tensor) -> torch.Tensor:
        with self.timings.phase("prepare_model"):
            blocks = [self.weights.get(self._key(b.hash, step), b.hash) for b in step.blocks]
        with self.timings.phase("inference"), torch.inference_mode():
            t0 = time.perf_counter()
            out = None
            for s in range(0, len(x), self.batch_size):
                y = x[s:s + self.batch_size].to(self.device, non_blocking=True)
                if self.weights.channels_last and y.dim() == 4:
                    y = y.contiguous(memory_format=torch.channels_last)
                for block in blocks:
                    y = block(y)
                if out is None:
                    layout = (torch.channels_last if y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last)
                              and not y.is_contiguous() else torch.contiguous_format)
                    out = torch.empty((len(x), *y.shape[1:]), dtype=y.dtype, device=self.device,
                                      memory_format=layout)
                out[s:s + len(y)] = y
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
        self.inference_steps += 1
        self.block_runs += len(blocks)
        total_cost = sum(b.cost for b in step.blocks) or 1.0
        for b in step.blocks:  # attribute the step's time to its blocks by their relative cost
            self.block_seconds[b.hash] = self.block_seconds.get(b.hash, 0.0) + elapsed * b.cost / total_cost
            self.block_items[b.hash] = self.block_items.get(b.hash, 0) + len(x)
        assert out is not None
        return out
