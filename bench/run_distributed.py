"""Measured: one search over a 35-model zoo with 1 process and with N processes (Lightning Fabric DDP, gloo on the
CPU), order alternated, each in a fresh process. Reports the wall-time ratio, per-rank busy time, load balance,
communication time and bytes all-gathered; checks that the rankings agree.

    python bench/run_distributed.py [--procs 2] [--repeats 2] [--arch resnet18] [--items 800] [--out DIR]
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
        result = SuccessiveHalving(BlockStore(args.store), data, strategy=args.strategy, device="cpu",
                                   progress=False, group=group).run(models).to_json()
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
    zoo = H.build_zoo(Path(args.store), arch, "top_layers", 35)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models.json").write_text(json.dumps(zoo["models"]))
    runs: dict[int, list[dict]] = {1: [], args.procs: []}
    for rep in range(args.repeats):
        for n in ((1, args.procs) if rep % 2 == 0 else (args.procs, 1)):
            path = out / f"p{n}-r{rep}.json"
            cmd = [sys.executable, __file__, "--worker", "--procs", str(n), "--items", str(args.items), "--store",
                   args.store, "--strategy", args.strategy, "--models", str(out / "models.json"), "--result", str(path)]
            subprocess.run(cmd, check=True, cwd=out, capture_output=True)
            runs[n].append(json.loads(path.read_text()))
            print(f"{n} process(es), run {rep}: {runs[n][-1]['wall_s']:.2f} s", flush=True)
    import os

    cores = len(os.sched_getaffinity(0))
    report(runs, args.procs, f"{args.strategy} on 35 {args.arch} models (Top Layers), {args.items} Fashion-MNIST items "
           f"at 32 px, on {cores} CPU cores: 1 process with {cores} threads against {args.procs} Fabric DDP processes "
           f"(gloo) with {max(1, cores // args.procs)} thread(s) each.")


def report(runs: dict[int, list[dict]], procs: int, setup: str = "") -> None:
    """Print the comparison and write it as BENCHMARKS.md's section (``bench/notes/distributed.md``)."""
    med = {n: sorted(r["wall_s"] for r in rs)[len(rs) // 2] for n, rs in runs.items()}
    one, many = runs[1][0], runs[procs][0]
    same = all([x["model"] for x in r["ranking"]] == [x["model"] for x in one["ranking"]] for r in runs[procs])
    d = many["distributed"]
    lines = [f"wall: 1 process {med[1]:.2f} s, {procs} processes {med[procs]:.2f} s, ratio {med[1] / med[procs]:.2f}; "
             f"rankings identical: {same}",
             f"load balance (mean/max busy) {d['load_balance']:.2f}, predicted {d['predicted_balance']:.2f}"]
    for r in d["ranks"]:
        lines.append(f"  rank {r['rank']}: {len(r['models'])} models, busy {r['busy_s']:.2f} s, communication "
                     f"{r['timings_s'].get('communication', 0):.3f} s, {r['collectives']} all-gathers, "
                     f"{r['bytes_sent']} bytes sent")
    print("\n".join(lines))
    walls = {n: ", ".join(f"{r['wall_s']:.1f}" for r in rs) for n, rs in runs.items()}
    note = ["### Distributed search, measured (`python bench/run_distributed.py`)\n", setup + "\n",
            f"Each run in a fresh process, order alternated; wall seconds per run: 1 process {walls[1]}; {procs} "
            f"processes {walls[procs]}.\n", "```", *lines, "```", ""]
    notes = ROOT / "bench" / "notes"
    notes.mkdir(exist_ok=True)
    (notes / "distributed.md").write_text("\n".join(note))


if __name__ == "__main__":
    main()
