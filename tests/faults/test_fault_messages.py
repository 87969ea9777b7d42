"""Messages that are true (issue 30 class 8): a stray file in models/ does not stop ``alsatian store ls`` or
``verify`` (and the advice no longer loops: "run the same command again"); a damaged format.json is reported once and
written anew; a metrics logger on a full disk is one true warning line and the results are still written; an image
size no machine can prepare is refused up front, without blaming the disk."""

from __future__ import annotations

import errno
import json
import warnings

import pytest

from _harness import compose, in_namespace, in_process, namespaces, one_error_line, script


def test_a_stray_file_in_models_is_named_and_the_store_still_listed_and_verified(fresh_store, capsys):
    from alsatian_pl.app.cli import main

    (fresh_store / "models" / "notes.json").write_text("{my notes")
    assert main(["store", "--root", str(fresh_store), "ls"]) == 0
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if "-00" in line]) == 4
    assert err.count("warning:") == 1 and "notes.json" in err and "remove" in err and "again" not in err.split(
        "if it was a model")[0], err
    assert main(["store", "--root", str(fresh_store), "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [u["name"] for u in report["unreadable_manifests"]] == ["notes"] and report["corrupt"] == []
    (fresh_store / "models" / "notes.json").unlink()
    assert main(["store", "--root", str(fresh_store), "verify"]) == 0


def test_a_damaged_format_file_is_reported_once_and_written_anew(fresh_store):
    from alsatian_pl.errors import AlsatianWarning
    from alsatian_pl.store import BlockStore

    (fresh_store / "format.json").write_text('{"version": ')
    with pytest.warns(AlsatianWarning, match="format.json of the block store .* is damaged: checking its"):
        BlockStore(fresh_store)
    assert json.loads((fresh_store / "format.json").read_text())["version"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second check of every block
        assert BlockStore(fresh_store).format_version == 2


class FullDisk:
    """A Lightning-style logger on a full disk: every write fails as Lightning's CSV logger's does (no file name)."""

    log_dir = "/mnt/full/logs/version_0"

    def log_metrics(self, metrics, step=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    log_hyperparams = finalize = log_metrics


def test_a_metrics_logger_on_a_full_disk_is_one_true_warning_and_the_search_ends(built, fresh_store):
    from alsatian_pl.data import SearchDataModule
    from alsatian_pl.halving import SuccessiveHalving
    from alsatian_pl.store import BlockStore

    store = BlockStore(fresh_store)
    searcher = SuccessiveHalving(store, SearchDataModule(num_items=300, image_size=32, seed=0), progress=False,
                                 scorer={"name": "linear", "kwargs": {"epochs": 5}}, logger=FullDisk())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = searcher.run(store.model_names())
    lines = [str(w.message) for w in caught if "metrics logger" in str(w.message)]
    assert len(lines) == 1, lines
    assert "cannot write /mnt/full/logs/version_0: No space left on device" in lines[0] and "?" not in lines[0]
    assert [r.model for r in result.ranking] == built[1]


@pytest.mark.skipif(not namespaces(), reason="needs a private mount namespace for a tiny tmpfs")
def test_lightnings_csv_logger_on_a_full_disk_leaves_the_results(fresh_store, tmp_path):
    tiny, run_dir = tmp_path / "tiny", tmp_path / "run"
    tiny.mkdir()
    proc = in_namespace(f"mount -t tmpfs -o size=4k tmpfs {tiny}",
                        script("search.py", f"store.root={fresh_store}", f"hydra.run.dir={run_dir}",
                               f"logger.save_dir={tiny}"))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "metrics logger" in line]
    assert len(warned) == 1 and "No space left on device" in warned[0] and "?" not in warned[0], proc.stderr
    assert (run_dir / "results.json").is_file()


def test_an_image_size_no_machine_can_prepare_is_refused_up_front(tmp_path, capsys):
    from alsatian_pl.app import run_search

    status, err = in_process(capsys, run_search, compose(f"store.root={tmp_path / 'store'}",
                                                         "dataset.image_size=100000"))
    assert status == 2
    line = one_error_line(err, "dataset.image_size=100000 makes each prepared image 27.9 GiB", "memory",
                          "dataset.image_size=224")
    assert "disk" not in line and not (tmp_path / "store" / "data").exists()
