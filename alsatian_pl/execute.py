"""The execution engine (paper §4.3): runs a round's plan steps over the round's items.

Block inference runs batch-wise under ``torch.inference_mode`` on the chosen device, in the search's precision
(:class:`~alsatian_pl.precision.Precision`: autocast around the blocks, float32 between them); node outputs the plan caches
live in the :class:`~alsatian_pl.cache.CacheService`, block weights come from the
:class:`~alsatian_pl.weights.WeightCache` under the strategy's weight keys. The executor needs nothing but the plan:
the plan says what to run, what to cache and when to release it.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Iterator

import torch

from .cache import CacheService
from .errors import AlsatianError, InvalidCandidateError
from .precision import Precision
from .plan import BlockSpec, InferenceStep, ReleaseStep, RoundPlan, ScoreStep, Step, TaskTree
from .stats import SearchStats
from .weights import WeightCache, readahead_windows

__all__ = ["Executor"]

FeatureSink = Callable[[str, int, torch.Tensor], None]  # (model id, first item index, features of those items)
WeightKey = Callable[[str, frozenset], Hashable]        # (block hash, models of the step) -> weight-cache key


class Executor:
    """Runs :class:`RoundPlan` steps; ``weight_key`` (the strategy's) says which steps share a loaded block."""

    def __init__(self, *, device: torch.device, batch_size: int, stats: SearchStats, cache: CacheService,
                 weights: WeightCache, weight_key: WeightKey, prefetch: bool = False,
                 precision: Precision | None = None):
        self.device, self.batch_size, self.prefetch = device, batch_size, prefetch
        self.precision = precision if precision is not None else Precision(device_type=device.type)
        self.stats, self.cache, self.weights, self.weight_key = stats, cache, weights, weight_key

    def run_round(self, plan: RoundPlan, inputs: torch.Tensor, sink: FeatureSink) -> None:
        """Run ``plan`` once per partition of ``inputs``; each model's features reach ``sink`` partition by partition."""
        for items in plan.ranges():
            self._run_partition(plan, inputs[items.start:items.stop], items.start, sink)
            if self.cache.intermediates:
                raise AlsatianError("internal error: the plan left intermediates in the cache")

    def _run_partition(self, plan: RoundPlan, part: torch.Tensor, start: int, sink: FeatureSink) -> None:
        steps = [s for s in plan.steps if isinstance(s, InferenceStep)]
        self.weights.schedule(self.weight_key(b.hash, s.models) for s in steps for b in s.blocks)
        ahead = self._ahead(steps)
        written: set[tuple[str, int]] = set()  # (model, node): features a leaf step wrote batch by batch
        for i, step in enumerate(plan.steps):
            if isinstance(step, InferenceStep):
                next(ahead)
                readers = [] if step.cache_output else _readers(plan.steps, i)
                self._run_step(step, part, start, readers, sink)
                written.update((m, step.output) for m in readers)
            elif isinstance(step, ScoreStep):
                if (step.model, step.features) not in written:  # a cached node's output is the model's features
                    sink(step.model, start, self.cache.get(step.features))
            elif isinstance(step, ReleaseStep):
                self.cache.release(step.node)
            else:  # pragma: no cover - the planner emits only these three kinds
                raise TypeError(f"unknown plan step {step!r}")

    def _run_step(self, step: InferenceStep, part: torch.Tensor, start: int, readers: list[str],
                  sink: FeatureSink) -> None:
        """Run one inference step: its output goes to the cache (``cache_output``), else it is the features of the
        ``readers`` and goes to ``sink`` batch by batch (never held whole)."""
        x = part if step.input == TaskTree.ROOT else self.cache.get(step.input)
        cached_out = step.blocks[-1].out_bytes * len(x) if step.cache_output else 0
        self.cache.make_room(step.running_bytes + cached_out, keep=(step.input,))
        with self.cache.hold_weights(step.running_bytes):  # input, output, weights and activations held together
            def write(s: int, y: torch.Tensor) -> None:
                for model in readers:
                    sink(model, start + s, y)
            out = self._infer(step, x, None if step.cache_output else write)
            if step.cache_output:
                self.cache.put(step.output, out)

    def _ahead(self, steps: list[InferenceStep]) -> Iterator[None]:
        """Before each inference step: start reading the weights of the steps ahead (a prefetch thread loads the next
        step's blocks; without one, the OS reads the files of the steps in the readahead window)."""
        windows = readahead_windows(steps)
        for i, later in enumerate(windows):
            with self.stats.phase("prepare_model"):
                if self.prefetch and i + 1 < len(steps):
                    for b in steps[i + 1].blocks:
                        self.weights.prefetch(self.weight_key(b.hash, steps[i + 1].models), b.hash, b.weight_bytes)
                for s in later:
                    for b in s.blocks:
                        self.weights.advise(self.weight_key(b.hash, s.models), b.hash)
            yield

    def _infer(self, step: InferenceStep, x: torch.Tensor,
               write: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor | None:
        """The step's blocks applied to ``x`` batch by batch, into one output tensor on the device (with ``write``:
        each batch's output handed to ``write(first item, batch)`` instead; returns None). The batches run in groups
        of ``step.block_batches``, block-major within a group: each block over the group's batches, then the next."""
        with self.stats.phase("prepare_model"):
            blocks = [self._load(step, b.hash) for b in step.blocks]
        with self.stats.phase("inference"), torch.inference_mode(), self.precision.autocast():
            t0 = time.perf_counter()
            out = None

            def emit(s: int, y: torch.Tensor) -> None:
                nonlocal out
                self.stats.items_inferred += len(y)  # read by the progress display while the step runs
                if write is not None:
                    write(s, y)
                    return
                if out is None:
                    out = torch.empty((len(x), *y.shape[1:]), dtype=y.dtype, device=self.device,
                                      memory_format=_layout(y))
                out[s:s + len(y)] = y

            batches, g = even_batches(len(x), self.batch_size), step.block_batches
            for i in range(0, len(batches), g):
                self._group(step, blocks, x, batches[i:i + g], emit)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.stats.blocks_ran(((b.hash, b.cost) for b in step.blocks), time.perf_counter() - t0, len(x))
        return out

    def _group(self, step: InferenceStep, blocks: list[torch.nn.Module], x: torch.Tensor,
               group: list[tuple[int, int]], emit: Callable[[int, torch.Tensor], None]) -> None:
        """Each block over the batches of ``group``, then the next block; every batch the same ops as alone, so its
        output is bitwise what batch-major gives. An input is dropped once its block ran; the last block's outputs
        go to ``emit`` as they come (what :func:`~alsatian_pl.plan.steps.step_work_bytes` counts)."""
        held: list[torch.Tensor | None] = [None] * len(group)
        last = len(blocks) - 1
        for k, block in enumerate(blocks):
            for i, (s, e) in enumerate(group):
                y, held[i] = (held[i] if k else self._batch(x, s, e)), None
                y = self._block(step, step.blocks[k], block, y)
                if k == last:
                    emit(s, y)
                else:
                    held[i] = y

    def _batch(self, x: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """Items ``s:e`` of the step's input on the device, channels-last where the weights are."""
        y = x[s:e].to(self.device, non_blocking=True)
        if self.weights.channels_last and y.dim() == 4:
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    def _load(self, step: InferenceStep, block: str) -> torch.nn.Module:
        """A block of the step through the weight cache; InvalidCandidateError when its stored tensors do not load
        into its architecture (a damaged block file is the store's, and passes)."""
        try:
            return self.weights.get(self.weight_key(block, step.models), block)
        except (AlsatianError, MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - tensors that do not fit the block's skeleton
            raise _failed(step, block, f"cannot be loaded ({_first_line(exc)})") from None

    def _block(self, step: InferenceStep, spec: BlockSpec, block: torch.nn.Module, y: torch.Tensor) -> torch.Tensor:
        """One batch through one of the step's blocks, float32 after it in every precision (alsatian_pl.precision);
        InvalidCandidateError naming the block and the models below it when it fails or gives outputs of another
        size than the store recorded (running out of memory is not the candidate's fault: it passes)."""
        try:
            y = self.precision.output(block(y))
        except (AlsatianError, MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a block of the user's that fails at forward
            if "allocate" in str(exc) or "out of memory" in str(exc):
                raise
            raise _failed(step, spec.hash, f"fails at forward ({_first_line(exc)})") from None
        got = y[0].numel() * y.element_size() if len(y) else spec.out_bytes
        if spec.out_bytes and got != spec.out_bytes:
            raise _failed(step, spec.hash, f"gives outputs of {got} bytes per item ({list(y.shape[1:])}) where "
                                           f"the store recorded {spec.out_bytes}")
        return y


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: " + (str(exc).strip().splitlines() or [""])[0][:300]


def _failed(step: InferenceStep, block: str, what: str) -> InvalidCandidateError:
    """The error of a block that cannot run for the models of ``step`` (every model below it)."""
    models = sorted(step.models)
    who = f"model {models[0]}" + (f" (and {len(models) - 1} more sharing it)" if len(models) > 1 else "")
    reason = f"block {block[:12]} {what}"
    return InvalidCandidateError(f"{who} cannot be scored: its {reason}. Remove the model from the zoo, or set "
                                 "models.on_invalid=skip to search without it", step.models, reason, block)


def even_batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of ``n`` items in the fewest batches of at most ``batch_size``, their sizes within one of
    each other: 100 items at batch 64 run as 50 + 50, not 64 + 36, so no batch pays a small batch's cost per item.
    No batch exceeds ``batch_size``, so the memory model's one-batch terms still bound them."""
    k = -(-n // batch_size)
    bounds = [i * n // k for i in range(k + 1)] if k else []
    return list(zip(bounds, bounds[1:]))


def _readers(steps: tuple[Step, ...], i: int) -> list[str]:
    """The models whose features step ``i``'s output is: the score steps right after it that read it."""
    out = steps[i].output  # type: ignore[union-attr]
    readers = []
    for step in steps[i + 1:]:
        if not isinstance(step, ScoreStep) or step.features != out:
            break
        readers.append(step.model)
    return readers


def _layout(y: torch.Tensor) -> torch.memory_format:
    """The memory format to keep a step's output in: channels-last where the blocks produced it."""
    if y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
