"""The GPU check: one script that, on a machine with CUDA, checks and measures the accelerator paths in a few minutes,
and writes a BENCHMARKS section (Markdown) naming the device.

    python bench/gpu_check.py [--out bench/results/gpu-check-<device>.md] [--store PATH] [--skip paper,distributed]
    python bench/gpu_check.py --cpu-dry-run [--out FILE.md]   # no CUDA needed: every path that is not CUDA-specific

What it runs (on ``cuda``; with ``--cpu-dry-run`` the same on the CPU, on a tiny zoo):

1. every strategy on the device against the CPU's scores, and the exactness each device must keep on its own
   (alsatian and shift identical, base's score of alsatian's winner equal to alsatian's final score);
2. ``device_capacity=auto``, and a device tier of 1 KB so the host tier takes every cached output, scores identical;
3. prefetch on and off, scores identical;
4. every precision the device runs (CUDA: 32-true, bf16-mixed, 16-mixed; CPU: 32-true, bf16-mixed, and 16-mixed
   refused with a ConfigError), exact across strategies within each, agreement with 32-true measured;
5. the paper-scale cell (35 ResNet-18 at 224 px, Top Layers, 256 items; dry run: the tiny zoo) through
   ``bench/run.py``'s cell: speedups over base and shift, alsatian over its lower bound, exactness;
6. a 2-process search (NCCL) when two devices exist (dry run: 2 CPU processes over gloo), its ranking and scores
   against one process.

Tolerances: on one device, scores are compared exactly (the same kernels on the same features: any difference is a
bug); CPU against CUDA: each model's features on one batch within a relative error of ``FEATURE_RTOL`` and the base
strategy's scores (every model on every item) within ``SCORE_ATOL`` accuracy with Spearman rho at least
``RHO_MIN``. Steps 1-4 and 6 run with TF32 off (cuDNN runs float32 convolutions in TF32 on Ampere and later by
torch's default, about 1e-3 relative error, enough to reorder the near-identical models of a synthetic zoo); the
paper-scale cell runs with torch's defaults, as users run. A check that fails prints a
``GPU CHECK FAILED`` line and the script exits 1; missed speed targets are reported, not failed. Without CUDA and
without ``--cpu-dry-run`` it exits 2 saying so: it never skips quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import harness as H  # noqa: E402
import run as R  # noqa: E402
from bench_precision import agreement  # noqa: E402
from alsatian_pl.data import SearchDataModule  # noqa: E402
from alsatian_pl.errors import AlsatianWarning, ConfigError  # noqa: E402
from alsatian_pl.halving import SuccessiveHalving  # noqa: E402
from alsatian_pl.precision import PRECISIONS  # noqa: E402
from alsatian_pl.store import BlockStore  # noqa: E402
from alsatian_pl.weights import place_block  # noqa: E402

FEATURE_RTOL = 1e-3   # CPU vs CUDA, 32-true with TF32 off, relative Frobenius error of one batch's features
SCORE_ATOL = 0.05     # CPU vs CUDA, base scores (test accuracy) per model
RHO_MIN = 0.9         # CPU vs CUDA, Spearman rho of base's scores
DIST_ATOL = 1e-6      # 2 processes vs 1: the same ranking, scores and test losses within this (ranks run fewer
                      # threads each, so reductions may add in another order; tests/test_distributed.py's bound)
TINY = H.Arch("tiny", "mobilenetv3_small_050", image_size=32, items=60)
QUICK = H.Arch("resnet18", "resnet18", image_size=32, items=800)


@dataclass
class Context:
    device: str
    store: Path
    arch: H.Arch
    num_models: int
    settings: H.SearchSettings
    models: list[str] = field(default_factory=list)
    dry_run: bool = False


@dataclass
class Report:
    """Every check's outcome and the Markdown lines of the section."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (check, ok | FAILED | measured, detail)
    extra: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.rows.append((name, "ok" if ok else "FAILED", detail))
        print(f"{'ok    ' if ok else 'FAILED'} {name}: {detail}", flush=True)
        if not ok:
            H.loud(f"GPU CHECK FAILED: {name}: {detail}")
        return ok

    def measured(self, name: str, detail: str) -> None:
        self.rows.append((name, "measured", detail))
        print(f"measured {name}: {detail}", flush=True)

    @property
    def failed(self) -> list[str]:
        return [name for name, status, _ in self.rows if status == "FAILED"]


def search(ctx: Context, strategy: str, device: str | None = None, **options: Any) -> dict[str, Any]:
    """One search of the check's zoo (a SearchResult as JSON, with its wall time)."""
    s = ctx.settings
    kwargs = {"scorer": "linear", "scorer_kwargs": s.scorer_kwargs, "result_size": s.result_size,
              "batch_size": s.batch_size, "device": device or ctx.device, "seed": s.seed, "progress": False,
              "cache_budget": s.cache_budget, **options}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AlsatianWarning)
        result = SuccessiveHalving(BlockStore(ctx.store), SearchDataModule(**ctx.arch.data_kwargs(seed=s.seed)),
                                   strategy=strategy, **kwargs).run(ctx.models)
    return {**result.to_json(), "wall_s": time.perf_counter() - t0}


def scores(result: dict[str, Any]) -> list[tuple[str, float, float, int | None]]:
    return [(r["model"], r["score"], r["test_loss"], r["eliminated_in_round"]) for r in result["ranking"]]


def score_diff(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """The largest score or test-loss difference of two results with the same ranking (None: rankings differ)."""
    sa, sb = scores(a), scores(b)
    if [(m, r) for m, _, _, r in sa] != [(m, r) for m, _, _, r in sb]:
        return None
    return max(max(abs(x[1] - y[1]), abs(x[2] - y[2])) for x, y in zip(sa, sb))


def check_strategies(ctx: Context, report: Report, label: str, runs: dict[str, dict[str, Any]]) -> None:
    """The exactness one device keeps on its own (``H.check_cell`` with no tolerance)."""
    cell = H.check_cell(runs, tol=0.0)
    report.check(f"{label}: alsatian, shift and base exact", cell["exact"],
                 f"rankings identical {cell['rankings_identical']}, max |alsatian - shift| "
                 f"{cell['max_score_diff_alsatian_shift']:.1e}, base scores alsatian's winner "
                 f"{'equally' if cell['base_score_of_alsatian_winner_matches'] else 'DIFFERENTLY'}")


def feature_error(ctx: Context, model: str) -> float:
    """Relative error of ``model``'s features on one batch, the device against the CPU (32-true)."""
    store = BlockStore(ctx.store)
    dm = SearchDataModule(**ctx.arch.data_kwargs(seed=ctx.settings.seed))
    dm.setup()
    x = dm.train_items()[0][:ctx.settings.batch_size].to("cpu")
    out = {}
    for device in ("cpu", ctx.device):
        y = x.to(device)
        with torch.inference_mode():
            for h in store.manifest(model).hashes:
                y = place_block(store.load_block(h), torch.device(device), False)(y)
        out[device] = y.float().cpu()
    return float((out[ctx.device] - out["cpu"]).norm() / out["cpu"].norm().clamp_min(1e-12))


def device_vs_cpu(ctx: Context, report: Report) -> dict[str, dict[str, Any]]:
    """Every strategy on the device, its exactness there, and its agreement with the CPU; the device's runs (after
    one untimed search, so that the first timed one does not pay CUDA's start-up: context, kernels, allocator)."""
    if not ctx.dry_run:
        search(ctx, "alsatian")
    runs = {s: search(ctx, s) for s in H.STRATEGIES}
    check_strategies(ctx, report, f"{ctx.device} 32-true", runs)
    if ctx.dry_run:
        report.measured("CPU against the device", "dry run: the device is the CPU (nothing to compare)")
        return runs
    errors = {m: feature_error(ctx, m) for m in ctx.models[:8]}
    worst = max(errors, key=errors.get)
    report.check("features: CUDA against CPU", errors[worst] <= FEATURE_RTOL,
                 f"largest relative error {errors[worst]:.1e} ({worst}; {len(errors)} models; tolerance "
                 f"{FEATURE_RTOL:g})")
    cpu = {s: search(ctx, s, device="cpu") for s in H.STRATEGIES}
    agree = agreement(cpu["base"], runs["base"])
    report.check("base scores: CUDA against CPU", agree["max_score_diff"] <= SCORE_ATOL and
                 (agree["score_rho"] or 0) >= RHO_MIN,
                 f"largest difference {agree['max_score_diff']:.4f} (tolerance {SCORE_ATOL}), Spearman rho "
                 f"{agree['score_rho']:.3f} (at least {RHO_MIN}), same winner {agree['same_winner']}")
    for s in ("alsatian", "shift"):
        a = agreement(cpu[s], runs[s])
        report.measured(f"{s}: CUDA against CPU", f"same winner {a['same_winner']}, ranking rho "
                                                    f"{a['ranking_rho']:.3f}, largest score difference "
                                                    f"{a['max_score_diff']:.4f}")
    return runs


def tiers_and_prefetch(ctx: Context, report: Report, reference: dict[str, Any]) -> None:
    """device_capacity auto and 1 KB (the host tier takes every cached output), prefetch on and off: the same
    scores as the device's alsatian run. On the CPU (dry run) the reference run is the auto and prefetch-off run
    (the defaults there), so it is not run again."""
    ref = scores(reference)
    auto = reference if ctx.dry_run else search(ctx, "alsatian", device_capacity="auto")
    report.check("device_capacity=auto", scores(auto) == ref,
                 f"scores identical {scores(auto) == ref}; {auto['cache'].get('moved_to_host_bytes', 0)} bytes to "
                 "the host tier")
    host = search(ctx, "alsatian", device_capacity="1KB")
    moved = host["cache"].get("moved_to_host_bytes", 0)
    report.check("host tier (device_capacity=1KB)", scores(host) == ref and moved > 0,
                 f"scores identical {scores(host) == ref}; {moved} bytes went to the host tier")
    for prefetch in (True, False):
        run = reference if ctx.dry_run and not prefetch else search(ctx, "alsatian", prefetch=prefetch)
        started = run["cache"].get("weight_prefetches", 0)
        report.check(f"prefetch={str(prefetch).lower()}", scores(run) == ref and (started > 0) == prefetch,
                     f"scores identical {scores(run) == ref}; {started} prefetches started; inference "
                     f"{run['timings_s']['inference']:.2f}s")


def precisions(ctx: Context, report: Report, fp32: dict[str, dict[str, Any]]) -> None:
    """Every precision the device runs: exact across strategies, agreement with 32-true and its inference time."""
    if ctx.device == "cpu":
        try:
            search(ctx, "alsatian", precision="16-mixed")
            report.check("16-mixed refused on the CPU", False, "the search ran")
        except ConfigError as exc:
            report.check("16-mixed refused on the CPU", True, str(exc))
    for p in PRECISIONS[1:] if ctx.device != "cpu" else ("bf16-mixed",):
        runs = {s: search(ctx, s, precision=p) for s in H.STRATEGIES}
        check_strategies(ctx, report, f"{ctx.device} {p}", runs)
        report.check(f"{p} recorded in results", all(r["precision"] == p for r in runs.values()),
                     str({s: r["precision"] for s, r in runs.items()}))
        for s in ("alsatian", "base"):
            a = agreement(fp32[s], runs[s])
            ratio = runs[s]["timings_s"]["inference"] / max(fp32[s]["timings_s"]["inference"], 1e-9)
            rho = "—" if a["score_rho"] is None else f"{a['score_rho']:.3f}"
            report.measured(f"{p} against 32-true, {s}",
                            f"inference time ratio {ratio:.2f} (32-true without TF32, run earlier in this process, not "
                            f"alternated), score rho {rho}, ranking rho {a['ranking_rho']:.3f},"
                            f" same winner {a['same_winner']} (inside 32-true's confident set: "
                            f"{a['in_confident_set']}), largest score difference {a['max_score_diff']:.4f}")


def paper_cell(ctx: Context, report: Report, out: Path) -> None:
    """The paper-scale cell through bench/run.py's cell (calibration, three strategies, bound, checks)."""
    if ctx.dry_run:
        arch, models, ps_result = ctx.arch, ctx.models, ctx.settings.result_size
    else:
        arch = R.PAPER_RESNET18
        ps = R.PaperScale(arch)
        ps_result = ps.resolved_result_size(ctx.settings.result_size)
        models = H.build_zoo(ctx.store, arch, "top_layers", ps.num_models)["models"]
    plan = replace(R.preset("quick"), archs=[arch], num_models=len(models), repeats=1, calibration_repeats=2,
                   settings=replace(ctx.settings, result_size=ps_result))
    zoo = {"models": models, "zoo": "gpu-check"}
    cell = R.run_cell(plan, ctx.store, arch, "top_layers", zoo, 0, out, R.Log(), folder="paper_scale")
    report.check(f"paper-scale cell ({arch.key}, {len(models)} models, {arch.size_label}): exact", cell["exact_ok"],
                 json.dumps(cell["checks"]["warnings"]))
    sp, b = cell["speedup"], cell["bound"]
    targets = ", ".join(f"{t['what']} {t['measured']:.2f} ({'met' if t['met'] else 'MISSED'} {t['kind']}"
                        f"{t['target']})" for t in cell["targets"])
    report.measured("paper-scale cell: speedups and bound",
                    f"base/alsatian {sp['base_over_alsatian']:.2f}x, shift/alsatian {sp['shift_over_alsatian']:.2f}x,"
                    f" alsatian/bound {b['ratio']:.2f} (totals {cell['time_s']}); {targets}")


def distributed(ctx: Context, report: Report, single: dict[str, Any]) -> None:
    """A 2-process search (a fresh launch in a subprocess: Fabric relaunches the command line on every rank), its
    scores against one process's."""
    accelerator = "cpu" if ctx.device == "cpu" else "cuda"
    if accelerator == "cuda" and torch.cuda.device_count() < 2:
        report.measured("2-process search", f"not run: {torch.cuda.device_count()} CUDA device(s) here, it needs 2")
        return
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        H.write_json(spec, {"store": str(ctx.store), "models": ctx.models, "data": ctx.arch.data_kwargs(),
                            "settings": vars(ctx.settings), "accelerator": accelerator})
        proc = subprocess.run([sys.executable, __file__, "--distributed-worker", str(spec), str(out)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode or not out.is_file():
            report.check("2-process search", False, f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
            return
        result = json.loads(out.read_text())
    diff = score_diff(result, single)
    report.check(f"2-process search ({accelerator}) against one process", diff is not None and diff <= DIST_ATOL,
                 f"same ranking {diff is not None}, largest score or test-loss difference {diff} (tolerance "
                 f"{DIST_ATOL:g}); load balance {result['distributed']['load_balance']:.2f}, "
                 f"wall {result['wall_s']:.1f}s against {single['wall_s']:.1f}s")


def distributed_worker(spec_path: str, out_path: str) -> None:
    """Every rank of the 2-process launch runs this; rank 0 writes the result."""
    from alsatian_pl.distributed import launch
    if os.environ.get("ALSATIAN_GPU_CHECK_NO_TF32"):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    spec = json.loads(Path(spec_path).read_text())
    s = spec["settings"]

    def run(group: Any) -> None:
        t0 = time.perf_counter()
        device = torch.device("cpu") if spec["accelerator"] == "cpu" else torch.device("cuda", group.rank)
        result = SuccessiveHalving(BlockStore(spec["store"]), SearchDataModule(**spec["data"]), strategy="alsatian",
                                   scorer="linear", scorer_kwargs={"epochs": s["epochs"]},
                                   result_size=s["result_size"], batch_size=s["batch_size"], device=device,
                                   seed=s["seed"], progress=False, cache_budget=s["cache_budget"],
                                   group=group).run(spec["models"])
        if group.is_global_zero:
            Path(out_path).write_text(json.dumps({**result.to_json(), "wall_s": time.perf_counter() - t0}))

    launch(run, devices=2, accelerator=spec["accelerator"])


def markdown(ctx: Context, report: Report, command: str, seconds: float) -> str:
    """The BENCHMARKS section: the device, the command, every check."""
    name = torch.cuda.get_device_name(0) if ctx.device == "cuda" else f"CPU dry run ({H.machine()['cpu']})"
    lines = [f"## GPU check: {name}", "",
             f"`{command}`, {seconds:.0f} s, torch {torch.__version__}, zoo: {len(ctx.models)} {ctx.arch.arch} at "
             f"{ctx.arch.size_label}, {ctx.arch.items} items. Tolerances: one device exact; CUDA against CPU (TF32 "
             f"off): features within {FEATURE_RTOL:g} relative, base scores within {SCORE_ATOL} with rho >= "
             f"{RHO_MIN}. The paper-scale cell ran with torch's defaults (TF32 convolutions on Ampere and later).",
             "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {n} | {s} | {d.replace('|', '/')} |" for n, s, d in report.rows]
    verdict = "FAILED: " + ", ".join(report.failed) if report.failed else "every check passed"
    return "\n".join([*lines, "", f"Verdict: {verdict}.", *report.extra]) + "\n"


def setup(args: argparse.Namespace) -> Context:
    """The device, the settings and the zoo (built into the store, or reused)."""
    if args.cpu_dry_run:
        # one thread: two OpenMP threads on a shared 2-core machine wait for each other (bench/README.md)
        ctx = Context("cpu", args.store, TINY, 4, H.SearchSettings(batch_size=32, epochs=3, device="cpu", threads=1),
                      dry_run=True)
    else:
        ctx = Context("cuda", args.store, QUICK, 35, H.SearchSettings(device="cuda"))
    ctx.settings.apply_threads()
    ctx.models = H.build_zoo(ctx.store, ctx.arch, "top_layers", ctx.num_models)["models"]
    return ctx


@contextmanager
def float32_without_tf32() -> Iterator[None]:
    """TF32 off for cuDNN and matmuls inside (and in the 2-process search's ranks: ``ALSATIAN_GPU_CHECK_NO_TF32``)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    os.environ["ALSATIAN_GPU_CHECK_NO_TF32"] = "1"
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        os.environ.pop("ALSATIAN_GPU_CHECK_NO_TF32", None)


def stage(report: Report, name: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``; an exception is a failed check naming the stage (the other stages still run)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported as a failure, never skipped
        report.check(f"{name}: ran", False, f"{type(exc).__name__}: {str(exc).strip()[:400]}")
        return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="run every path that is not CUDA-specific on the CPU")
    p.add_argument("--store", type=Path, default=None, help="block store (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=None, help="the Markdown section (default bench/results/gpu-check-*.md)")
    p.add_argument("--skip", default="", help="comma-separated: paper, distributed")
    p.add_argument("--distributed-worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.distributed_worker:
        distributed_worker(*args.distributed_worker)
        return 0
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here. Run it on a GPU machine, or with --cpu-dry-run to exercise every "
              "path that is not CUDA-specific.", file=sys.stderr)
        return 2
    t0, skip = time.perf_counter(), set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        args.store = args.store or Path(tmp) / "store"
        ctx, report = setup(args), Report()
        with float32_without_tf32():
            runs = stage(report, "strategies", device_vs_cpu, ctx, report)
            if runs is not None:
                stage(report, "device tiers and prefetch", tiers_and_prefetch, ctx, report, runs["alsatian"])
                stage(report, "precisions", precisions, ctx, report, runs)
                if "distributed" not in skip:
                    stage(report, "2-process search", distributed, ctx, report, runs["alsatian"])
        if "paper" not in skip:
            stage(report, "paper-scale cell", paper_cell, ctx, report, Path(tmp) / "cells")
    command = "python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(ctx, report, command, time.perf_counter() - t0)
    device = "cpu-dry-run" if ctx.dry_run else torch.cuda.get_device_name(0).lower().replace(" ", "-")
    out = args.out or H.ROOT / "bench" / "results" / f"gpu-check-{device}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"\n{text}\nwritten to {out}")
    if report.failed:
        print(f"GPU CHECK FAILED: {', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
