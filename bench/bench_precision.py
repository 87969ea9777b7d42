"""Reduced precision against float32 on benchmark cells: speed and agreement, the precisions interleaved.

    python bench/bench_precision.py [--archs resnet18,effnet_lite0] [--models 35] [--items 800]
                                    [--strategies alsatian,base] [--precisions 32-true,bf16-mixed] [--repeats 2]
                                    [--threads 1] [--bound] [--store PATH] [--out FILE.json] [--markdown FILE.md]
    python bench/bench_precision.py --forwards [--threads 2]   # whole models' forward passes: fp32, bf16-mixed,
                                                               # bf16-true (what decided bf16-true is not offered)

Per cell (a zoo of ``--models`` models of ``--distribution``, default Top Layers, at the architecture's input size, ``--items`` Fashion-MNIST items)
every strategy runs once per precision per repeat; the precisions alternate (repeat 0: float32 first, repeat 1:
reduced first, ...), so a busy shared machine slows both alike. Per strategy and reduced precision it reports the
median inference and total time over float32's, and from repeat 0: Spearman rho between the two precisions' scores
(accuracy; and of the test losses) of the models last scored in the same round by both (base: every model),
Spearman rho between the two final rankings,
whether the winner is the same, and the largest score difference. Timings are recorded, never asserted.
"""

from __future__ import annotations

import argparse
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
    a, b = _scored_in(ref), _scored_in(other)
    same_round = [m for m in a if m in b and a[m][0] == b[m][0]]
    order_a = [r["model"] for r in ref["ranking"]]
    pos_b = {r["model"]: i for i, r in enumerate(other["ranking"])}
    return {"score_rho": spearman([a[m][1]["score"] for m in same_round], [b[m][1]["score"] for m in same_round]),
            "loss_rho": spearman([a[m][1]["test_loss"] for m in same_round],
                                 [b[m][1]["test_loss"] for m in same_round]),
            "models_compared": len(same_round),
            "ranking_rho": spearman(list(range(len(order_a))), [pos_b[m] for m in order_a]),
            "same_winner": order_a[0] == other["ranking"][0]["model"],
            "in_confident_set": (None if ref.get("confident_set") is None
                                 else other["ranking"][0]["model"] in ref["confident_set"]),
            "confident_set": ref.get("confident_set"),
            "winner": order_a[0], "other_winner": other["ranking"][0]["model"],
            "max_score_diff": max((abs(a[m][1]["score"] - b[m][1]["score"]) for m in same_round), default=None)}


def _scored_in(result: dict[str, Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    """Each model's last scored round (a survivor's: the last round) and its ranking entry."""
    last = len(result["rounds"]) - 1
    return {r["model"]: (last if r["eliminated_in_round"] is None else r["eliminated_in_round"], r)
            for r in result["ranking"]}


def run_cell(arch: H.Arch, args: argparse.Namespace, settings: H.SearchSettings) -> dict[str, Any]:
    """One cell: the zoo, then every (repeat, precision, strategy) search, precisions alternating by repeat."""
    arch = replace(arch, items=args.items)
    zoo = H.build_zoo(args.store, arch, args.distribution, args.models)
    data = arch.data_kwargs(seed=settings.seed)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for precision in args.precisions:  # untimed: kernels, allocator and page cache warm for every precision alike
        H.run_search(args.store, zoo["models"], data, args.strategies[0], replace(settings, precision=precision))
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
    cell = {"cell": f"{arch.key}-{args.distribution}", "arch": arch.key, "distribution": args.distribution, "image_size": arch.image_size, "items": arch.items,
            "models": args.models, "rows": [_row(runs, s, p) for s in args.strategies for p in args.precisions
                                             if p != FP32]}
    if args.bound and "alsatian" in args.strategies:
        cell["bound"] = {p: _bound(args.store, zoo["models"], data, replace(settings, precision=p),
                                   runs[("alsatian", p)]) for p in args.precisions}
    return cell


def _bound(store: Path, models: list[str], data: dict[str, Any], settings: H.SearchSettings,
           runs: list[dict[str, Any]]) -> dict[str, float]:
    """The lower bound calibrated in ``settings.precision``, and the median alsatian run's time over it."""
    cal = H.calibrate(store, models, data, settings, repeats=3)
    ratios = sorted(((r["timings_s"]["total"] / H.lower_bound(store, models, r, cal["per_item_s"])["bound_s"], r)
                     for r in runs), key=lambda t: t[0])
    ratio, run = ratios[(len(ratios) - 1) // 2]
    return {"bound_s": run["timings_s"]["total"] / ratio, "alsatian_s": run["timings_s"]["total"], "ratio": ratio}


def _row(runs: dict[tuple[str, str], list[dict[str, Any]]], strategy: str, precision: str) -> dict[str, Any]:
    ref, other = runs[(strategy, FP32)], runs[(strategy, precision)]

    def med(rs: list[dict[str, Any]], phase: str) -> float:
        return statistics.median(r["timings_s"][phase] for r in rs)
    return {"strategy": strategy, "precision": precision, "repeats": len(ref),
            "inference_s": {FP32: med(ref, "inference"), precision: med(other, "inference")},
            "total_s": {FP32: med(ref, "total"), precision: med(other, "total")},
            # paired: repetition k of each precision ran in the same alternated pass
            "inference_ratio": statistics.median(o["timings_s"]["inference"] / r["timings_s"]["inference"]
                                                 for r, o in zip(ref, other)),
            "total_ratio": statistics.median(o["timings_s"]["total"] / r["timings_s"]["total"]
                                             for r, o in zip(ref, other)),
            "other_cores": [r["cpu"]["other_cores"] for r in ref + other],
            "rankings": {FP32: ref[0]["ranking"], precision: other[0]["ranking"]},
            **agreement(ref[0], other[0])}


def markdown(cells: list[dict[str, Any]], command: str, machine: dict[str, Any]) -> str:
    """The table BENCHMARKS.md takes."""
    lines = [f"`{command}` on {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores), torch "
             f"{machine.get('torch', '?')}:", "",
             "| cell | strategy | precision | inference fp32 / reduced (s) | inference ratio | total ratio | "
             "score rho (models) / loss rho | ranking rho | same winner | max score diff | other cores (min-max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        for r in c["rows"]:
            inf = r["inference_s"]
            rho = "—" if r["score_rho"] is None else f"{r['score_rho']:.3f} ({r['models_compared']})"
            rho += "" if r["loss_rho"] is None else f" / {r['loss_rho']:.3f}"
            diff = "—" if r["max_score_diff"] is None else f"{r['max_score_diff']:.4f}"
            lines.append(f"| {c['arch']} {c['image_size']}px {H.DIST_LABELS[c['distribution']]}, {c['models']} "
                         f"models, {c['items']} items | "
                         f"{r['strategy']} | {r['precision']} | {inf[FP32]:.2f} / {inf[r['precision']]:.2f} | "
                         f"{r['inference_ratio']:.2f} | {r['total_ratio']:.2f} | {rho} | "
                         f"{r['ranking_rho']:.3f} | {_winner(r)} | {diff} | "
                         f"{min(r['other_cores']):.2f}-{max(r['other_cores']):.2f} |")
    for c in cells:
        for p, b in c.get("bound", {}).items():
            lines.append(f"\n{c['arch']}, {p}: lower bound {b['bound_s']:.2f} s (calibrated in {p}), alsatian "
                         f"{b['alsatian_s']:.2f} s, {b['ratio']:.2f}x its bound.")
    return "\n".join(lines) + "\n"


FORWARDS = (("resnet18", 32, {}), ("tf_efficientnet_lite0", 32, {}), ("vit_tiny_patch16_224", 64, {"img_size": 64}))


def forwards(repeats: int = 7, batch: int = 64) -> list[str]:
    """Whole timm models (random init, channels-last for CNNs), one batch: float32, bf16-mixed (autocast) and
    bf16-true (bfloat16 weights and input) alternated ``repeats`` times; median milliseconds and relative error
    against float32. What decided that bf16-true is not offered."""
    import copy

    import timm
    import torch
    lines = ["| model | px | fp32 ms | bf16-mixed ms | bf16-true ms | mixed/fp32 | true/fp32 | true/mixed | "
             "mixed rel. error | true rel. error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, size, kwargs in FORWARDS:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
        x = torch.randn(batch, 3, size, size)
        if "vit" not in name:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        true = copy.deepcopy(model).to(torch.bfloat16)

        def mixed() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x).float()
        runs = {"fp32": lambda: model(x), "mixed": mixed, "true": lambda: true(x.to(torch.bfloat16)).float()}
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.inference_mode():
            ref = runs["fp32"]()
            err = {k: float((runs[k]() - ref).norm() / ref.norm()) for k in ("mixed", "true")}
            for _ in range(repeats):
                for k, fn in runs.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        lines.append(f"| {name} | {size} | {ms['fp32']:.1f} | {ms['mixed']:.1f} | {ms['true']:.1f} | "
                     f"{ms['mixed'] / ms['fp32']:.2f} | {ms['true'] / ms['fp32']:.2f} | {ms['true'] / ms['mixed']:.2f} "
                     f"| {err['mixed']:.4f} | {err['true']:.4f} |")
        print(lines[-1], flush=True)
    return lines


def _winner(row: dict[str, Any]) -> str:
    """Same winner, else whether the other precision's winner is inside float32's confident set."""
    if row["same_winner"]:
        return "yes"
    inside = row.get("in_confident_set")
    return "no" if inside is None else f"no ({'inside' if inside else 'outside'} fp32's confident set of " \
                                       f"{len(row['confident_set'])})"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="resnet18", help="comma-separated arch keys of bench/run.py")
    p.add_argument("--models", type=int, default=35)
    p.add_argument("--distribution", default="top_layers", help="top_layers, top25 or top50")
    p.add_argument("--items", type=int, default=800)
    p.add_argument("--strategies", default="alsatian")
    p.add_argument("--precisions", default=f"{FP32},bf16-mixed")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bound", action="store_true", help="calibrate the lower bound in each precision (alsatian)")
    p.add_argument("--forwards", action="store_true", help="only time whole timm models' forward passes")
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
    if args.forwards:
        print("\n".join(forwards()))
        return []
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
