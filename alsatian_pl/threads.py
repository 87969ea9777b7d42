"""CPU threads: how many torch intra-op threads a search uses (``search.threads``) and how idle ones wait.

torch's default is one OpenMP thread per core it sees, whatever else runs there. OpenMP threads run every operator
in lockstep, and by default a thread that finished its share spins before it sleeps: when other processes hold the
cores, each operator waits for its slowest (descheduled) thread while the others burn the CPU it needs. Measured on
a 2-core machine with 8 runnable processes, the default took 13x longer than one thread for the same search
(docs/guide/performance.md). Two settings keep a search's speed in proportion to the CPU it gets:

- the wait policy: ``OMP_WAIT_POLICY=PASSIVE`` (GNU OpenMP, which torch's CPU build uses, and Intel's), an idle
  thread sleeps at once. OpenMP reads it once, when torch loads, so ``import alsatian_pl`` sets it (unless it is set
  already) when torch is not imported yet; :func:`describe` records what the search ran with;
- the thread count, ``search.threads``: ``auto`` (the default) sizes it to the cores this process may use (its CPU
  affinity, the cgroup's CPU quota) shared by the ranks of a distributed search on this machine; a number sets it;
  ``null`` leaves torch's own choice. :func:`using` applies it for one search and restores the previous count after.

Stdlib only at import: the package imports it before torch.
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError

__all__ = ["AUTO", "check_threads", "describe", "resolve", "usable_cpus", "using", "wait_passively"]

AUTO = "auto"
WAIT_POLICY = "OMP_WAIT_POLICY"
_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def wait_passively() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set, while torch is not imported yet (OpenMP reads it when torch
    loads); whether the process's torch will wait passively."""
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")
    return os.environ.get(WAIT_POLICY, "").upper() == "PASSIVE"


def cgroup_cpus(v2: Path = _CGROUP_V2, v1: tuple[Path, Path] = _CGROUP_V1) -> float | None:
    """The CPUs the cgroup's quota allows (``cpu.max``: ``200000 100000`` is 2.0; cgroup v1's cfs quota and period),
    or None when there is no quota or it cannot be read."""
    try:
        quota, period = v2.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = v1[0].read_text().strip(), v1[1].read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        return int(quota) / int(period) if int(quota) > 0 and int(period) > 0 else None
    except ValueError:
        return None


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity, capped by the cgroup's quota (rounded up), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpus()
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def check_threads(value: Any) -> None:
    """ConfigError unless ``value`` is ``auto``, a whole number of at least 1, or None."""
    if value is None or value == AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"search.threads must be auto (the cores this process may use, shared by the ranks on this "
                          f"machine), a whole number of at least 1, or null (torch's default); got {value!r}")


def resolve(value: Any, ranks: int = 1) -> int | None:
    """The intra-op threads for ``search.threads=value`` with ``ranks`` processes of the search on this machine
    (None: leave torch's count)."""
    check_threads(value)
    if value == AUTO:
        return max(1, usable_cpus() // max(1, ranks))
    return value


@contextmanager
def using(value: Any, ranks: int = 1) -> Iterator[int]:
    """torch's intra-op threads set from ``search.threads`` inside (restored after); yields the count in use."""
    import torch

    before, wanted = torch.get_num_threads(), resolve(value, ranks)
    if wanted is not None and wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def describe(value: Any, used: int, ranks: int = 1) -> dict[str, Any]:
    """What results.json records: the setting, the threads used, the cores seen, the ranks here, the wait policy."""
    return {"setting": value, "used": used, "usable_cpus": usable_cpus(), "ranks_here": ranks,
            "wait_policy": os.environ.get(WAIT_POLICY, "unset (OpenMP spins before it sleeps)")}
