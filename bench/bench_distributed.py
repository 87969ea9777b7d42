"""Simulate distributing a search over workers with the planner's cost model (no processes are started).

For 1,000-model M_syn trees of the paper's three distributions (models derived as in §6: copy a random earlier
model, re-initialise its last k of 50 blocks, k from the distribution), it compares alsatian's subtree partitioning
(LPT over the task tree's subtrees) with SHiFT's queue of whole models, at 8, 64 and 512 workers, for round 1 (all
models, the round that dominates a search). Block costs are uniform (one unit per block and item), so a cost is a
count of block applications.

    python bench/bench_distributed.py [--models 1000] [--blocks 50] [--workers 8,64,512]

Speedup is against one worker running the same method (alsatian: the whole tree once; SHiFT: every model's path);
alsatian/SHiFT compares the two makespans. Load balance is mean over max busy cost. The whole-search table compares
keeping the round-1 ranks, re-partitioning every round, and the search's rebalancing (``search.rebalance_below``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alsatian_pl.plan import BlockSpec, TaskTree  # noqa: E402
from alsatian_pl.plan.partition import (Assignment, model_queue, partition_subtrees, rebalance,  # noqa: E402
                                        subtree_parts)
from alsatian_pl.zoo import DISTRIBUTIONS, sample_num_reinit  # noqa: E402


def zoo_tree(models: int, blocks: int, distribution: str, seed: int = 0) -> tuple[TaskTree, dict[str, list[float]]]:
    """A task tree of an M_syn zoo and every model's path of block costs."""
    rng = np.random.default_rng(seed)
    chains = [[f"base-{j}" for j in range(blocks)]]
    for i in range(1, models):
        chain = list(chains[int(rng.integers(0, i))])
        for j in range(blocks - sample_num_reinit(rng, blocks, distribution), blocks):
            chain[j] = f"{i}-{j}"
        chains.append(chain)
    tree, paths = TaskTree(), {}
    for i, chain in enumerate(chains):
        tree.add_model(f"m{i:04d}", [BlockSpec(h, 4, cost=1.0) for h in chain])
        paths[f"m{i:04d}"] = [1.0] * blocks
    return tree, paths


def rank_load(tree: TaskTree, models: frozenset[str]) -> float:
    """Cost per item of running ``models``' paths once (their shared prefixes once) on one rank."""
    nodes = {n for m in models for n in tree.path(m)}
    return sum(tree.node(n).block.cost for n in nodes)


def rounds_static_vs_moved(tree: TaskTree, workers: int, seed: int = 0) -> tuple[float, float, int]:
    """Successive halving over doubling chunks (items 1, 2, 4, ...), survivors drawn at random: total predicted
    time (each round's slowest rank, a rank running its models' shared prefixes once) if ranks keep their round-1
    models, if the pruned tree is re-partitioned every round, and how many surviving models would change rank
    (their kept features would move)."""
    rng = np.random.default_rng(seed)
    first = partition_subtrees(tree, workers)
    owner = {m: w for w, ms in enumerate(first.models) for m in ms}
    static = moved_time = 0.0
    moved, items = 0, 1.0
    while True:
        static += items * max(rank_load(tree, ms & tree.models) for ms in first.models)
        now = partition_subtrees(tree, workers)
        moved_time += items * max(rank_load(tree, ms) for ms in now.models)
        moved += sum(owner[m] != w for w, ms in enumerate(now.models) for m in ms)
        owner.update({m: w for w, ms in enumerate(now.models) for m in ms})
        if len(tree.models) == 1:
            return static, moved_time, moved
        alive = sorted(tree.models)
        tree.prune(rng.choice(alive, size=len(alive) // 2, replace=False).tolist())
        items *= 2


def rounds_rebalanced(tree: TaskTree, workers: int, below: float = 0.8, seed: int = 0) -> tuple[float, int]:
    """The same search (the same random survivors) with the search's rebalancing: after each round's pruning, when
    the ranks' predicted balance is below ``below``, the subtrees are assigned again (parts kept where they are when
    that costs nothing) if that is more even; total predicted time and how many models changed rank."""
    rng = np.random.default_rng(seed)
    owned = list(partition_subtrees(tree, workers).models)
    total, moved, items = 0.0, 0, 1.0
    while True:
        total += items * max(rank_load(tree, ms & tree.models) for ms in owned)
        if len(tree.models) == 1:
            return total, moved
        alive = sorted(tree.models)
        tree.prune(rng.choice(alive, size=len(alive) // 2, replace=False).tolist())
        items *= 2
        before = Assignment((), tuple(rank_load(tree, ms & tree.models) for ms in owned))
        if before.balance >= below:
            continue
        owner = {m: w for w, ms in enumerate(owned) for m in ms if m in tree}
        new = rebalance(((p.cost, p.models) for p in subtree_parts(tree, workers)), owner, {}, workers)
        if Assignment((), tuple(rank_load(tree, ms) for ms in new.models)).balance > before.balance:
            moved += sum(owner[m] != w for w, ms in enumerate(new.models) for m in ms)
            owned = list(new.models)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--blocks", type=int, default=50)
    ap.add_argument("--workers", default="8,64,512")
    args = ap.parse_args(argv)
    print("| distribution | workers | subtrees | alsatian speedup | alsatian balance | SHiFT speedup | SHiFT balance "
          "| alsatian / SHiFT time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for dist in DISTRIBUTIONS:
        tree, paths = zoo_tree(args.models, args.blocks, dist)
        one_a, one_s = tree.total_cost(), sum(map(sum, paths.values()))
        for w in map(int, args.workers.split(",")):
            a, s = partition_subtrees(tree, w), model_queue(paths, w)
            print(f"| {dist} | {w} | {len(subtree_parts(tree, w))} | {one_a / a.makespan:.1f} ({one_a / a.makespan / w:.2f} w) "
                  f"| {a.balance:.2f} | {one_s / s.makespan:.1f} | {s.balance:.2f} | {a.makespan / s.makespan:.3f} |")
    print("\nWhole search (successive halving, chunks doubling, random survivors): keep round-1 ranks vs re-partition "
          "every round vs rebalance below 0.8 (the search's default)")
    print("| distribution | workers | static time | re-partitioned time | re-partitioned / static | models moved "
          "| rebalanced / static | models moved |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for dist in DISTRIBUTIONS:
        for w in map(int, args.workers.split(",")):
            static, moved_time, moved = rounds_static_vs_moved(zoo_tree(args.models, args.blocks, dist)[0], w)
            balanced, shifted = rounds_rebalanced(zoo_tree(args.models, args.blocks, dist)[0], w)
            print(f"| {dist} | {w} | {static:.0f} | {moved_time:.0f} | {moved_time / static:.3f} | {moved} "
                  f"| {balanced / static:.3f} | {shifted} |")


if __name__ == "__main__":
    main()
