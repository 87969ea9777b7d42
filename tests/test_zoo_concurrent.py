"""Two processes building the same zoo into one store at once (every rank of a torchrun launch runs search.py from
the start) take turns: one builds, the other waits and reuses the recorded zoo; neither fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from alsatian_pl.store import BlockStore

ROOT = Path(__file__).resolve().parents[1]
BUILDER = """
import json, sys
sys.path.insert(0, {root!r})
from alsatian_pl.store import BlockStore
from alsatian_pl.zoo import ZooConfig, _record, build_synthetic_zoo
built = []
build = _record._build_zoo
_record._build_zoo = lambda *a, **k: built.append(1) or build(*a, **k)
cfg = ZooConfig("race", "mobilenetv3_small_050", num_models=3, distribution="top25", seed=1, input_size=(3, 32, 32))
zoo = build_synthetic_zoo(BlockStore({store!r}), cfg, progress=False)
print(json.dumps({{"models": zoo.models, "built": len(built)}}))
"""


def test_two_concurrent_builders_of_one_zoo_end_with_one_correct_zoo(tmp_path):
    store = tmp_path / "store"
    code = BUILDER.format(root=str(ROOT), store=str(store))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(r["built"] for r in results) == [0, 1]  # one built it, the other waited and reused the record
    assert results[0]["models"] == results[1]["models"] and len(results[0]["models"]) == 3
    s = BlockStore(store)
    assert sorted(s.model_names()) == sorted(results[0]["models"]) and s.verify() == []
    assert len(list((store / "zoos").glob("*.json"))) == 1
