"""``alsatian store ls | info MODEL | verify | gc | du``: inspect and maintain a block store from the shell.

The store is ``--root`` (default ``$ALSATIAN_STORE``, else ``.alsatian/store``, as in the Hydra configs). Every
command prints rich tables; ``verify`` exits 1 when a block does not match its hash; errors print one ``error:``
line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from typing import Sequence

from rich.console import Console
from rich.table import Table

from ..errors import AlsatianError
from ..store import BlockStore, ModelManifest
from ..units import format_bytes

__all__ = ["cmd_ls", "cmd_info", "cmd_verify", "cmd_gc", "cmd_du", "COMMANDS", "parser", "main"]


def _sharing(manifests: Sequence[ModelManifest]) -> tuple[Counter[str], dict[str, float]]:
    """How many models use each block, and each model's share of bytes in blocks another model uses too."""
    users = Counter(h for m in manifests for h in set(m.hashes))
    share = {m.name: sum(b.nbytes for b in m.blocks if users[b.hash] > 1) / max(m.nbytes, 1) for m in manifests}
    return users, share


def cmd_ls(store: BlockStore, args: argparse.Namespace, console: Console) -> int:
    """The models (matching ``--name``/``--source`` globs, ``--arch``, ``--family``, ``--tag``, parameter bounds)
    with their size, sharing, source and tags: the same filter as a search's ``models.where``."""
    manifests = store.models(arch=args.arch, family=args.family, tags=args.tag or (), name=args.name,
                             source=args.source, min_params=args.min_params, max_params=args.max_params)
    _, share = _sharing(store.models())
    table = Table(title=f"{len(manifests)} models in {store.root}")
    for col in ("model", "arch", "params", "blocks", "shared", "source", "tags"):
        table.add_column(col, justify="right" if col in ("params", "blocks", "shared") else "left",
                         overflow="fold")
    for m in manifests:
        table.add_row(m.name, m.arch, f"{m.num_params / 1e6:.1f}M", str(len(m.blocks)), f"{share[m.name]:.0%}",
                      m.source, ", ".join(m.tags))
    console.print(table)
    return 0


def cmd_info(store: BlockStore, args: argparse.Namespace, console: Console) -> int:
    """One model's metadata and its blocks, each with the other models that use it."""
    m = store.manifest(args.model)
    console.print(f"[bold]{m.name}[/]: {m.arch} ({m.family}), {m.num_params / 1e6:.2f}M parameters, "
                  f"{format_bytes(m.nbytes)}, input {list(m.input_size)}, source {m.source or '-'}, "
                  f"parent {m.parent or '-'}, tags {', '.join(m.tags) or '-'}, created {m.created or '-'}")
    users: dict[str, list[str]] = {}
    for other in store.models():
        for h in set(other.hashes):
            users.setdefault(h, []).append(other.name)
    table = Table(title="blocks")
    for col in ("#", "hash", "bytes", "params", "output", "used by"):
        table.add_column(col, justify="right" if col in ("#", "bytes", "params") else "left", overflow="fold")
    for i, b in enumerate(m.blocks):
        others = [u for u in users.get(b.hash, []) if u != m.name]
        shown = ", ".join(others[:3]) + (f" +{len(others) - 3} more" if len(others) > 3 else "")
        table.add_row(str(i), b.hash[:12], format_bytes(b.nbytes), str(b.params), str(list(b.out_shape)),
                      f"{len(others)} other model(s){': ' + shown if others else ''}")
    console.print(table)
    return 0


def cmd_verify(store: BlockStore, args: argparse.Namespace, console: Console) -> int:
    """Check every block of every model against its hash; exit status 1 if any fails."""
    bad = store.verify()
    blocks = len({h for m in store.models() for h in m.hashes})
    if not bad:
        console.print(f"all {blocks} blocks match their hashes")
        return 0
    for h in bad:
        console.print(f"[red]corrupt[/] {h[:16]}… used by {', '.join(store.models_using(h))}")
    console.print(f"{len(bad)} of {blocks} blocks are corrupt: re-import the models that use them")
    return 1


def cmd_gc(store: BlockStore, args: argparse.Namespace, console: Console) -> int:
    """Delete blocks no model uses (and leftover temporary files); waits for imports that are running."""
    if args.grace < 0:
        raise AlsatianError(f"--grace must be 0 or more minutes, got {args.grace:g}")
    freed = store.gc(grace_s=60.0 * args.grace)
    console.print(f"freed {format_bytes(freed)}" + (f" (files younger than {args.grace:g} min kept)"
                                                   if args.grace else ""))
    return 0


def cmd_du(store: BlockStore, args: argparse.Namespace, console: Console) -> int:
    """Logical bytes (the models' sum) against physical bytes on disk, for the whole store and per zoo tag."""
    manifests = store.models()
    table = Table(title=f"disk use of {store.root}")
    for col in ("models", "count", "distinct blocks", "logical", "physical", "dedup"):
        table.add_column(col, justify="left" if col == "models" else "right")
    zoos = sorted({t for m in manifests for t in m.tags if t.startswith("zoo:")})
    for label, names in [("all", None), *((z, [m.name for m in manifests if z in m.tags]) for z in zoos)]:
        s = store.stats(names)
        table.add_row(label, str(s.models), str(s.distinct_blocks), format_bytes(s.logical_bytes),
                      format_bytes(s.physical_bytes), f"{s.dedup_ratio:.2f}x")
    console.print(table)
    return 0


COMMANDS = {"ls": cmd_ls, "info": cmd_info, "verify": cmd_verify, "gc": cmd_gc, "du": cmd_du}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alsatian", description="Inspect and maintain an alsatian-pl block store.")
    groups = p.add_subparsers(dest="group", required=True)
    store = groups.add_parser("store", help="the block store")
    store.add_argument("--root", default=os.environ.get("ALSATIAN_STORE", ".alsatian/store"),
                       help="the store folder (default: $ALSATIAN_STORE, else .alsatian/store)")
    sub = store.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list models")
    ls.add_argument("--name", help="a glob over model names")
    ls.add_argument("--arch", help="only this architecture")
    ls.add_argument("--tag", action="append", help="only models with this tag (repeatable)")
    ls.add_argument("--family", help="only this block family (resnet, vit, bert, generic, ...)")
    ls.add_argument("--source", help="a glob over where the models came from")
    ls.add_argument("--min-params", type=int, help="at least this many parameters")
    ls.add_argument("--max-params", type=int, help="at most this many parameters")
    sub.add_parser("info", help="one model and its blocks").add_argument("model")
    for name in ("verify", "gc", "du"):
        sub.add_parser(name, help=COMMANDS[name].__doc__.splitlines()[0])
    sub.choices["gc"].add_argument("--grace", type=float, default=0.0, metavar="MINUTES",
                                   help="keep files younger than this (for imports on filesystems without locks)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alsatian`` console script."""
    args = parser().parse_args(argv)
    console = Console()
    try:
        store = BlockStore(args.root)
        if not store.root.is_dir():
            raise AlsatianError(f"no block store at {store.root}: pass --root or set ALSATIAN_STORE")
        return COMMANDS[args.command](store, args, console)
    except AlsatianError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a store we cannot read or write: say which file and why, no traceback
        print(f"error: {exc.strerror or exc} ({exc.filename or args.root}); check the store's path and permissions",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
