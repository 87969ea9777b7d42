"""Search callbacks (alsatian_pl.SearchCallback): every hook fires in order, single-process and distributed (rank 0,
or every rank when asked), their state survives a resume, bad callbacks are refused, the config group builds them,
and the engine runs without Hydra."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _hooklog import HookLog
from alsatian_pl import SearchCallback, search
from alsatian_pl.data import SearchDataModule
from alsatian_pl.errors import ConfigError, SearchInterrupted
from alsatian_pl.halving import CallbackList, RoundCheckpoint, RoundLog, SuccessiveHalving

ROUND = ["on_round_start", "on_round_planned", "on_round_executed", "on_round_scored", "on_round_end"]
OPTIONS = dict(batch_size=32, device="cpu", progress=False, scorer_kwargs={"epochs": 10})


@pytest.fixture(scope="module")
def data():
    return SearchDataModule(num_items=300, image_size=32, seed=0)


def test_a_notebook_callback_sees_every_round_in_order_and_changes_nothing(zoo, data):
    plain = search(zoo, data, **OPTIONS)
    log = HookLog()
    result = search(zoo, data, callbacks=[log], **OPTIONS)
    rounds = len(result.rounds)
    assert [h for h, _ in log.calls] == ["setup", "on_search_start", *ROUND * rounds, "on_search_end"]
    assert [r for h, r in log.calls if h == "on_round_end"] == list(range(rounds))
    assert log.reports == result.rounds and log.result is result and log.rounds_seen == rounds
    assert log.survivors[-1] == [r.model for r in result.ranking if r.eliminated_in_round is None]
    assert [(r.model, r.score, r.test_loss) for r in result.ranking] == [
        (r.model, r.score, r.test_loss) for r in plain.ranking]


def test_callback_state_survives_a_resume(zoo, data, tmp_path, ctrl_c_in_round):
    ctrl_c_in_round(1)
    first = HookLog()
    with pytest.raises(SearchInterrupted, match="round 1 is saved"):
        search(zoo, data, callbacks=[first], checkpoint_dir=tmp_path, **OPTIONS)
    assert first.rounds_seen == 1 and first.calls[-1] == ("on_exception:KeyboardInterrupt", 1)
    ctrl_c_in_round(99)  # disarmed
    again = HookLog()
    result = search(zoo, data, callbacks=[again], checkpoint_dir=tmp_path, resume=True, **OPTIONS)
    assert result.resumed_from_round == 1
    assert again.rounds_seen == len(result.rounds)  # round 1's count restored, the later rounds added
    assert [h for h, _ in again.calls][:3] == ["setup", "on_search_start", "on_round_start"]
    assert again.calls[2] == ("on_round_start", 1)


def test_round_checkpoints_come_last_and_callbacks_added_later_go_before_them(zoo, data, tmp_path):
    mine = HookLog()
    searcher = SuccessiveHalving(zoo.store, data, callbacks=[RoundCheckpoint(tmp_path), mine], **OPTIONS)
    later = RoundLog()
    searcher.callbacks.append(later)
    assert [type(c) for c in searcher.callbacks] == [HookLog, RoundLog, RoundCheckpoint]
    plain = SuccessiveHalving(zoo.store, data, checkpoint_dir=tmp_path, logger=None, **{**OPTIONS, "progress": True})
    assert [type(c).__name__ for c in plain.callbacks] == ["ProgressBar", "RoundCheckpoint"]


def test_bad_callbacks_are_refused_with_one_message(zoo, data):
    with pytest.raises(ConfigError, match="must be alsatian_pl.SearchCallback instances, got function"):
        SuccessiveHalving(zoo.store, data, callbacks=[lambda *a: None], **OPTIONS)
    with pytest.raises(ConfigError, match="share the state key 'HookLog'"):
        CallbackList([HookLog(), HookLog()])


def test_round_log_prints_one_line_per_round(zoo, data, capsys):
    result = search(zoo, data, callbacks=[RoundLog()], **OPTIONS)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == len(result.rounds) and lines[0].startswith(f"round 1/{len(result.rounds)}: ")
    assert f"best {result.ranking[0].score:.4f} ({result.winner})" in lines[-1]


def test_distributed_callbacks_run_on_rank_zero_unless_they_ask_for_every_rank(two_ranks):
    # two_ranks' alsatian search over 2 processes carries two HookLogs: rank 0's and every rank's
    hooks_dir, rounds = two_ranks["hooks"], len(two_ranks["alsatian"]["rounds"])
    assert sorted(p.name for p in hooks_dir.glob("*-rank*.json")) == ["every-rank0.json", "every-rank1.json",
                                                                       "zero-rank0.json"]
    for name in ("every-rank0.json", "every-rank1.json", "zero-rank0.json"):
        seen = json.loads((hooks_dir / name).read_text())
        hooks = [h for h, _ in seen["calls"]]
        assert seen["rounds_seen"] == rounds and hooks[:2] == ["setup", "on_search_start"]
        assert hooks[-1] == "on_search_end" and hooks.count("on_round_end") == rounds


class _NotACallback:
    pass


def test_the_callbacks_config_group_builds_callbacks_and_refuses_others():
    from alsatian_pl.app import make_callbacks

    built = make_callbacks({"rounds": {"_target_": "alsatian_pl.halving.RoundLog"}, "off": None})
    assert [type(c) for c in built] == [RoundLog]
    with pytest.raises(ConfigError, match="callbacks.x: test_callbacks._NotACallback is not a SearchCallback"):
        make_callbacks({"x": {"_target_": "test_callbacks._NotACallback"}})
    with pytest.raises(ConfigError, match="callbacks.y must be a config with a _target_"):
        make_callbacks({"y": 3})
    with pytest.raises(ConfigError, match="callbacks.z: no.such.Thing cannot be built"):
        make_callbacks({"z": {"_target_": "no.such.Thing"}})


def test_search_py_composes_callbacks_from_the_group(zoo, capsys):
    from hydra import compose, initialize_config_dir

    from alsatian_pl.app import run_search

    conf = Path(__file__).resolve().parents[1] / "conf"
    small = ["models=store", "dataset.num_items=300", "dataset.image_size=32", "++search.scorer.kwargs.epochs=5",
             "search.progress=false", "search.checkpoint_dir=null", f"store.root={zoo.store.root}", "~logger"]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        assert compose("search", overrides=small).callbacks == {}  # callbacks=none: no extra callbacks
        cfg = compose("search", overrides=[*small, "callbacks=[rounds,memory]"])
    assert sorted(cfg.callbacks) == ["memory", "rounds"]
    result, report = run_search(cfg, None)
    assert report["ranking"][0]["model"] == result.winner
    assert len(capsys.readouterr().err.strip().splitlines()) == len(result.rounds)  # RoundLog's lines


def test_the_engine_runs_without_hydra_installed(zoo, tmp_path):
    """The engine's import path holds no Hydra or OmegaConf: a search runs with both made unimportable."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["hydra"] = sys.modules["omegaconf"] = None  # as if not installed
        import alsatian_pl as ap
        data = ap.SearchDataModule(num_items=300, image_size=32, seed=0)
        result = ap.search({list(zoo.models)!r}, data, store={str(zoo.store.root)!r}, batch_size=32, device="cpu",
                           progress=False, scorer_kwargs={{"epochs": 2}}, callbacks=[ap.RoundLog()])
        print(result.winner)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() in zoo.models


def test_a_callback_subclass_needs_only_the_hooks_it_uses():
    class Counter(SearchCallback):
        def __init__(self):
            self.ends = 0

        def on_round_end(self, search, state, report):
            self.ends += 1

    assert Counter().state_dict() == {} and Counter().rank_zero_only and Counter().state_key.endswith("<locals>.Counter")
    counter = Counter()  # every other hook is the base class's no-op: callable with the loop's arguments
    for hook in ("on_search_start", "on_round_start", "on_round_executed"):
        assert getattr(counter, hook)(None, None) is None
    assert counter.on_round_planned(None, None, None) is None and counter.on_round_scored(None, None, {}) is None
    assert counter.on_search_end(None, None, None) is None and counter.on_exception(None, None, ValueError()) is None
    counter.load_state_dict({})
    counter.on_round_end(None, None, None)
    assert counter.ends == 1
