"""Verified block reads against plain reads, in GiB/s: store format 2 as the store reads it now (the file mapped,
xxh3-128 checksum of its bytes, tensors as views into the mapping) and as it read it before (one read into fresh
memory, the same checksum), against format 1 (safetensors load + sha256 over spec and tensors) and against
unverified reads; and the checksums alone.

    python bench/bench_verify.py [--models 8] [--arch resnet18] [--store PATH [--zoo PREFIX]] [--repeat 5] [--cold]
                                 [--hold]

A temporary store of ``--models`` seeded ``--arch`` variants is built unless ``--store`` names one (read only).
Each method reads every block file once per pass; passes alternate the methods' order, the median pass is reported.
Warm: the files are in the OS page cache (one pass first). ``--cold``: each pass first drops the store's files from
the page cache (``posix_fadvise(DONTNEED)``, this store's files only), so reads come from the disk. ``--hold``:
every block read in a pass is kept until the pass ends, as a search's weight cache keeps them (without it each is
dropped at once, so a reader that copies into fresh memory reuses the same few pages). Freed memory goes back to
the OS after each pass (``malloc_trim``), so every pass starts as a search does, with no freed pages to reuse.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import xxhash
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import alsatian_pl.store as st  # noqa: E402
from alsatian_pl.blocks import build_model, timm_recipe  # noqa: E402
from alsatian_pl.resources import release_free_memory  # noqa: E402

GIB = 2**30


def build_store(root: Path, arch: str, models: int) -> st.BlockStore:
    store = st.BlockStore(root)
    for i in range(models):
        torch.manual_seed(i)
        store.import_model(f"m{i}", build_model(timm_recipe(arch)).eval(), recipe=timm_recipe(arch),
                           input_size=(3, 32, 32))
    return store


def format_1_read(store: st.BlockStore, h: str) -> dict[str, torch.Tensor]:
    """What ``read_block_tensors`` did in store format 1: advise, metadata, ``load_file``, sha256 content hash."""
    path = store.block_path(h)
    store.advise(h)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(path)
    assert st.content_hash(meta.get("spec", ""), tensors) == h
    return tensors


def read_into_memory(path: Path) -> torch.Tensor:
    """How format 2 read a block file before it was mapped: one ``readinto`` of the whole file into fresh memory."""
    with open(path, "rb", buffering=0) as f:
        buf = torch.empty(os.fstat(f.fileno()).st_size, dtype=torch.uint8)
        view, done = memoryview(buf.numpy()), 0
        while done < len(buf) and (n := f.readinto(view[done:])):
            done += n
    return buf


def format_2_read_into_memory(store: st.BlockStore, h: str) -> dict[str, torch.Tensor]:
    """Format 2's verified read before the mapping: read into memory, parse, check the xxh3-128 checksum."""
    buf = read_into_memory(store.block_path(h))
    tensors, meta = st.parse_block(buf)
    assert st.checksum_matches(h, buf.numpy(), meta)
    return tensors


METHODS = {
    "read bytes only (no parse, no check)": lambda store, h: read_into_memory(store.block_path(h)),
    "safetensors load_file (unverified)": lambda store, h: load_file(store.block_path(h)),
    "format 2 parse, unverified": lambda store, h: st.parse_block(read_into_memory(store.block_path(h))),
    "format 1 verified (load_file + sha256)": format_1_read,
    "format 2 verified, read into memory (before)": format_2_read_into_memory,
    "format 2 verified, mapped (now)": lambda store, h: store.read_block_tensors(h),
}


def drop_from_page_cache(paths: list[Path]) -> None:
    """As the harness evicts: ``fdatasync`` first (a freshly built store's pages may still be dirty, and dirty pages
    cannot be dropped), then ``POSIX_FADV_DONTNEED``."""
    from harness import evict

    evict(paths)


def time_reads(store: st.BlockStore, hashes: list[str], repeat: int, cold: bool,
               hold: bool = False) -> dict[str, list[float]]:
    paths = [store.block_path(h) for h in hashes]
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    names = list(METHODS)
    for m in names:  # warm-up: page cache, allocator, kernels (every block once)
        for h in hashes:
            METHODS[m](store, h)
    for r in range(repeat):
        for m in names[r % len(names):] + names[:r % len(names)]:  # rotate the order pass by pass
            if cold:
                drop_from_page_cache(paths)
            held = []
            t0 = time.perf_counter()
            for h in hashes:
                out = METHODS[m](store, h)
                if hold:
                    held.append(out)
            times[m].append(time.perf_counter() - t0)
            del held
            release_free_memory()  # the next pass starts, like a search, without freed pages to reuse
    return times


def hash_rates(mib: int = 256, repeat: int = 3) -> dict[str, float]:
    """GiB/s of each checksum over one buffer in memory (best of ``repeat``)."""
    buf = memoryview(os.urandom(mib << 20))
    funcs = {"sha256": lambda: hashlib.sha256(buf).digest(), "xxh3_128": lambda: xxhash.xxh3_128(buf).digest()}
    try:
        import blake3

        funcs["blake3 (1 thread)"] = lambda: blake3.blake3(buf).digest()
        funcs["blake3 (all threads)"] = lambda: blake3.blake3(buf, max_threads=blake3.blake3.AUTO).digest()
    except ImportError:
        pass
    out = {}
    for name, f in funcs.items():
        best = min(_timed(f) for _ in range(repeat))
        out[name] = len(buf) / best / GIB
    return out


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--hold", action="store_true", help="keep every block of a pass until it ends")
    ap.add_argument("--zoo", help="with --store: only the blocks of models whose name starts with this")
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1] / ".alsatian") as tmp:
        store = st.BlockStore(args.store) if args.store else build_store(Path(tmp), args.arch, args.models)
        hashes = sorted({h for m in store.models() if m.name.startswith(args.zoo or "") for h in m.hashes})
        total = sum(store.block_path(h).stat().st_size for h in hashes)
        print(f"{len(hashes)} block files, {total / GIB:.3f} GiB, {'cold' if args.cold else 'warm'} page cache, "
              f"{'held' if args.hold else 'dropped'} after each read, median of {args.repeat} passes")
        times = time_reads(store, hashes, args.repeat, args.cold, args.hold)
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:46s} {total / med / GIB:6.2f} GiB/s  ({med:.3f} s/pass, {med / total * GIB:.3f} s/GiB)")
    print("checksums alone, over 256 MiB in memory:")
    for name, rate in hash_rates().items():
        print(f"  {name:46s} {rate:6.2f} GiB/s")


if __name__ == "__main__":
    main()
