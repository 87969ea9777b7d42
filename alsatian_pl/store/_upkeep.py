"""The store's upkeep, which :class:`~alsatian_pl.store.BlockStore` delegates to: its health (:class:`StoreHealth`:
damaged blocks found, moved aside and reported, unused files collected) and its format (:class:`StoreFormat`: the
format file, the once-only upgrade of a format-1 store and the manifest sizes it changes), plus the shape
propagation that gives a manifest its blocks' output shapes (:func:`output_shapes`)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import AlsatianWarning, CorruptBlockError, CorruptFileError, DiskError, StoreError
from ..io import json_bytes, read_json
from ._codec import CHECKSUM, FORMAT_FILE, STORE_FORMAT, block_file_bytes, block_seal
from ._locking import StoreLock
from ._records import ModelManifest

if TYPE_CHECKING:
    from ._store import BlockStore


class StoreHealth:
    """Damage and garbage: which blocks of a model are missing or damaged, every block checked against its hash,
    damaged files moved aside (so re-importing writes them again) with an error that names their models, and the
    collection of files no manifest uses."""

    def __init__(self, store: BlockStore):
        self.store = store

    def damaged_blocks(self, manifest: ModelManifest) -> list[str]:
        """See :meth:`BlockStore.damaged_blocks`."""
        store, bad = self.store, []
        for b in manifest.blocks:
            try:
                if store.block_path(b.hash).stat().st_size == b.nbytes:
                    continue
                store.read_block_tensors(b.hash)
                continue
            except (FileNotFoundError, CorruptBlockError):
                bad.append(b.hash)
        head = manifest.head
        if head is not None:  # a head file of another size than recorded (or none): the model is re-imported too
            try:
                if store.head_path(head.hash).stat().st_size != head.nbytes:
                    bad.append(head.hash)
            except FileNotFoundError:
                bad.append(head.hash)
        return bad

    def verify(self, unreadable: dict[str, str] | None = None) -> list[str]:
        """See :meth:`BlockStore.verify`. A sealed block whose checksum matches is checked from its bytes alone (no
        torch); any other is read in full, which checks a format-1 block by its hash and moves a damaged one aside."""
        bad = []
        for h in sorted({h for m in self.store.models(unreadable=unreadable) for h in m.hashes}):
            try:
                if block_seal(self.store.block_path(h), h):
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                pass  # missing or malformed: the full read below says how, and moves it aside
            try:
                self.store.read_block_tensors(h)
            except CorruptBlockError:
                bad.append(h)
        return bad

    def corrupt(self, h: str, what: str) -> CorruptBlockError:
        """The error for a missing or damaged block file; a damaged one is moved aside (``<file>.corrupt``), so the
        next import of a model that uses it writes it again."""
        moved = self.quarantine(h)
        try:
            users = self.store.models_using(h)
        except StoreError:  # another damaged manifest: the message names no users rather than failing
            users = []
        where = f"moved aside to {moved}" if moved else f"at {self.store.block_path(h)}"
        return CorruptBlockError(
            f"block {h[:16]}… {what} ({where}); it is used by {len(users)} model(s): "
            f"{', '.join(users[:10])}{' …' if len(users) > 10 else ''}. Run the same command again: search.py and "
            "train.py re-import their zoo and write the block again (models you imported yourself: import them "
            "again, or remove them with BlockStore.delete_model).")

    def quarantine(self, h: str) -> Path | None:
        """Move block ``h``'s file aside to ``<file>.corrupt`` (None if it is absent or cannot be moved)."""
        path = self.store.block_path(h)
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError:
            return None
        return aside

    def gc(self, grace_s: float = 0.0) -> int:
        """See :meth:`BlockStore.gc`."""
        now = time.time()
        with StoreLock(self.store.root, exclusive=True):
            used = {h for m in self.store.models() for h in (*m.hashes, m.head.hash if m.head else None) if h}
            freed = 0
            for p, min_age in self.collectable(used):
                try:
                    st = p.stat()
                    if now - st.st_mtime >= max(grace_s, min_age):
                        p.unlink()
                        freed += st.st_size
                except FileNotFoundError:  # gone meanwhile (renamed into place, or another gc)
                    continue
        return freed

    def collectable(self, used: set[str]) -> Iterable[tuple[Path, float]]:
        """The files gc may delete, each with the age it must have: unused block and head files, ``*.corrupt`` and
        ``*.tmp`` files in the store's own folders; the temporary files of writers that take no lock (tokenizers, and
        a killed search's in the feature cache and checkpoints that may live here: ``features/``, ``searches/``)
        only after UNLOCKED_TMP_S. Their finished files are never touched."""
        store = self.store
        tensors = (store.blocks_dir, store.root / "heads")
        unlocked = ("tokenizers", "features", "searches")
        for folder in (*tensors, store.models_dir, *(store.root / f for f in ("zoos", *unlocked))):
            for p in sorted(folder.rglob("*")):
                if p.name.endswith(".tmp"):
                    yield p, store.UNLOCKED_TMP_S if folder.name in unlocked else 0.0
                elif p.name.endswith(".corrupt") or (folder in tensors and p.suffix == ".safetensors"
                                                     and p.stem not in used and p.is_file()):
                    yield p, 0.0


class StoreFormat:
    """The store's format version (``format.json`` at its root) and the once-only upgrade of a format-1 store: every
    block rewritten with its CHECKSUM, every manifest given the new file sizes. Every file goes through the store's
    one writer (``BlockStore._write``)."""

    def __init__(self, store: BlockStore):
        self.store = store

    def open(self) -> int:
        """The store's format version (``format.json``); a format-1 store (blocks present, no format file, or a
        damaged one) is upgraded first. StoreError for a store written by a newer alsatian-pl."""
        store = self.store
        path = store.root / FORMAT_FILE
        if not path.is_file():
            if not any(store.blocks_dir.glob("*/*.safetensors")):
                return STORE_FORMAT  # new or empty: format.json comes with the first block
            return self.migrate()
        try:
            version = int(read_json(path, "the store's format file", "")["version"])
        except (CorruptFileError, KeyError, TypeError, ValueError):
            return self.migrate(damaged=True)  # check every block once more and write the file anew
        if version > STORE_FORMAT:
            raise StoreError(f"the block store at {store.root} has format {version}, newer than this alsatian-pl "
                             f"reads ({STORE_FORMAT}); upgrade alsatian-pl or choose another store.root")
        return version if version == STORE_FORMAT else self.migrate()

    def write(self, anew: bool = False) -> None:
        """Write ``format.json`` (this store's format) unless present (``anew``: replace the one there)."""
        path = self.store.root / FORMAT_FILE
        if anew or not path.is_file():
            self.store._write(path, json_bytes({"format": "alsatian-store", "version": STORE_FORMAT,
                                                "block_checksum": CHECKSUM}, sealed=True))

    def migrate(self, damaged: bool = False) -> int:
        """Upgrade a format-1 store in place, once: every block file is checked against its sha256 name (a damaged
        one is moved aside, so the zoo step re-imports its models) and rewritten with its CHECKSUM; manifests get
        the new file sizes; ``format.json`` comes last. Each file is replaced atomically and a block already upgraded
        is only checked, so an interrupted upgrade goes on at the next open. A store that cannot be written stays at
        format 1 (its blocks checked against their sha256 names on every read). Its warnings point at the code that
        opened the store (``BlockStore(...)``). ``damaged``: the format file is there but unreadable: the same
        check, then the file is written anew (so the next command does not check again)."""
        store = self.store
        store.format_version = 1
        files = sorted(store.blocks_dir.glob("*/*.safetensors"))
        what = (f"the {FORMAT_FILE} of the block store at {store.root} is damaged: checking its {len(files)} block "
                "files once and writing the file anew" if damaged else f"upgrading the block store at {store.root} "
                f"to format {STORE_FORMAT}: checking {len(files)} block files once and adding a checksum to each")
        warnings.warn(what, AlsatianWarning, stacklevel=4)
        try:
            with StoreLock(store.root, exclusive=True):
                damaged = sum(not self.upgrade_block(p.stem) for p in files)
                self.resize_manifests()
                self.write(anew=True)
        except DiskError as exc:
            warnings.warn(f"the block store at {store.root} stays at format 1 ({exc})", AlsatianWarning, stacklevel=4)
            return 1
        finally:
            store.blocks_read.clear()
        if damaged:
            warnings.warn(f"{damaged} damaged block file(s) of {store.root} were moved aside; running the same "
                          "command again re-imports the models that use them", AlsatianWarning, stacklevel=4)
        return STORE_FORMAT

    def upgrade_block(self, h: str) -> bool:
        """Rewrite block ``h``'s file with its CHECKSUM after checking it; False if it was damaged (moved aside)."""
        try:
            tensors, meta = self.store.read_block_tensors(h)
        except CorruptBlockError:
            return False
        if CHECKSUM not in meta:
            self.store._write(self.store.block_path(h),
                              block_file_bytes(h, {n: t.clone() for n, t in tensors.items()}, meta))
        return True

    def resize_manifests(self) -> None:
        """Give every readable manifest the current sizes of its block files (upgraded files are larger)."""
        store = self.store
        for name in store.model_names():
            path = store.models_dir / f"{name}.json"
            try:
                body = read_json(path, "a manifest", "")
                for b in body["blocks"]:
                    if store.has_block(b["hash"]):
                        b["nbytes"] = store.block_path(b["hash"]).stat().st_size
                body["nbytes"] = sum(b["nbytes"] for b in body["blocks"])
            except (CorruptFileError, KeyError, TypeError, OSError):
                continue  # damaged: the zoo step finds it and re-imports the model
            if body != read_json(path, "a manifest", ""):
                store._write(path, json_bytes(body, sealed=True))


def output_shapes(recipe: dict[str, Any], input_size: tuple[int, ...]) -> list[tuple[tuple[int, ...], str]]:
    """Per-item output shape and dtype of every block of a model, by shape propagation on the meta device; StoreError
    when the architecture cannot run on inputs of ``input_size``."""
    import torch

    from ..blocks import skeleton

    dtype = getattr(torch, recipe.get("input_dtype", "float32"))
    x = torch.empty((1, *input_size), device="meta", dtype=dtype)
    shapes = []
    try:
        with torch.no_grad():
            for blk in skeleton(recipe):
                x = blk(x)
                shapes.append((tuple(x.shape[1:]), str(x.dtype).removeprefix("torch.")))
    except Exception as exc:  # noqa: BLE001 - any failure here means the input size does not fit
        raise StoreError(f"{recipe.get('arch')} cannot run on inputs of size {list(input_size)}: {exc}. "
                         "Choose an input size the architecture accepts (e.g. models.input_size / "
                         "dataset.image_size; text: dataset.max_length).") from exc
    return shapes
