"""Alsatian's inference against its lower bound, batch-major against block-major (``search.block_batches``).

    python bench/bench_block_batches.py [--cells resnet18:top_layers,effnet_lite0:top50] [--arms 1,auto]
                                        [--items 2000] [--repeats 3] [--threads 1] [--out DIR] [--store DIR]

Each cell (an architecture of bench/run.py at its input size, a distribution, 35 models) is built once in
``--store`` and calibrated once (each block alone, as bench/run.py's bound prices it); then every repetition runs one
alsatian search per arm (``search.block_batches``), the arms' order rotating, so drifting load hits them alike. Prints
each arm's median inference seconds, its bound's, their ratio, and the arms' paired ratio; each search's result goes to
``<out>/<arm>/<cell>-r<rep>.json`` (``python bench/compare_runs.py <out>/1 <out>/auto`` checks the answers are equal).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as H  # noqa: E402
from run import EFFNET, RESNET18  # noqa: E402

ARCHS = {a.key: a for a in (RESNET18, EFFNET)}


def arm_value(arm: str) -> int | str:
    return arm if arm == "auto" else int(arm)


def run_cell(store: Path, cell: str, args: argparse.Namespace, settings: H.SearchSettings) -> dict[str, list]:
    """Every arm's inference and bound seconds over the repetitions of one cell (``arch:distribution``)."""
    key, dist = cell.split(":")
    arch = replace(ARCHS[key], items=args.items)
    zoo = H.build_zoo(store, arch, dist, 35)
    data = arch.data_kwargs(seed=settings.seed)
    cal = H.calibrate(store, zoo["models"], data, settings, repeats=5)
    arms, rows = args.arms.split(","), {a: [] for a in args.arms.split(",")}
    for rep in range(args.repeats):
        for arm in arms[rep % len(arms):] + arms[:rep % len(arms)]:
            res = H.run_search(store, zoo["models"], data, "alsatian", replace(settings, block_batches=arm_value(arm)))
            H.write_json(args.out / arm / f"{key}-{dist}-r{rep}.json", res)
            bound = H.lower_bound(store, zoo["models"], res, cal["per_item_s"])["inference_s"]
            rows[arm].append((res["timings_s"]["inference"], bound, res["loadavg_1m_before"]))
            print(f"{cell} r{rep} block_batches={arm}: inference {res['timings_s']['inference']:.3f}s, bound "
                  f"{bound:.3f}s, load {res['loadavg_1m_before']:.1f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="effnet_lite0:top_layers,effnet_lite0:top50,resnet18:top_layers,resnet18:top50")
    ap.add_argument("--arms", default="1,auto")
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "alsatian-block-batches")
    ap.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "alsatian-block-batches-store")
    args = ap.parse_args(argv)
    settings = H.SearchSettings(threads=args.threads)
    settings.apply_threads()
    first, *_ = args.arms.split(",")
    table = [f"| cell | block_batches | inference s | bound s | ratio | paired over {first} | load |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for cell in args.cells.split(","):
        rows = run_cell(args.store, cell, args, settings)
        for arm, r in rows.items():
            inf, bound = statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)
            paired = statistics.median(a[0] / b[0] for a, b in zip(r, rows[first]))
            table.append(f"| {cell} | {arm} | {inf:.3f} | {bound:.3f} | {inf / bound:.2f} | {paired:.3f} | "
                         f"{statistics.median(x[2] for x in r):.1f} |")
    print("\n".join(table) + f"\nload average now: {os.getloadavg()}")


if __name__ == "__main__":
    main()
