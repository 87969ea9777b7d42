"""Shared pieces of the benchmark suite (``bench/run.py``): zoos, data, one timed search, the calibration pass, the
lower bound, the correctness checks and the machine description.

Nothing here asserts on a time: timings are recorded and reported as ratios from the same invocation.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from alsatian_pl.data import SearchDataModule, num_rounds  # noqa: E402
from alsatian_pl.data import FASHION_MNIST_DIR  # noqa: E402
from alsatian_pl.errors import BudgetTooSmallError  # noqa: E402
from alsatian_pl.halving import SearchCallback, SearchState, SuccessiveHalving, block_specs  # noqa: E402
from alsatian_pl.precision import Precision  # noqa: E402
from alsatian_pl.plan import InferenceStep, RoundMemory, TaskTree, plan_block_batches, plan_round  # noqa: E402
from alsatian_pl.resources import peak_rss, resolve_device, rss_now  # noqa: E402
from alsatian_pl.halving import get_strategy  # noqa: E402
from alsatian_pl.weights import place_block  # noqa: E402
from alsatian_pl.store import BlockStore, ModelManifest  # noqa: E402
from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo  # noqa: E402

STRATEGIES = ("base", "shift", "alsatian")
# Orders of the three strategies, cycled over cells and repeats: every strategy takes every position equally often
# over six runs, so machine drift (thermal, other load) hits all alike.
ORDERS = (("base", "shift", "alsatian"), ("alsatian", "shift", "base"), ("shift", "alsatian", "base"),
          ("base", "alsatian", "shift"), ("alsatian", "base", "shift"), ("shift", "base", "alsatian"))
PHASES = ("prepare_data", "prepare_model", "inference", "proxy_scoring", "planning")
DIST_LABELS = {"top_layers": "Top Layers", "top25": "Top 25%", "top50": "Top 50%"}
CALIBRATION_WARMUP = 3  # untimed calls per block before timing (BERT layers settle after 2-3 calls: 1.8 -> 0.8 ms/item)
EMBEDDED_ITEMS = 3000  # Fashion-MNIST items shipped with alsatian-pl; more need the Debian package


# ------------------------------------------------------------------------------------------------------ settings
@dataclass
class Arch:
    """One architecture of the benchmark: timm name (or Hugging Face preset), input side, kwargs, base weights, and
    the dataset and number of items it is searched on. Text models (``builder="hf"``): ``image_size`` is the number
    of tokens per item (``max_length``)."""

    key: str
    arch: str
    image_size: int
    items: int
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    builder: str = "timm"              # "timm", or "hf" (a BERT-style encoder, searched on text)
    dataset: str = "fashion_mnist"     # a SearchDataModule dataset name
    classes: int = 10                  # classes of the dataset (sets the fewest items a search accepts)
    tokenizer: str | None = None       # hf: the models' tokenizer
    pooling: str = "cls"               # hf: pooling of the last hidden state

    @property
    def text(self) -> bool:
        return self.builder == "hf"

    @property
    def size_label(self) -> str:
        """How the input size reads in tables: ``32px`` or ``32 tokens``."""
        return f"{self.image_size} tokens" if self.text else f"{self.image_size}px"

    def zoo_config(self, distribution: str, num_models: int, seed: int = 0) -> ZooConfig:
        size = (2, self.image_size) if self.text else (3, self.image_size, self.image_size)
        extra = {"builder": "hf", "tokenizer": self.tokenizer, "pooling": self.pooling} if self.text else {}
        return ZooConfig(name=f"bench-{self.key}-{distribution}-{num_models}", arch=self.arch, num_models=num_models,
                         distribution=distribution, seed=seed, input_size=size,
                         model_kwargs=dict(self.model_kwargs), checkpoint=self.checkpoint, **extra)

    def data_kwargs(self, items: int | None = None, seed: int = 0) -> dict[str, Any]:
        """Constructor arguments of this architecture's SearchDataModule (``items``: default ``self.items``)."""
        kwargs: dict[str, Any] = {"name": self.dataset, "num_items": self.items if items is None else items,
                                  "seed": seed}
        if self.text:
            return {**kwargs, "max_length": self.image_size, "tokenizer": self.tokenizer}
        return {**kwargs, "image_size": self.image_size}


@dataclass
class SearchSettings:
    """What every search of one invocation shares (the same for all strategies)."""

    batch_size: int = 64
    device: str = "auto"
    cache_budget: int | None = 4 * 2**30
    epochs: int = 100
    seed: int = 0
    result_size: int = 1
    threads: int | None = None  # torch intra-op threads (None: torch's default, one per core)
    channels_last: bool = True  # conv activations and weights channels-last, as the search runs them by default
    precision: str = "32-true"  # search.precision (block inference; the calibration pass runs the blocks in it too)
    block_batches: int | str = "auto"  # search.block_batches: batches a step runs block by block (1: batch-major)

    def apply_threads(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    @property
    def scorer_kwargs(self) -> dict[str, Any]:
        return {"epochs": self.epochs}


def items_available(items: int, dataset: str = "fashion_mnist") -> tuple[bool, str]:
    """Whether Fashion-MNIST can provide ``items`` items here, and a note saying why not (other datasets: yes)."""
    if dataset != "fashion_mnist" or items <= EMBEDDED_ITEMS:
        return True, ""
    files = [FASHION_MNIST_DIR / f"train-{k}-idx{d}-ubyte.gz" for k, d in (("images", 3), ("labels", 1))]
    if all(f.is_file() for f in files):
        return True, ""
    return False, (f"{items} items need the Debian package dataset-fashion-mnist ({FASHION_MNIST_DIR}); "
                   f"not installed here, skipped")


def min_items(num_models: int, result_size: int = 1, classes: int = 10, test_fraction: float = 0.2) -> int:
    """The fewest items SearchDataModule accepts for a successive-halving search over ``num_models`` models."""
    needed = classes * (2**num_rounds(num_models, result_size) - 1)
    return math.ceil((needed + classes) / (1 - test_fraction))


# --------------------------------------------------------------------------------------------------------- zoos
def build_zoo(store_root: Path, arch: Arch, distribution: str, num_models: int, seed: int = 0) -> dict[str, Any]:
    """Build (or reuse) a synthetic zoo; its model names, build seconds and logical/physical store bytes."""
    store = BlockStore(store_root)
    t0 = time.perf_counter()
    zoo = build_synthetic_zoo(store, arch.zoo_config(distribution, num_models, seed), progress=False)
    seconds = time.perf_counter() - t0
    stats = zoo.stats()
    return {"zoo": zoo.name, "arch": arch.arch, "key": arch.key, "distribution": distribution,
            "num_models": num_models, "image_size": arch.image_size, "models": list(zoo.models),
            "build_or_load_s": seconds, "distinct_blocks": stats.distinct_blocks,
            "blocks_per_model": len(store.manifest(zoo.models[0]).blocks),
            "logical_bytes": stats.logical_bytes, "physical_bytes": stats.physical_bytes,
            "dedup_ratio": stats.dedup_ratio}


# ----------------------------------------------------------------------------------------------------- searching
def run_search(store_root: Path, models: Sequence[str], data: dict[str, Any], strategy: str,
               settings: SearchSettings, cache_budget: int | None | str = "default") -> dict[str, Any]:
    """One timed search on a fresh store handle and a fresh (unprepared) data module: preparing the data is part of
    the measured time, for every strategy alike. Returns the SearchResult as JSON plus wall time and context."""
    budget = settings.cache_budget if cache_budget == "default" else cache_budget
    store = BlockStore(store_root)
    dm = SearchDataModule(**data)
    recorder = PlanRecorder()
    searcher = SuccessiveHalving(store, dm, strategy=strategy, scorer="linear", scorer_kwargs=settings.scorer_kwargs,
                                 result_size=settings.result_size, batch_size=settings.batch_size,
                                 device=settings.device, cache_budget=budget, seed=settings.seed, progress=False,
                                 callbacks=[recorder], channels_last=settings.channels_last,
                                 precision=settings.precision, block_batches=settings.block_batches,
                                 threads=settings.threads or "auto")
    load_before = os.getloadavg()[0]
    rss_before = rss_now()
    meter = CpuMeter()
    t0 = time.perf_counter()
    result = searcher.run(list(models))
    wall = time.perf_counter() - t0
    out = result.to_json()
    out.update(wall_s=wall, cache_budget=budget, dataset=dm.describe(), device=str(searcher.device),
               loadavg_1m_before=load_before, loadavg_1m_after=os.getloadavg()[0], cpu=meter.read(),
               rss_before_search_bytes=rss_before, round_memory=recorder.rounds,
               round_block_batches=recorder.block_batches)
    del searcher, dm, store, result
    gc.collect()
    return out


class PlanRecorder(SearchCallback):
    """Each round's memory model as the search handed it to the planner (:class:`RoundMemory` fields): what the
    budget derivation replans with, so the bench uses the package's own figures (input bytes, kept features)."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, int]] = []
        self.block_batches: list[int] = []  # the batches each round's steps ran block by block (its widest step)

    def on_round_planned(self, search: SuccessiveHalving, state: SearchState, plan: Any) -> None:
        if len(self.rounds) == state.round:  # the first input group's plan (image searches have one)
            self.rounds.append(dataclasses.asdict(state.memory))
            self.block_batches.append(max((s.block_batches for s in plan.steps if isinstance(s, InferenceStep)),
                                          default=1))


def alive_per_round(result: dict[str, Any]) -> list[list[str]]:
    """Models searched in each round, from the ranking's ``eliminated_in_round``."""
    rounds = len(result["rounds"])
    return [[r["model"] for r in result["ranking"]
             if r["eliminated_in_round"] is None or r["eliminated_in_round"] >= k] for k in range(rounds)]


# ---------------------------------------------------------------------------------------------------- page cache
def zoo_block_files(store_root: Path, models: Sequence[str]) -> list[Path]:
    """The block files ``models`` read (each distinct block once)."""
    store = BlockStore(store_root)
    hashes = dict.fromkeys(h for m in models for h in store.manifest(m).hashes)
    return [store.block_path(h) for h in hashes]


def store_block_files(store_root: Path) -> list[Path]:
    """Every block file of the store (``blocks/<h[:2]>/<hash>.safetensors``)."""
    return sorted(p for p in (Path(store_root) / "blocks").glob("*/*") if p.is_file())


def evict(paths: Sequence[Path]) -> None:
    """Drop ``paths`` from the OS page cache, without root: ``fdatasync`` (only clean pages can be dropped, and a
    freshly built zoo's may still be dirty), then ``posix_fadvise(POSIX_FADV_DONTNEED)``. Pages another process
    keeps mapped stay resident; :func:`resident_bytes` says what the eviction achieved."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            try:
                os.fdatasync(fd)
            except OSError:
                pass
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: Sequence[Path], chunk: int = 16 * 2**20) -> None:
    """Read every byte of ``paths`` once, so they sit in the OS page cache."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(view):
                pass


_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        _LIBC = libc
    return _LIBC


def resident_bytes(paths: Sequence[Path]) -> tuple[int, int] | None:
    """(bytes of ``paths`` in the OS page cache, their total size), by ``mincore`` over a read-only shared mapping
    of each file (mapping touches no page); None where mincore cannot be called (not Linux, no libc)."""
    import mmap
    import numpy as np
    try:
        libc = _libc()
    except (OSError, AttributeError):
        return None
    page = mmap.PAGESIZE
    failed = 2**64 - 1 if sys.maxsize > 2**32 else 2**32 - 1
    resident = total = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            total += size
            if size == 0:
                continue
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr is None or addr == failed:
                return None
            try:
                vec = np.zeros((size + page - 1) // page, dtype=np.uint8)
                if libc.mincore(addr, size, vec.ctypes.data) != 0:
                    return None
                pages = vec & 1
                resident += int(pages[:-1].sum()) * page + (size - (len(vec) - 1) * page) * int(pages[-1])
            finally:
                libc.munmap(addr, size)
        finally:
            os.close(fd)
    return resident, total


def set_page_cache(store_root: Path, models: Sequence[str], state: str) -> dict[str, Any]:
    """Put the OS page cache in ``state`` for a search of ``models``: *cold* evicts every block file of the store
    (:func:`evict`), *warm* reads the models' block files once (:func:`warm`). Returns the state, what was done, and
    the share of the models' block bytes resident afterwards (measured with mincore, None where unavailable)."""
    if state not in ("cold", "warm"):
        raise ValueError(f"page cache state must be cold or warm, got {state!r}")
    files = zoo_block_files(store_root, models)
    t0 = time.perf_counter()
    if state == "cold":
        evict(store_block_files(store_root))
    else:
        warm(files)
    seconds = time.perf_counter() - t0
    measured = resident_bytes(files)
    out: dict[str, Any] = {"state": state, "files": len(files), "seconds": seconds,
                           "how": ("posix_fadvise(POSIX_FADV_DONTNEED) on every block file of the store"
                                   if state == "cold" else "every block file of the models read once")}
    if measured is None:
        out.update(bytes=sum(f.stat().st_size for f in files), resident_bytes=None, resident_fraction=None)
    else:
        res, total = measured
        out.update(bytes=total, resident_bytes=res, resident_fraction=res / total if total else 1.0)
    return out


# --------------------------------------------------------------------------------------------------- calibration
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def calibrate(store_root: Path, models: Sequence[str], data: dict[str, Any], settings: SearchSettings,
              repeats: int = 3) -> dict[str, Any]:
    """Per-item inference seconds of every distinct block of a zoo, each timed alone.

    Walks the zoo's shared task tree depth first on ``repeats`` batches of ``batch_size`` real training items of
    the cell's dataset, so every block sees the inputs it sees in a search. Each distinct block hash runs
    ``CALIBRATION_WARMUP`` times on the first batch to warm up, then is timed once on each batch (whose outputs feed
    its children); its cost is the median over the batches divided by the batch size. Loading a block is outside
    the timed region. Weights and inputs are laid out as the search lays them out (channels-last for conv blocks unless
    ``settings.channels_last`` is off), in ``settings.precision`` as the executor runs them. The pass also warms the OS page cache, the block skeletons and the kernels
    for all strategies of the cell alike.
    """
    device = resolve_device(settings.device)
    tree, manifests = _tree_of(store_root, models)
    store = BlockStore(store_root)
    bs = settings.batch_size
    channels_last = settings.channels_last
    batches = _calibration_batches(data, bs, repeats, device, channels_last)
    cost: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    precision = Precision(settings.precision, device.type)

    def visit(node_id: int, inputs: list[torch.Tensor]) -> None:
        for child_id in tree.node(node_id).children:
            h = tree.node(child_id).block.hash
            block = place_block(store.load_block(h), device, channels_last)  # as the search's weight cache does
            timed = h not in cost
            outputs, ts = [], []
            with torch.inference_mode(), precision.autocast():
                if timed:  # warm-up: first calls pay one-off costs (kernel selection, first-touch of fresh memory)
                    for _ in range(CALIBRATION_WARMUP):
                        block(inputs[0])
                for x in inputs:
                    _sync(device)
                    t0 = time.perf_counter()
                    outputs.append(precision.output(block(x)))
                    _sync(device)
                    ts.append(time.perf_counter() - t0)
            if timed:
                samples[h] = ts
                cost[h] = statistics.median(ts) / bs
            del block
            visit(child_id, outputs)

    visit(TaskTree.ROOT, batches)
    seconds = time.perf_counter() - t_start
    model_cost = {m: sum(cost[b.hash] for b in man.blocks) for m, man in manifests.items()}
    return {"batch": bs, "repeats": repeats, "seconds": seconds, "distinct_blocks": len(cost),
            "tree_edges": tree.num_edges(), "per_item_s": cost, "samples_s": samples,
            "model_per_item_s": model_cost,
            "tree_per_item_s": sum(cost[n.block.hash] for n in tree.nodes() if n.block is not None)}


def bracket(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The per-item block costs of two calibration passes taken right before and right after a run, averaged block
    by block, and their drift: how far the two passes' whole-tree costs differ, relative to their mean. On a shared
    VM the machine's speed moves by 10-20 % within a minute, so a bound calibrated minutes away from the run it
    judges measures the machine's speed as much as the run's; bracketing the run halves that error and shows it."""
    per_item = {h: (before["per_item_s"][h] + after["per_item_s"][h]) / 2 for h in before["per_item_s"]}
    tree = (before["tree_per_item_s"], after["tree_per_item_s"])
    return {"per_item_s": per_item, "tree_per_item_s": list(tree), "seconds": before["seconds"] + after["seconds"],
            "drift": abs(tree[1] - tree[0]) / (sum(tree) / 2) if sum(tree) else 0.0}


def _calibration_batches(data: dict[str, Any], bs: int, repeats: int, device: torch.device,
                         channels_last: bool) -> list[torch.Tensor]:
    """``repeats`` batches of ``bs`` real training items, on the device in the layout the executor gives them."""
    dm = SearchDataModule(**data)
    dm.setup()
    x_train, _ = dm.train_items()
    idx = torch.arange(bs * repeats) % len(x_train)
    batches = []
    for k in range(repeats):
        x = x_train.take(idx[k * bs:(k + 1) * bs].numpy()).to(device)
        if channels_last and x.dim() == 4:  # the layout the executor gives a step's input
            x = x.contiguous(memory_format=torch.channels_last)
        batches.append(x)
    return batches


def _tree_of(store_root: Path, models: Sequence[str],
             batch_size: int | None = None) -> tuple[TaskTree, dict[str, ModelManifest]]:
    """Alsatian's task tree of ``models``, as the search builds it (with ``batch_size``: its blocks' activations of
    one batch too), and their manifests."""
    store = BlockStore(store_root)
    manifests = {m: store.manifest(m) for m in models}
    specs = {m: block_specs(man, batch_size) for m, man in manifests.items()}
    return get_strategy("alsatian").make_tree(specs), manifests


def lower_bound(store_root: Path, models: Sequence[str], result: dict[str, Any], per_item: dict[str, float],
                executor_per_item: dict[str, float] | None = None) -> dict[str, Any]:
    """The least time any exact method needs under the same successive-halving schedule as ``result``.

    Per round: every distinct task-tree edge of the surviving models (a block applied to a distinct input, i.e. a
    distinct block prefix) runs once over the round's items (the new chunk, plus the test items in round 1), at the
    block's per-item cost; plus the run's own proxy-scoring time. ``per_item`` is the calibrated cost; with
    ``executor_per_item`` (the run's ``block_seconds / block_items``) a second bound is computed alongside.
    """
    tree, _ = _tree_of(store_root, models)
    rounds = []
    inference = inference_exec = 0.0
    for k, (alive, rep) in enumerate(zip(alive_per_round(result), result["rounds"])):
        nodes = {n for m in alive for n in tree.path(m)}
        hashes = [tree.node(n).block.hash for n in nodes]
        per_item_round = sum(per_item[h] for h in hashes)
        seconds = per_item_round * rep["items"]
        inference += seconds
        row = {"round": k, "models": len(alive), "items": rep["items"], "edges": len(nodes),
               "per_item_s": per_item_round, "inference_s": seconds}
        if executor_per_item is not None:
            se = sum(executor_per_item.get(h, 0.0) for h in hashes) * rep["items"]
            inference_exec += se
            row["inference_exec_s"] = se
        rounds.append(row)
    scoring = result["timings_s"]["proxy_scoring"]
    out = {"rounds": rounds, "inference_s": inference, "proxy_scoring_s": scoring, "bound_s": inference + scoring}
    if executor_per_item is not None:
        out.update(inference_exec_s=inference_exec, bound_exec_s=inference_exec + scoring)
    return out


def predicted_inference(result: dict[str, Any], model_per_item: dict[str, float], shared: bool,
                        per_item: dict[str, float] | None = None, store_root: Path | None = None,
                        models: Sequence[str] | None = None) -> float:
    """Inference seconds the calibration predicts for a run's schedule: every model's whole path per round (base,
    shift), or every distinct edge (alsatian, when ``shared``)."""
    if shared:
        assert per_item is not None and store_root is not None and models is not None
        return lower_bound(store_root, models, result, per_item)["inference_s"]
    return sum(sum(model_per_item[m] for m in alive) * rep["items"]
               for alive, rep in zip(alive_per_round(result), result["rounds"]))


def executor_costs(result: dict[str, Any]) -> dict[str, float]:
    """Per-item seconds per block hash as the executor attributed them (``block_seconds / block_items``)."""
    return {h: s / result["block_items"][h] for h, s in result["block_seconds"].items() if result["block_items"].get(h)}


# ---------------------------------------------------------------------------------------------------------- checks
def check_cell(runs: dict[str, dict[str, Any]], tol: float = 1e-5) -> dict[str, Any]:
    """Correctness of one cell.

    *exact*: alsatian's and shift's rankings identical (order, and scores and test losses within ``tol``: the
    accuracy moves in steps of 1/n, the loss shows a feature that moved less than that), and base's score of
    alsatian's winner equal to alsatian's final score (the same features give the same probe). *winner*: base's
    winner score equal to alsatian's final score within ``tol``; when it is not, successive halving dropped base's
    winner in an early round (on a small first chunk), which the check records with that round.
    """
    a, s, b = runs["alsatian"], runs["shift"], runs["base"]
    order_a, order_s = [r["model"] for r in a["ranking"]], [r["model"] for r in s["ranking"]]
    score_s = {r["model"]: r["score"] for r in s["ranking"]}
    loss_s = {r["model"]: r.get("test_loss") for r in s["ranking"]}
    score_b = {r["model"]: r["score"] for r in b["ranking"]}
    out_round = {r["model"]: r["eliminated_in_round"] for r in a["ranking"]}
    diff_as = max(abs(r["score"] - score_s[r["model"]]) for r in a["ranking"])
    losses = [(r.get("test_loss"), loss_s[r["model"]]) for r in a["ranking"]]
    loss_as = max((abs(x - y) for x, y in losses if x is not None and y is not None), default=0.0)
    winner, base_winner = a["ranking"][0], b["ranking"][0]
    checks = {
        "rankings_identical": order_a == order_s,
        "max_score_diff_alsatian_shift": diff_as, "max_test_loss_diff_alsatian_shift": loss_as,
        "alsatian_winner": winner["model"], "base_winner": base_winner["model"],
        "alsatian_final_score": winner["score"], "base_winner_score": base_winner["score"],
        "base_score_of_alsatian_winner": score_b[winner["model"]],
        "base_winner_score_matches": abs(base_winner["score"] - winner["score"]) <= tol,
        "base_score_of_alsatian_winner_matches": abs(score_b[winner["model"]] - winner["score"]) <= tol,
        "base_winner_eliminated_in_round": out_round.get(base_winner["model"]),
        "rounds": len(a["rounds"]),
    }
    warnings = []
    if not checks["rankings_identical"] or diff_as > tol or loss_as > tol:
        warnings.append(f"alsatian and shift rankings differ (max score diff {diff_as:.2e}, test loss {loss_as:.2e})")
    if not checks["base_score_of_alsatian_winner_matches"]:
        warnings.append(f"base scores alsatian's winner {winner['model']} {score_b[winner['model']]:.6f}, "
                        f"alsatian {winner['score']:.6f}: the same model's features differ")
    checks["exact"] = not warnings
    if not checks["base_winner_score_matches"]:
        k = checks["base_winner_eliminated_in_round"]
        where = f"alsatian (and shift) eliminated it in round {k + 1} of {len(a['rounds'])}" if k is not None else ""
        warnings.append(f"base's winner {base_winner['model']} scores {base_winner['score']:.6f} but alsatian's "
                        f"final score ({winner['model']}) is {winner['score']:.6f}; {where}")
    checks["ok"] = not warnings
    checks["warnings"] = warnings
    return checks


def loud(message: str) -> None:
    """A warning nobody can miss in the log."""
    bar = "!" * 100
    print(f"\n{bar}\n!!! WARNING: {message}\n{bar}\n", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------- machine
def machine() -> dict[str, Any]:
    """CPU model, cores, memory, torch version and threads, accelerator, OS and Python."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_start": list(os.getloadavg())}


class CpuMeter:
    """CPU use of other processes while something runs: all CPUs' busy time (/proc/stat) minus this process's
    (and its waited-for children's) CPU time, per second of wall time. 1.0 means one core kept busy by others."""

    def __init__(self) -> None:
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float, float]:
        busy = steal = 0.0
        try:
            fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
            hz = os.sysconf("SC_CLK_TCK")
            busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / hz  # user nice system irq softirq
            steal = (fields[7] if len(fields) > 7 else 0.0) / hz
        except (OSError, ValueError, IndexError):
            pass
        t = os.times()
        return time.perf_counter(), busy, steal, t.user + t.system + t.children_user + t.children_system

    def read(self) -> dict[str, float]:
        w0, b0, s0, o0 = self.start
        w1, b1, s1, o1 = self._snapshot()
        wall = max(w1 - w0, 1e-9)
        return {"other_cores": max(0.0, (b1 - b0) - (o1 - o0)) / wall, "own_cores": (o1 - o0) / wall,
                "steal_cores": (s1 - s0) / wall}


def vm_hwm() -> int:
    """Peak resident set size of this process (VmHWM, the package's :func:`peak_rss`). Unlike ``ru_maxrss``, it
    starts afresh at exec: a child's ``ru_maxrss`` inherits the RSS its parent had when it forked."""
    return peak_rss()


def ru_maxrss() -> int:
    """``ru_maxrss`` of this process in bytes (see :func:`vm_hwm` for why it can mislead in a child)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------------------------------------- cache budgets
def round_residents(result: dict[str, Any]) -> list[RoundMemory]:
    """What each round of ``result`` held resident, as the search's own memory model gave it to the planner
    (:class:`PlanRecorder`): the data held in memory, the batch of inputs in flight, the survivors' kept features
    and their new features' buffers, and the scoring working set."""
    return [RoundMemory(**m) for m in result["round_memory"]]


def derive_budgets(store_root: Path, models: Sequence[str], ample: dict[str, Any], batch_size: int,
                   fractions: Sequence[float] = (0.5, 0.1)) -> dict[str, Any]:
    """Tight cache budgets from an ample run's planned peaks, replanning each round offline.

    ``floor`` is the smallest budget with which every round still plans (one batch per partition in the hardest
    round, from BudgetTooSmallError.needed); ``peak`` the ample run's largest planned peak. A budget at fraction f
    is ``floor + f * (peak - floor)``, so every budget below the peak forces at least one round to run fewer batches
    block by block or to split its data.
    The offline replanning is checked against the ample run's planned peaks first; each round replans with the
    batches its steps ran block by block in the ample run (``round_block_batches``), at most, as the search does.
    """
    residents = round_residents(ample)
    groups = ample.get("round_block_batches") or [1] * len(ample["rounds"])
    alive = alive_per_round(ample)
    planned = [r["planned_peak_bytes"] for r in ample["rounds"]]
    replanned, needed, trees = [], [], []
    for k, rep in enumerate(ample["rounds"]):
        t, _ = _tree_of(store_root, alive[k], batch_size)
        trees.append(t)
        replanned.append(plan_round(t, num_items=rep["items"], batch_size=batch_size, budget=None,
                                    resident_bytes=residents[k], block_batches=groups[k]).round_peak_bytes)
        try:
            plan_round(t, num_items=rep["items"], batch_size=batch_size, budget=0, resident_bytes=residents[k])
            needed.append(0)
        except BudgetTooSmallError as exc:
            needed.append(exc.needed)
    peak, floor = max(planned), max(needed)
    out: dict[str, Any] = {"planned_peaks": planned, "replanned_peaks": replanned,
                           "residents": [m.resident for m in residents],
                           "replan_matches": replanned == planned, "round_floor": needed, "floor": floor,
                           "peak": peak, "budgets": {}}
    for name, f in zip(("tight", "very_tight"), fractions):
        budget = int(floor + f * (peak - floor))
        parts = []
        for k, rep in enumerate(ample["rounds"]):
            plan = plan_block_batches(trees[k], num_items=rep["items"], batch_size=batch_size, most=groups[k],
                                      budget=budget, resident_bytes=residents[k])
            parts.append(plan.partitions)
        out["budgets"][name] = {"fraction": f, "bytes": budget, "predicted_partitions": parts}
    return out


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_default))
    tmp.replace(path)


def _default(o: Any) -> Any:
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)
