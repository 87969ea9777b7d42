"""Signals at chosen moments (subprocesses): Ctrl-C while the zoo's blocks are written, SIGTERM while a round is
scored, SIGKILL half-way through a block file. SIGINT/SIGTERM end in one line (exit status 130/143) with nothing
half-written; after SIGKILL only a temporary file is left, which readers ignore, and the next run completes the zoo
block for block."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from _harness import assert_intact, interrupt_at, one_error_line, rebuilds_the_same_zoo, script


def test_ctrl_c_while_the_zoo_is_written(tmp_path):
    store = tmp_path / "store"
    args = script("search.py", f"store.root={store}", f"hydra.run.dir={tmp_path / 'run'}", hook="pause:/blocks/:3")
    proc = interrupt_at(args, tmp_path / "marker", signal.SIGINT)
    assert proc.returncode == 130, proc.stderr[-3000:]
    one_error_line(proc.stderr, "interrupted (Ctrl-C)", "nothing was left half-written")
    assert_intact(store)
    assert len(list(store.rglob("*.safetensors"))) == 2 and not (tmp_path / "run" / "results.json").exists()


def test_sigterm_while_a_round_is_scored(built, fresh_store, tmp_path):
    args = script("search.py", f"store.root={fresh_store}", f"hydra.run.dir={tmp_path / 'run'}",
                  hook="call:alsatian_pl.halving:SuccessiveHalving._score")
    proc = interrupt_at(args, tmp_path / "marker", signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr[-3000:]
    one_error_line(proc.stderr, "interrupted")
    assert_intact(fresh_store)
    assert not (tmp_path / "run" / "results.json").exists()


def test_sigkill_half_way_through_a_block_file(built, tmp_path):
    from alsatian_pl.store import BlockStore

    store = tmp_path / "store"
    args = script("search.py", f"store.root={store}", f"hydra.run.dir={tmp_path / 'run'}", hook="half:/blocks/:2")
    proc = interrupt_at(args, tmp_path / "marker", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert_intact(store, temporary_files=True)
    assert len(list(store.rglob("*.tmp"))) == 1 and len(list(store.rglob("*.safetensors"))) == 1
    rebuilds_the_same_zoo(store, built[0])
    assert BlockStore(store).gc() > 0 and not list(store.rglob("*.tmp"))
    assert_intact(store)


def test_ctrl_c_while_a_round_is_saved_names_the_rounds_the_file_holds(built, fresh_store, tmp_path):
    """Ctrl-C during round 2's checkpoint write: the file still holds round 1 (the write is atomic), and the message
    says so and names that file (it said what the state counted, not what the file held)."""
    from alsatian_pl.halving.resume import saved_rounds

    args = script("search.py", f"store.root={fresh_store}", f"hydra.run.dir={tmp_path / 'run'}",
                  f"search.checkpoint_dir={tmp_path / 'saved'}", hook="pause:/saved/:2")
    proc = interrupt_at(args, tmp_path / "marker", signal.SIGINT)
    assert proc.returncode == 130, proc.stderr[-3000:]
    line = one_error_line(proc.stderr, "interrupted in round 2 of 2; round 1 is saved in", "search.resume=true")
    saved = Path(line.split(" saved in ")[1].split(":")[0])
    assert saved.is_file() and saved_rounds(saved) == 1 and not list(saved.parent.glob("*.tmp"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_to_the_launcher_of_a_two_process_search_ends_both_ranks_in_one_line_each(sig, fresh_store, tmp_path):
    """The launcher passes the signal to the rank it started: each rank says it was interrupted (before, the other
    rank printed a C++ log line, a traceback and 'did not answer within 300 s' seconds after its peer left)."""
    args = script("search.py", f"store.root={fresh_store}", f"hydra.run.dir={tmp_path / 'run'}", "search.devices=2",
                  "search.accelerator=cpu", "search.checkpoint_dir=null",
                  hook="call:alsatian_pl.halving:SuccessiveHalving._score")
    proc = interrupt_at(args, tmp_path / "marker", sig)
    assert proc.returncode == 128 + sig, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    # one line per rank; a rank still importing the zoo when the signal comes says so instead of naming a round
    assert len(errors) == 2 and all(e.startswith("error: interrupted") for e in errors), proc.stderr[-3000:]
    assert any("interrupted in round 1 of" in e for e in errors), proc.stderr[-3000:]
    for noise in ("Traceback", "ProcessGroupGloo", "300 s", "[rank"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_rank_whose_peer_left_says_so_not_that_it_waited_out_the_timeout():
    from alsatian_pl.distributed import Group

    group = Group(1, 2)
    quick = str(group._failed(RuntimeError("Connection closed by peer"), waited_s=0.4))
    assert "another rank left the search" in quick and "300 s" not in quick
    assert f"within {group.timeout_s:.0f} s" in str(group._failed(RuntimeError("timed out"), group.timeout_s))
