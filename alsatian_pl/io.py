"""Files we write and read back: one atomic writer, validated JSON reads, content digests, and one wording for
operating-system errors.

Every file alsatian-pl writes (blocks, manifests, zoo records, tokenizers, results, summaries, checkpoints) goes
through :func:`atomic_write`: a temporary file in the same folder, fsync, rename. Readers therefore see the old file
or the whole new one, never a truncated one; a killed process leaves at most a ``.*.tmp`` file, which readers ignore
and ``BlockStore.gc`` removes. Stdlib only: the entry points' error boundary imports it before anything heavy.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, CorruptFileError, DiskError

__all__ = ["atomic_write", "json_bytes", "write_json", "read_json", "file_digest", "digest_memo_path", "check_folder",
           "os_error_message"]

_SEAL = "sha256"  # the key of a sealed JSON file's checksum
_WHERE = ("hydra.run.dir, store.root, dataset.data_cache, search.checkpoint_dir, search.spill_dir")  # where files go
# the setting that chose a file's folder, by the nearest folder name the store gives its parts
_SETTING_OF = {"data": "dataset.data_cache", "searches": "search.checkpoint_dir", "features": "search.feature_cache",
               "blocks": "store.root", "models": "store.root", "zoos": "store.root", "heads": "store.root",
               "tokenizers": "store.root", "logs": "logger.save_dir"}
_RUN_FILES = ("results.json", "failed.json", "ranking.png", "time.png", "summary.json", "summary.png",
              "finetuned.safetensors")
_STORE_CACHES = ("dataset.data_cache", "search.checkpoint_dir", "search.feature_cache")


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` whole or not at all (temporary file in the same folder, fsync, rename); DiskError
    naming the file and the fix when the disk refuses, and no temporary file left behind. The file gets the mode a
    plain write gives it: an existing file's own, else 0666 less the umask (not the temporary file's 0600)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _plain_mode(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, mode)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as exc:
        raise DiskError(os_error_message(exc, path)) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def _plain_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` leaves ``path`` with: its own if it exists, else 0666 less the
    process's umask (read from /proc, so the umask is never changed, not even for a moment)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        pass
    try:
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)  # where /proc has no umask: read it by setting it, and put it back at once
        os.umask(mask)
    return 0o666 & ~mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_bytes(obj: Any, *, sealed: bool = False) -> bytes:
    """``obj`` as indented JSON; ``sealed``: with a checksum that :func:`read_json` checks (for files only
    alsatian-pl writes: a hand edit or a damaged byte is then refused, never half-trusted)."""
    if sealed:
        obj = {**obj, _SEAL: _checksum(obj)}
    return json.dumps(obj, indent=1, default=list).encode()


def write_json(path: str | os.PathLike[str], obj: Any, *, sealed: bool = False) -> Path:
    """:func:`atomic_write` of :func:`json_bytes`."""
    return atomic_write(path, json_bytes(obj, sealed=sealed))


def read_json(path: str | os.PathLike[str], what: str, fix: str) -> Any:
    """The JSON in ``path`` (``what`` it is, for the message), its checksum checked and removed if it is sealed;
    CorruptFileError saying ``fix`` when the file is missing, unreadable, not JSON or fails its checksum."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CorruptFileError(f"{what} {path} does not exist; {fix}") from None
    except OSError as exc:
        raise CorruptFileError(f"{what} is unreadable: {os_error_message(exc, path, 'read')}") from None
    except ValueError as exc:  # JSONDecodeError and bad UTF-8: a truncated or damaged file
        raise CorruptFileError(f"{what} {path} is damaged (not valid JSON: {exc}); {fix}") from None
    if isinstance(obj, dict) and _SEAL in obj:
        body = {k: v for k, v in obj.items() if k != _SEAL}
        if obj[_SEAL] != _checksum(body):
            raise CorruptFileError(f"{what} {path} is damaged or was edited (its checksum does not match); {fix}")
        return body
    return obj


def _checksum(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes: a cache key that a file rewritten in place (same size, same mtime) cannot fool.

    Remembered across runs (:func:`digest_memo_path`) under the file's device, inode, size, modification and change
    times: any write, and restoring the mtime afterwards too, sets the change time (ctime), which no call can set
    back, so a rewritten file is hashed again. A file changed less than ``_SETTLE_NS`` ago is not remembered (file
    times are coarser than the writes they stamp)."""
    st = os.stat(path)
    key, sig = os.path.realpath(path), [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    memo = _digest_memo()
    hit = memo.get(key)
    if isinstance(hit, list) and len(hit) == 2 and hit[0] == sig and isinstance(hit[1], str):
        return hit[1]
    digest = _sha256_of(path)
    if time.time_ns() - st.st_ctime_ns > _SETTLE_NS and memo is not _NO_MEMO:
        memo.pop(key, None)
        memo[key] = [sig, digest]
        while len(memo) > _MEMO_ENTRIES:
            memo.pop(next(iter(memo)))
        try:
            write_json(digest_memo_path(), {"digests": memo}, sealed=True)
        except (DiskError, OSError):
            pass  # a cache: without it the file is hashed again next time
    return digest


_SETTLE_NS = 2 * 10**9
_MEMO_ENTRIES = 4096
_NO_MEMO: dict[str, Any] = {}
_MEMO: dict[str, dict[str, Any]] = {}


def digest_memo_path() -> Path | None:
    """Where :func:`file_digest` remembers digests: ``$ALSATIAN_DIGEST_CACHE`` (empty: nowhere), else
    ``$XDG_CACHE_HOME/alsatian-pl/file-digests.json`` (default ``~/.cache``)."""
    where = os.environ.get("ALSATIAN_DIGEST_CACHE")
    if where is not None:
        return Path(where).expanduser() if where else None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alsatian-pl" / "file-digests.json"


def _digest_memo() -> dict[str, Any]:
    """The remembered digests (read once per process and memo path; empty when the file is missing or damaged)."""
    path = digest_memo_path()
    if path is None:
        return _NO_MEMO
    if str(path) not in _MEMO:
        try:
            memo = read_json(path, "the file digest cache", "")["digests"]
            _MEMO[str(path)] = memo if isinstance(memo, dict) else {}
        except (CorruptFileError, KeyError, TypeError):
            _MEMO[str(path)] = {}
    return _MEMO[str(path)]


def _sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_folder(path: str | os.PathLike[str], key: str, writable: bool = False) -> Path:
    """``path`` expanded, if it is a folder or could become one (nothing on the way is a file); else DiskError
    naming the setting ``key``; ConfigError for an empty one (it would mean the working folder). With ``writable``,
    also DiskError unless a file can be created there (probed in its nearest existing folder, and removed at once).
    Leaves nothing behind."""
    if not str(path).strip():
        raise ConfigError(f"{key} is empty: give a folder (an empty value would put files in the working folder)")
    path = Path(path).expanduser()
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise DiskError(f"{key}={path} cannot be a folder: {blocker} is a file. Move that file away or set {key} "
                        "to another folder")
    if writable:
        _probe_write(path, key)
    return path


def _probe_write(path: Path, key: str) -> None:
    """DiskError unless a file can be created in ``path``'s nearest existing folder (the probe is removed)."""
    nearest = _nearest_existing(path) or Path.cwd()
    try:
        fd, probe = tempfile.mkstemp(prefix=".alsatian-probe-", dir=nearest)
    except OSError as exc:
        raise DiskError(f"{key}={path} cannot be written: {os_error_message(exc, path / '.alsatian-probe')}") from None
    os.close(fd)
    os.unlink(probe)


def _nearest_existing(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists, else None."""
    return next((p for p in (path, *path.parents) if p.exists()), None)


def _file_in_the_way(path: Path) -> Path | None:
    """The first existing non-folder among ``path`` and its parents, else None."""
    nearest = _nearest_existing(path)
    return None if nearest is None or nearest.is_dir() else nearest


def os_error_message(exc: OSError, path: str | os.PathLike[str] | None = None, action: str = "write") -> str:
    """One line for an operating-system error: which file, what the system said, and what to do."""
    named = path if path is not None else exc.filename
    target = Path(named) if named is not None else None
    where, code = _settings_for(target), exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG):
        fix = f"free space on that disk, or write elsewhere ({where})"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM) and where in _STORE_CACHES:
        fix = ("a store you may not write to can still be searched: set dataset.data_cache and "
               "search.checkpoint_dir (and search.feature_cache, if set) to folders you may write to")
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"make it writable, or choose a folder you may write to ({where})"
    elif code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR) and target is not None:
        blocker = _file_in_the_way(target) or target
        fix = f"{blocker} is {'a folder' if blocker.is_dir() else 'a file'} in the way: move it, or choose another " \
              f"path ({where})"
    elif code == errno.ENOENT:
        fix = "check that the path exists"
    else:
        fix = "check the disk and the path, then run again"
    what = target if target is not None else "a file (the system did not say which)"
    return f"cannot {action} {what}: {exc.strerror or exc} (errno {code}); {fix}"


def _settings_for(path: Path | None) -> str:
    """The setting that chose ``path``'s folder (by the nearest folder the store or a run names so), else all of
    the settings that choose where files go."""
    if path is None:
        return _WHERE
    if path.name in _RUN_FILES or path.parent.name == ".hydra":
        return "hydra.run.dir"
    for folder in path.parents:
        if folder.name in _SETTING_OF:
            return _SETTING_OF[folder.name]
    return _WHERE
