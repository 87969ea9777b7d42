"""Shared fixtures: deterministic CPU torch, temporary stores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings

import alsatian_pl  # noqa: F401  first: OpenMP's idle threads wait passively (alsatian_pl/threads.py)
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

# property tests: the same examples on every run, and no per-example time limit (a loaded 2-core runner is slow)
settings.register_profile("alsatian", derandomize=True, deadline=None)
settings.load_profile("alsatian")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state, whatever ran before it."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def store(tmp_path):
    from alsatian_pl.store import BlockStore

    return BlockStore(tmp_path / "store")


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The tiny zoo most search tests share: 6 mobilenetv3_small_050 variants at 32 px (Top 25%, seed 1)."""
    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

    store = BlockStore(tmp_path_factory.mktemp("store"))
    cfg = ZooConfig("tiny", "mobilenetv3_small_050", num_models=6, distribution="top25", seed=1,
                    input_size=(3, 32, 32))
    return build_synthetic_zoo(store, cfg, progress=False)


@pytest.fixture
def ctrl_c_in_round(monkeypatch):
    """``arm(r)``: from then on a search's scoring of round ``r`` (0-based) raises KeyboardInterrupt, as a Ctrl-C
    there would (``monkeypatch.undo()`` disarms it)."""
    from alsatian_pl.halving import SuccessiveHalving

    score = SuccessiveHalving._score

    def arm(r: int) -> None:
        def interrupted(self, state, engine):
            if state.round == r:
                raise KeyboardInterrupt
            return score(self, state, engine)

        monkeypatch.setattr(SuccessiveHalving, "_score", interrupted)

    return arm


@pytest.fixture(scope="session")
def two_ranks(zoo, tmp_path_factory):
    """The 2-process searches of the distributed tests, run one after another in one launch of 2 CPU processes
    (tests/_distributed_search.py: the processes and their imports start once): name -> rank 0's result as JSON,
    and ``hooks``, the folder of the HookLog callbacks of the ``alsatian`` search. Searches of all 6 models per
    strategy; ``emptied`` and ``idle``: models 1, 2, 3 and 5 with rebalancing at 0.8 and off."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tmp = tmp_path_factory.mktemp("two-ranks")
    four = [zoo.models[i] for i in (1, 2, 3, 5)]
    spec = {s: {"models": list(zoo.models), "strategy": s} for s in ("alsatian", "shift", "base")}
    spec["alsatian"]["options"] = [f"hooks={tmp / 'hooks'}"]
    spec["emptied"] = {"models": four, "strategy": "alsatian", "options": ["rebalance=0.8"]}
    spec["idle"] = {"models": four, "strategy": "alsatian", "options": ["rebalance=null"]}
    (tmp / "hooks").mkdir()
    (tmp / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("_distributed_search.py")),
                           str(zoo.store.root), str(tmp / "spec.json"), str(tmp), "2"], capture_output=True,
                          text=True, timeout=600, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"hooks": tmp / "hooks", **{name: json.loads((tmp / f"{name}.json").read_text()) for name in spec}}
