"""Where alsatian's inference loses to its lower bound: the order batches go through a chain of blocks, and batches
smaller than the search's batch size.

    python bench/bench_batches.py [--archs resnet18,tf_efficientnet_lite0] [--size 32] [--items 2048] [--repeat 3]
                                  [--groups 2,4,8] [--threads 2]

Each architecture is stored once in a temporary block store (seeded random init) and loaded as the search loads it
(channels-last where the executor lays it out so). Two measurements, each the median of ``--repeat`` timed passes
after one untimed pass, ``--threads`` threads (the orders' passes interleaved, so drifting load hits them alike):

* *order*: the model's whole chain of blocks over ``--items`` items in batches of 64, *batch-major* (each batch
  through every block, as the executor runs a step with ``search.block_batches=1``) against *block-major* over
  groups of 2, 4, 8 batches (each block over the group's batches before the next block, as the executor runs it with
  ``search.block_batches`` of that size) and against each block timed alone over all batches (the lower bound's
  calibration); the same arithmetic in a different order.
* *batch size*: microseconds per item of the whole chain at batches of 64, 32, 16 and 8 (a round's last batch of
  each step is partial; the lower bound prices every item at the batch-64 rate).

Writes its section for BENCHMARKS.md to ``bench/notes/batches.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alsatian_pl.blocks import build_model, timm_recipe  # noqa: E402
from alsatian_pl.store import BlockStore  # noqa: E402
from alsatian_pl.weights import place_block  # noqa: E402

BATCH = 64
NOTE = Path(__file__).resolve().parent / "notes" / "batches.md"


def stored_blocks(root: Path, arch: str, size: int) -> list[torch.nn.Module]:
    """``arch``'s blocks, stored in a block store at ``root`` and loaded back as the executor places them."""
    store = BlockStore(root)
    torch.manual_seed(0)
    recipe = timm_recipe(arch)
    store.import_model(arch, build_model(recipe).eval(), recipe=recipe, input_size=(3, size, size))
    return [place_block(store.load_block(h), torch.device("cpu"), True) for h in store.manifest(arch).hashes]


def interleaved_s(fs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each of ``fs`` over ``repeat`` rounds that call every one in turn, after one untimed round."""
    times: dict[str, list[float]] = {name: [] for name in fs}
    for r in range(repeat + 1):
        for name, f in fs.items():
            t0 = time.perf_counter()
            f()
            if r:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def median_s(f: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``f`` after one untimed call."""
    f()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batch_major(blocks: list, batches: list) -> None:
    for y in batches:
        for b in blocks:
            y = b(y)


def block_major(blocks: list, batches: list, chunk: int = 4) -> None:
    for c in range(0, len(batches), chunk):
        part = batches[c:c + chunk]
        for b in blocks:
            part = [b(y) for y in part]


def per_block(blocks: list, batches: list) -> float:
    """Seconds of each block timed alone over every batch (its inputs the previous block's outputs), summed."""
    total = 0.0
    for b in blocks:
        for _ in range(3):
            b(batches[0])
        t0 = time.perf_counter()
        batches = [b(y) for y in batches]
        total += time.perf_counter() - t0
    return total


def measure(arch: str, size: int, items: int, repeat: int, groups: list[int]) -> dict[str, object]:
    """The order and batch-size figures of one architecture."""
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        blocks = stored_blocks(Path(tmp), arch, size)
        x = torch.randn(items, 3, size, size).contiguous(memory_format=torch.channels_last)
        batches = [x[s:s + BATCH] for s in range(0, items, BATCH)]
        runs = {"batch-major": lambda: batch_major(blocks, batches),
                **{g: (lambda g=g: block_major(blocks, batches, g)) for g in groups}}
        order = {**interleaved_s(runs, repeat),
                 "each block alone": statistics.median(per_block(blocks, batches) for _ in range(repeat))}
        per_item = {}
        for bs in (64, 32, 16, 8):
            small = [x[s:s + bs] for s in range(0, 512, bs)]
            per_item[bs] = median_s(lambda: batch_major(blocks, small), repeat) / 512 * 1e6
    return {"arch": arch, "blocks": len(blocks), "order": order, "per_item_us": per_item}


def note(results: list[dict[str, object]], size: int, items: int, repeat: int, groups: list[int],
         threads: int) -> str:
    """The BENCHMARKS.md section of these results."""
    lines = ["### Batch order and partial batches (`python bench/bench_batches.py`)\n",
             f"Each architecture's whole chain of stored blocks at {size} px, {threads} thread(s), median of {repeat} "
             "passes (see the script's docstring; the batch orders' passes are interleaved, the *each block alone* "
             "column and the per-item costs at smaller batches are measured after them). *Order*: seconds for "
             f"{items} items in batches of {BATCH}; *batch size*: microseconds per item of the chain.\n",
             "| architecture | blocks | batch-major s | " + " | ".join(f"block-major ({g} batches) s" for g in groups)
             + " | each block alone s | µs/item at 64 | at 32 | at 16 | at 8 |",
             "|---|---:|---:|" + "---:|" * len(groups) + "---:|---:|---:|---:|---:|"]
    for r in results:
        o, p = r["order"], r["per_item_us"]
        lines.append(f"| {r['arch']} | {r['blocks']} | {o['batch-major']:.3f} | "
                     + " | ".join(f"{o[g]:.3f}" for g in groups)
                     + f" | {o['each block alone']:.3f} | {p[64]:.0f} | {p[32]:.0f} | {p[16]:.0f} | {p[8]:.0f} |")
    lines += ["", "The lower bound's calibration times each block alone over its batches, so where block-major is "
              "faster the bound is out of reach of batch-major execution by that much. The executor runs a step's "
              "chain block-major over groups of `search.block_batches` batches (`auto`: 4, fewer where the cache "
              "budget leaves no room; `1`: batch-major). A batch smaller than the batch size costs more per item, "
              "while the bound prices every item at the batch-64 rate."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", default="resnet18,tf_efficientnet_lite0")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--items", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--groups", default="2,4,8", help="block-major group sizes, in batches")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", type=Path, default=NOTE)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(args.threads, torch.get_num_threads()))
    groups = [int(g) for g in args.groups.split(",")]
    results = [measure(a, args.size, args.items, args.repeat, groups) for a in args.archs.split(",")]
    text = note(results, args.size, args.items, args.repeat, groups, args.threads)
    print(text)
    args.note.write_text(text)


if __name__ == "__main__":
    main()
