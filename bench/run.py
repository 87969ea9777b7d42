"""The alsatian-pl benchmark suite: one command, paper-style figures, BENCHMARKS.md.

    python bench/run.py --mode quick     # < 5 min on 2 cores: checks a change
    python bench/run.py --mode full      # < 45 min on 2 cores: the numbers in BENCHMARKS.md
    python bench/run.py --mode full --only paper_scale     # one experiment alone (fig10, fig16, paper_scale, scaling)

Experiments (paper §6.1, §6.4):
  fig10/fig11  35 synthetic models per architecture and distribution; base, shift and alsatian in one invocation on
               the same store, data and seed, interleaved (orders rotate over cells); wall time, time breakdown,
               speedups, alsatian's time over its lower bound, and correctness checks (identical rankings).
  fig16        alsatian under an ample, a tight and a very tight cache budget (derived from the ample run's planned
               peaks), each in its own process: time, peak host memory, identical ranking.
  paper_scale  one cell at the paper's input size (full mode): 35 ResNet-18 models at 224 px, Top Layers, base,
               shift and alsatian as in fig10 (same rotation, calibration, bound and checks).
  scaling      alsatian's time as the number of models (up to 300 in full mode) and of items grows, each row measured
               with the store's block files cold (evicted from the OS page cache) and warm (read once before).
  storage      logical vs physical store bytes of every zoo.

Results: bench/results/<mode>-<timestamp>/ (one JSON per search, a JSON per cell and summary.json, PNG plots) and
BENCHMARKS.md (written at the repository root for --mode full, or with --publish).
"""

from __future__ import annotations

import argparse
import importlib.util
import datetime as dt
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as H  # noqa: E402

BENCH = Path(__file__).resolve().parent
TARGETS = {"top_layers": {"base": 16.0, "shift": 5.0}, "top25": {"base": 10.0}, "top50": {"base": 6.0}}
BOUND_TARGET = 1.2


# -------------------------------------------------------------------------------------------------------- presets
@dataclass
class Plan:
    """Everything one mode runs."""

    mode: str
    archs: list[H.Arch]
    distributions: list[str]
    num_models: int
    repeats: int
    settings: H.SearchSettings
    fig16: tuple[str, str] | None            # (arch key, distribution); items: the arch's
    scaling_arch: str                        # arch key of the scaling runs (Top Layers)
    scaling_models: list[int]
    scaling_models_items: int
    scaling_items: list[int]
    calibration_repeats: int = 5
    paper_scale: "PaperScale | None" = None   # the 224-px cell (full mode)
    scaling_page_cache: tuple[str, ...] = ("cold", "warm")  # page-cache states each scaling row is measured in
    notes: list[str] = field(default_factory=list)


RESNET18 = H.Arch("resnet18", "resnet18", image_size=32, items=2000)
RESNET152 = H.Arch("resnet152", "resnet152", image_size=32, items=800)
EFFNET = H.Arch("effnet_lite0", "tf_efficientnet_lite0", image_size=32, items=2000, checkpoint="efficientnet_lite0")
VIT = H.Arch("vit_tiny", "vit_tiny_patch16_224", image_size=64, items=1000, model_kwargs={"img_size": 64})
# Figure 17 (paper §6.5): BERT-architecture encoders on a sentiment task. Full mode uses all-MiniLM-L6-v2 (BertModel,
# 6 layers, real weights) at 32 tokens; the paper's bert-base (12 layers, random init) costs ~6x more per item and is
# there for --archs bert_base.
MINILM = H.Arch("minilm", "all-MiniLM-L6-v2", image_size=32, items=400, checkpoint="all-MiniLM-L6-v2", builder="hf",
                dataset="rotten_tomatoes", classes=2, tokenizer="all-MiniLM-L6-v2", pooling="mean")
BERT_BASE = H.Arch("bert_base", "bert-base", image_size=32, items=200, builder="hf", dataset="rotten_tomatoes",
                   classes=2, tokenizer="all-MiniLM-L6-v2", pooling="cls")
ALL_ARCHS = (RESNET18, RESNET152, EFFNET, VIT, MINILM, BERT_BASE)
EXPERIMENTS = ("fig10", "fig16", "paper_scale", "scaling")


@dataclass
class PaperScale:
    """The paper-scale cell: the paper's 224-px input on a zoo that fits a 2-core CPU.

    ResNet-18 (timm ``resnet18``, seeded random init like the other CNN cells; its block files are the 32-px zoo's,
    so it adds no disk), 35 models, Top Layers. 35 models need 6 halving rounds down to one model, and 6 rounds need
    at least ``H.min_items(35)`` = 800 Fashion-MNIST items (D1 holds one item per class); at 224 px base would take
    ~10-15 min on 2 cores there (35 x 800 x 20-33 ms per model and item). So the cell keeps few items and, where
    they are too few for result size 1, uses the smallest result size they allow (``result_size`` None): 256 items
    -> result size 3, 4 rounds. Base (every model on every item, one round) does not depend on the result size;
    shift and alsatian stop two rounds earlier than at result size 1.
    """

    arch: H.Arch
    distribution: str = "top_layers"
    num_models: int = 35
    result_size: int | None = None   # None: the smallest result size the items allow (at least the settings')
    calibration_repeats: int = 3     # batches per block in the calibration pass (fig10 cells: 5); 224 px is slow

    def resolved_result_size(self, at_least: int = 1) -> int:
        if self.result_size is not None:
            return self.result_size
        r = max(1, at_least)
        while r < self.num_models and H.min_items(self.num_models, r, classes=self.arch.classes) > self.arch.items:
            r += 1
        return r


PAPER_RESNET18 = H.Arch("resnet18_224", "resnet18", image_size=224, items=256)


def preset(mode: str) -> Plan:
    if mode == "quick":
        return Plan("quick", [replace(RESNET18, items=800), replace(EFFNET, items=800)], ["top_layers"],
                    num_models=35, repeats=1, settings=H.SearchSettings(), fig16=("resnet18", "top_layers"),
                    scaling_arch="resnet18", scaling_models=[10, 35], scaling_models_items=800,
                    scaling_items=[800, 1600, 3200])
    if mode == "full":
        return Plan("full", [RESNET18, RESNET152, EFFNET, VIT, MINILM], ["top50", "top25", "top_layers"],
                    num_models=35, repeats=1, settings=H.SearchSettings(), fig16=("vit_tiny", "top50"),
                    scaling_arch="resnet18", scaling_models=[10, 35, 100, 300], scaling_models_items=2000,
                    scaling_items=[1000, 2000, 4000, 8000], paper_scale=PaperScale(PAPER_RESNET18))
    raise SystemExit(f"unknown mode {mode!r}")


# ---------------------------------------------------------------------------------------------------------- helpers
class Log:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)


def _median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose total is the median (lower median for an even count)."""
    return sorted(runs, key=lambda r: r["timings_s"]["total"])[(len(runs) - 1) // 2]


def _cell_targets(dist: str, speedup: dict[str, float], bound_ratio: float) -> list[dict[str, Any]]:
    rows = []
    for strategy, target in TARGETS.get(dist, {}).items():
        measured = speedup[f"{strategy}_over_alsatian"]
        rows.append({"what": f"{strategy}/alsatian", "target": target, "kind": ">=", "measured": measured,
                     "met": measured >= target})
    rows.append({"what": "alsatian/bound", "target": BOUND_TARGET, "kind": "<=", "measured": bound_ratio,
                 "met": bound_ratio <= BOUND_TARGET})
    return rows


# ------------------------------------------------------------------------------------------------------ experiments
def build_zoos(plan: Plan, store: Path, log: Log) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Every zoo the plan needs, built (or reused) once up front."""
    wanted: list[tuple[H.Arch, str, int]] = [(a, d, plan.num_models) for a in plan.archs for d in plan.distributions]
    by_key = {a.key: a for a in plan.archs}
    if plan.fig16 is not None:
        wanted.append((by_key[plan.fig16[0]], plan.fig16[1], plan.num_models))
    if plan.paper_scale is not None:
        ps = plan.paper_scale
        wanted.append((ps.arch, ps.distribution, ps.num_models))
    scaling = by_key.get(plan.scaling_arch, RESNET18 if plan.scaling_arch == "resnet18" else None)
    if scaling is not None and (plan.scaling_models or plan.scaling_items):
        wanted += [(scaling, "top_layers", n) for n in plan.scaling_models]
        if plan.scaling_items:
            wanted.append((scaling, "top_layers", plan.num_models))
    zoos: dict[tuple[str, str, int], dict[str, Any]] = {}
    for arch, dist, n in wanted:
        key = (arch.key, dist, n)
        if key in zoos:
            continue
        log(f"zoo {arch.key} {dist} x{n}: building or loading")
        zoos[key] = H.build_zoo(store, arch, dist, n, seed=plan.settings.seed)
        z = zoos[key]
        log(f"  {z['zoo']}: {z['distinct_blocks']} distinct blocks, {z['logical_bytes'] / 2**20:.0f} MiB logical, "
            f"{z['physical_bytes'] / 2**20:.0f} MiB physical ({z['build_or_load_s']:.1f}s)")
    return zoos


def run_fig10(plan: Plan, store: Path, zoos: dict, out: Path, log: Log) -> list[dict[str, Any]]:
    """Every (architecture, distribution) cell: calibrate, then base, shift and alsatian in a rotating order."""
    cells = []
    counter = 0
    for arch in plan.archs:
        for dist in plan.distributions:
            tag = f"{arch.key}-{dist}"
            try:
                cells.append(run_cell(plan, store, arch, dist, zoos[(arch.key, dist, plan.num_models)], counter,
                                      out, log))
            except Exception as exc:  # noqa: BLE001 - one failed cell must not lose the others
                H.loud(f"cell {tag} failed: {type(exc).__name__}: {exc}")
                cells.append({"cell": tag, "arch": arch.key, "distribution": dist,
                              "error": f"{type(exc).__name__}: {exc}"})
            counter += plan.repeats
    return cells


def run_cell(plan: Plan, store: Path, arch: H.Arch, dist: str, zoo: dict, counter: int, out: Path,
             log: Log, folder: str = "fig10") -> dict[str, Any]:
    data = arch.data_kwargs(seed=plan.settings.seed)
    tag = f"{arch.key}-{dist}"
    log(f"cell {tag}: {plan.num_models} models, {arch.items} {arch.dataset} items at {arch.size_label}; calibrating")
    cal = H.calibrate(store, zoo["models"], data, plan.settings, repeats=plan.calibration_repeats)
    H.write_json(out / folder / f"{tag}-calibration.json", cal)
    mean_model = sum(cal["model_per_item_s"].values()) / len(cal["model_per_item_s"])
    log(f"  calibration: {cal['distinct_blocks']} distinct blocks, {cal['tree_edges']} tree edges, "
        f"{mean_model * 1e3:.2f} ms/item per model, tree {cal['tree_per_item_s'] * 1e3:.2f} ms/item "
        f"({cal['seconds']:.1f}s); base inference ~{mean_model * plan.num_models * arch.items:.0f}s predicted")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in H.STRATEGIES}
    orders = []
    for rep in range(plan.repeats):
        order = H.ORDERS[(counter + rep) % len(H.ORDERS)]
        orders.append(list(order))
        for pos, strategy in enumerate(order):
            recalibrate = strategy == "alsatian"  # its bound: calibrated right before and right after it
            before = H.calibrate(store, zoo["models"], data, plan.settings, plan.calibration_repeats) \
                if recalibrate else None
            res = H.run_search(store, zoo["models"], data, strategy, plan.settings)
            if recalibrate:
                after = H.calibrate(store, zoo["models"], data, plan.settings, plan.calibration_repeats)
                res["bracket"] = H.bracket(before, after)
            res.update(cell=tag, repeat=rep, position=pos, order=list(order))
            H.write_json(out / folder / f"{tag}-{strategy}-r{rep}.json", res)
            runs[strategy].append(res)
            t = res["timings_s"]
            log(f"  {strategy:<8} {t['total']:7.2f}s  (data {t['prepare_data']:.2f}, model "
                f"{t['prepare_model']:.2f}, inference {t['inference']:.2f}, scoring {t['proxy_scoring']:.2f}, "
                f"planning {t['planning']:.2f}; peak RSS {res['memory']['peak_host_rss_bytes'] / 2**20:.0f} MiB; "
                f"other processes {res['cpu']['other_cores']:.2f} cores)")
    return summarize_cell(plan, store, arch, dist, zoo, cal, runs, orders, out, log, folder)


def _cell_bounds(store: Path, zoo: dict, cal: dict, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lower bound of each alsatian run, with alsatian's time over it (calibrated and executor costs): block
    costs from the two calibrations bracketing the run where it has them (``bracket``), else the cell's; the
    cell's calibration gives ``ratio_cell_calibration`` beside it, to show what bracketing changed."""
    bounds = []
    for r in runs:
        per_item = r["bracket"]["per_item_s"] if "bracket" in r else cal["per_item_s"]
        b = H.lower_bound(store, zoo["models"], r, per_item, H.executor_costs(r))
        if "bracket" in r:
            b["calibration_drift"] = r["bracket"]["drift"]
            b["ratio_cell_calibration"] = r["timings_s"]["total"] / H.lower_bound(
                store, zoo["models"], r, cal["per_item_s"])["bound_s"]
        b["alsatian_s"] = r["timings_s"]["total"]
        b["ratio"] = r["timings_s"]["total"] / b["bound_s"]
        b["ratio_exec"] = r["timings_s"]["total"] / b["bound_exec_s"]
        b["inference_ratio"] = r["timings_s"]["inference"] / b["inference_s"]
        bounds.append(b)
    return bounds


def _cell_predictions(store: Path, zoo: dict, cal: dict,
                      runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each strategy's inference time predicted from the calibration, against what its median run measured."""
    prediction = {}
    for s in H.STRATEGIES:
        r = _median_run(runs[s])
        pred = H.predicted_inference(r, cal["model_per_item_s"], shared=(s == "alsatian"),
                                     per_item=cal["per_item_s"], store_root=store, models=zoo["models"])
        prediction[s] = {"predicted_inference_s": pred, "measured_inference_s": r["timings_s"]["inference"],
                         "measured_over_predicted": r["timings_s"]["inference"] / pred if pred else None}
    return prediction


def summarize_cell(plan: Plan, store: Path, arch: H.Arch, dist: str, zoo: dict, cal: dict,
                   runs: dict[str, list[dict[str, Any]]], orders: list, out: Path, log: Log,
                   folder: str = "fig10") -> dict[str, Any]:
    """A cell's record from its runs (medians, speedups, lower bound, predictions, checks, targets), written as
    ``<folder>/<tag>.json`` and logged."""
    tag = f"{arch.key}-{dist}"
    time_s = {s: _median([r["timings_s"]["total"] for r in runs[s]]) for s in H.STRATEGIES}
    breakdown = {s: {p: _median([r["timings_s"][p] for r in runs[s]]) for p in (*H.PHASES, "total")}
                 for s in H.STRATEGIES}
    speedup = {"base_over_alsatian": time_s["base"] / time_s["alsatian"],
               "shift_over_alsatian": time_s["shift"] / time_s["alsatian"],
               "base_over_shift": time_s["base"] / time_s["shift"]}
    bounds = _cell_bounds(store, zoo, cal, runs["alsatian"])
    bound = sorted(bounds, key=lambda b: b["ratio"])[(len(bounds) - 1) // 2]
    prediction = _cell_predictions(store, zoo, cal, runs)
    checks = [H.check_cell({s: runs[s][k] for s in H.STRATEGIES}) for k in range(plan.repeats)]
    for c in checks:
        for w in c["warnings"]:
            H.loud(f"{tag}: {w}")
    targets = _cell_targets(dist, speedup, bound["ratio"])
    als = _median_run(runs["alsatian"])
    mean_model = sum(cal["model_per_item_s"].values()) / len(cal["model_per_item_s"])
    cell = {"cell": tag, "arch": arch.key, "timm": arch.arch, "distribution": dist, "items": arch.items,
            "image_size": arch.image_size, "size_label": arch.size_label, "dataset": arch.dataset,
            "num_models": plan.num_models, "zoo": zoo["zoo"], "orders": orders,
            "repeats": plan.repeats, "time_s": time_s, "breakdown_s": breakdown,
            "wall_s": {s: _median([r["wall_s"] for r in runs[s]]) for s in H.STRATEGIES},
            # peak host RSS of the search (VmHWM, reset when it starts) and the RSS right before it; median over runs
            "peak_rss_bytes": {s: _median([r["memory"]["peak_host_rss_bytes"] for r in runs[s]])
                               for s in H.STRATEGIES},
            "rss_before_search_bytes": {s: _median([r.get("rss_before_search_bytes", 0) for r in runs[s]])
                                        for s in H.STRATEGIES},
            "result_size": plan.settings.result_size,
            "speedup": speedup, "bound": bound, "bound_ratios": [b["ratio"] for b in bounds],
            "calibration": {**{k: cal[k] for k in ("batch", "repeats", "seconds", "distinct_blocks", "tree_edges",
                                                    "tree_per_item_s")},
                            "mean_model_per_item_s": mean_model},
            "prediction": prediction, "checks": checks[0] if len(checks) == 1 else checks,
            "checks_ok": all(c["ok"] for c in checks), "exact_ok": all(c["exact"] for c in checks),
            "winner_ok": all(c["base_winner_score_matches"] for c in checks),
            "targets": targets,
            "rounds": [{k: r[k] for k in ("round", "models", "items", "partitions", "inference_steps", "block_runs",
                                          "distinct_blocks", "planned_peak_bytes", "observed_peak_bytes")}
                       for r in als["rounds"]],
            "other_cores": {s: [r["cpu"]["other_cores"] for r in runs[s]] for s in H.STRATEGIES}}
    H.write_json(out / folder / f"{tag}.json", cell)
    met = " ".join(f"{t['what']} {t['measured']:.2f} ({'ok' if t['met'] else 'MISSED'} {t['kind']}{t['target']})"
                   for t in targets)
    log(f"  => {met}; exact (identical rankings, same scores): {'ok' if cell['exact_ok'] else 'FAILED'}; "
        f"base's winner score {'matches' if cell['winner_ok'] else 'DIFFERS from'} alsatian's final score")
    return cell


def _spawn(spec: dict[str, Any], out_json: Path, log: Log) -> dict[str, Any]:
    spec_path = out_json.with_suffix(".spec.json")
    H.write_json(spec_path, spec)
    proc = subprocess.run([sys.executable, str(BENCH / "worker.py"), str(spec_path), str(out_json)],
                          capture_output=True, text=True)
    spec_path.unlink(missing_ok=True)
    if not out_json.is_file():
        log(f"  worker failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        return {"error": f"worker exited {proc.returncode}: {proc.stderr[-2000:]}"}
    import json
    return json.loads(out_json.read_text())


def run_fig16(plan: Plan, store: Path, zoos: dict, out: Path, log: Log) -> dict[str, Any] | None:
    """Alsatian under an ample (unlimited), a tight and a very tight cache budget, each in its own process, plus the
    fixed footprint of the smallest workload; written as ``fig16/fig16.json``."""
    if plan.fig16 is None:
        return None
    key, dist = plan.fig16
    arch = next(a for a in plan.archs if a.key == key)
    zoo = zoos[(key, dist, plan.num_models)]
    data = arch.data_kwargs(seed=plan.settings.seed)
    base_spec = {"store_root": str(store), "models": zoo["models"], "data": data, "strategy": "alsatian",
                 "settings": asdict(plan.settings)}
    log(f"fig16: alsatian on {key} {dist} ({arch.items} items), each budget in its own process; ample (unlimited)")
    runs: dict[str, dict[str, Any]] = {}
    runs["ample"] = _spawn({**base_spec, "cache_budget": None}, out / "fig16" / "ample.json", log)
    if "error" in runs["ample"]:
        H.loud(f"fig16 ample run failed: {runs['ample']['error']}")
        return {"error": runs["ample"]["error"]}
    footprint = _fig16_footprint(plan, arch, zoo, base_spec, out, log)
    derived = H.derive_budgets(store, zoo["models"], runs["ample"], plan.settings.batch_size)
    _check_budgets(derived)
    for name, b in derived["budgets"].items():
        log(f"  {name}: {b['bytes'] / 2**20:.1f} MiB (floor {derived['floor'] / 2**20:.1f}, ample peak "
            f"{derived['peak'] / 2**20:.1f} MiB), predicted partitions per round {b['predicted_partitions']}")
        runs[name] = _spawn({**base_spec, "cache_budget": b["bytes"]}, out / "fig16" / f"{name}.json", log)
    rows = [_fig16_row(name, r, runs["ample"]["ranking"], footprint, log) for name, r in runs.items()]
    fig16 = {"arch": key, "timm": arch.arch, "distribution": dist, "items": arch.items, "image_size": arch.image_size,
             "size_label": arch.size_label,
             "num_models": plan.num_models, "derived": derived, "rows": rows, "footprint": footprint,
             "ok": all(r.get("ranking_identical") and r.get("within_budget")
                       and r.get("within_budget_plus_footprint") is not False for r in rows)}
    H.write_json(out / "fig16" / "fig16.json", fig16)
    return fig16


def _fig16_footprint(plan: Plan, arch: H.Arch, zoo: dict, base_spec: dict[str, Any], out: Path,
                     log: Log) -> dict[str, Any] | None:
    """The fixed footprint: what a search's host memory grows by on the smallest workload (two models of the zoo,
    the fewest items a search accepts), whatever the budget; the issue's memory target is budget + this. None when
    its run failed."""
    small_items = H.min_items(2, classes=arch.classes)
    log(f"  footprint: alsatian on 2 models, {small_items} items (the smallest workload)")
    small = _spawn({**base_spec, "models": zoo["models"][:2], "data": arch.data_kwargs(small_items,
                                                                                       plan.settings.seed),
                    "cache_budget": None}, out / "fig16" / "footprint.json", log)
    footprint = None if "error" in small else {
        "models": 2, "items": small_items, "peak_rss_bytes": small["memory"]["peak_host_rss_bytes"],
        "rss_before_search_bytes": small["process"]["rss_before_search_bytes"],
        "growth_bytes": small["memory"]["peak_host_rss_bytes"] - small["process"]["rss_before_search_bytes"]}
    if footprint is None:
        H.loud(f"fig16 footprint run failed: {small['error']}")
    else:
        log(f"  footprint: host memory grows by {footprint['growth_bytes'] / 2**20:.1f} MiB")
    return footprint


def _check_budgets(derived: dict[str, Any]) -> None:
    """Say loudly when the derived budgets cannot show what figure 16 is for: the offline replanning does not
    reproduce the ample run, or no budget below the ample peak splits a round."""
    if not derived["replan_matches"]:
        H.loud("fig16: offline replanning does not reproduce the ample run's planned peaks "
               f"({derived['replanned_peaks']} vs {derived['planned_peaks']}); derived budgets may be off")
    if all(p == 1 for b in derived["budgets"].values() for p in b["predicted_partitions"]):
        H.loud("fig16: no budget below the ample peak plans in this workload (the smallest feasible budget equals "
               "the peak), so no partitions happen; use more items or another zoo for figure 16")


def _fig16_row(name: str, r: dict[str, Any], ample: list[dict[str, Any]], footprint: dict[str, Any] | None,
               log: Log) -> dict[str, Any]:
    """One budget's row of figure 16 from its run ``r``: time, memory, partitions, and whether its ranking is the
    ample budget's (``ample``) and its memory within the budget (plus the footprint); logged, loud when not."""
    if "error" in r:
        H.loud(f"fig16 {name} failed: {r['error']}")
        return {"budget": name, "error": r["error"]}
    same = [x["model"] for x in r["ranking"]] == [x["model"] for x in ample]
    scores_same = all(abs(x["score"] - y["score"]) <= 1e-5 for x, y in zip(r["ranking"], ample))
    if not (same and scores_same):
        H.loud(f"fig16 {name}: ranking differs from the ample budget's")
    observed = max(x["observed_peak_bytes"] for x in r["rounds"])
    budget = r["cache_budget"]
    row = {"budget": name, "budget_bytes": budget, "time_s": r["timings_s"]["total"],
           "breakdown_s": {p: r["timings_s"][p] for p in H.PHASES},
           "peak_rss_bytes": r["memory"]["peak_host_rss_bytes"],
           "process_peak_rss_bytes": max(r["process"]["vm_hwm_bytes"], r["process"]["vm_hwm_before_search_bytes"]),
           "ru_maxrss_bytes": r["process"]["ru_maxrss_bytes"],
           "rss_before_search_bytes": r["process"]["rss_before_search_bytes"],
           "planned_peak_bytes": max(x["planned_peak_bytes"] for x in r["rounds"]),
           "observed_peak_bytes": observed, "within_budget": budget is None or observed <= budget,
           "partitions": [x["partitions"] for x in r["rounds"]], "weight_loads": r["cache"]["weight_loads"],
           "blocks_read": r["cache"]["blocks_read"], "ranking_identical": same and scores_same,
           "other_cores": r.get("cpu", {}).get("other_cores")}
    growth = row["peak_rss_bytes"] - row["rss_before_search_bytes"]
    row["growth_bytes"] = growth
    row["within_budget_plus_footprint"] = (None if budget is None or footprint is None
                                           else growth <= budget + footprint["growth_bytes"])
    if not row["within_budget"]:
        H.loud(f"fig16 {name}: observed cache peak {observed} exceeds the budget {budget}")
    if row["within_budget_plus_footprint"] is False:
        H.loud(f"fig16 {name}: host memory grew by {growth / 2**20:.1f} MiB, more than the budget "
               f"{budget / 2**20:.1f} MiB plus the footprint {footprint['growth_bytes'] / 2**20:.1f} MiB")
    log(f"  {name:<10} {row['time_s']:7.2f}s  peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB, cache peak "
        f"{observed / 2**20:.1f} MiB, partitions {row['partitions']}, ranking "
        f"{'identical' if row['ranking_identical'] else 'DIFFERENT'}")
    return row


def run_paper_scale(plan: Plan, store: Path, zoos: dict, counter: int, out: Path, log: Log) -> dict[str, Any] | None:
    """The paper-scale cell (:class:`PaperScale`): base, shift and alsatian as a fig10 cell, its order continuing the
    fig10 rotation, written under ``paper_scale/``."""
    ps = plan.paper_scale
    if ps is None:
        return None
    rs = ps.resolved_result_size(plan.settings.result_size)
    sub = replace(plan, num_models=ps.num_models, settings=replace(plan.settings, result_size=rs),
                  calibration_repeats=ps.calibration_repeats)
    need = H.min_items(ps.num_models, rs, classes=ps.arch.classes)
    tag = f"{ps.arch.key}-{ps.distribution}"
    log(f"paper-scale cell {tag}: {ps.num_models} models, {ps.arch.items} items at {ps.arch.size_label}, result size "
        f"{rs} (result size 1 needs {H.min_items(ps.num_models, 1, classes=ps.arch.classes)} items)")
    if ps.arch.items < need:
        msg = f"{ps.arch.items} items are too few for {ps.num_models} models at result size {rs} (at least {need})"
        H.loud(f"paper-scale cell: {msg}")
        return {"cell": tag, "arch": ps.arch.key, "distribution": ps.distribution, "error": msg}
    try:
        cell = run_cell(sub, store, ps.arch, ps.distribution, zoos[(ps.arch.key, ps.distribution, ps.num_models)],
                        counter, out, log, folder="paper_scale")
    except Exception as exc:  # noqa: BLE001 - recorded; the rest of the benchmark goes on
        H.loud(f"paper-scale cell {tag} failed: {type(exc).__name__}: {exc}")
        return {"cell": tag, "arch": ps.arch.key, "distribution": ps.distribution,
                "error": f"{type(exc).__name__}: {exc}"}
    cell.update(paper_scale=True, min_items_result_size_1=H.min_items(ps.num_models, 1, classes=ps.arch.classes),
                calibration_repeats=ps.calibration_repeats)
    H.write_json(out / "paper_scale" / f"{tag}.json", cell)
    return cell


def scaling_items_for(plan: Plan, n_models: int, classes: int = 10) -> int:
    """Items of a growing-models row: the plan's, raised to the fewest a search over ``n_models`` accepts
    (300 models: 9 rounds, 6,400 items)."""
    return max(plan.scaling_models_items, H.min_items(n_models, plan.settings.result_size, classes=classes))


def run_scaling(plan: Plan, store: Path, zoos: dict, out: Path, log: Log) -> dict[str, Any]:
    """Alsatian alone on growing zoos and item counts; every row measured once per page-cache state
    (``plan.scaling_page_cache``: cold, the store's block files evicted; warm, the zoo's read once), the two
    alternating in order from row to row, the page cache's state measured (mincore) right before each search."""
    arch = next((a for a in plan.archs if a.key == plan.scaling_arch), RESNET18)
    rows = ScalingRows(plan, store, zoos, out, log, arch)
    # One untimed search first (2 models of the smallest zoo, the fewest items): the first row must not pay the
    # process's one-off costs (kernel selection, first-touch of fresh memory) when scaling runs alone (--only).
    first = min(n for (key, dist, n) in zoos if key == arch.key and dist == "top_layers")
    warmup_items = H.min_items(2, plan.settings.result_size, classes=arch.classes)
    log(f"scaling: untimed warm-up search (2 models, {warmup_items} items)")
    H.run_search(store, zoos[(arch.key, "top_layers", first)]["models"][:2],
                 arch.data_kwargs(warmup_items, plan.settings.seed), "alsatian", plan.settings)
    for n in plan.scaling_models:
        items = scaling_items_for(plan, n, arch.classes)
        if items != plan.scaling_models_items:
            rows.notes.append(f"{n} models need at least {items} items ({H.num_rounds(n, plan.settings.result_size)} "
                              f"rounds, one item per class in the first chunk): that row runs on {items} items "
                              f"instead of {plan.scaling_models_items}")
        rows.measure("models", n, items)
    for items in plan.scaling_items:
        rows.measure("items", plan.num_models, items)
    scaling = {"arch": arch.key, "timm": arch.arch, "distribution": "top_layers", "image_size": arch.image_size,
               "size_label": arch.size_label, "page_cache_states": list(rows.states),
               **rows.results, "notes": rows.notes}
    H.write_json(out / "scaling" / "scaling.json", scaling)
    return scaling


@dataclass
class ScalingRows:
    """The rows of the scaling experiment as they are measured: per growing kind (``models``, ``items``) its rows,
    the notes on rows skipped or failed, and the searches already run (a row that comes up twice reuses its run)."""

    plan: Plan
    store: Path
    zoos: dict
    out: Path
    log: Log
    arch: H.Arch
    results: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"models": [], "items": []})
    notes: list[str] = field(default_factory=list)
    done: dict[tuple[int, int, str], dict[str, Any]] = field(default_factory=dict)
    measured: int = 0  # rows measured so far: their page-cache states alternate in order

    @property
    def states(self) -> tuple[str, ...]:
        return tuple(self.plan.scaling_page_cache)

    def measure(self, kind: str, n_models: int, items: int) -> None:
        """One row (``n_models`` models, ``items`` items) in every page-cache state, unless it cannot run."""
        if not self._runnable(kind, n_models, items):
            return
        zoo = self.zoos[(self.arch.key, "top_layers", n_models)]
        order = self.states if self.measured % 2 == 0 else self.states[::-1]
        self.measured += 1
        for pos, state in enumerate(order):
            key = (n_models, items, state)
            if key in self.done:
                r, source = self.done[key], "same run as above"
            else:
                r = self._search(zoo, n_models, items, state, pos, order)
                if r is None:
                    continue
                self.done[key], source = r, "run"
            self._add(kind, n_models, items, state, r, source, zoo["distinct_blocks"])

    def _runnable(self, kind: str, n_models: int, items: int) -> bool:
        """Whether the dataset has ``items`` items and they are enough for ``n_models`` models; a note if not."""
        ok, why = H.items_available(items, self.arch.dataset)
        if not ok:
            self.notes.append(why)
            self.log(f"scaling {kind}: {why}")
            return False
        need = H.min_items(n_models, self.plan.settings.result_size, classes=self.arch.classes)
        if items < need:
            note = f"{n_models} models need at least {need} items; {items} skipped"
            self.notes.append(note)
            self.log(f"scaling {kind}: {note}")
            return False
        return True

    def _search(self, zoo: dict, n_models: int, items: int, state: str, pos: int,
                order: tuple[str, ...]) -> dict[str, Any] | None:
        """Alsatian's search of one row in page-cache ``state``, written as JSON; None (and a note) if it failed."""
        try:
            pc = H.set_page_cache(self.store, zoo["models"], state)
            r = H.run_search(self.store, zoo["models"], self.arch.data_kwargs(items, self.plan.settings.seed),
                             "alsatian", self.plan.settings)
        except Exception as exc:  # noqa: BLE001 - one failed row must not lose the run
            note = f"{n_models} models, {items} items, {state}: failed: {type(exc).__name__}: {exc}"
            H.loud(f"scaling {note}")
            self.notes.append(note)
            return None
        r.update(page_cache=pc, position=pos, order=list(order))
        H.write_json(self.out / "scaling" / f"{n_models}models-{items}items-{state}.json", r)
        return r

    def _add(self, kind: str, n_models: int, items: int, state: str, r: dict[str, Any], source: str,
             blocks: int) -> None:
        """The row of search ``r`` (over a zoo of ``blocks`` distinct blocks), kept and logged."""
        pc = r["page_cache"]
        row = {"models": n_models, "items": items, "page_cache": state,
               "resident_fraction": pc.get("resident_fraction"), "block_bytes": pc.get("bytes"),
               "distinct_blocks": blocks, "block_items": blocks * items,
               "time_s": r["timings_s"]["total"],
               "us_per_block_item": 1e6 * r["timings_s"]["total"] / (blocks * items),
               "breakdown_s": {p: r["timings_s"][p] for p in H.PHASES}, "rounds": len(r["rounds"]),
               "blocks_read": r["cache"]["blocks_read"],
               "peak_rss_bytes": r["memory"]["peak_host_rss_bytes"],
               "rss_before_search_bytes": r.get("rss_before_search_bytes"),
               "position": r.get("position"), "other_cores": r.get("cpu", {}).get("other_cores"),
               "source": source}
        self.results[kind].append(row)
        res = "?" if row["resident_fraction"] is None else f"{100 * row['resident_fraction']:.0f}%"
        self.log(f"scaling {kind}: {n_models} models, {items} items, {state} ({res} of {blocks} blocks' "
                 f"{(row['block_bytes'] or 0) / 2**20:.0f} MiB resident): {row['time_s']:.2f}s, "
                 f"{row['us_per_block_item']:.2f} us per block-item, peak RSS {row['peak_rss_bytes'] / 2**20:.0f} "
                 f"MiB ({source})")


# -------------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    plan = preset(args.mode)
    _apply_options(plan, args)
    skip = _experiments(plan, args)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or BENCH / "results" / f"{plan.mode}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    log = Log()
    meter = H.CpuMeter()
    meta = _start(plan, args, argv, out, log)

    zoos = build_zoos(plan, args.store, log)
    storage = sorted(({k: v for k, v in z.items() if k != "models"} for z in zoos.values()),
                     key=lambda z: (z["key"], z["distribution"], z["num_models"]))
    H.write_json(out / "storage.json", storage)
    if args.build_only:
        log(f"--build-only: {len(zoos)} zoos ready in {args.store}; nothing measured")
        return
    cells = [] if "fig10" in skip else run_fig10(plan, args.store, zoos, out, log)
    fig16 = run_fig16(plan, args.store, zoos, out, log)
    paper = run_paper_scale(plan, args.store, zoos, sum(plan.repeats for c in cells), out, log)
    scaling = run_scaling(plan, args.store, zoos, out, log) if (plan.scaling_models or plan.scaling_items) else None

    _finish(meta, meter, log)
    summary = {"meta": meta, "cells": cells, "fig16": fig16, "paper_scale": paper, "scaling": scaling,
               "storage": storage,
               "targets": {"speedup": TARGETS, "bound": BOUND_TARGET}}
    H.write_json(out / "summary.json", summary)
    H.write_json(out / "meta.json", meta)
    _write_report(summary, out, args.publish if args.publish is not None else plan.mode == "full", log,
                  meta["wall_s"])
    _check_results(cells, paper, fig16)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<mode>-<timestamp>)")
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("ALSATIAN_BENCH_STORE",
                                                                          H.ROOT / ".alsatian" / "bench-store")),
                        help="block store for the benchmark zoos (built once, reused; default .alsatian/bench-store)")
    parser.add_argument("--archs", help="comma-separated subset of the mode's architectures (resnet18, resnet152, "
                                        "effnet_lite0, vit_tiny, minilm, bert_base)")
    parser.add_argument("--distributions", help="comma-separated subset of top_layers, top25, top50")
    parser.add_argument("--items", type=int, help="items of every fig10 cell (default: per architecture)")
    parser.add_argument("--models", type=int, help="models per zoo (default 35, as in the paper)")
    parser.add_argument("--scaling-models", help="comma-separated model counts of the scaling runs")
    parser.add_argument("--scaling-items", help="comma-separated item counts of the scaling runs")
    parser.add_argument("--scaling-models-items", type=int, help="items of the growing-models scaling rows (raised "
                                                                 "where a model count needs more)")
    parser.add_argument("--repeats", type=int, help="runs per strategy and cell (median reported)")
    parser.add_argument("--epochs", type=int, help="linear-probe epochs (same for all strategies; default 100)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core); on a "
                                                    "busy machine 1 avoids OpenMP threads waiting for each other")
    parser.add_argument("--skip", default="", help="comma-separated experiments to skip: fig10, fig16, "
                                                   "paper_scale, scaling")
    parser.add_argument("--only", help="comma-separated experiments to run, the others skipped (fig10, fig16, "
                                       "paper_scale, scaling); paper_scale runs in quick mode too when named here")
    parser.add_argument("--paper-items", type=int, help=f"items of the paper-scale cell (default "
                                                        f"{PAPER_RESNET18.items})")
    parser.add_argument("--paper-models", type=int, help="models of the paper-scale cell (default 35)")
    parser.add_argument("--paper-result-size", type=int, help="result size of the paper-scale cell (default: the "
                                                              "smallest its items allow)")
    parser.add_argument("--scaling-cache", help="comma-separated page-cache states of every scaling row: cold "
                                                "(block files evicted), warm (read once before); default cold,warm")
    parser.add_argument("--build-only", action="store_true",
                        help="build (or check) every zoo the plan needs and stop: nothing is timed, so a later run "
                             "on a quiet machine starts straight with its measurements")
    parser.add_argument("--publish", action=argparse.BooleanOptionalAction, default=None,
                        help="write BENCHMARKS.md at the repository root (default: yes for full, no for quick)")
    return parser


def _apply_options(plan: Plan, args: argparse.Namespace) -> None:
    """The command line's choices of architectures, distributions, sizes, repeats and settings, into ``plan``."""
    if args.archs:
        keep = args.archs.split(",")
        plan.archs = [a for a in plan.archs if a.key in keep] + [a for a in ALL_ARCHS
                                                                 if a.key in keep and a.key not in
                                                                 {b.key for b in plan.archs}]
        if plan.fig16 and plan.fig16[0] not in {a.key for a in plan.archs}:
            plan.fig16 = (plan.archs[0].key, plan.fig16[1]) if plan.archs else None
    if args.distributions:
        plan.distributions = args.distributions.split(",")
    if args.items:
        plan.archs = [replace(a, items=args.items) for a in plan.archs]
    if args.models:
        plan.num_models = args.models
    if args.scaling_models:
        plan.scaling_models = [int(x) for x in args.scaling_models.split(",")]
    if args.scaling_items:
        plan.scaling_items = [int(x) for x in args.scaling_items.split(",")]
    if args.scaling_models_items:
        plan.scaling_models_items = args.scaling_models_items
    if args.repeats:
        plan.repeats = args.repeats
    if args.epochs:
        plan.settings.epochs = args.epochs
    plan.settings.device = args.device
    plan.settings.threads = args.threads
    plan.settings.apply_threads()


def _experiments(plan: Plan, args: argparse.Namespace) -> set[str]:
    """The experiments skipped (``--skip``, ``--only``), taken out of ``plan`` with the paper-scale and scaling
    options applied; SystemExit for an unknown experiment or an option the plan cannot run."""
    skip = set(filter(None, args.skip.split(",")))
    if args.only:
        only = set(filter(None, args.only.split(",")))
        if only - set(EXPERIMENTS):
            raise SystemExit(f"--only: unknown experiment(s) {', '.join(sorted(only - set(EXPERIMENTS)))}; use "
                             f"{', '.join(EXPERIMENTS)}")
        skip |= set(EXPERIMENTS) - only
        if "paper_scale" in only and plan.paper_scale is None:
            plan.paper_scale = PaperScale(PAPER_RESNET18)
    if skip - set(EXPERIMENTS):
        raise SystemExit(f"--skip: unknown experiment(s) {', '.join(sorted(skip - set(EXPERIMENTS)))}")
    if plan.paper_scale is not None:
        if args.paper_items:
            plan.paper_scale.arch = replace(plan.paper_scale.arch, items=args.paper_items)
        if args.paper_models:
            plan.paper_scale.num_models = args.paper_models
        if args.paper_result_size:
            plan.paper_scale.result_size = args.paper_result_size
    if args.scaling_cache:
        plan.scaling_page_cache = tuple(filter(None, args.scaling_cache.split(",")))
        if set(plan.scaling_page_cache) - {"cold", "warm"} or not plan.scaling_page_cache:
            raise SystemExit("--scaling-cache: use cold, warm or cold,warm")
    _drop_skipped(plan, skip)
    return skip


def _drop_skipped(plan: Plan, skip: set[str]) -> None:
    """Take the skipped experiments out of ``plan`` (fig10 skipped: only fig16's cell stays); SystemExit when an
    architecture has too few items for the plan's models."""
    if "paper_scale" in skip:
        plan.paper_scale = None
    if "fig16" in skip:
        plan.fig16 = None
    if "scaling" in skip:
        plan.scaling_models, plan.scaling_items = [], []
    if "fig10" in skip:
        plan.distributions = [d for d in plan.distributions if plan.fig16 and d == plan.fig16[1]]
        plan.archs = [a for a in plan.archs if plan.fig16 and a.key == plan.fig16[0]]
    for a in plan.archs:
        if a.items < H.min_items(plan.num_models, classes=a.classes):
            raise SystemExit(f"{a.key}: {a.items} items are too few for {plan.num_models} models "
                             f"(at least {H.min_items(plan.num_models, classes=a.classes)})")


def _start(plan: Plan, args: argparse.Namespace, argv: list[str] | None, out: Path, log: Log) -> dict[str, Any]:
    """The run's ``meta.json`` (command, machine, plan, other processes' load right before it), written and
    logged; loud when the machine is busy."""
    command = "python bench/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    meta = {"mode": plan.mode, "command": command.strip(), "started": dt.datetime.now().astimezone().isoformat(
        timespec="seconds"), "machine": H.machine(), "store": str(args.store), "results": str(out),
        "plan": _plan_record(plan)}
    m = meta["machine"]
    log(f"{plan.mode} benchmark -> {out}")
    log(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"gpu {m['gpu']}, load {m['loadavg_start'][0]:.2f}")
    probe = H.CpuMeter()
    time.sleep(1.0)
    meta["cpu_before"] = probe.read()
    log(f"other processes use {meta['cpu_before']['other_cores']:.2f} cores right now")
    if meta["cpu_before"]["other_cores"] > 0.25:
        H.loud(f"the machine is busy (other processes use {meta['cpu_before']['other_cores']:.2f} of "
               f"{m['cores']} cores): "
               "timings will be noisy (two OpenMP threads on two busy cores wait for each other; --threads 1 "
               "is more robust there)")
    H.write_json(out / "meta.json", meta)
    return meta


def _plan_record(plan: Plan) -> dict[str, Any]:
    """The plan as ``meta.json`` records it."""
    return {"archs": [asdict(a) for a in plan.archs], "distributions": plan.distributions,
            "num_models": plan.num_models, "repeats": plan.repeats, "settings": asdict(plan.settings),
            "fig16": plan.fig16, "scaling_arch": plan.scaling_arch, "scaling_models": plan.scaling_models,
            "scaling_models_items": plan.scaling_models_items, "scaling_items": plan.scaling_items,
            "calibration_repeats": plan.calibration_repeats, "calibration_warmup": H.CALIBRATION_WARMUP,
            "paper_scale": None if plan.paper_scale is None else {
                **asdict(plan.paper_scale),
                "resolved_result_size": plan.paper_scale.resolved_result_size(plan.settings.result_size)},
            "scaling_page_cache": list(plan.scaling_page_cache)}


def _finish(meta: dict[str, Any], meter: H.CpuMeter, log: Log) -> None:
    """Record in ``meta`` when the run finished, its wall time, the load average and the other processes' cores
    during it; loud when they made the timings noisy."""
    meta["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    meta["wall_s"] = time.perf_counter() - log.t0
    meta["machine"]["loadavg_end"] = list(os.getloadavg())
    meta["cpu"] = meter.read()
    log(f"other processes used {meta['cpu']['other_cores']:.2f} cores on average during the run "
        f"(steal {meta['cpu']['steal_cores']:.2f})")
    if meta["cpu"]["other_cores"] > 0.25:
        H.loud(f"other processes used {meta['cpu']['other_cores']:.2f} of {meta['machine']['cores']} cores on "
               "average during this run: timings are noisy")


def _write_report(summary: dict[str, Any], out: Path, publish: bool, log: Log, elapsed: float) -> None:
    """The plots and ``BENCHMARKS.md`` in the results folder (and at the repository root when ``publish``)."""
    import plots
    import report
    made = plots.make_all(summary, out)
    why = "matplotlib missing" if importlib.util.find_spec("matplotlib") is None else "none for these experiments"
    log(f"plots: {', '.join(p.name for p in made) or f'none ({why})'}")
    (out / "BENCHMARKS.md").write_text(report.render(summary, out, out))
    if publish:
        (H.ROOT / "BENCHMARKS.md").write_text(report.render(summary, out, H.ROOT))
    log(f"report: {out / 'BENCHMARKS.md'}{' and BENCHMARKS.md' if publish else ''}; "
        f"total {elapsed:.0f}s")


def _check_results(cells: list[dict[str, Any]], paper: dict[str, Any] | None, fig16: dict[str, Any] | None) -> None:
    """Say loudly which cells are not exact (or failed) and where base's winner is not alsatian's."""
    checked = cells + ([paper] if paper else [])
    inexact = [c["cell"] for c in checked if "error" in c or not c.get("exact_ok")]
    winners = [c["cell"] for c in checked if "error" not in c and c.get("exact_ok") and not c.get("winner_ok")]
    if inexact or (fig16 and not fig16.get("ok", True)):
        H.loud(f"CORRECTNESS checks failed (see the cells' JSON and BENCHMARKS.md): {', '.join(inexact)}"
               f"{' fig16' if fig16 and not fig16.get('ok', True) else ''}")
    if winners:
        H.loud(f"base's winner score differs from alsatian's final score (successive halving dropped base's winner; "
               f"rankings otherwise exact) in: {', '.join(winners)}")


if __name__ == "__main__":
    main()
