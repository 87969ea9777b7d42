"""Run an entry point with one fault injected: ``python _child.py HOOK SCRIPT [overrides...]``.

HOOK is ``none`` or ``KIND:PATTERN:ARG``; PATTERN matches the path of the file a write goes to (a substring):
- ``pause:PATTERN:N``: at the N-th write to such a file, touch $FAULT_MARKER and wait (the test sends a signal);
- ``half:PATTERN:N``: the same, after writing half of that write's bytes (for SIGKILL);
- ``fail:PATTERN:ERRNO``: every write to such a file fails with that errno (e.g. 28, a full disk);
- ``call:MODULE:QUALNAME``: touch $FAULT_MARKER and wait when that function is called.
The store's one writer (alsatian_pl.io.atomic_write) writes with os.write, so these are the writes it makes.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
import time
from pathlib import Path

hook, script, *args = sys.argv[1:]
kind, pattern, arg = (hook.split(":", 2) + ["", ""])[:3] if hook != "none" else ("none", "", "")


def pause() -> None:
    Path(os.environ["FAULT_MARKER"]).touch()
    time.sleep(120)


def target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


if kind in ("pause", "half", "fail"):
    real_write, seen = os.write, [0]

    def write(fd, data):  # noqa: ANN001
        if pattern not in target(fd):
            return real_write(fd, data)
        if kind == "fail":
            raise OSError(int(arg), os.strerror(int(arg)))
        seen[0] += 1
        if seen[0] == int(arg):
            if kind == "half":
                real_write(fd, bytes(data[: len(data) // 2]))
            pause()
        return real_write(fd, data)

    os.write = write
elif kind == "call":
    owner_name, _, attr = arg.rpartition(".")
    owner = importlib.import_module(pattern)
    for part in owner_name.split(".") if owner_name else []:
        owner = getattr(owner, part)
    real = getattr(owner, attr)

    def paused(*a, **k):  # noqa: ANN002, ANN003
        pause()
        return real(*a, **k)

    setattr(owner, attr, paused)

sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
