"""Whether two benchmark runs give the same answers, field for field: every search's ranking (model, score, test
loss, round eliminated) and its rounds (models, items, inference steps, block runs, distinct blocks, partitions,
planned peaks), matched by file name; timings are left out (they differ run to run).

    python bench/compare_runs.py bench/results/quick-A bench/results/quick-B [--ignore planned_peak_bytes]

``--ignore`` leaves round fields out that a change is meant to move (``planned_peak_bytes`` when the memory model
counts something new, e.g. ``search.block_batches``); the rankings are always compared.

Prints one line per search file compared and a verdict; exits 1 if anything differs or a file is missing on one side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROUND_FIELDS = ("round", "models", "items", "partitions", "inference_steps", "block_runs", "distinct_blocks",
                "planned_peak_bytes", "kept", "groups", "scoring_peak_bytes")


def answers(run: dict[str, Any], ignore: frozenset[str] = frozenset()) -> dict[str, Any]:
    """What must not change: the ranking and the rounds' plan figures (but those in ``ignore``)."""
    return {"ranking": [(r["model"], r["score"], r["test_loss"], r["eliminated_in_round"]) for r in run["ranking"]],
            "rounds": [{k: r.get(k) for k in ROUND_FIELDS if k not in ignore} for r in run["rounds"]]}


def searches(folder: Path) -> dict[str, dict[str, Any]]:
    """Every search result (a JSON with a ranking and rounds) under ``folder``, by its relative path."""
    out = {}
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "ranking" in data and "rounds" in data:
            out[str(path.relative_to(folder))] = data
    return out


def compare(a: Path, b: Path, ignore: frozenset[str] = frozenset()) -> list[str]:
    """The differences between the two runs' answers (empty: identical), round fields in ``ignore`` left out."""
    left, right = searches(a), searches(b)
    problems = [f"{name}: only in {a if name in left else b}" for name in sorted(set(left) ^ set(right))]
    if not set(left) & set(right):  # nothing compared is not "identical": a failed run writes no results
        problems.append(f"no search result (a JSON with a ranking and rounds) found in both {a} and {b}")
    for name in sorted(set(left) & set(right)):
        x, y = answers(left[name], ignore), answers(right[name], ignore)
        same = x == y
        print(f"{'same' if same else 'DIFFERS'}  {name}  ({len(x['ranking'])} models, {len(x['rounds'])} rounds)")
        if not same:
            field = next(k for k in x if x[k] != y[k])
            problems.append(f"{name}: {field} differs")
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--ignore", default="", help=f"comma-separated round fields not to compare ({', '.join(ROUND_FIELDS)})")
    args = p.parse_args()
    ignore = frozenset(f for f in args.ignore.split(",") if f)
    if ignore - set(ROUND_FIELDS):
        p.error(f"--ignore: not a round field: {', '.join(sorted(ignore - set(ROUND_FIELDS)))}")
    problems = compare(args.a, args.b, ignore)
    print("identical answers" if not problems else "\n".join(["DIFFERENT:", *problems]))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
