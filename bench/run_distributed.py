"""Measured: one search over a 35-model zoo with 1 process, with N processes (Lightning Fabric DDP, gloo on the CPU)
and with N processes without rebalancing (``search.rebalance_below=null``), order rotated, each in a fresh process.
Reports the ratio of rank 0's search times (the process launch excluded), per-rank busy time, load balance,
communication time and bytes sent, and whether moving subtrees with their features paid off against leaving the load
as it was; checks that the rankings agree.

    python bench/run_distributed.py [--procs 2] [--repeats 2] [--arch resnet18] [--items 800] [--num-models 35]
        [--rebalance-below 0.8] [--out DIR] [--note bench/notes/distributed.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def worker(args: argparse.Namespace) -> None:
    """One search on every rank of a launch; rank 0 writes the result."""
    from alsatian_pl.data import SearchDataModule
    from alsatian_pl.distributed import launch
    from alsatian_pl.halving import SuccessiveHalving
    from alsatian_pl.store import BlockStore

    def search(group):
        models = json.loads(Path(args.models).read_text())
        data = SearchDataModule(num_items=args.items, image_size=32, seed=0)
        t0 = time.perf_counter()
        below = None if args.rebalance_below == "null" else float(args.rebalance_below)
        result = SuccessiveHalving(BlockStore(args.store), data, strategy=args.strategy, device="cpu",
                                   progress=False, group=group, rebalance_below=below).run(models).to_json()
        if group.is_global_zero:
            Path(args.result).write_text(json.dumps({**result, "wall_s": time.perf_counter() - t0}))

    launch(search, devices=args.procs, accelerator="cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--strategy", default="alsatian")
    ap.add_argument("--items", type=int, default=800)
    ap.add_argument("--num-models", type=int, default=35)
    ap.add_argument("--rebalance-below", default="0.8", help="search.rebalance_below of the N-process runs")
    ap.add_argument("--note", default=str(ROOT / "bench" / "notes" / "distributed.md"), help="where the note goes")
    ap.add_argument("--store", default=str(ROOT / "bench" / "store"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "distributed"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--models", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import harness as H
    from run import RESNET18, EFFNET
    arch = {"resnet18": RESNET18, "effnet_lite0": EFFNET}[args.arch]
    zoo = H.build_zoo(Path(args.store), arch, "top_layers", args.num_models)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models.json").write_text(json.dumps(zoo["models"]))
    cells = [("1", 1, args.rebalance_below), (str(args.procs), args.procs, args.rebalance_below),
             ("off", args.procs, "null")]
    runs: dict[str, list[dict]] = {key: [] for key, _, _ in cells}
    for rep in range(args.repeats):
        for key, n, below in cells[rep % 3:] + cells[:rep % 3]:
            path = out / f"{key}-r{rep}.json"
            cmd = [sys.executable, __file__, "--worker", "--procs", str(n), "--items", str(args.items), "--store",
                   args.store, "--strategy", args.strategy, "--models", str(out / "models.json"), "--result", str(path),
                   "--rebalance-below", below]
            subprocess.run(cmd, check=True, cwd=out, capture_output=True)
            runs[key].append(json.loads(path.read_text()))
            print(f"{n} process(es), {key}, run {rep}: {runs[key][-1]['wall_s']:.2f} s", flush=True)
    import os

    cores = len(os.sched_getaffinity(0))
    report(runs, args.procs, f"{args.strategy} on {args.num_models} {args.arch} models (Top Layers), {args.items} "
           f"Fashion-MNIST items at 32 px, on {cores} CPU cores: 1 process with {cores} threads against {args.procs} "
           f"Fabric DDP processes (gloo) with {max(1, cores // args.procs)} thread(s) each, rebalancing below "
           f"{args.rebalance_below} and off.", Path(args.note))


def report(runs: dict[str, list[dict]], procs: int, setup: str = "", note: Path | None = None) -> None:
    """Print the comparison and write it as BENCHMARKS.md's section (``note``: ``bench/notes/distributed.md``)."""
    med = {n: sorted(r["wall_s"] for r in rs)[len(rs) // 2] for n, rs in runs.items()}
    key = str(procs)
    one, many = runs["1"][0], runs[key][0]
    same = all([x["model"] for x in r["ranking"]] == [x["model"] for x in one["ranking"]]
               for k in (key, "off") for r in runs[k])
    d = many["distributed"]
    lines = [f"search (rank 0): 1 process {med['1']:.2f} s, {procs} processes {med[key]:.2f} s, ratio "
             f"{med['1'] / med[key]:.2f}; "
             f"rankings identical: {same}",
             f"load balance (mean/max busy) {d['load_balance']:.2f}, predicted {d['predicted_balance']:.2f}"]
    for r in d["ranks"]:
        lines.append(f"  rank {r['rank']}: {len(r['models'])} models, busy {r['busy_s']:.2f} s, communication "
                     f"{r['timings_s'].get('communication', 0):.3f} s, {r['collectives']} all-gathers, "
                     f"{r['bytes_sent']} bytes sent")
    lines += rebalancing_lines(runs, procs, med)
    print("\n".join(lines))
    walls = {n: ", ".join(f"{r['wall_s']:.1f}" for r in rs) for n, rs in runs.items()}
    note = note or ROOT / "bench" / "notes" / "distributed.md"
    text = ["### Distributed search, measured (`python bench/run_distributed.py`)\n", setup + "\n",
            f"Each run in a fresh process, order rotated. Times are rank 0's search, from the searcher's start to its "
            f"result (the process start, the launch and the process group's setup are not in them); seconds per run: "
            f"1 process {walls['1']}; {procs} "
            f"processes {walls[key]}; {procs} processes without rebalancing {walls['off']}.\n", "```", *lines, "```",
            ""]
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text("\n".join(text))


def rebalancing_lines(runs: dict[str, list[dict]], procs: int, med: dict[str, float]) -> list[str]:
    """Rebalancing on against off: search times, the busy balance of each, and what moved in the first run on."""
    on, off = runs[str(procs)][0]["distributed"], runs["off"][0]["distributed"]
    lines = [f"rebalancing (below {on['rebalance_below']}) against off: search {med[str(procs)]:.2f} s against "
             f"{med['off']:.2f} s, off/on {med['off'] / med[str(procs)]:.2f}; load balance {on['load_balance']:.2f} "
             f"against {off['load_balance']:.2f}; {len(on['rebalancing'])} rebalancing(s)"]
    for m in on["rebalancing"]:
        lines.append(f"  after round {m['round'] + 1}: predicted balance {m['balance_before']:.2f} -> "
                     f"{m['balance_after']:.2f}, {len(m['moves'])} models moved, {m['moved_bytes']} bytes in "
                     f"{m['seconds']:.3f} s")
    return lines

if __name__ == "__main__":
    main()
