"""Run one search over N CPU processes (Fabric DDP, gloo) and write rank 0's result: used by test_distributed.py.

    python tests/_distributed_search.py STORE_ROOT MODELS(comma-separated) STRATEGY DEVICES OUT.json [RANK:ROUND]
        [rebalance=THRESHOLD] [checkpoints=DIR]

With RANK:ROUND, that rank dies when it starts scoring that round (0-based); rebalance= sets search.rebalance_below
(null: never); checkpoints= saves each rank's rounds under DIR/rank-<r> and resumes from them; hooks=DIR adds two
HookLog callbacks (rank 0's, every rank's) that write the hooks they saw into DIR.

    python tests/_distributed_search.py STORE_ROOT SPEC.json OUT_DIR DEVICES

runs several searches one after another in one launch (the processes start once): SPEC.json maps a name to
``{"models": [...], "strategy": ..., "options": ["rebalance=null", "hooks=DIR", ...]}`` (the options above, without
RANK:ROUND); rank 0 writes each result to OUT_DIR/<name>.json.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alsatian_pl.data import SearchDataModule  # noqa: E402
from alsatian_pl.distributed import launch  # noqa: E402
from alsatian_pl.halving import SuccessiveHalving  # noqa: E402
from alsatian_pl.store import BlockStore  # noqa: E402
from _hooklog import HookLog  # noqa: E402


def die_in_round(rank: int, round_: int) -> None:
    """Test hook: rank ``rank`` dies (as if killed) when it starts scoring round ``round_``."""
    score = SuccessiveHalving._score

    def dying(self, state, engine):
        if self.group.rank == rank and state.round == round_:
            os._exit(3)
        return score(self, state, engine)

    SuccessiveHalving._score = dying


def search(group):
    if sys.argv[2].endswith(".json"):
        for name, spec in json.loads(Path(sys.argv[2]).read_text()).items():
            group.bytes_sent = group.collectives = 0  # each search reports its own traffic
            one(group, sys.argv[1], spec["models"], spec["strategy"], str(Path(sys.argv[3]) / f"{name}.json"),
                spec.get("options", []))
        return
    for arg in (a for a in sys.argv[6:] if ":" in a):
        die_in_round(*map(int, arg.split(":")))
    one(group, sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[5], sys.argv[6:])


def one(group, root, models, strategy, out, args):
    """One search of ``models`` on this rank; rank 0 writes its result to ``out``."""
    options = dict(a.split("=") for a in args if "=" in a)
    threshold = options.get("rebalance", "0.8")
    saved = {"checkpoint_dir": Path(options["checkpoints"]) / f"rank-{group.rank}", "resume": True} \
        if "checkpoints" in options else {}
    data = SearchDataModule(num_items=300, image_size=32, seed=0)
    callbacks = [HookLog(options["hooks"]), HookLog(options["hooks"], every_rank=True)] if "hooks" in options else []
    result = SuccessiveHalving(BlockStore(root), data, strategy=strategy, batch_size=32, device="cpu",
                               progress=False, scorer_kwargs={"epochs": 10}, group=group, **saved, callbacks=callbacks,
                               rebalance_below=None if threshold == "null" else float(threshold)).run(models)
    if group.is_global_zero:
        Path(out).write_text(json.dumps(result.to_json()))


if __name__ == "__main__":
    from alsatian_pl.errors import AlsatianError
    try:
        launch(search, devices=int(sys.argv[4]), accelerator="cpu", timeout_s=30)  # DEVICES: argv[4] in both forms
    except AlsatianError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
