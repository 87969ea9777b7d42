"""The store's locks: :class:`StoreLock`, an ``flock`` on a folder, and :func:`adds_models`, which runs a store write
that adds a model under the store's shared lock."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._store import BlockStore


class StoreLock:
    """The store's lock, an ``flock`` on its root folder (no lock file is written): writers that add models hold it
    shared, :meth:`BlockStore.gc` exclusively, so gc never runs between an import's block writes and its manifest.
    Where locks are unavailable (no ``fcntl``, a read-only or lockless filesystem) it is a no-op, and the write
    reports its own error; ``gc(grace_s=...)`` then still spares young files. :meth:`BlockStore.building` is a second
    lock, on the ``zoos`` folder, that zoo builders hold exclusively, so concurrent builders of one zoo take turns."""

    def __init__(self, root: Path, *, exclusive: bool):
        self.root, self.exclusive, self._fd = Path(root), exclusive, None

    def __enter__(self) -> "StoreLock":
        try:
            import fcntl

            self.root.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.root, os.O_RDONLY)
            fcntl.flock(self._fd, fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)
        except (ImportError, OSError):
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def adds_models(method: Any) -> Any:
    """A store write that adds a model, run under the store's shared :class:`StoreLock`."""
    @functools.wraps(method)
    def locked(self: "BlockStore", *args: Any, **kwargs: Any) -> Any:
        with StoreLock(self.root, exclusive=False):
            return method(self, *args, **kwargs)
    return locked
