"""``alsatian store ls | info MODEL | verify | gc | du``: inspect and maintain a block store from the shell.

The store is ``--root`` (default ``$ALSATIAN_STORE``, else ``.alsatian/store``, as in the Hydra configs). On a
terminal every command prints rich tables; piped or redirected, plain full-width rows (a model's name whole, one
model a line, for ``grep`` and ``awk``); ``--json`` prints one JSON document of the same content. ``verify`` exits 1
when a block does not match its hash; errors print one ``error:`` line and exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
import textwrap
from collections import Counter
from pathlib import Path, PurePath
from typing import Sequence

from rich.console import Console

from ..errors import AlsatianError
from ..store import BlockStore, ModelManifest
from ..units import format_bytes
from .output import Column, Output

__all__ = ["cmd_ls", "cmd_info", "cmd_verify", "cmd_gc", "cmd_du", "COMMANDS", "parser", "main", "resolve_model"]


def _sharing(manifests: Sequence[ModelManifest]) -> tuple[Counter[str], dict[str, float]]:
    """How many models use each block, and each model's share of bytes in blocks another model uses too."""
    users = Counter(h for m in manifests for h in set(m.hashes))
    share = {m.name: sum(b.nbytes for b in m.blocks if users[b.hash] > 1) / max(m.nbytes, 1) for m in manifests}
    return users, share


def _short_source(source: str) -> str:
    """A source path's last two parts (a terminal's column); pipes and ``--json`` get the whole path."""
    parts = PurePath(source).parts
    return source if len(parts) <= 2 else "…/" + "/".join(parts[-2:])


def cmd_ls(store: BlockStore, args: argparse.Namespace, out: Output) -> int:
    """The models (matching ``--name``/``--source`` globs, ``--arch``, ``--family``, ``--tag``, parameter bounds)
    with their size, sharing, source and tags: the same filter as a search's ``models.where``."""
    unreadable: dict[str, str] = {}
    manifests = store.models(arch=args.arch, family=args.family, tags=args.tag or (), name=args.name,
                             source=args.source, min_params=args.min_params, max_params=args.max_params,
                             unreadable=unreadable)
    _, share = _sharing(store.models(unreadable={}))
    _say_unreadable(unreadable)
    columns = [Column("model", fold=True), Column("arch"), Column("params", right=True),
               Column("blocks", right=True), Column("shared", right=True), Column("source", fold=True),
               Column("tags", fold=True)]
    source = (lambda s: s) if out.plain else _short_source
    out.table(f"{len(manifests)} models in {store.root}", columns, [
        [m.name, m.arch, f"{m.num_params / 1e6:.1f}M", str(len(m.blocks)), f"{share[m.name]:.0%}",
         source(m.source) or "-", ", ".join(m.tags) or "-"] for m in manifests])
    out.data(root=str(store.root), models=[
        {"name": m.name, "arch": m.arch, "family": m.family, "params": m.num_params, "blocks": len(m.blocks),
         "bytes": m.nbytes, "shared": round(share[m.name], 4), "source": m.source, "tags": list(m.tags)}
        for m in manifests])
    return 0


def _readable(store: BlockStore) -> list[ModelManifest]:
    """Every readable manifest; one warning line on standard error per file under ``models/`` that is not one
    (a stray or damaged file: the command goes on without it, and ``verify`` fails on it)."""
    unreadable: dict[str, str] = {}
    manifests = store.models(unreadable=unreadable)
    _say_unreadable(unreadable)
    return manifests


def _say_unreadable(unreadable: dict[str, str]) -> None:
    for why in unreadable.values():
        print(f"warning: {why}; left out here", file=sys.stderr)


def resolve_model(store: BlockStore, name: str) -> str:
    """``name`` itself, or the one stored model whose name ends with ``-<name>`` (the short names a ranking
    prints, e.g. ``009``); AlsatianError listing the candidates when several match, suggesting close names if none."""
    names = store.model_names()
    if name in names:
        return name
    matches = [n for n in names if n.endswith(f"-{name}")]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:5]) + (f" and {len(matches) - 5} more" if len(matches) > 5 else "")
        raise AlsatianError(f"{name!r} is short for several models: {shown}; give the full name")
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; alsatian store ls lists them"
    raise AlsatianError(f"no model {name!r} in the store at {store.root} ({len(names)} models stored){hint}")


def cmd_info(store: BlockStore, args: argparse.Namespace, out: Output) -> int:
    """One model's metadata and its blocks, each with the other models that use it (a short name, e.g. ``009``,
    finds the one model whose name ends with ``-009``)."""
    m = store.manifest(resolve_model(store, args.model))
    out.line(f"{m.name}: {m.arch} ({m.family}), {m.num_params / 1e6:.2f}M parameters, {format_bytes(m.nbytes)}, "
             f"input {list(m.input_size)}, source {m.source or '-'}, parent {m.parent or '-'}, "
             f"tags {', '.join(m.tags) or '-'}, created {m.created or '-'}")
    users: dict[str, list[str]] = {}
    for other in _readable(store):
        for h in set(other.hashes):
            users.setdefault(h, []).append(other.name)
    rows, blocks = [], []
    for i, b in enumerate(m.blocks):
        others = [u for u in users.get(b.hash, []) if u != m.name]
        shown = ", ".join(others[:3]) + (f" +{len(others) - 3} more" if len(others) > 3 else "")
        rows.append([str(i), b.hash[:12], format_bytes(b.nbytes), str(b.params), str(list(b.out_shape)),
                     f"{len(others)} other model(s){': ' + shown if others else ''}"])
        blocks.append({"index": i, "hash": b.hash, "bytes": b.nbytes, "params": b.params,
                       "out_shape": list(b.out_shape), "used_by": others})
    out.table("blocks", [Column("#", right=True), Column("hash"), Column("bytes", right=True),
                         Column("params", right=True), Column("output"), Column("used by", fold=True)], rows)
    out.data(model={"name": m.name, "arch": m.arch, "family": m.family, "params": m.num_params, "bytes": m.nbytes,
                    "input_size": list(m.input_size), "source": m.source, "parent": m.parent,
                    "tags": list(m.tags), "created": m.created}, blocks=blocks)
    return 0


def cmd_verify(store: BlockStore, args: argparse.Namespace, out: Output) -> int:
    """Check every block of every model against its hash, and every entry of the feature cache (--features, by
    default the store's features/ folder) against its checksum, deleting damaged entries so the next search
    recomputes them; exit status 1 if anything failed."""
    unreadable: dict[str, str] = {}
    bad = store.verify(unreadable)
    blocks = len({h for m in store.models(unreadable={}) for h in m.hashes})
    features = Path(args.features) if args.features else store.root / "features"
    entries, damaged = 0, []
    if features.is_dir():  # the feature cache's entries are tensors: the search engine reads them
        from ..halving import verify_features

        entries, damaged = verify_features(features)
    for path, _ in damaged:
        path.unlink(missing_ok=True)
    out.data(blocks=blocks, corrupt=[{"hash": h, "used_by": store.models_using(h)} for h in bad],
             unreadable_manifests=[{"name": n, "why": why} for n, why in unreadable.items()],
             feature_cache={"root": str(features), "entries": entries,
                            "damaged_deleted": [{"path": str(p), "why": why} for p, why in damaged]})
    for h in bad:
        out.line(f"corrupt {h[:16]}… used by {', '.join(store.models_using(h))}", style="red")
    for path, why in damaged:
        out.line(f"damaged feature-cache entry {path} ({why}): deleted", style="red")
    for why in unreadable.values():
        out.line(why, style="red")
    out.line(f"all {blocks} blocks match their hashes" if not bad else
             f"{len(bad)} of {blocks} blocks are corrupt: re-import the models that use them")
    if entries:
        out.line(f"feature cache {features}: {entries - len(damaged)} of {entries} entries match their checksums"
                 + (f"; {len(damaged)} damaged ones deleted (the next search recomputes them)" if damaged else ""))
    return 1 if bad or damaged or unreadable else 0


def cmd_gc(store: BlockStore, args: argparse.Namespace, out: Output) -> int:
    """Delete blocks no model uses (and leftover temporary files); waits for imports that are running."""
    if not math.isfinite(args.grace) or args.grace < 0:  # nan would keep every file, silently
        raise AlsatianError(f"--grace must be 0 or more minutes, got {args.grace:g}")
    freed = store.gc(grace_s=60.0 * args.grace)
    out.data(freed_bytes=freed, grace_minutes=args.grace)
    out.line(f"freed {format_bytes(freed)}" + (f" (files younger than {args.grace:g} min kept)" if args.grace else ""))
    return 0


def cmd_du(store: BlockStore, args: argparse.Namespace, out: Output) -> int:
    """Logical bytes (the models' sum) against physical bytes on disk, for the whole store and per zoo tag."""
    manifests = _readable(store)
    zoos = sorted({t for m in manifests for t in m.tags if t.startswith("zoo:")})
    rows, records = [], []
    for label, names in [("all", None), *((z, [m.name for m in manifests if z in m.tags]) for z in zoos)]:
        s = store.stats(names)
        rows.append([label, str(s.models), str(s.distinct_blocks), format_bytes(s.logical_bytes),
                     format_bytes(s.physical_bytes), f"{s.dedup_ratio:.2f}x"])
        records.append({"models": label, "count": s.models, "distinct_blocks": s.distinct_blocks,
                        "logical_bytes": s.logical_bytes, "physical_bytes": s.physical_bytes,
                        "dedup": round(s.dedup_ratio, 4)})
    out.table(f"disk use of {store.root}", [Column("models", fold=True), *(Column(c, right=True) for c in (
        "count", "blocks", "logical", "physical", "dedup"))], rows)
    out.data(root=str(store.root), rows=records)
    return 0


COMMANDS = {"ls": cmd_ls, "info": cmd_info, "verify": cmd_verify, "gc": cmd_gc, "du": cmd_du}

EXAMPLES = {
    "ls": "alsatian store ls --arch resnet18 --tag zoo:resnet18_zoo\n  alsatian store ls | grep resnet18_zoo\n"
          "  alsatian store ls --json | jq -r '.models[].name'",
    "info": "alsatian store info resnet18_zoo-f2a7d0292a-009\n  alsatian store info 009   (a short name, as the "
            "ranking prints it)",
    "verify": "alsatian store verify || echo 'some blocks are corrupt'",
    "gc": "alsatian store gc --grace 10",
    "du": "alsatian store du --json",
}
HELP = {"ls": "list the stored models", "info": "one model and its blocks",
        "verify": "check every block's hash and the feature cache's checksums",
        "gc": "delete blocks no model uses", "du": "disk use: logical against physical bytes"}



def _wrap(doc: str | None) -> str:
    return textwrap.fill(" ".join((doc or "").replace("``", "").split()), 79)


def parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="alsatian", formatter_class=raw,
        description=_wrap("Inspect and maintain an alsatian-pl block store (the models a search ranks, "
                          "stored as deduplicated blocks).") + "\nTables on a terminal; plain rows when piped; "
                    "--json for scripts.",
        epilog="example:\n  alsatian store ls\n  alsatian store --root /data/store info 009\n\n"
               "Searches run with python search.py (python search.py --help lists its config groups).")
    groups = p.add_subparsers(dest="group", required=True, metavar="store")
    store = groups.add_parser("store", help="the block store: ls, info, verify, gc, du", formatter_class=raw,
                              description="The block store's models, blocks and disk use.",
                              epilog="example:\n  alsatian store ls | grep resnet18_zoo")
    store.add_argument("--root", default=os.environ.get("ALSATIAN_STORE", ".alsatian/store"),
                       help="the store folder (default: $ALSATIAN_STORE, else .alsatian/store)")
    sub = store.add_subparsers(dest="command", required=True)
    for name, func in COMMANDS.items():
        cmd = sub.add_parser(name, help=HELP[name], formatter_class=raw, description=_wrap(func.__doc__),
                             epilog=f"example:\n  {EXAMPLES[name]}")
        cmd.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
        cmd.add_argument("--root", default=argparse.SUPPRESS,  # after the command too: alsatian store ls --root DIR
                         help="the store folder (as alsatian store --root)")
    ls = sub.choices["ls"]
    ls.add_argument("--name", help="a glob over model names")
    ls.add_argument("--arch", help="only this architecture")
    ls.add_argument("--tag", action="append", help="only models with this tag (repeatable)")
    ls.add_argument("--family", help="only this block family (resnet, vit, bert, generic, ...)")
    ls.add_argument("--source", help="a glob over where the models came from")
    ls.add_argument("--min-params", type=int, help="at least this many parameters")
    ls.add_argument("--max-params", type=int, help="at most this many parameters")
    sub.choices["verify"].add_argument("--features", metavar="FOLDER",
                                       help="the feature cache to check (default: the store's features/ folder)")
    sub.choices["info"].add_argument("model", help="a model's name, or the short name a ranking prints (009)")
    sub.choices["gc"].add_argument("--grace", type=float, default=0.0, metavar="MINUTES",
                                   help="keep files younger than this (for imports on filesystems without locks)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alsatian`` console script."""
    from .boundary import one_line_warnings, report_failure

    args = parser().parse_args(argv)
    one_line_warnings()
    out = Output(Console(), json=args.json)
    try:
        store = BlockStore(args.root)
        if not store.root.is_dir():
            raise AlsatianError(f"no block store at {store.root}: pass --root or set ALSATIAN_STORE")
        status = COMMANDS[args.command](store, args, out)
        out.close()
        return status
    except AlsatianError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a store we cannot read or write: say which file and why, no traceback
        print(f"error: {exc.strerror or exc} ({exc.filename or args.root}); check the store's path and permissions",
              file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - Ctrl-C in one line; a bug says it is one
        return report_failure(exc)


if __name__ == "__main__":
    sys.exit(main())
