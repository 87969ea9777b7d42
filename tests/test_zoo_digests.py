"""Content digests of the user's files (zoo keys) are remembered across runs by the file's identity and times: a warm
run does not hash a built zoo's checkpoints again, and a file rewritten in place (same size, mtime restored) still is."""

from __future__ import annotations

import json
import os

import pytest

import alsatian_pl.io as aio


@pytest.fixture
def memo(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "digests.json"
    monkeypatch.setenv("ALSATIAN_DIGEST_CACHE", str(path))
    monkeypatch.setattr(aio, "_MEMO", {})
    monkeypatch.setattr(aio, "_SETTLE_NS", 0)  # remember files written a moment ago (tests do not wait 2 s)
    hashed = []
    real = aio._sha256_of
    monkeypatch.setattr(aio, "_sha256_of", lambda p: hashed.append(os.fspath(p)) or real(p))
    return path, hashed


def _fresh_process(monkeypatch):
    monkeypatch.setattr(aio, "_MEMO", {})  # what a new process reads: the memo file only


def test_a_file_is_hashed_once_across_runs(tmp_path, memo, monkeypatch):
    path, hashed = memo
    f = tmp_path / "a.pth"
    f.write_bytes(b"weights" * 1000)
    first = aio.file_digest(f)
    _fresh_process(monkeypatch)
    assert aio.file_digest(f) == first and len(hashed) == 1 and path.is_file()


def test_a_file_rewritten_in_place_with_its_size_and_mtime_is_hashed_again(tmp_path, memo, monkeypatch):
    _, hashed = memo
    f = tmp_path / "a.pth"
    f.write_bytes(b"a" * 4096)
    first = aio.file_digest(f)
    stat = f.stat()
    f.write_bytes(b"b" * 4096)
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert f.stat().st_size == stat.st_size and f.stat().st_mtime_ns == stat.st_mtime_ns
    _fresh_process(monkeypatch)
    assert aio.file_digest(f) != first and len(hashed) == 2


def test_a_recently_changed_file_is_not_remembered(tmp_path, memo, monkeypatch):
    path, hashed = memo
    monkeypatch.setattr(aio, "_SETTLE_NS", 10**12)
    f = tmp_path / "a.pth"
    f.write_bytes(b"x")
    aio.file_digest(f)
    aio.file_digest(f)
    assert len(hashed) == 2 and not path.exists()


@pytest.mark.parametrize("content", [b"not json", b'{"digests": 3}', None])
def test_a_damaged_unwritable_or_disabled_memo_only_costs_a_hash(tmp_path, memo, monkeypatch, content):
    path, hashed = memo
    f = tmp_path / "a.pth"
    f.write_bytes(b"x" * 10)
    if content is None:
        monkeypatch.setenv("ALSATIAN_DIGEST_CACHE", "")
    else:
        path.parent.mkdir()
        path.write_bytes(content)
    expected = aio._sha256_of(f)
    assert aio.file_digest(f) == expected and aio.file_digest(f) == expected
    if content is None:
        assert len(hashed) == 3 and not path.exists()
    else:
        assert len(hashed) == 2 and f.resolve().as_posix() in json.loads(path.read_text())["digests"]
    (tmp_path / "ro").mkdir()
    monkeypatch.setenv("ALSATIAN_DIGEST_CACHE", str(tmp_path / "ro" / "file" / "x.json"))
    (tmp_path / "ro" / "file").write_text("a file where a folder must be")
    assert aio.file_digest(f) == expected  # the memo cannot be written: no error
