"""The entry points' error boundary: every expected failure ends in one ``error:`` line and exit status 2; a bug
shows its traceback behind one line that says it is a bug (exit status 1); Ctrl-C and SIGTERM end in one line too
(exit status 130 and 143), after the cleanup that leaves nothing half-written.

``search.py`` and ``train.py`` call :func:`install` first, wrap their Hydra task function in :func:`user_errors`
(one job: one line; in a sweep the job is recorded as failed, ``failed.json`` in its folder, and the other jobs run),
and run it through :func:`main`, which also catches what Hydra itself raises (config composition, run folders) and
ends a sweep with failed jobs with exit status 2. Stdlib only at import: it is installed before anything heavy.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import traceback
import warnings
from functools import wraps
from typing import Any, Callable

from ..errors import AlsatianError, SearchInterrupted
from ..io import os_error_message, write_json

__all__ = ["Terminated", "install", "one_line_warnings", "describe", "user_errors", "main", "report_failure"]

USER_ERROR, BUG = 2, 1
_state: dict[str, Any] = {"signal": None, "failed": [], "debug": False}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that the same cleanup runs."""


def install() -> None:
    """From now on Ctrl-C and SIGTERM raise KeyboardInterrupt (``Terminated``) in the main thread, alsatian-pl's
    warnings print as one ``warning:`` line, and Hydra passes its own errors to :func:`main` (which words them).
    ``HYDRA_FULL_ERROR=1`` set by the user keeps full tracebacks of every failure, after its line."""
    # the user's own setting, kept for the processes this one starts (a distributed search's other ranks inherit
    # the HYDRA_FULL_ERROR=1 set below, which would show them every traceback)
    _state["debug"] = os.environ.setdefault("ALSATIAN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "")) == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")  # no C++ log lines (a gloo peer gone): the error says it
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sys.excepthook = _excepthook
    warnings.showwarning = _show_warning
    if not _state.get("frozen_at_exit"):  # registered first, so it runs after every other exit handler
        atexit.register(gc.freeze)  # the interpreter's last collections over torch's, timm's and Lightning's objects
        _state["frozen_at_exit"] = True  # take ~1 s at exit and free nothing that matters to a process that ends


def one_line_warnings() -> None:
    """alsatian-pl's warnings print as one ``warning:`` line (the ``alsatian`` command's too)."""
    warnings.showwarning = _show_warning


def say(line: str, file: Any = None) -> None:
    """Print ``line`` in one write, newline included: the ranks of a distributed search share one stderr, and
    ``print``'s two writes (text, then newline) let their lines run into each other."""
    out = file or sys.stderr
    out.write(line + "\n")
    out.flush()


def _on_signal(signum: int, frame: Any) -> None:
    _state["signal"] = signum
    raise (KeyboardInterrupt if signum == signal.SIGINT else Terminated)()


def _excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    """Interrupted before :func:`main` runs (e.g. while importing): one line, not a traceback."""
    if isinstance(exc, KeyboardInterrupt):
        say(_interrupted_line())
    else:
        sys.__excepthook__(kind, exc, tb)


_default_show = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings raised by alsatian-pl's own code as one ``warning:`` line; others as Python prints them."""
    if f"{os.sep}alsatian_pl{os.sep}" in filename:
        say(f"warning: {message}", file)
    else:
        _default_show(message, category, filename, lineno, file, line)


def describe(exc: BaseException) -> tuple[str, int] | None:
    """The one line and exit status of an expected failure (a user error, the disk, the config, an interruption),
    or None for a bug. Follows explicit causes (``raise ... from``): Hydra wraps errors raised in constructors."""
    chain, cause = [], exc
    while cause is not None and len(chain) < 20:
        chain.append(cause)
        cause = cause.__cause__
    if any(isinstance(e, (KeyboardInterrupt, SearchInterrupted)) for e in chain):
        found = next((e for e in chain if isinstance(e, SearchInterrupted)), None)
        return (f"error: {found}" if found else _interrupted_line()), 128 + (_state["signal"] or signal.SIGINT)
    for e in chain:
        if isinstance(e, AlsatianError):
            return f"error: {e}", USER_ERROR
    for e in chain:
        line = _foreign(e)
        if line is not None:
            return f"error: {line}", USER_ERROR
    return None


def _foreign(exc: BaseException) -> str | None:
    """The line for an expected failure raised outside alsatian-pl (Hydra, OmegaConf, the OS, memory), else None."""
    from hydra.errors import HydraException, InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, InstantiationException):
        cause, locating = exc.__cause__, str(exc).startswith("Error locating target")
        if cause is not None and not locating and not (isinstance(cause, TypeError) and "argument" in str(cause)):
            return None  # a failure inside a constructor that is not about its arguments: a bug
    if isinstance(exc, (HydraException, OmegaConfBaseException)):  # Hydra's missing-config error is an OSError too
        taught = _config_hint(str(exc))
        if taught:
            return taught
        text, cause = _one_line(exc), exc.__cause__
        return f"{text} ({_one_line(cause)})" if cause is not None and _one_line(cause) not in text else text
    if isinstance(exc, OSError):
        return os_error_message(exc, action="use")
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return (f"out of memory ({_one_line(exc)[:200] or 'no more memory'}): lower search.cache_budget, "
                "search.batch_size, dataset.num_items or dataset.image_size, or use a machine with more memory")
    return None


def _config_hint(message: str) -> str | None:
    """The override to use for one Hydra could not apply (``app/hints.py``), if the config tree names one."""
    try:
        from .hints import compose_hint
        return compose_hint(message)
    except Exception:  # noqa: BLE001 - a hint is a bonus: Hydra's own line is printed without one
        return None


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, without OmegaConf's key dump and Hydra's config search path."""
    text = " ".join(str(exc).split()).replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception", "")
    for tail in ("full_key:", "Config search path:"):
        text = text.split(tail)[0].strip()
    return text


def _interrupted_line() -> str:
    name = "SIGTERM" if _state["signal"] == signal.SIGTERM else "Ctrl-C"
    return (f"error: interrupted ({name}); nothing was left half-written: the store keeps every block and model "
            "that was complete, and running the same command again reuses them")


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator of a Hydra task function: an expected failure prints its one line and exits with status 2 (a bug:
    one line, then the traceback, status 1); in a sweep the job is recorded as failed and the sweep goes on."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SystemExit:
            raise
        except KeyboardInterrupt as exc:
            _exit(exc)
        except Exception as exc:  # noqa: BLE001 - the boundary: every failure is worded here
            if not _in_sweep():
                _exit(exc)
            _record_failed_job(exc)
            return None
    return wrapper


def _exit(exc: BaseException) -> None:
    """Print the failure's line (and a bug's traceback) and exit with its status."""
    sys.exit(_report(exc)[1])


def report_failure(exc: BaseException) -> int:
    """For a command outside Hydra (the ``alsatian`` CLI): the failure's one line (and a bug's traceback), printed;
    its exit status."""
    return _report(exc)[1]


def _report(exc: BaseException, where: str = "") -> tuple[str, int]:
    """Print the failure's line (``where`` appended) and, for a bug or with HYDRA_FULL_ERROR=1, its traceback;
    returns the line and the exit status."""
    known = describe(exc)
    line, status = known or (_BUG_LINE, BUG)
    say(line + where)
    if known is None or _state["debug"]:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return line, status


_BUG_LINE = ("error: this is a bug in alsatian-pl, not a problem with your input or files; please report it with the "
             "traceback below")


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failed_job(exc: Exception) -> None:
    """Print the failed job's line and write ``failed.json`` (error, overrides) into its folder for the summary."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    line, status = _report(exc, f" [sweep job {hc.job.num}]")
    record = {"job": hc.job.num, "overrides": list(hc.overrides.task), "error": line.removeprefix("error: "),
              "bug": status == BUG}
    _state["failed"].append(record)
    try:
        write_json(os.path.join(hc.runtime.output_dir, "failed.json"), record)
    except AlsatianError as why:
        say(f"error: the failure of sweep job {hc.job.num} could not be recorded: {why}")


def main(task: Callable[[], Any]) -> None:
    """Run the Hydra main function ``task`` under the boundary; exit status 2 after a sweep in which jobs failed."""
    try:
        task()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - what Hydra raises before or around the job
        _exit(exc)
    failed = _state["failed"]
    if failed:
        jobs = ", ".join(f"job {f['job']} ({_clip(f['error'], 80)})" for f in failed[:3])
        print(f"error: {len(failed)} sweep job(s) failed: {jobs}{' …' if len(failed) > 3 else ''}; their folders "
              "hold failed.json, and the sweep summary lists them", file=sys.stderr)
        sys.exit(USER_ERROR)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " …"
