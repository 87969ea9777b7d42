"""Where a budgeted search's host memory goes: RSS sampled every 2 ms while a search runs, by phase, against what the
memory model counts (the cache service's bytes in use), and each distinct block's activation working set measured
on one batch. CPU only; every measurement in this process (the zoo is built once into --store).

    python bench/bench_memory.py                           # 4 MobileNetV3-Small-0.5 at 224 px, 400 items, batch 64
    python bench/bench_memory.py --blocks                  # also each block's activations: measured vs estimated
    python bench/bench_memory.py --folder DIR --models 8 --budget 512MB   # a JPEG folder (bench_data.make_folder)

Prints one JSON summary (MiB): per phase the peak RSS above the RSS before the search, the cache service's peak
bytes in use, and the largest gap between the two; then per block the measured activation peak of one batch
(allocations forced to mmap, so RSS follows live tensors) next to the planner's estimate. The phases come from the
search's own hooks (``alsatian_pl.halving.MemoryMonitor``, a SearchCallback). Allocator experiments: --mmap (glibc
mmap threshold fixed at 1 MiB: freed tensors go back at once), --heap (no mmap at all). (The --trim experiments of
earlier runs are gone: the search itself hands freed memory back after every plan and scoring.)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path
from typing import Any

MiB = 2**20


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def block_activations(store, manifests, batch: int) -> list[dict]:
    """Per distinct block: RSS growth while it runs on one batch (mmap for every allocation above 64 KiB, so
    freed memory goes back at once) and the planner's estimate, in MiB."""
    import torch

    from alsatian_pl.weights import WeightCache
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, which also turns off glibc's dynamic threshold
    libc.mallopt(-1, 0)          # M_TRIM_THRESHOLD 0
    from alsatian_pl.blocks import activation_bytes
    weights = WeightCache(store, torch.device("cpu"), channels_last=True)
    out, seen = [], set()
    for man in manifests:
        x = torch.randn(batch, *man.input_size).contiguous(memory_format=torch.channels_last)
        estimates = activation_bytes(man.recipe, tuple(man.input_size), batch)
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


def parse_args() -> argparse.Namespace:
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
    p.add_argument("--mmap", action="store_true",
                   help="glibc: every allocation above 1 MiB mmapped, freed memory returned at once (no retention)")
    return p.parse_args()


def setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The allocator settings, the zoo (built once into --store) and the prepared data module."""
    import torch

    from alsatian_pl.data import SearchDataModule
    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

    torch.set_num_threads(2)
    libc = ctypes.CDLL("libc.so.6")
    if args.heap:
        libc.mallopt(-4, 0)  # M_MMAP_MAX
    if args.mmap:
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD 1 MiB (fixed: glibc dynamic threshold off)
    store = BlockStore(args.store)
    zoo = build_synthetic_zoo(store, ZooConfig(f"mem-{args.arch.replace('_', '-')}", args.arch, num_models=args.models,
                                               distribution="top_layers", seed=0,
                                               input_size=(3, args.size, args.size)), progress=False)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    source = {"name": "image_folder", "path": args.folder} if args.folder else {"num_items": args.items}
    dm = SearchDataModule(**source, image_size=args.size, seed=0, data_cache=args.cache)
    dm.setup()
    return store, zoo, dm


def main() -> None:
    args = parse_args()
    store, zoo, dm = setup(args)
    from alsatian_pl.halving import MemoryMonitor, SuccessiveHalving

    monitor = MemoryMonitor(period_s=0.002)  # RSS by phase, through the search's own hooks
    before = _status("VmRSS")
    search = SuccessiveHalving(store, dm, cache_budget=args.budget, device="cpu", progress=False,
                               batch_size=args.batch, scorer_kwargs={"epochs": args.epochs}, callbacks=[monitor])
    start = time.perf_counter()
    result = search.run(zoo.models)
    seconds = time.perf_counter() - start
    phases = {p: {"rss_growth": (v["peak_rss"] - before) / MiB, "counted": v["counted"] / MiB,
                  "uncounted": (v["uncounted"] - before) / MiB} for p, v in monitor.phases.items()}
    summary = {"arch": args.arch, "models": args.models, "items": dm.describe()["items"], "size": args.size,
               "batch": args.batch, "budget": args.budget, "seconds": round(seconds, 1),
               "rss_before_MiB": before / MiB,
               "peak_rss_growth_MiB": (result.memory["peak_host_rss_bytes"] - before) / MiB,
               "budget_MiB": None if search.cache_budget is None else search.cache_budget / MiB,
               "planned_peaks_MiB": [r.planned_peak_bytes / MiB for r in result.rounds],
               "observed_peaks_MiB": [r.observed_peak_bytes / MiB for r in result.rounds],
               "partitions": [r.partitions for r in result.rounds],
               "rounds": [(r.models, r.items) for r in result.rounds],
               "weight_cache_MiB": result.memory["weight_cache_bytes"] / MiB,
               "ranking": [(r.model, r.score, r.test_loss) for r in result.ranking],
               "timings_s": result.timings_s, "phases": phases, "mmap": args.mmap,
               "rss_after_MiB": _status("VmRSS") / MiB, "loadavg": open("/proc/loadavg").read().split()[:3]}
    if args.blocks:
        summary["blocks"] = block_activations(store, zoo.manifests(), args.batch)
    print(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
