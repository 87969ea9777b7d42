"""Coverage of the block split over timm's architectures (not CI): every ``timm.list_models()`` name is built with
random init at a tiny input size, split (``split_model``) and self-checked (``check_split``); the report gives the
share that splits, the share refused and the refusal reasons.

    python bench/split_coverage.py [--every N] [--start N] [--filter GLOB] [--max-params 150e6] [--json out.json]

An architecture too large to build quickly (``--max-params``, counted on the meta device) or that timm cannot build
at any tried size is reported apart and left out of the shares. Sizes tried: ``img_size=64`` where the constructor
takes it, 64, then the architecture's default input size.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import time

import timm
import torch

from alsatian_pl.blocks import check_split, split_model
from alsatian_pl.errors import StoreError

SIZE = 64


def _build(arch: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=10, **kwargs).eval()


def _attempts(arch: str) -> list[tuple[dict, int]]:
    default = timm.get_pretrained_cfg(arch)
    size = (default.input_size[-1] if default is not None else 224) or 224
    return [({"img_size": SIZE}, SIZE), ({}, SIZE), ({}, size)]


def _params(arch: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in _build(arch, {}).parameters())


def try_arch(arch: str, max_params: float) -> tuple[str, str]:
    """(outcome, detail): outcome is 'split', 'refused', 'skipped' (too large) or 'unbuilt' (timm or size)."""
    try:
        if _params(arch) > max_params:
            return "skipped", "too large for the bench"
    except Exception as exc:  # noqa: BLE001
        return "unbuilt", f"meta build: {type(exc).__name__}"
    last = ("unbuilt", "no input size fits")
    for kwargs, size in _attempts(arch):
        try:
            model = _build(arch, kwargs)
        except Exception as exc:  # noqa: BLE001 - e.g. no img_size argument: try the next attempt
            last = last if last[0] == "refused" else ("unbuilt", f"build: {type(exc).__name__}")
            continue
        try:
            blocks = split_model(model)
            check_split(model, blocks, (3, size, size))
            return "split", f"{len(blocks)} blocks at {size}px"
        except StoreError as exc:
            msg = str(exc)
            if "cannot run on inputs of size" in msg:
                continue  # the model itself does not take this size
            last = ("refused", msg)
            if "exactly: running" not in msg:
                break  # tracing and cutting do not depend on the input size
    return last


def reason(msg: str) -> str:
    """A refusal message reduced to its kind (for counting)."""
    m = re.search(r"into blocks: (torch.fx cannot trace[^(]*\((\w+))", msg)
    if m:
        return f"fx cannot trace ({m.group(2)})"
    m = re.search(r"exactly: running .* failed \((\w+)", msg)
    if m:
        return f"blocks fail on the probe ({m.group(1)})"
    for key in ("no single-tensor boundary", "composed blocks differ", "no registered block family",
                "does not map one input"):
        if key in msg:
            return key
    return msg[:80]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=1, help="try every N-th architecture (a sample)")
    ap.add_argument("--filter", default="*")
    ap.add_argument("--start", type=int, default=0, help="skip the first N names (to run shards side by side)")
    ap.add_argument("--max-params", type=float, default=150e6)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    archs = timm.list_models(args.filter)[args.start::args.every]
    rows, start = {}, time.perf_counter()
    for i, arch in enumerate(archs):
        t = time.perf_counter()
        rows[arch] = try_arch(arch, args.max_params)
        print(f"[{i + 1}/{len(archs)}] {arch}: {rows[arch][0]} ({time.perf_counter() - t:.1f}s) {rows[arch][1][:160]}",
              flush=True)
    report(rows, time.perf_counter() - start)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


def report(rows: dict[str, tuple[str, str]], seconds: float) -> None:
    counts = collections.Counter(outcome for outcome, _ in rows.values())
    tried = counts["split"] + counts["refused"]
    print(f"\n{len(rows)} architectures in {seconds:.0f}s: {counts['split']} split, {counts['refused']} refused, "
          f"{counts['skipped']} skipped (too large), {counts['unbuilt']} not buildable at a tried size")
    if tried:
        print(f"share split {counts['split'] / tried:.1%}, share refused {counts['refused'] / tried:.1%} "
              f"(of {tried} built and tried)")
    reasons = collections.Counter(reason(d) for o, d in rows.values() if o == "refused")
    for why, n in reasons.most_common(10):
        archs = ", ".join(a for a, (o, d) in rows.items() if o == "refused" and reason(d) == why)
        print(f"  {n:4d}  {why}: {archs[:200]}")


if __name__ == "__main__":
    main()
