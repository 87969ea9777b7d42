"""Reduced precision against float32 on benchmark cells: speed and agreement, the precisions interleaved.

    python bench/bench_precision.py [--archs resnet18,effnet_lite0] [--models 35] [--items 800]
                                    [--strategies alsatian,base] [--precisions 32-true,bf16-mixed] [--repeats 2]
                                    [--threads 1] [--store PATH] [--out FILE.json] [--markdown FILE.md]

Per cell (Top Layers zoo of ``--models`` models at the architecture's input size, ``--items`` Fashion-MNIST items)
every strategy runs once per precision per repeat; the precisions alternate (repeat 0: float32 first, repeat 1:
reduced first, ...), so a busy shared machine slows both alike. Per strategy and reduced precision it reports the
median inference and total time over float32's, and from repeat 0: Spearman rho between the two precisions' scores
of the models scored in the same round by both (base: every model), Spearman rho between the two final rankings,
whether the winner is the same, and the largest score difference. Timings are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as H  # noqa: E402
from run import ALL_ARCHS  # noqa: E402

FP32 = "32-true"


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho of two equally long lists (average ranks for ties; None for fewer than 2 or a constant list)."""
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else None


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def agreement(ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """How ``other``'s result (a SearchResult as JSON) agrees with ``ref``'s (float32's)."""
    a = {r["model"]: r for r in ref["ranking"]}
    b = {r["model"]: r for r in other["ranking"]}
    same_round = [m for m in a if m in b and a[m]["eliminated_in_round"] == b[m]["eliminated_in_round"]]
    order_a = [r["model"] for r in ref["ranking"]]
    pos_b = {r["model"]: i for i, r in enumerate(other["ranking"])}
    return {"score_rho": spearman([a[m]["score"] for m in same_round], [b[m]["score"] for m in same_round]),
            "models_compared": len(same_round),
            "ranking_rho": spearman(list(range(len(order_a))), [pos_b[m] for m in order_a]),
            "same_winner": order_a[0] == other["ranking"][0]["model"],
            "winner": order_a[0], "other_winner": other["ranking"][0]["model"],
            "max_score_diff": max((abs(a[m]["score"] - b[m]["score"]) for m in same_round), default=None)}


def run_cell(arch: H.Arch, args: argparse.Namespace, settings: H.SearchSettings) -> dict[str, Any]:
    """One cell: the zoo, then every (repeat, precision, strategy) search, precisions alternating by repeat."""
    arch = replace(arch, items=args.items)
    zoo = H.build_zoo(args.store, arch, "top_layers", args.models)
    data = arch.data_kwargs(seed=settings.seed)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        order = args.precisions if rep % 2 == 0 else args.precisions[::-1]
        for precision in order:
            for strategy in args.strategies:
                res = H.run_search(args.store, zoo["models"], data, strategy, replace(settings, precision=precision))
                runs.setdefault((strategy, precision), []).append(res)
                t = res["timings_s"]
                print(f"  {arch.key} r{rep} {precision:<10} {strategy:<8} total {t['total']:7.2f}s inference "
                      f"{t['inference']:7.2f}s winner {res['ranking'][0]['model']} other cores "
                      f"{res['cpu']['other_cores']:.2f}", flush=True)
    return {"cell": f"{arch.key}-top_layers", "arch": arch.key, "image_size": arch.image_size, "items": arch.items,
            "models": args.models, "rows": [_row(runs, s, p) for s in args.strategies for p in args.precisions
                                             if p != FP32]}


def _row(runs: dict[tuple[str, str], list[dict[str, Any]]], strategy: str, precision: str) -> dict[str, Any]:
    ref, other = runs[(strategy, FP32)], runs[(strategy, precision)]

    def med(rs: list[dict[str, Any]], phase: str) -> float:
        return statistics.median(r["timings_s"][phase] for r in rs)
    return {"strategy": strategy, "precision": precision, "repeats": len(ref),
            "inference_s": {FP32: med(ref, "inference"), precision: med(other, "inference")},
            "total_s": {FP32: med(ref, "total"), precision: med(other, "total")},
            "inference_ratio": med(other, "inference") / med(ref, "inference"),
            "total_ratio": med(other, "total") / med(ref, "total"),
            "other_cores": [r["cpu"]["other_cores"] for r in ref + other],
            **agreement(ref[0], other[0])}


def markdown(cells: list[dict[str, Any]], command: str, machine: dict[str, Any]) -> str:
    """The table BENCHMARKS.md takes."""
    lines = [f"`{command}` on {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores), torch "
             f"{machine.get('torch', '?')}:", "",
             "| cell | strategy | precision | inference fp32 / reduced (s) | inference ratio | total ratio | "
             "score rho | ranking rho | same winner | max score diff | other cores (min-max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        for r in c["rows"]:
            inf = r["inference_s"]
            rho = "—" if r["score_rho"] is None else f"{r['score_rho']:.3f} ({r['models_compared']})"
            diff = "—" if r["max_score_diff"] is None else f"{r['max_score_diff']:.4f}"
            lines.append(f"| {c['arch']} {c['image_size']}px, {c['models']} models, {c['items']} items | "
                         f"{r['strategy']} | {r['precision']} | {inf[FP32]:.2f} / {inf[r['precision']]:.2f} | "
                         f"{r['inference_ratio']:.2f} | {r['total_ratio']:.2f} | {rho} | "
                         f"{r['ranking_rho']:.3f} | {'yes' if r['same_winner'] else 'no'} | {diff} | "
                         f"{min(r['other_cores']):.2f}-{max(r['other_cores']):.2f} |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="resnet18", help="comma-separated arch keys of bench/run.py")
    p.add_argument("--models", type=int, default=35)
    p.add_argument("--items", type=int, default=800)
    p.add_argument("--strategies", default="alsatian")
    p.add_argument("--precisions", default=f"{FP32},bf16-mixed")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--store", type=Path, default=H.ROOT / ".alsatian" / "bench-store")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = _parser().parse_args(argv)
    args.strategies, args.precisions = args.strategies.split(","), args.precisions.split(",")
    if args.precisions[0] != FP32:
        raise SystemExit(f"--precisions must start with {FP32} (the reference)")
    archs = {a.key: a for a in ALL_ARCHS}
    settings = H.SearchSettings(device=args.device, threads=args.threads, epochs=args.epochs)
    settings.apply_threads()
    t0 = time.perf_counter()
    cells = [run_cell(archs[k], args, settings) for k in args.archs.split(",")]
    command = "python bench/bench_precision.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(cells, command, H.machine())
    print(text + f"\n({time.perf_counter() - t0:.0f} s)")
    if args.out:
        H.write_json(args.out, {"command": command, "machine": H.machine(), "cells": cells})
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return cells


if __name__ == "__main__":
    main()
