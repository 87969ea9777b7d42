"""What the fault tests share: the tiny zoo's overrides, composing configs, running an entry point in-process under
the error boundary or as a subprocess (optionally with a fault injected by ``_child.py``, or inside a private mount
namespace with a tiny tmpfs or a read-only bind mount), and the checks that nothing is half-written."""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
CHILD = Path(__file__).with_name("_child.py")
TINY = ["models.arch=mobilenetv3_small_050", "models.num_models=4", "models.checkpoint=null",
        "dataset.num_items=300", "dataset.image_size=32", "++search.scorer.kwargs.epochs=5", "search.progress=false"]


def compose(*overrides: str, config: str = "search", tiny: bool = True):
    """The config a user composes: ``config``.yaml on the tiny zoo (``tiny``) plus ``overrides``."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config, overrides=[*(TINY if tiny else ()), *overrides])


def in_process(capsys, fn, *args, **kwargs) -> tuple[int, str]:
    """``fn(*args)`` under the entry points' boundary: (exit status, stderr); status 0 when it returns."""
    from alsatian_pl.app import boundary

    try:
        boundary.user_errors(fn)(*args, **kwargs)
        status = 0
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


def one_error_line(stderr: str, *words: str) -> str:
    """The one ``error:`` line of a failed run (no traceback, no second error line), containing ``words``."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 240,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def script(name: str, *overrides: str, hook: str | None = None) -> list[str]:
    """The command line of ``name`` (search.py, train.py) on the tiny zoo, through ``_child.py`` when ``hook``."""
    head = [sys.executable, str(CHILD), hook, str(ROOT / name)] if hook else [sys.executable, str(ROOT / name)]
    flags = [o for o in overrides if o.startswith("-")]  # e.g. -m: before the overrides, as argparse wants
    return [*head, *flags, *TINY, *(o for o in overrides if not o.startswith("-"))]


def interrupt_at(args: list[str], marker: Path, sig: int, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess:
    """Start ``args`` (a ``_child.py`` command whose hook touches ``marker`` and waits), send ``sig`` once the marker
    exists, and return the finished process."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "COLUMNS": "200", "FAULT_MARKER": str(marker), **(env or {})})
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@functools.lru_cache(maxsize=1)
def namespaces() -> bool:
    """Whether ``unshare -rm`` can give a private mount namespace here (a tmpfs of a chosen size, read-only binds);
    FAULTS_NO_NAMESPACES=1 tests the injected faults instead."""
    if shutil.which("unshare") is None or sys.platform != "linux" or os.environ.get("FAULTS_NO_NAMESPACES"):
        return False
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"alsatian-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        probe.rmdir()


def in_namespace(setup: str, args: list[str], copy_from: Path | None = None, copy_to: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``args`` in a private mount namespace after the shell commands ``setup`` (mounts); then copy what the
    run left in ``copy_from`` (a tmpfs that vanishes with the namespace) to ``copy_to``."""
    quoted = shlex.join(args)
    copy = f"; cp -a {shlex.quote(str(copy_from))}/. {shlex.quote(str(copy_to))}/" if copy_from is not None else ""
    return run(["unshare", "-rm", "sh", "-c", f"{setup} && {{ {quoted}; rc=$?; }}{copy}; exit $rc"], env=env)


def assert_intact(root: Path, *, temporary_files: bool = False) -> None:
    """Nothing half-written under ``root``: every JSON file parses, every block and manifest of a store verifies,
    and (unless ``temporary_files``: after SIGKILL) no temporary file is left."""
    from alsatian_pl.store import BlockStore

    leftovers = sorted(p for p in root.rglob("*.tmp"))
    assert temporary_files or not leftovers, leftovers
    for path in root.rglob("*.json"):
        json.loads(path.read_text())
    for store_root in {p.parent.parent for p in root.rglob("models/*.json")}:
        store = BlockStore(store_root)
        assert store.verify() == [], store_root
        for name in store.model_names():
            store.manifest(name)



def rebuilds_the_same_zoo(store: Path, reference: Path) -> None:
    """The zoo step of the same command completes ``store``: every model block for block as in ``reference``."""
    from hydra.utils import instantiate

    from alsatian_pl.store import BlockStore

    zoo = instantiate(compose(f"store.root={store}").models).build(BlockStore(store), progress=False)
    expected = {m.name: m.hashes for m in BlockStore(reference).models()}
    assert {m.name: m.hashes for m in zoo.manifests()} == expected
    assert BlockStore(store).verify() == []
