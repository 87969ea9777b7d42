"""Distributed search (paper §6.6): task-tree subtrees across processes, on torch.distributed through Lightning
Fabric. Each rank plans and runs its own subtrees under its own budget, keeps its models' features and trains their
probes; per round only scores and round statistics are all-gathered, so every rank prunes identically, and when a
rebalancing moves subtrees (:mod:`alsatian_pl.halving.rebalance`) their features go point to point (:meth:`Group.exchange`).

:class:`Group` is the communicator a search uses; a single process gets :data:`SINGLE` (no collectives). Collectives
run with a bounded timeout, and on gloo a monitored barrier first names the ranks that did not arrive.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import AlsatianError, ConfigError

__all__ = ["COLLECTIVE_TIMEOUT_S", "DistributedError", "Group", "SINGLE", "fabric_group", "launch", "launch_search",
           "rank_device"]

COLLECTIVE_TIMEOUT_S = 300.0  # a rank that does not reach a collective within this many seconds stops the search


class DistributedError(AlsatianError):
    """A rank died, hung or failed: the search stopped, and no results were written."""


class Group:
    """The ranks of one search: ``rank``, ``world_size`` and an object all-gather (identity in one process)."""

    def __init__(self, rank: int = 0, world_size: int = 1, timeout_s: float = COLLECTIVE_TIMEOUT_S):
        self.rank, self.world_size, self.timeout_s = rank, world_size, timeout_s
        self.local_size = world_size  # the ranks on this machine (launch sets it: devices per node)
        self.bytes_sent = 0  # pickled bytes this rank contributed to all-gathers, and tensor bytes it sent (exchange)
        self.collectives = 0

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order; DistributedError naming the missing ranks if one does not answer."""
        if self.world_size == 1:
            return [obj]
        import pickle

        import torch.distributed as dist

        self.bytes_sent += len(pickle.dumps(obj))
        self.collectives += 1
        timeout, started = _dt.timedelta(seconds=self.timeout_s), time.monotonic()
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timeout, wait_all_ranks=True)
            out: list[Any] = [None] * self.world_size
            dist.all_gather_object(out, obj)
        except RuntimeError as exc:
            raise self._failed(exc, time.monotonic() - started) from None
        return out

    def exchange(self, sends: list[tuple[int, int, torch.Tensor]], recvs: list[tuple[int, int, torch.Tensor]]) -> None:
        """Point-to-point tensors: each ``(peer, tag, tensor)`` of ``sends`` goes to ``peer``, each of ``recvs`` is
        filled from ``peer`` (the peers post the matching calls); DistributedError if a peer does not answer.

        On NCCL the calls go out as one batch (``batch_isend_irecv``): NCCL ignores tags and runs a pair of ranks'
        point-to-point calls in the order posted on one stream, so two ranks that both send first and receive
        second would each wait for the other's receive; batched, NCCL matches them as a group."""
        if not sends and not recvs:
            return
        import torch.distributed as dist

        started = time.monotonic()
        try:
            if dist.get_backend() == "nccl":
                ops = [dist.P2POp(dist.isend, t.contiguous(), peer, tag=tag) for peer, tag, t in sends]
                works = dist.batch_isend_irecv(ops + [dist.P2POp(dist.irecv, t, peer, tag=tag)
                                                      for peer, tag, t in recvs])
            else:
                works = [dist.isend(t.contiguous(), peer, tag=tag) for peer, tag, t in sends]
                works += [dist.irecv(t, peer, tag=tag) for peer, tag, t in recvs]
            for work in works:
                work.wait(timeout=_dt.timedelta(seconds=self.timeout_s))
        except RuntimeError as exc:
            raise self._failed(exc, time.monotonic() - started) from None
        self.bytes_sent += sum(t.numel() * t.element_size() for _, _, t in sends)
        self.collectives += 1

    def _failed(self, exc: BaseException, waited_s: float) -> DistributedError:
        """The one error of a collective that not every rank reached: a rank that went away (its connection closed
        long before the timeout: interrupted, or stopped by an error it reports itself), or one that hung."""
        rerun = "Rerun it (search.resume=true continues from the last saved round)."
        if waited_s < 0.9 * self.timeout_s:
            return DistributedError(f"rank {self.rank}: another rank left the search (it died, was interrupted, or "
                                    "stopped on an error its own line names); this rank stopped too and wrote "
                                    "nothing. " + rerun)
        return DistributedError(
            f"rank {self.rank}: the other ranks did not all answer within {self.timeout_s:.0f} s ({_first_line(exc)})"
            "; a rank died or hung. The search stopped; nothing was written. " + rerun)


SINGLE = Group()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def fabric_group(fabric: Any) -> Group:
    """The communicator of a launched Lightning Fabric."""
    return Group(fabric.global_rank, fabric.world_size)


def launch(fn: Callable[[Group], Any], *, devices: int | str = 1, num_nodes: int = 1, accelerator: str = "auto",
           start_method: str = "popen", timeout_s: float = COLLECTIVE_TIMEOUT_S) -> Any:
    """Run ``fn(group)`` on every rank of a Fabric DDP launch (one process per device; on CPUs over gloo, on GPUs
    over NCCL; under torchrun or SLURM the launcher's processes are used); returns rank 0's value on rank 0."""
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    if int(devices) * int(num_nodes) == 1 and accelerator in ("auto", "cpu"):
        return fn(SINGLE)
    check_launcher(num_nodes)
    strategy = DDPStrategy(timeout=_dt.timedelta(seconds=timeout_s), start_method=start_method)
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
    fabric.launch()
    if fabric.global_rank == 0:
        _forward_signals(_children())  # Ctrl-C or SIGTERM to the launcher reaches every rank it started
    group = fabric_group(fabric)
    group.timeout_s, group.local_size = timeout_s, int(devices)  # the search's threads: alsatian_pl.threads
    try:
        return fn(group)
    finally:
        _close()


def _children() -> list[int]:
    """The process ids this process started (Fabric's rank processes), from /proc (none where it is absent)."""
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*/children"):
        try:
            pids += [int(p) for p in task.read_text().split()]
        except (OSError, ValueError):
            continue
    return pids


def _forward_signals(pids: list[int]) -> None:
    """From now on SIGINT and SIGTERM to this process are passed to ``pids`` first, then handled as before (each
    rank ends with its own one line instead of finding its peer gone)."""
    if not pids or threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(signum)

        def forward(sig: int, frame: Any, before: Any = before) -> None:
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass  # already gone
            if callable(before):
                before(sig, frame)
            elif before == signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)
        signal.signal(signum, forward)


def check_launcher(num_nodes: int) -> None:
    """ConfigError when a search over several machines was started without a launcher (it would wait forever)."""
    if int(num_nodes) > 1 and not launched_by_cluster():
        raise ConfigError(f"search.num_nodes={num_nodes} needs a launcher that starts the processes on every "
                          "machine (torchrun --nnodes, SLURM's srun, mpirun); started without one it would wait "
                          "for the other machines forever. Launch it so, or set search.num_nodes=1")


def resolve_devices(devices: int | str, accelerator: str) -> int:
    """``search.devices`` as a number: ``auto`` is every GPU here on a GPU accelerator (``auto`` included) and one
    process elsewhere, as Lightning counts it."""
    if devices != "auto":
        return int(devices)
    gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
    return max(1, gpus)


def check_accelerator(accelerator: str, device: torch.device) -> None:
    """ConfigError when ``search.accelerator`` names hardware this machine lacks, or hardware the search's own
    ``search.device`` does not run on (the search would silently run elsewhere)."""
    wanted = {"gpu": "cuda", "cuda": "cuda", "mps": "mps"}.get(accelerator)
    if wanted is None:
        return
    here = torch.cuda.is_available() if wanted == "cuda" else torch.backends.mps.is_available()
    if not here:
        raise ConfigError(f"search.accelerator={accelerator}, but this machine has no {wanted.upper()} device; set "
                          "search.accelerator=cpu (or auto)")
    if device.type != wanted:
        raise ConfigError(f"search.accelerator={accelerator} with search.device={device.type}: the two disagree; "
                          f"set search.device=auto (or {wanted}), or search.accelerator=cpu")


def launched_by_cluster() -> bool:
    """Whether a launcher Lightning detects (torchrun, SLURM, LSF, MPI) started this process, or one that set the
    process group's variables itself (WORLD_SIZE, RANK, MASTER_ADDR: Kubeflow, a hand-written launcher)."""
    from lightning.fabric.plugins.environments import (LSFEnvironment, MPIEnvironment, SLURMEnvironment,
                                                       TorchElasticEnvironment)

    by_hand = all(k in os.environ for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR"))
    return by_hand or any(env.detect() for env in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment,
                                                   MPIEnvironment))


def launch_search(searcher: Any, models: list[str], *, devices: int | str = 1, num_nodes: int = 1,
                  accelerator: str = "auto") -> tuple[Any, int]:
    """``searcher.run(models)`` in this process, or on every rank of a Fabric launch (each rank runs
    ``searcher.on_rank(group, device)``: its own communicator and device); returns the result and this process's
    rank (rank 0's result on rank 0)."""
    if devices == 1 and num_nodes == 1:
        return searcher.run(models), 0
    rank = {"rank": 0}

    def search(group: Group) -> Any:
        rank["rank"] = group.rank
        return searcher.on_rank(group, rank_device(searcher.device, accelerator)).run(models)

    result = launch(search, devices=devices, num_nodes=num_nodes, accelerator=accelerator)
    return result, rank["rank"]


def rank_device(device: torch.device, accelerator: str) -> torch.device:
    """A rank's compute device: the CPU under ``accelerator=cpu``, else its own GPU (``LOCAL_RANK``) on GPUs."""
    if accelerator == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def _close() -> None:
    """Tear the process group down before the process exits (gloo aborts a process that exits with it open)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
