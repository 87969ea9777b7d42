"""Where a budgeted search's host memory goes: RSS sampled every 2 ms while a search runs, by phase, against what the
memory model counts (the cache service's bytes in use), and each distinct block's activation working set measured
on one batch. CPU only; every measurement in this process (the zoo is built once into --store).

    python bench/bench_memory.py                           # 4 MobileNetV3-Small-0.5 at 224 px, 400 items, batch 64
    python bench/bench_memory.py --blocks                  # also each block's activations: measured vs estimated
    python bench/bench_memory.py --folder DIR --models 8 --budget 512MB   # a JPEG folder (bench_data.make_folder)

Prints one JSON summary (MiB): per phase the peak RSS above the RSS before the search, the cache service's peak
bytes in use, and the largest gap between the two; then per block the measured activation peak of one batch
(allocations forced to mmap, so RSS follows live tensors) next to the planner's estimate. Allocator experiments:
--mmap (glibc mmap threshold fixed at 1 MiB: freed tensors go back at once), --heap (no mmap at all), --trim
(malloc_trim after every step), --trim-phases (after every plan and scoring; the search itself now does this).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import threading
import time
from collections import defaultdict
from pathlib import Path

MiB = 2**20


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """A thread reading VmRSS every ``period`` seconds, tagging each sample with the current phase and the cache
    service's bytes in use."""

    def __init__(self, period: float = 0.002):
        self.period, self.phase, self.cache = period, "setup", None
        self.peak: dict[str, int] = defaultdict(int)
        self.gap: dict[str, int] = defaultdict(lambda: -2**62)
        self.counted: dict[str, int] = defaultdict(int)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, counted = _status("VmRSS"), self.cache.in_use if self.cache is not None else 0
            p = self.phase
            self.peak[p] = max(self.peak[p], rss)
            self.counted[p] = max(self.counted[p], counted)
            self.gap[p] = max(self.gap[p], rss - counted)
            time.sleep(self.period)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def instrument(sampler: Sampler) -> None:
    """Phase tags around the driver's steps; the cache service of the search handed to the sampler."""
    from alsatian_pl import halving
    from alsatian_pl.cache import CacheService

    init = CacheService.__init__

    def cache_init(self, *a, **kw):
        init(self, *a, **kw)
        sampler.cache = self

    CacheService.__init__ = cache_init
    for name in ("_execute", "_score", "_prune", "_plan"):
        original = getattr(halving.SuccessiveHalving, name)

        def wrapped(self, state, *a, _original=original, _name=name, **kw):
            sampler.phase = f"r{state.round + 1}{_name}"
            try:
                return _original(self, state, *a, **kw)
            finally:
                sampler.phase = f"r{state.round + 1}between"
        setattr(halving.SuccessiveHalving, name, wrapped)
    train = halving.FeatureStore.train

    def timed_train(self, models):
        sampler.phase = sampler.phase.split("_")[0] + "_score:concat"
        out = train(self, models)
        sampler.phase = sampler.phase.split(":")[0] + ":scorer"
        return out
    halving.FeatureStore.train = timed_train


def block_activations(store, manifests, batch: int) -> list[dict]:
    """Per distinct block: RSS growth while it runs on one batch (mmap for every allocation above 64 KiB, so
    freed memory goes back at once) and the planner's estimate, in MiB."""
    import torch

    from alsatian_pl.weights import WeightCache
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, which also turns off glibc's dynamic threshold
    libc.mallopt(-1, 0)          # M_TRIM_THRESHOLD 0
    try:
        from alsatian_pl.blocks import activation_bytes
    except ImportError:  # the code before the memory model counted activations
        activation_bytes = None
    weights = WeightCache(store, torch.device("cpu"), channels_last=True)
    out, seen = [], set()
    for man in manifests:
        x = torch.randn(batch, *man.input_size).contiguous(memory_format=torch.channels_last)
        estimates = (activation_bytes(man.recipe, tuple(man.input_size), batch) if activation_bytes
                     else [0] * len(man.blocks))
        for i, b in enumerate(man.blocks):
            block = weights.get(b.hash, b.hash)
            with torch.inference_mode():
                if b.hash not in seen:
                    seen.add(b.hash)
                    block(x)  # warm-up: kernels' one-time buffers
                    libc.malloc_trim(0)
                    with open("/proc/self/clear_refs", "w") as f:
                        f.write("5")
                    before = _status("VmRSS")
                    y = block(x)
                    peak = _status("VmHWM") - before
                    out.append({"model": man.name, "block": i, "in_MiB": x[0].numel() * 4 * batch / MiB,
                                "out_MiB": y[0].numel() * 4 * batch / MiB, "measured_MiB": peak / MiB,
                                "estimate_MiB": estimates[i] / MiB})
                else:
                    y = block(x)
            x = y
    weights.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="mobilenetv3_small_050")
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--items", type=int, default=400)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--budget", default=None)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--store", default="/tmp/alsatian-bench-memory/store")
    p.add_argument("--cache", default="/tmp/alsatian-bench-memory/data")
    p.add_argument("--folder", default=None, help="an image folder (bench/bench_data.py make_folder) instead of the "
                   "embedded Fashion-MNIST items")
    p.add_argument("--blocks", action="store_true", help="also measure every distinct block's activations")
    p.add_argument("--heap", action="store_true", help="glibc: no mmap at all (M_MMAP_MAX 0): every allocation from "
                   "the heap, whose freed memory the next allocations reuse")
    p.add_argument("--trim", action="store_true", help="glibc malloc_trim(0) after every inference step")
    p.add_argument("--trim-phases", action="store_true", help="glibc malloc_trim(0) after each plan and each scoring")
    p.add_argument("--mmap", action="store_true",
                   help="glibc: every allocation above 64 KiB mmapped, freed memory returned at once (no retention)")
    args = p.parse_args()

    import torch

    from alsatian_pl.data import SearchDataModule
    from alsatian_pl.halving import SuccessiveHalving
    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

    torch.set_num_threads(2)
    if args.heap:
        ctypes.CDLL("libc.so.6").mallopt(-4, 0)  # M_MMAP_MAX
    if args.mmap:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD 1 MiB (fixed: glibc dynamic threshold off)
    store = BlockStore(args.store)
    zoo = build_synthetic_zoo(store, ZooConfig(f"mem-{args.arch.replace('_', '-')}", args.arch, num_models=args.models,
                                               distribution="top_layers", seed=0,
                                               input_size=(3, args.size, args.size)), progress=False)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    source = {"name": "image_folder", "path": args.folder} if args.folder else {"num_items": args.items}
    dm = SearchDataModule(**source, image_size=args.size, seed=0, data_cache=args.cache)
    dm.setup()
    sampler = Sampler()
    instrument(sampler)
    if args.trim_phases:
        from alsatian_pl import halving
        libc = ctypes.CDLL("libc.so.6")
        for name in ("_execute", "_score"):
            def after(self, *a, _f=getattr(halving.SuccessiveHalving, name), **kw):
                try:
                    return _f(self, *a, **kw)
                finally:
                    libc.malloc_trim(0)
            setattr(halving.SuccessiveHalving, name, after)
    if args.trim:
        from alsatian_pl.execute import Executor
        run_step, libc = Executor._run_step, ctypes.CDLL("libc.so.6")

        def trimmed(self, *a, **kw):
            try:
                return run_step(self, *a, **kw)
            finally:
                libc.malloc_trim(0)
        Executor._run_step = trimmed
    before = _status("VmRSS")
    search = SuccessiveHalving(store, dm, cache_budget=args.budget, device="cpu", progress=False,
                               batch_size=args.batch, scorer_kwargs={"epochs": args.epochs})
    start = time.perf_counter()
    with sampler:
        result = search.run(zoo.models)
    seconds = time.perf_counter() - start
    phases = {p: {"rss_growth": (sampler.peak[p] - before) / MiB, "counted": sampler.counted[p] / MiB,
                  "uncounted": (sampler.gap[p] - before) / MiB} for p in sampler.peak}
    summary = {"arch": args.arch, "models": args.models, "items": dm.describe()["items"], "size": args.size,
               "batch": args.batch, "budget": args.budget, "seconds": round(seconds, 1),
               "rss_before_MiB": before / MiB, "peak_rss_growth_MiB": (result.memory["peak_host_rss_bytes"] - before) / MiB,
               "budget_MiB": None if search.cache_budget is None else search.cache_budget / MiB,
               "planned_peaks_MiB": [r.planned_peak_bytes / MiB for r in result.rounds],
               "observed_peaks_MiB": [r.observed_peak_bytes / MiB for r in result.rounds],
               "partitions": [r.partitions for r in result.rounds],
               "rounds": [(r.models, r.items) for r in result.rounds], "weight_cache_MiB": result.memory["weight_cache_bytes"] / MiB,
               "ranking": [(r.model, r.score, r.test_loss) for r in result.ranking],
               "timings_s": result.timings_s, "phases": phases, "mmap": args.mmap, "rss_after_MiB": _status("VmRSS") / MiB, "loadavg": open("/proc/loadavg").read().split()[:3]}
    if args.blocks:
        summary["blocks"] = block_activations(store, zoo.manifests(), args.batch)
    print(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
