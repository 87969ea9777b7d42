"""The disk refuses: a full disk (a small tmpfs where mount namespaces allow, else an injected ENOSPC), a read-only
store, a write interrupted half-way. One ``error:`` line, exit status 2, and every file either whole or absent."""

from __future__ import annotations

import errno
import json
import os

import pytest

from _harness import (assert_intact, compose, in_namespace, in_process, namespaces, one_error_line,
                      rebuilds_the_same_zoo, run, script)


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    from alsatian_pl.errors import DiskError
    from alsatian_pl.io import atomic_write

    path = atomic_write(tmp_path / "deep" / "r.json", "old")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    atomic_write(path, "new")
    assert path.read_text() == "new" and len(synced) >= 2  # the file, then its folder
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: (real_write(fd, data[:3]), _enospc())[1])
    with pytest.raises(DiskError, match=r"cannot write .*r\.json: No space left on device \(errno 28\); free space"):
        atomic_write(path, "newer and longer")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_atomic_writes_get_the_mode_a_plain_write_gives(tmp_path):
    """Files we write are readable as a plain write leaves them (not the temporary file's 0600): 0666 less the
    umask for a new file, the file's own mode for one rewritten."""
    from alsatian_pl.io import atomic_write

    before = os.umask(0o022)
    try:
        plain = tmp_path / "plain.json"
        plain.write_text("x")
        assert (atomic_write(tmp_path / "r.json", "x").stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        assert atomic_write(tmp_path / "private.json", "x").stat().st_mode & 0o777 == 0o600
        (tmp_path / "r.json").chmod(0o640)
        assert atomic_write(tmp_path / "r.json", "y").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(before)


def _enospc():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_results_on_a_full_disk_or_interrupted_leave_the_previous_results(built, tmp_path, monkeypatch, capsys):
    """A search whose results.json does not fit on the disk (it asks for more models than the zoo has, which is
    noted in a warning), then a Ctrl-C while results are renamed into place: the previous results stay whole."""
    from alsatian_pl.app import run_search
    from alsatian_pl.errors import AlsatianWarning
    from alsatian_pl.io import write_json

    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"previous": true}')
    real_write, real_replace = os.write, os.replace

    def full(fd, data):
        if "results.json" in os.readlink(f"/proc/self/fd/{fd}"):
            _enospc()
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.warns(AlsatianWarning, match="search.result_size=9 is more than the 4 models searched"):
        status, err = in_process(capsys, run_search, compose(f"store.root={built[0]}", "search.checkpoint_dir=null",
                                                             "search.result_size=9"), out)
    assert status == 2 and "No space left on device" in one_error_line(err, str(out / "results.json"))
    monkeypatch.setattr(os, "write", real_write)

    def ctrl_c(src, dst):
        if str(dst).endswith("results.json"):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", ctrl_c)
    status, err = in_process(capsys, write_json, out / "results.json", {"ranking": []})
    assert status == 130 and "interrupted (Ctrl-C)" in one_error_line(err)
    assert json.loads((out / "results.json").read_text()) == {"previous": True}
    assert_intact(out)


def test_a_full_disk_under_the_store_ends_in_one_line_and_leaves_it_consistent(built, tmp_path):
    """The store on a 1 MiB tmpfs (the tiny zoo needs about 6): the zoo build stops at the first block that does
    not fit; a later run with room completes the zoo block for block."""
    store, kept = tmp_path / "store", tmp_path / "kept"
    store.mkdir()
    kept.mkdir()
    overrides = (f"store.root={store}", f"hydra.run.dir={tmp_path / 'run'}")
    if namespaces():
        proc = in_namespace(f"mount -t tmpfs -o size=1m tmpfs {store}", script("search.py", *overrides),
                            copy_from=store, copy_to=kept)
    else:  # injected: every write into the store fails as on a full disk
        proc, kept = run(script("search.py", *overrides, hook=f"fail:{store}/:{errno.ENOSPC}")), store
    assert proc.returncode == 2, proc.stderr[-3000:]
    one_error_line(proc.stderr, "No space left on device", str(store))
    assert_intact(kept)
    rebuilds_the_same_zoo(kept, built[0])


def test_a_read_only_store_ends_in_one_line(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    overrides = (f"store.root={store}", f"hydra.run.dir={tmp_path / 'run'}")
    if namespaces():
        proc = in_namespace(f"mount --bind {store} {store} && mount -o remount,bind,ro {store}",
                            script("search.py", *overrides))
    else:  # injected: every write into the store fails as on a read-only mount
        proc = run(script("search.py", *overrides, hook=f"fail:{store}/:{errno.EROFS}"))
    reason = os.strerror(errno.EROFS)
    assert proc.returncode == 2, proc.stderr[-3000:]
    one_error_line(proc.stderr, reason, str(store), "set dataset.data_cache and search.checkpoint_dir")
    assert not [p for p in store.rglob("*") if p.is_file()]


def test_a_read_only_store_with_its_zoo_is_searched_with_the_settings_the_advice_names(fresh_store, tmp_path):
    """The advice for a store one may not write to names the settings that help (dataset.data_cache,
    search.checkpoint_dir; it named store.root, hydra.run.dir and search.spill_dir, which do not): following it, the
    same search runs to its results with the store left untouched."""
    run_dir, caches = tmp_path / "run", tmp_path / "caches"
    caches.mkdir()
    before = sorted((p, p.stat().st_mtime_ns) for p in fresh_store.rglob("*") if p.is_file())
    overrides = [f"store.root={fresh_store}", f"hydra.run.dir={run_dir}"]
    advised = [f"dataset.data_cache={caches / 'data'}", f"search.checkpoint_dir={caches / 'searches'}"]
    for extra in ([], advised):
        if namespaces():
            proc = in_namespace(f"mount --bind {fresh_store} {fresh_store} && mount -o remount,bind,ro "
                                f"{fresh_store}", script("search.py", *overrides, *extra))
        else:  # injected: every write into the store fails as on a read-only mount
            proc = run(script("search.py", *overrides, *extra, hook=f"fail:{fresh_store}/:{errno.EROFS}"))
        if not extra:
            assert proc.returncode == 2, proc.stderr[-3000:]
            one_error_line(proc.stderr, os.strerror(errno.EROFS), "dataset.data_cache", "search.checkpoint_dir")
    assert proc.returncode == 0 and (run_dir / "results.json").is_file(), proc.stderr[-3000:]
    assert sorted((p, p.stat().st_mtime_ns) for p in fresh_store.rglob("*") if p.is_file()) == before


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    """Two search.py runs started together resolve different run folders (named to the microsecond), so neither
    writes over the other's results.json and saved config."""
    import subprocess
    import sys

    from _harness import ROOT

    args = [sys.executable, str(ROOT / "search.py"), "--cfg", "hydra", "--resolve"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for _ in range(2)]
    dirs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        dirs.append(next(line.split("dir:")[1].strip() for line in out.splitlines()
                         if line.strip().startswith("dir: outputs/")))
    assert dirs[0] != dirs[1] and all(len(d.rsplit("-", 1)[1]) == 6 for d in dirs), dirs


@pytest.mark.parametrize("name", ["search.py", "train.py"])
def test_a_run_folder_holding_another_runs_results_is_refused_before_anything_is_written(name, tmp_path):
    """A user-fixed hydra.run.dir that holds a finished run: one line, and that run's results and saved config
    stay as they were (Hydra rewrote .hydra/config.yaml before the job ran; the results were overwritten)."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "results.json").write_text('{"earlier": true}')
    (run_dir / ".hydra" / "config.yaml").write_text("earlier: true\n")
    proc = run(script(name, f"store.root={tmp_path / 'store'}", f"hydra.run.dir={run_dir}"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    one_error_line(proc.stderr, f"hydra.run.dir={run_dir} already holds another run's results.json",
                   "search.resume=true")
    assert (run_dir / "results.json").read_text() == '{"earlier": true}'
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "earlier: true\n"
    assert sorted(p.name for p in run_dir.rglob("*")) == [".hydra", "config.yaml", "results.json"]
    assert not (tmp_path / "store").exists()


def test_a_resumed_search_may_go_on_in_its_own_folder(tmp_path):
    from alsatian_pl.app.runs import check_run_folder
    from alsatian_pl.errors import ConfigError

    (tmp_path / "results.json").write_text("{}")
    check_run_folder(tmp_path, "hydra.run.dir", resume=True)
    with pytest.raises(ConfigError, match="already holds another run's results.json"):
        check_run_folder(tmp_path, "hydra.run.dir", resume=False)
    check_run_folder(tmp_path / "fresh", "hydra.run.dir", resume=False)


@pytest.mark.parametrize("key", ["checkpoint_dir", "feature_cache", "spill_dir"])
def test_a_search_folder_that_cannot_be_written_is_refused_when_the_search_is_made(zoo, tmp_path, monkeypatch, key):
    """Not after a round's work: the folder is probed when the options are checked (the probe leaves nothing)."""
    import tempfile

    from alsatian_pl.data import SearchDataModule
    from alsatian_pl.errors import DiskError
    from alsatian_pl.halving import SuccessiveHalving
    from alsatian_pl.store import BlockStore

    locked, real = tmp_path / "locked", tempfile.mkstemp
    locked.mkdir()

    def refuse(*args, dir=None, **kwargs):  # as a read-only or foreign folder refuses a new file
        if dir is not None and str(dir).startswith(str(locked)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    data = SearchDataModule(num_items=300, image_size=32)
    with pytest.raises(DiskError, match=rf"search\.{key}=.*locked/sub cannot be written: .*Permission denied"):
        SuccessiveHalving(BlockStore(zoo.store.root), data, device="cpu", **{key: str(locked / "sub")})
    assert not list(locked.iterdir())
    monkeypatch.undo()
    SuccessiveHalving(BlockStore(zoo.store.root), data, device="cpu", **{key: str(locked / "sub")})  # writable: fine
    assert not list(locked.iterdir())  # and the probe left nothing
