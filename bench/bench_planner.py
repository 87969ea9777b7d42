"""Time the planner on a synthetic zoo: add all models, plan a round, prune half, replan.

Models are derived as in the paper (§6, M_syn): copy a random earlier model and replace its last k
blocks, k from a truncated normal around ``--retrain`` of the model's depth.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alsatian_pl.plan import BlockSpec, TaskTree, plan_round, simulate  # noqa: E402
from alsatian_pl.units import format_bytes, parse_bytes  # noqa: E402


def synthetic_zoo(models: int, blocks: int, retrain: float, seed: int) -> dict[str, list[BlockSpec]]:
    """``models`` models of ``blocks`` blocks each; per-item output sizes shrink with depth, like a CNN."""
    rng = random.Random(seed)
    out_bytes = [int(800_000 * 0.93**i) + 4_000 for i in range(blocks)]
    weight_bytes = [int(50_000 * 1.1**i) for i in range(blocks)]
    counter = iter(range(10**9))

    def fresh(i: int) -> BlockSpec:
        return BlockSpec(f"{next(counter):08x}", out_bytes[i], weight_bytes[i], cost=out_bytes[i] / 1e5)

    zoo = {"m0": [fresh(i) for i in range(blocks)]}
    for m in range(1, models):
        base = zoo[rng.choice(list(zoo))]
        k = min(blocks, max(1, round(rng.gauss(retrain * blocks, blocks / 10))))
        zoo[f"m{m}"] = base[:blocks - k] + [fresh(i) for i in range(blocks - k, blocks)]
    return zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--blocks", type=int, default=50)
    parser.add_argument("--retrain", type=float, default=0.25, help="mean fraction of blocks replaced per model")
    parser.add_argument("--items", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--budget", default="256MB", help="cache budget for the split run, e.g. 256MB")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    zoo = synthetic_zoo(args.models, args.blocks, args.retrain, args.seed)
    rows = []

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        rows.append((name, time.perf_counter() - start))
        return result

    tree = TaskTree()
    timed(f"add {len(zoo)} models", lambda: [tree.add_model(m, b) for m, b in zoo.items()])
    edges, distinct = tree.num_edges(), len(tree.distinct_blocks())
    plan = timed("plan_round (no budget)", lambda: plan_round(tree, num_items=args.items, batch_size=args.batch_size))
    budget = parse_bytes(args.budget)
    split = timed(f"plan_round (budget {format_bytes(budget)})",
                  lambda: plan_round(tree, num_items=args.items, batch_size=args.batch_size, budget=budget))
    rng = random.Random(args.seed + 1)
    timed(f"prune {len(zoo) // 2} models", lambda: tree.prune(rng.sample(sorted(zoo), len(zoo) // 2)))
    replan = timed("replan (no budget)", lambda: plan_round(tree, num_items=args.items, batch_size=args.batch_size))
    peak = timed("simulate replan (check)", lambda: simulate(replan.steps, tree, args.items))
    if peak != replan.peak_bytes:
        raise SystemExit(f"simulated peak {peak} != planned peak {replan.peak_bytes}")

    print(f"zoo: {len(zoo)} models x {args.blocks} blocks -> {edges} edges, {distinct} distinct blocks "
          f"(unshared: {len(zoo) * args.blocks}); {args.items} items, batch {args.batch_size}")
    print(f"{'operation':<36}{'time':>10}")
    for name, seconds in rows:
        print(f"{name:<36}{seconds * 1e3:>8.1f} ms")
    print(f"plan: {len(plan.steps)} steps, peak {format_bytes(plan.peak_bytes)}; "
          f"split: {split.partitions} x {split.partition_items} items, peak {format_bytes(split.peak_bytes)}; "
          f"after prune: {tree.num_edges()} edges, {len(replan.steps)} steps, peak {format_bytes(replan.peak_bytes)}")


if __name__ == "__main__":
    main()
