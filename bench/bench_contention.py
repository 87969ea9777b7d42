"""A search on a shared machine, and the whole process around it (issue 31, goals of items 4 and 5).

    python bench/bench_contention.py --repeats 3 --busy 4

Runs ``python search.py`` (the warm default search, or ``--overrides``) quiet and beside ``--busy`` processes that
spin one core each, the two arms alternated and their order rotated; once first, untimed, to build the zoo. For each
run: the search's time (results.json ``timings_s.total``), the process's wall time and CPU time. A search with ``t``
threads among ``busy`` spinning processes on ``C`` cores gets, from a fair scheduler, ``t * C / (t + busy)`` cores
where quiet it had ``min(t, C)``: the *fair factor* ``min(t, C) * (t + busy) / (t * C)`` is how much longer it takes
with that share. The goal: loaded search time at most 1.5 x quiet x fair factor, and the quiet whole-process wall at
most 1.5 x its search time. ``--store-ls STORE`` also times ``alsatian store ls`` on a store (median of 5).
Writes ``bench/results/contention-<timestamp>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spinners(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` to completion (failing loudly); its wall seconds and CPU seconds (user + system, its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def one_search(out: Path, overrides: list[str], busy: int) -> dict:
    """One ``python search.py`` into ``out``, beside ``busy`` spinning processes."""
    spin = spinners(busy)
    try:
        wall, cpu = timed([sys.executable, "search.py", f"hydra.run.dir={out}", *overrides])
    finally:
        for p in spin:
            p.kill()
            p.wait()
    result = json.loads((out / "results.json").read_text())
    return {"busy": busy, "wall_s": wall, "cpu_s": cpu, "search_s": result["timings_s"]["total"],
            "threads": result["threads"]["used"], "ranking": [r["model"] for r in result["ranking"]]}


def arms(repeats: int, busy: int) -> list[int]:
    """The busy-process count of each timed run: quiet and loaded alternated, the order rotated every pair."""
    order = []
    for r in range(repeats):
        order += [0, busy] if r % 2 == 0 else [busy, 0]
    return order


def summarise(runs: list[dict], busy: int, cores: int) -> dict:
    """Medians per arm, the fair factor and the two goals' ratios, each the median of per-pair (per-run) ratios:
    ``runs`` in the order they ran, one quiet and one loaded run per repetition (``arms``)."""
    med = {arm: {k: statistics.median(r[k] for r in runs if r["busy"] == arm) for k in ("wall_s", "cpu_s", "search_s")}
           for arm in (0, busy)}
    t = runs[0]["threads"]
    fair = min(t, cores) * (t + busy) / (t * cores)
    pairs = [(a, b) if a["busy"] == 0 else (b, a) for a, b in zip(runs[::2], runs[1::2])]
    quiet = [r for r in runs if r["busy"] == 0]
    return {"quiet": med[0], "loaded": med[busy], "threads": t, "cores": cores, "fair_factor": fair,
            "loaded_over_fair": statistics.median(lo["search_s"] / (q["search_s"] * fair) for q, lo in pairs),
            "quiet_wall_over_search": statistics.median(r["wall_s"] / r["search_s"] for r in quiet),
            "same_ranking": len({tuple(r["ranking"]) for r in runs}) == 1}


def store_ls(store: str, repeats: int = 5) -> float:
    """Median wall seconds of ``alsatian store ls`` on ``store``."""
    exe = str(Path(sys.executable).with_name("alsatian"))
    return statistics.median(timed([exe, "store", "--root", store, "ls"])[0] for _ in range(repeats))


def table(s: dict, busy: int) -> str:
    q, lo = s["quiet"], s["loaded"]
    return "\n".join([
        "| arm | search s | whole process wall s | process CPU s |", "|---|---:|---:|---:|",
        f"| quiet | {q['search_s']:.2f} | {q['wall_s']:.2f} | {q['cpu_s']:.2f} |",
        f"| beside {busy} spinning processes | {lo['search_s']:.2f} | {lo['wall_s']:.2f} | {lo['cpu_s']:.2f} |", "",
        f"threads {s['threads']} on {s['cores']} cores: fair factor {s['fair_factor']:.2f}; loaded search / (quiet x "
        f"fair factor) = {s['loaded_over_fair']:.2f} (goal <= 1.5); quiet wall / search = "
        f"{s['quiet_wall_over_search']:.2f} (goal <= 1.5); same ranking in every run: {s['same_ranking']}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="pairs of runs (quiet, loaded)")
    ap.add_argument("--busy", type=int, default=4, help="spinning processes beside the loaded arm")
    ap.add_argument("--overrides", nargs="*", default=[], help="search.py overrides, e.g. search=shift")
    ap.add_argument("--store-ls", default=None, help="also time `alsatian store ls` on this store")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="alsatian-contention-") as tmp:
        one_search(Path(tmp, "warm-up"), args.overrides, 0)  # builds the zoo and warms the page cache
        runs = [one_search(Path(tmp, f"run{i}"), args.overrides, b) for i, b in enumerate(arms(args.repeats, args.busy))]
    summary = summarise(runs, args.busy, cores)
    if args.store_ls:
        summary["store_ls_s"] = store_ls(args.store_ls)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"contention-{stamp}.json"
    out.write_text(json.dumps({"command": sys.argv, "load_before": os.getloadavg(), "runs": runs,
                               "summary": summary}, indent=1))
    print(table(summary, args.busy))
    if args.store_ls:
        print(f"`alsatian store --root {args.store_ls} ls`: {summary['store_ls_s']:.2f} s (median of 5; goal < 0.5 s)")
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
