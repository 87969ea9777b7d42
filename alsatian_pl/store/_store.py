"""BlockStore: a content-addressed, block-level model store on local disk (paper §4.2).

Every distinct block is one safetensors file named by its content hash (architecture spec + every parameter and
buffer; the file itself: ``_codec``); a model is a JSON manifest of ordered block hashes plus metadata
(``_records``). Writes are atomic (temporary file, fsync, rename: ``io.atomic_write``, the store's one writer, which
tests replace here to simulate crashes), manifests carry a checksum, block reads are verified against the hash, and
any contiguous range of a model's blocks loads on its own. This module writes, reads and queries; the store's
upkeep (damaged blocks moved aside, gc, verify, the format upgrade, shape propagation) is ``_upkeep``'s.

Torch and the block families (timm, transformers) are imported by the methods that make modules or tensors, not by
the module: opening a store and reading its manifests (``alsatian store ls/info/du/gc/verify``) needs neither.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import stat
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from safetensors import SafetensorError, safe_open

from ..errors import CorruptBlockError, CorruptFileError, StoreError
from ..io import atomic_write as _atomic_write  # the store's one writer (tests replace it to simulate crashes)
from ..io import check_folder, json_bytes, read_json
from ._codec import (BLOCK_FORMAT, HEAD_FORMAT, block_file_bytes, block_spec, block_tensors, content_hash, head_sizes,
                     materialize, read_block_file)
from ._locking import StoreLock, adds_models
from ._records import BlockEntry, HeadEntry, ModelManifest, StoreStats
from ._upkeep import StoreFormat, StoreHealth, output_shapes

if TYPE_CHECKING:
    import torch
    from torch import nn

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class BlockStore:
    """Content-addressed block store under ``root``: ``blocks/<h[:2]>/<hash>.safetensors`` and ``models/<name>.json``.

    It writes, reads and queries blocks, models and heads; its upkeep (gc, verify, damaged blocks, the format) is
    delegated to ``_upkeep``'s :class:`StoreHealth` and :class:`StoreFormat`."""

    UNLOCKED_TMP_S = 3600.0  # temporary files of writers that do not take the lock (tokenizers) must be this old

    def __init__(self, root: str | os.PathLike[str]):
        self.root = check_folder(root, "store.root")
        self.blocks_dir = self.root / "blocks"
        self.models_dir = self.root / "models"
        self.blocks_read: Counter[str] = Counter()  # how often each block's file was read by this instance
        self._shapes: dict[str, list[tuple[tuple[int, ...], str]]] = {}
        self._manifests: dict[str, tuple[tuple[int, ...], ModelManifest]] = {}  # name -> (file identity, manifest)
        self._health, self._format = StoreHealth(self), StoreFormat(self)
        self.format_version = self._format.open()  # a format-1 store is upgraded here, once

    def building(self) -> StoreLock:
        """The zoo builders' lock (exclusive, on the ``zoos`` folder): a second builder of a zoo (every rank of a
        torchrun/SLURM launch runs search.py from the start) waits, then finds the zoo recorded and reuses it."""
        return StoreLock(self.root / "zoos", exclusive=True)

    # ------------------------------------------------------------------------------------------------- writing
    def block_path(self, h: str) -> Path:
        return self.blocks_dir / h[:2] / f"{h}.safetensors"

    def has_block(self, h: str) -> bool:
        return self.block_path(h).is_file()

    def put_block(self, block: nn.Module, recipe: dict[str, Any], index: int) -> tuple[str, int, int]:
        """Store one block unless present; returns (hash, file bytes, parameter count)."""
        tensors = block_tensors(block)
        h = content_hash(block_spec(block, tensors), tensors)
        path = self.block_path(h)
        params = sum(p.numel() for p in block.parameters())
        if not path.is_file():
            meta = {"format": BLOCK_FORMAT, "spec": block_spec(block, tensors),
                    "recipe": json.dumps({**recipe, "index": index}, sort_keys=True)}
            self._format.write()
            self._write(path, block_file_bytes(h, {n: t.contiguous().clone() for n, t in tensors.items()}, meta))
        return h, path.stat().st_size, params

    @adds_models
    def put_model(self, name: str, blocks: Sequence[nn.Module | str], *, recipe: dict[str, Any],
                  input_size: Sequence[int], source: str = "", tags: Iterable[str] = (), parent: str | None = None,
                  overwrite: bool = False) -> ModelManifest:
        """Store a model given as its blocks (modules, or hashes of blocks already stored) and write its manifest.

        ``recipe`` rebuilds the model skeleton (see ``blocks.timm_recipe``); blocks are written before the manifest,
        so an interrupted import never leaves a manifest that points at missing blocks.
        """
        from ..blocks import skeleton, skeleton_family

        self._check_name(name)
        if not overwrite and self.has_model(name):
            raise StoreError(f"model {name!r} already exists in {self.root}; pass overwrite=True or choose another name")
        expected = len(skeleton(recipe))
        if len(blocks) != expected:
            raise StoreError(f"{name}: got {len(blocks)} blocks but the {recipe.get('arch')} recipe has {expected}")
        shapes = self._output_shapes(recipe, tuple(input_size))
        entries = []
        for i, blk in enumerate(blocks):
            if isinstance(blk, str):
                if not self.has_block(blk):
                    raise StoreError(f"{name}: block {blk} is not in the store")
                h, nbytes = blk, self.block_path(blk).stat().st_size
                params = self._block_params(blk)
            else:
                h, nbytes, params = self.put_block(blk, recipe, i)
            entries.append(BlockEntry(h, nbytes, params, shapes[i][0], shapes[i][1]))
        manifest = ModelManifest(name, recipe.get("arch", ""), skeleton_family(recipe), recipe, tuple(input_size),
                                 tuple(entries), source, tuple(sorted(set(tags))),
                                 _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), parent)
        self._write(self.models_dir / f"{name}.json", json_bytes(manifest.to_json(), sealed=True))
        return manifest

    def import_model(self, name: str, model: nn.Module, *, recipe: dict[str, Any], input_size: Sequence[int],
                     **kwargs: Any) -> ModelManifest:
        """Split a model into blocks, check that they compose to its features, and store it (see :meth:`put_model`
        for the keyword arguments)."""
        from ..blocks import check_split, family_of

        _check_finite(name, model)
        blocks = family_of(model).split(model.eval())
        check_split(model, blocks, input_size)
        return self.put_model(name, blocks, recipe=recipe, input_size=input_size, **kwargs)

    # ------------------------------------------------------------------------------------------------- reading
    def has_model(self, name: str) -> bool:
        return (self.models_dir / f"{name}.json").is_file()

    def manifest(self, name: str) -> ModelManifest:
        """The manifest of a stored model; StoreError naming the known models when absent. Read once per instance
        while its file stays the same (inode, size, modification and change times: every write replaces the file)."""
        path = self.models_dir / f"{name}.json"
        try:
            st = path.stat()
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise StoreError(f"no model {name!r} in the store at {self.root} ({len(self.model_names())} models stored)")
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if name in self._manifests and self._manifests[name][0] == key:
            return self._manifests[name][1]
        self._manifests[name] = (key, self._read_manifest(name, path))
        return self._manifests[name][1]

    def _read_manifest(self, name: str, path: Path) -> ModelManifest:
        """The manifest in ``path``, checked; StoreError saying how to repair it when it is damaged."""
        fix = (f"it is a stray file or a damaged manifest: remove {path} (if it was a model, importing its zoo again "
               "writes it anew)")
        try:
            return ModelManifest.from_json(read_json(path, f"the manifest of model {name!r}", fix))
        except CorruptFileError as exc:
            raise StoreError(str(exc)) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"the manifest of model {name!r} ({path}) is damaged (bad field: {exc!r}); {fix}") \
                from None

    def model_names(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        return sorted(p.stem for p in self.models_dir.glob("*.json"))

    def models(self, *, arch: str | None = None, family: str | None = None, max_params: int | None = None,
               tags: Iterable[str] = (), names: Iterable[str] | None = None, min_params: int | None = None,
               name: str | None = None, source: str | None = None,
               unreadable: dict[str, str] | None = None) -> list[ModelManifest]:
        """Manifests matching a search query's metadata conditions (all given conditions must hold): architecture,
        family, parameter bounds (inclusive), every one of ``tags``, ``names`` (exact), and the globs ``name`` over
        the model's name and ``source`` over where it came from (``fnmatch``, case-sensitive). A file under
        ``models/`` that is not a readable manifest is a StoreError naming it, or, given ``unreadable``, recorded
        there (name -> why) and passed over."""
        wanted, tags = (set(names) if names is not None else None), set(tags)
        out = []
        for n in self.model_names():
            if (wanted is not None and n not in wanted) or not self._glob(n, name):
                continue
            try:
                m = self.manifest(n)
            except StoreError as exc:
                if unreadable is None:
                    raise
                unreadable[n] = str(exc)
                continue
            if ((arch is None or m.arch == arch) and (family is None or m.family == family)
                    and (min_params is None or m.num_params >= min_params)
                    and (max_params is None or m.num_params <= max_params) and tags <= set(m.tags)
                    and self._glob(m.source, source)):
                out.append(m)
        return out

    @staticmethod
    def _glob(value: str, pattern: str | None) -> bool:
        """Whether ``value`` matches the glob ``pattern`` (``*``, ``?``, ``[...]``; case-sensitive); None matches all."""
        import fnmatch

        return pattern is None or fnmatch.fnmatchcase(value, pattern)

    def models_using(self, h: str) -> list[str]:
        """Names of the models that contain block ``h``."""
        return [m.name for m in self.models() if h in m.hashes]

    def read_block_tensors(self, h: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The verified tensors and metadata of block ``h``; CorruptBlockError if the file does not match its hash.

        The file is mapped (``_codec.read_block_file``); its CHECKSUM (xxh3-128 of every byte) is checked, and the
        tensors are views into the mapping. A block without one (written by format 1) is checked against its sha256 name
        instead, which a format-2 store refuses: there a missing checksum is damage too."""
        path = self.block_path(h)
        if not path.is_file():
            raise self._corrupt(h, "is missing")
        try:
            tensors, meta, sealed = read_block_file(path, h)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise self._corrupt(h, f"is unreadable or truncated ({exc})") from exc
        self.blocks_read[h] += 1
        legacy = sealed is False and self.format_version < 2 and meta.get("format") == BLOCK_FORMAT
        if not (sealed or (legacy and content_hash(meta.get("spec", ""), tensors) == h)):
            raise self._corrupt(h, "does not match its content hash (modified or damaged)")
        return tensors, meta

    def advise(self, h: str) -> None:
        """Ask the OS to start reading block ``h``'s file into its page cache in the background (returns at once;
        a no-op where ``posix_fadvise`` is missing or the file is absent, which :meth:`read_block_tensors` reports)."""
        if not hasattr(os, "posix_fadvise"):
            return
        try:
            fd = os.open(self.block_path(h), os.O_RDONLY)
        except OSError:
            return
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)

    def load_block(self, h: str) -> nn.Module:
        """Block ``h`` as a runnable module in eval mode (weights read and verified from its file)."""
        tensors, meta = self.read_block_tensors(h)
        return materialize(self._skeleton_block(h, meta), tensors).eval()

    def load_blocks(self, name: str, start: int = 0, stop: int | None = None) -> nn.Sequential:
        """Blocks ``start:stop`` of a model, reading only those blocks' files."""
        from torch import nn

        hashes = self.manifest(name).hashes
        stop = len(hashes) if stop is None else stop
        if not 0 <= start < stop <= len(hashes):
            raise StoreError(f"block range {start}:{stop} is outside model {name!r} with {len(hashes)} blocks")
        return nn.Sequential(*(self.load_block(h) for h in hashes[start:stop])).eval()

    def load_model(self, name: str) -> nn.Sequential:
        """The whole feature extractor of a stored model (its pre-logits features)."""
        return self.load_blocks(name)

    # -------------------------------------------------------------------------------------------------- heads
    def head_path(self, h: str) -> Path:
        return self.root / "heads" / h[:2] / f"{h}.safetensors"

    @adds_models
    def put_head(self, name: str, tensors: dict[str, torch.Tensor]) -> ModelManifest:
        """Store ``tensors`` (e.g. ``{"fc.weight": [C, D], "fc.bias": [C]}``) as the classifier head of stored model
        ``name``, content-addressed and written once, and link it from the model's manifest (the new manifest)."""
        from safetensors.torch import save as st_save

        manifest = self.manifest(name)
        in_features, out_features = head_sizes(tensors)
        feats = manifest.blocks[-1].out_shape if manifest.blocks else ()
        if len(feats) == 1 and feats[0] != in_features:
            raise StoreError(f"the head {sorted(tensors)} of model {name!r} reads {in_features} features but the "
                             f"model's feature extractor gives {feats[0]}; it belongs to another architecture")
        h = content_hash(HEAD_FORMAT, tensors)
        path = self.head_path(h)
        if not path.is_file():
            self._write(path, st_save({n: t.detach().contiguous().clone() for n, t in tensors.items()},
                                        metadata={"format": HEAD_FORMAT}))
        entry = HeadEntry(h, path.stat().st_size, in_features, out_features, tuple(tensors))
        manifest = dataclasses.replace(manifest, head=entry)
        self._write(self.models_dir / f"{name}.json", json_bytes(manifest.to_json(), sealed=True))
        return manifest

    def head_info(self, name: str) -> HeadEntry | None:
        """The stored head of a model (hash, in/out sizes, tensor names), or None when it was stored without one."""
        return self.manifest(name).head

    def read_head(self, name: str) -> tuple[dict[str, torch.Tensor], HeadEntry]:
        """The verified tensors of a model's stored head and its entry; StoreError when it has none,
        CorruptBlockError when the file is missing or does not match its hash."""
        from safetensors.torch import load_file

        entry = self.manifest(name).head
        if entry is None:
            raise StoreError(f"model {name!r} has no stored classifier head (it was imported from weights without "
                             "one, or built synthetically); import a checkpoint that holds its head")
        path = self.head_path(entry.hash)
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CorruptBlockError(f"the head file of model {name!r} ({path}) is missing or unreadable ({exc}); "
                                    "import the model again") from None
        if content_hash(HEAD_FORMAT, tensors) != entry.hash:
            raise CorruptBlockError(f"the head file of model {name!r} ({path}) does not match its hash (modified or "
                                    "damaged); import the model again")
        return tensors, entry

    def load_head(self, name: str) -> nn.Linear:
        """A model's stored head as an ``nn.Linear`` (features -> its class logits); StoreError when the head is not
        one linear layer (a weight ``[C, D]`` or ``[C, D, 1, 1]`` and an optional bias ``[C]``)."""
        import torch
        from torch import nn

        tensors, entry = self.read_head(name)
        weights = [t for t in tensors.values() if t.dim() >= 2]
        biases = [t for t in tensors.values() if t.dim() == 1]
        if len(weights) != 1 or len(biases) > 1 or len(tensors) != len(weights) + len(biases):
            raise StoreError(f"the head of model {name!r} ({', '.join(entry.keys)}) is not one linear layer; read "
                             "its tensors with BlockStore.read_head")
        linear = nn.Linear(entry.in_features, entry.out_features, bias=bool(biases))
        with torch.no_grad():
            linear.weight.copy_(weights[0].reshape(entry.out_features, entry.in_features))
            if biases:
                linear.bias.copy_(biases[0])
        return linear.eval()

    # ----------------------------------------------------------------------------------------------- housekeeping
    def stats(self, names: Iterable[str] | None = None) -> StoreStats:
        """Models, distinct blocks, logical bytes and physical bytes (of the given models, or of the whole store)."""
        manifests = self.models(names=names, unreadable={})  # a stray file is not a model to count
        distinct = {b.hash: b.nbytes for m in manifests for b in m.blocks}
        logical = sum(m.nbytes for m in manifests)
        if names is None:
            physical = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
        else:
            physical = sum(distinct.values()) + sum((self.models_dir / f"{m.name}.json").stat().st_size
                                                     for m in manifests)
        return StoreStats(len(manifests), len(distinct), logical, physical)

    def delete_model(self, name: str) -> None:
        """Remove a model's manifest (its blocks stay until :meth:`gc`)."""
        (self.models_dir / f"{name}.json").unlink(missing_ok=True)

    def damaged_blocks(self, manifest: ModelManifest) -> list[str]:
        """The model's blocks (and stored head) whose files are missing or damaged, found cheaply: a file of the size
        its manifest records counts as intact, one of another size is checked against its hash (another model of
        another recipe may have written the same block); a damaged one is moved aside, so re-importing the model
        writes it again."""
        return self._health.damaged_blocks(manifest)

    def gc(self, grace_s: float = 0.0) -> int:
        """Delete blocks and heads no manifest uses, damaged files moved aside and leftover temporary files; returns
        the bytes freed. Safe against a concurrent import: it holds the store's :class:`StoreLock` exclusively while
        imports (``put_model``, ``import_model``, zoo records) hold it shared, and it spares every file younger than
        ``grace_s`` seconds (for writers on filesystems without locks). A feature cache or search checkpoints kept
        under the store's folder are theirs to manage, never collected here."""
        return self._health.gc(grace_s)

    def verify(self, unreadable: dict[str, str] | None = None) -> list[str]:
        """Check every block of every model against its hash; returns the hashes that fail (``unreadable``: see
        :meth:`models`)."""
        return self._health.verify(unreadable)

    # ------------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        """Write a file of the store, atomically: every block, head, manifest and format file goes through here."""
        _atomic_write(path, data)

    def _corrupt(self, h: str, what: str) -> CorruptBlockError:
        """The error for a missing or damaged block file, which is moved aside (see ``StoreHealth.corrupt``)."""
        return self._health.corrupt(h, what)

    def _block_params(self, h: str) -> int:
        try:
            with safe_open(self.block_path(h), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise self._corrupt(h, f"is unreadable ({exc})") from None
        return sum(p.numel() for p in self._skeleton_block(h, meta).parameters())

    def _skeleton_block(self, h: str, meta: dict[str, str]) -> nn.Module:
        """The (shared, meta) skeleton of block ``h``, from its file's metadata (its model's recipe and its index);
        CorruptBlockError when that metadata is damaged."""
        from ..blocks import skeleton

        try:
            recipe = json.loads(meta["recipe"])
            index = recipe.pop("index")
            return skeleton(recipe)[index]
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise self._corrupt(h, f"has damaged metadata ({exc!r})") from None

    def _output_shapes(self, recipe: dict[str, Any], input_size: tuple[int, ...]) -> list[tuple[tuple[int, ...], str]]:
        """Per-item output shape and dtype of every block (``_upkeep.output_shapes``), once per recipe and input size."""
        key = json.dumps([recipe, input_size], sort_keys=True)
        if key not in self._shapes:
            self._shapes[key] = output_shapes(recipe, input_size)
        return self._shapes[key]

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.match(name):
            raise StoreError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (max 200 characters)")


def _check_finite(name: str, model: nn.Module) -> None:
    """StoreError naming the model and its first tensor with NaN or infinite values (its features could not be
    scored, and checking its split fails on them)."""
    import torch

    for key, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise StoreError(f"model {name}: tensor {key} holds {bad} NaN or infinite value(s) of {value.numel()}; "
                             "it cannot be scored, so it is not stored. Import weights from a run that did not "
                             "diverge")
