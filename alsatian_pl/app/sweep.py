"""Sweep summary: after ``python search.py -m search.cache_budget=256MB,1GB,8GB``, compare the jobs.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in conf/search.yaml): when the multirun ends it reads
every job's ``results.json`` in the sweep folder and writes ``summary.json`` and ``summary.png`` there, and prints
time, peak memory and ranking per job. A job that failed (its folder holds ``failed.json``, written by the entry
point's error boundary, or a ``results.json`` that cannot be read) is listed with its error; the other jobs are
summarised as usual. A cache budget changes how the search runs, never what it finds: when the rankings differ, the
summary says so loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich import box
from rich.console import Console
from rich.table import Table

from ..errors import CorruptFileError
from ..io import read_json, write_json
from ..units import format_bytes

__all__ = ["SweepSummary", "summarize", "summarize_sweep", "print_summary", "draw_summary"]


def _overrides(job_dir: Path, report: dict[str, Any]) -> list[str]:
    """The job's command-line overrides (Hydra's .hydra/overrides.yaml), else its cache budget."""
    path = job_dir / ".hydra" / "overrides.yaml"
    try:
        import yaml

        return [str(i) for i in yaml.safe_load(path.read_text()) or []]
    except (OSError, ValueError, TypeError, yaml.YAMLError):
        return [f"search.cache_budget={report.get('config', {}).get('search', {}).get('cache_budget')}"]


def _job(path: Path) -> dict[str, Any]:
    """One job's row: its overrides, time, peak memory, planned peak, partitions and ranking, from its results.json;
    CorruptFileError when that file is damaged or lacks a field."""
    r = read_json(path, "the job's results", "run that job again")
    try:
        return _row(path, r)
    except (KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"the job's results {path} lack a field ({exc!r}); run that job again") from None


def _row(path: Path, r: dict[str, Any]) -> dict[str, Any]:
    rounds = r.get("rounds", [])
    return {
        "job": path.parent.name, "overrides": _overrides(path.parent, r), "results": str(path),
        "cache_budget": r.get("config", {}).get("search", {}).get("cache_budget"),
        "total_s": r["timings_s"]["total"], "timings_s": r["timings_s"],
        "peak_cache_bytes": r["memory"]["peak_cache_bytes"],
        "planned_peak_bytes": max((x["planned_peak_bytes"] for x in rounds), default=0),
        "partitions": max((x["partitions"] for x in rounds), default=1),
        "peak_host_rss_bytes": r["memory"]["peak_host_rss_bytes"],
        "peak_accelerator_bytes": r["memory"]["peak_accelerator_bytes"],
        "ranking": [m["model"] for m in r["ranking"]],
        "plan": [[x.get("partitions"), x.get("inference_steps"), x.get("items")] for x in rounds],
    }


def timing_note(jobs: list[dict[str, Any]], ratio: float = 1.2) -> str | None:
    """A line when jobs that ran identical plans (partitions, inference steps, items per round) differ in time by
    ``ratio`` or more: the difference is the machine's load, not what the sweep varied."""
    by_plan: dict[str, list[dict[str, Any]]] = {}
    for j in jobs:
        by_plan.setdefault(repr(j.get("plan")), []).append(j)
    for same in by_plan.values():
        fast, slow = min(same, key=lambda j: j["total_s"]), max(same, key=lambda j: j["total_s"])
        times = slow["total_s"] / fast["total_s"] if fast["total_s"] > 0 else 1.0
        if len(same) > 1 and times >= ratio:
            return (f"jobs {fast['job']} and {slow['job']} ran identical plans yet differ {times:.1f}x in time: "
                    "that is the machine's load, not what the sweep varied")
    return None


def _failed(path: Path) -> dict[str, Any]:
    """A failed job's entry (job, overrides, error) from the failed.json the error boundary wrote into its folder."""
    try:
        rec = read_json(path, "the job's failure record", "")
        return {"job": path.parent.name, "overrides": [str(o) for o in rec["overrides"]], "error": str(rec["error"])}
    except (CorruptFileError, KeyError, TypeError) as exc:
        return {"job": path.parent.name, "overrides": [], "error": f"failed (its failure record is unreadable: {exc})"}


def summarize(results: list[str | Path], out_dir: str | Path | None = None, console: Console | None = None,
              failed: list[str | Path] = ()) -> dict:
    """Compare the searches in ``results`` (results.json paths, in job order): one row per job, plus
    ``rankings_identical``; ``failed`` (failed.json paths) and jobs whose results cannot be read are listed in
    ``failed_jobs`` with their error. Writes ``summary.json``/``summary.png`` into ``out_dir`` (if given, atomically)
    and prints the table."""
    jobs, failures = [], [_failed(Path(p)) for p in failed]
    for path in map(Path, results):
        try:
            jobs.append(_job(path))
        except CorruptFileError as exc:
            failures.append({"job": path.parent.name, "overrides": [], "error": str(exc)})
    if not jobs and not failures:
        raise FileNotFoundError("no results.json found: did the sweep's jobs fail?")
    everyone = jobs + failures
    common = set.intersection(*(set(j["overrides"]) for j in everyone)) if len(everyone) > 1 else set()
    for j in everyone:  # label a job by what the sweep varied
        j["label"] = " ".join(o for o in j["overrides"] if o not in common) or "-"
    reference = jobs[0]["ranking"] if jobs else []
    for j in jobs:  # 1-based position of the first difference from the reference ranking, None when identical
        pos = next((i for i, (a, b) in enumerate(zip(j["ranking"], reference)) if a != b), None)
        j["first_difference"] = None if j["ranking"] == reference else 1 + (len(reference) if pos is None else pos)
    differ = [j["job"] for j in jobs if j["first_difference"] is not None]
    summary = {"jobs": jobs, "rankings_identical": not differ, "differing_jobs": differ,
               "reference_job": jobs[0]["job"] if jobs else None, "failed_jobs": failures}
    console = console or Console()
    print_summary(summary, console)
    if out_dir is not None:
        out = Path(out_dir)
        write_json(out / "summary.json", summary)
        draw_summary(summary, out / "summary.png")
        console.print(f"summary: {out / 'summary.json'}, {out / 'summary.png'}")
    return summary


def print_summary(summary: dict, console: Console) -> None:
    """The summary's table (one row per job), the winner(s) and the verdict on the rankings, loud when they differ."""
    jobs, differ = summary["jobs"], summary["differing_jobs"]
    gpu = any(j["peak_accelerator_bytes"] for j in jobs)
    table = Table(title=f"sweep summary ({len(jobs)} jobs)", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    for col in ("job", "swept", "time s", "peak cache", "planned", "parts", "RSS*", *(["GPU*"] if gpu else []),
                "ranking"):
        table.add_column(col, justify="left" if col in ("swept", "ranking") else "right", no_wrap=True)
    for j in jobs:
        same = "same" if j["first_difference"] is None else f"[bold red]DIFFERS at #{j['first_difference']}[/]"
        swept = " ".join(f"{k.rpartition('.')[2]}={v}" for k, _, v in (o.partition("=") for o in j["label"].split()))
        table.add_row(j["job"], swept, f"{j['total_s']:.2f}", format_bytes(j["peak_cache_bytes"]),
                      format_bytes(j["planned_peak_bytes"]), str(j["partitions"]),
                      format_bytes(j["peak_host_rss_bytes"]),
                      *([format_bytes(j["peak_accelerator_bytes"])] if gpu else []), same)
    console.print(table)
    for f in summary.get("failed_jobs", []):
        console.print(f"[bold red]job {f['job']} failed[/] ({f['label']}): {f['error']}", markup=True,
                      highlight=False)
    if not jobs:
        console.print(f"[bold red]all {len(summary['failed_jobs'])} jobs failed[/]")
        return
    console.print(f"winner: {', '.join(sorted({j['ranking'][0] for j in jobs if j['ranking']}))}")
    console.print("* peak RSS (and GPU) are per process: jobs run one after another in one process report the "
                  "running maximum")
    note = timing_note(jobs)
    if note:
        console.print(f"note: {note}", highlight=False)
    if differ:
        console.print(f"[bold red]WARNING: RANKINGS DIFFER: job(s) {', '.join(differ)} rank the models differently "
                      f"from job {jobs[0]['job']}. A cache budget must never change the ranking: if the jobs differ "
                      "only in search.cache_budget, this is a bug; please report it with this sweep's results.json "
                      "files.[/]")
    else:
        console.print(f"[bold green]rankings identical in all {len(jobs)} jobs[/]")


def summarize_sweep(sweep_dir: str | Path, console: Console | None = None) -> dict:
    """:func:`summarize` over every ``<sweep_dir>/<job>/results.json`` (a job whose folder holds ``failed.json``
    counts as failed), in job number order; writes into sweep_dir."""
    sweep_dir = Path(sweep_dir)
    failed = sorted(sweep_dir.glob("*/failed.json"), key=_job_order)
    done = {p.parent for p in failed}
    return summarize(sorted((p for p in sweep_dir.glob("*/results.json") if p.parent not in done), key=_job_order),
                     sweep_dir, console, failed=failed)


def _job_order(path: Path) -> tuple[bool, int, str]:
    """Job folders by number (0, 1, 2, ..., 10), others after them by name."""
    name = path.parent.name
    return not name.isdigit(), int(name) if name.isdigit() else 0, name


def draw_summary(summary: dict, path: str | Path) -> Path:
    """A PNG with one bar chart per measure (total time, observed peak cache bytes), one bar per job, and the
    verdict on the rankings (and any failed jobs) as the title (matplotlib, written atomically)."""
    from .plots import _pyplot, _save

    plt = _pyplot()
    jobs = summary["jobs"]
    panels = [("total time (s)", [j["total_s"] for j in jobs], lambda v: f"{v:.2f} s"),
              ("peak cache", [j["peak_cache_bytes"] for j in jobs], format_bytes)]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7.0, 1.6 * len(jobs) * len(panels) + 2), 4.2))
    labels = [f"{j['label'].rpartition('=')[2][:12]}\njob {j['job']}" for j in jobs]
    for ax, (name, values, fmt) in zip(axes, panels):
        bars = ax.bar(range(len(jobs)), values, color="#4670b4")
        ax.bar_label(bars, [fmt(v) for v in values], fontsize=8)
        ax.set_xticks(range(len(jobs)), labels, fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_yticks([])
        ax.spines[["top", "right", "left"]].set_visible(False)
    ok, failed = summary["rankings_identical"], summary.get("failed_jobs", [])
    title = "rankings identical in all jobs" if ok else f"RANKINGS DIFFER: jobs {', '.join(summary['differing_jobs'])}"
    title += f"; {len(failed)} job(s) failed: {', '.join(f['job'] for f in failed)}" if failed else ""
    fig.suptitle(title, color="green" if ok and not failed else "#c80000", fontsize=11)
    note = timing_note(jobs)
    if note:
        axes[0].set_xlabel(note.replace(" yet ", "\nyet ").replace(": ", ":\n", 1), fontsize=7, color="#555555")
    return _save(fig, plt, path)


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, :func:`summarize_sweep` over the sweep folder (single runs: no-op)."""

    def __init__(self) -> None:
        self.sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = str(config.hydra.sweep.dir)  # resolved once: ${now:...} must not be re-evaluated at the end

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(self.sweep_dir or str(config.hydra.sweep.dir))
        if not any(sweep_dir.glob("*/results.json")) and not any(sweep_dir.glob("*/failed.json")):
            print(f"sweep summary: no results.json under {sweep_dir} (did the jobs fail?)")
            return
        summarize_sweep(sweep_dir)
