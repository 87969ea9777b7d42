"""BlockStore: a content-addressed, block-level model store on local disk (paper §4.2).

Every distinct block is one safetensors file named by its content hash (architecture spec + every parameter and
buffer); a model is a JSON manifest of ordered block hashes plus metadata. Writes are atomic (temporary file, fsync,
rename: ``io.atomic_write``), manifests carry a checksum, block reads are verified against the hash (a damaged block
file is moved aside, so re-importing writes it again), and any contiguous range of a model's blocks loads on its own.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import nn

from .blocks import check_split, family_of, skeleton, skeleton_family
from .errors import CorruptBlockError, CorruptFileError, StoreError
from .io import atomic_write as _atomic_write  # the store's one writer (tests replace it to simulate crashes)
from .io import check_folder, json_bytes, read_json

BLOCK_FORMAT = "alsatian-block-v1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


# ----------------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class BlockEntry:
    """One block of a model: its hash, size on disk, parameter count and per-item output shape at the model's input."""

    hash: str
    nbytes: int
    params: int
    out_shape: tuple[int, ...]
    out_dtype: str = "float32"

    @property
    def out_bytes(self) -> int:
        """Bytes of this block's output per data item."""
        n = 1
        for s in self.out_shape:
            n *= s
        return n * torch.empty((), dtype=getattr(torch, self.out_dtype)).element_size()


@dataclass(frozen=True)
class ModelManifest:
    """A stored model: ordered block hashes plus the metadata a search query filters on (§4.1)."""

    name: str
    arch: str
    family: str
    recipe: dict[str, Any]
    input_size: tuple[int, ...]
    blocks: tuple[BlockEntry, ...]
    source: str = ""
    tags: tuple[str, ...] = ()
    created: str = ""
    parent: str | None = None

    @property
    def num_params(self) -> int:
        return sum(b.params for b in self.blocks)

    @property
    def nbytes(self) -> int:
        """Logical bytes: the sum of this model's block files."""
        return sum(b.nbytes for b in self.blocks)

    @property
    def hashes(self) -> tuple[str, ...]:
        return tuple(b.hash for b in self.blocks)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(format=1, num_params=self.num_params, nbytes=self.nbytes)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelManifest":
        blocks = tuple(BlockEntry(b["hash"], b["nbytes"], b["params"], tuple(b["out_shape"]), b["out_dtype"])
                       for b in d["blocks"])
        return cls(d["name"], d["arch"], d["family"], d["recipe"], tuple(d["input_size"]), blocks,
                   d.get("source", ""), tuple(d.get("tags", ())), d.get("created", ""), d.get("parent"))


@dataclass(frozen=True)
class StoreStats:
    """Store size: models, distinct blocks, logical bytes (sum over models) and physical bytes on disk."""

    models: int
    distinct_blocks: int
    logical_bytes: int
    physical_bytes: int

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.physical_bytes if self.physical_bytes else 1.0


# --------------------------------------------------------------------------------------------------- block tensors
def materialize(template: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of a (meta) skeleton module holding ``tensors``, which must cover its every parameter and buffer."""
    module = _clone_structure(template)
    _assign(module, tensors)
    return module


def _clone_structure(module: nn.Module) -> nn.Module:
    """A copy of a (meta) skeleton module tree with its own module, parameter and buffer dicts, sharing the rest;
    ``_assign`` then replaces every tensor. Several times faster than ``copy.deepcopy``, which copies each attribute."""
    new = object.__new__(type(module))
    new.__dict__ = module.__dict__.copy()
    new._parameters = dict(module._parameters)
    new._buffers = dict(module._buffers)
    new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    new._modules = {k: None if m is None else _clone_structure(m) for k, m in module._modules.items()}
    for k, v in module.__dict__.items():
        if "hook" in k and isinstance(v, dict):  # hooks registered on one clone stay on that clone
            new.__dict__[k] = v.copy()
    return new


def block_tensors(block: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (persistent or not) of a block, by name."""
    out = {n: p.detach() for n, p in block.named_parameters()}
    out.update({n: b.detach() for n, b in block.named_buffers()})
    return out


def block_spec(block: nn.Module, tensors: dict[str, torch.Tensor]) -> str:
    """The architecture spec of a block: its class, its structure and the names, dtypes and shapes of its tensors."""
    kind = f"{type(block).__module__}.{type(block).__qualname__}"
    layout = "\n".join(f"{n}:{str(t.dtype).removeprefix('torch.')}:{list(t.shape)}" for n, t in sorted(tensors.items()))
    return f"{kind}\n{block!r}\n{layout}"


def content_hash(spec: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the spec and every tensor's name and raw bytes, in name order."""
    h = hashlib.sha256(spec.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def _assign(block: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put stored tensors into an (empty, meta) block; every parameter and buffer must be covered."""
    expected = set(block_tensors(block))
    if set(tensors) != expected:
        raise StoreError(f"stored tensors {sorted(set(tensors) ^ expected)} do not match the block's structure")
    params = dict(block.named_parameters())
    for name, t in tensors.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = block.get_submodule(owner_name)
        if name in params:
            owner._parameters[leaf] = nn.Parameter(t, requires_grad=params[name].requires_grad)
        else:
            owner._buffers[leaf] = t


# ------------------------------------------------------------------------------------------------------- the store
class BlockStore:
    """Content-addressed block store under ``root``: ``blocks/<h[:2]>/<hash>.safetensors`` and ``models/<name>.json``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = check_folder(root, "store.root")
        self.blocks_dir = self.root / "blocks"
        self.models_dir = self.root / "models"
        self.blocks_read: Counter[str] = Counter()  # how often each block's file was read by this instance
        self._shapes: dict[str, list[tuple[tuple[int, ...], str]]] = {}

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
            data = st_save({n: t.contiguous().clone() for n, t in tensors.items()}, metadata=meta)
            _atomic_write(path, data)
        return h, path.stat().st_size, params

    def put_model(self, name: str, blocks: Sequence[nn.Module | str], *, recipe: dict[str, Any],
                  input_size: Sequence[int], source: str = "", tags: Iterable[str] = (), parent: str | None = None,
                  overwrite: bool = False) -> ModelManifest:
        """Store a model given as its blocks (modules, or hashes of blocks already stored) and write its manifest.

        ``recipe`` rebuilds the model skeleton (see ``blocks.timm_recipe``); blocks are written before the manifest,
        so an interrupted import never leaves a manifest that points at missing blocks.
        """
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
        _atomic_write(self.models_dir / f"{name}.json", json_bytes(manifest.to_json(), sealed=True))
        return manifest

    def import_model(self, name: str, model: nn.Module, *, recipe: dict[str, Any], input_size: Sequence[int],
                     **kwargs: Any) -> ModelManifest:
        """Split a model into blocks, check that they compose to its features, and store it (see :meth:`put_model`
        for the keyword arguments)."""
        blocks = family_of(model).split(model.eval())
        check_split(model, blocks, input_size)
        return self.put_model(name, blocks, recipe=recipe, input_size=input_size, **kwargs)

    # ------------------------------------------------------------------------------------------------- reading
    def has_model(self, name: str) -> bool:
        return (self.models_dir / f"{name}.json").is_file()

    def manifest(self, name: str) -> ModelManifest:
        """The manifest of a stored model; StoreError naming the known models when absent."""
        path = self.models_dir / f"{name}.json"
        if not path.is_file():
            raise StoreError(f"no model {name!r} in the store at {self.root} ({len(self.model_names())} models stored)")
        fix = (f"run the same command again to re-import its zoo, or remove it (BlockStore.delete_model({name!r})) "
               "and import it again")
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
               tags: Iterable[str] = (), names: Iterable[str] | None = None) -> list[ModelManifest]:
        """Manifests matching a search query's metadata conditions (all given conditions must hold)."""
        wanted, tags = (set(names) if names is not None else None), set(tags)
        out = []
        for n in self.model_names():
            if wanted is not None and n not in wanted:
                continue
            m = self.manifest(n)
            if ((arch is None or m.arch == arch) and (family is None or m.family == family)
                    and (max_params is None or m.num_params <= max_params) and tags <= set(m.tags)):
                out.append(m)
        return out

    def models_using(self, h: str) -> list[str]:
        """Names of the models that contain block ``h``."""
        return [m.name for m in self.models() if h in m.hashes]

    def read_block_tensors(self, h: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The verified tensors and metadata of block ``h``; CorruptBlockError if the file does not match its hash."""
        path = self.block_path(h)
        if not path.is_file():
            raise self._corrupt(h, "is missing")
        self.advise(h)  # one readahead of the whole file instead of page-sized faults through the mapping
        try:  # memory-mapped: the bytes are read once, by the hash check below
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise self._corrupt(h, f"is unreadable or truncated ({exc})") from exc
        self.blocks_read[h] += 1
        if meta.get("format") != BLOCK_FORMAT or content_hash(meta.get("spec", ""), tensors) != h:
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
        hashes = self.manifest(name).hashes
        stop = len(hashes) if stop is None else stop
        if not 0 <= start < stop <= len(hashes):
            raise StoreError(f"block range {start}:{stop} is outside model {name!r} with {len(hashes)} blocks")
        return nn.Sequential(*(self.load_block(h) for h in hashes[start:stop])).eval()

    def load_model(self, name: str) -> nn.Sequential:
        """The whole feature extractor of a stored model (its pre-logits features)."""
        return self.load_blocks(name)

    # ----------------------------------------------------------------------------------------------- housekeeping
    def stats(self, names: Iterable[str] | None = None) -> StoreStats:
        """Models, distinct blocks, logical bytes and physical bytes (of the given models, or of the whole store)."""
        manifests = self.models(names=names)
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
        """The model's blocks whose files are missing or damaged, found cheaply: a file of the size its manifest
        records counts as intact, one of another size is checked against its hash (another model of another recipe
        may have written the same block); a damaged one is moved aside, so re-importing the model writes it again."""
        bad = []
        for b in manifest.blocks:
            try:
                if self.block_path(b.hash).stat().st_size == b.nbytes:
                    continue
                self.read_block_tensors(b.hash)
                continue
            except (FileNotFoundError, CorruptBlockError):
                bad.append(b.hash)
        return bad

    def gc(self) -> int:
        """Delete blocks no manifest uses, damaged blocks moved aside and leftover temporary files; returns the bytes
        freed."""
        used = {h for m in self.models() for h in m.hashes}
        freed = 0
        for p in list(self.root.rglob("*")):
            if p.is_file() and (p.name.endswith((".tmp", ".corrupt")) or
                                (p.suffix == ".safetensors" and p.stem not in used)):
                freed += p.stat().st_size
                p.unlink()
        return freed

    def verify(self) -> list[str]:
        """Check every block of every model against its hash; returns the hashes that fail."""
        bad = []
        for h in sorted({h for m in self.models() for h in m.hashes}):
            try:
                self.read_block_tensors(h)
            except CorruptBlockError:
                bad.append(h)
        return bad

    # ------------------------------------------------------------------------------------------------- helpers
    def _corrupt(self, h: str, what: str) -> CorruptBlockError:
        """The error for a missing or damaged block file; a damaged one is moved aside (``<file>.corrupt``), so the
        next import of a model that uses it writes it again."""
        moved = self._quarantine(h)
        try:
            users = self.models_using(h)
        except StoreError:  # another damaged manifest: the message names no users rather than failing
            users = []
        where = f"moved aside to {moved}" if moved else f"at {self.block_path(h)}"
        return CorruptBlockError(
            f"block {h[:16]}… {what} ({where}); it is used by {len(users)} model(s): "
            f"{', '.join(users[:10])}{' …' if len(users) > 10 else ''}. Run the same command again: search.py and "
            "train.py re-import their zoo and write the block again (models you imported yourself: import them "
            "again, or remove them with BlockStore.delete_model).")

    def _quarantine(self, h: str) -> Path | None:
        """Move block ``h``'s file aside to ``<file>.corrupt`` (None if it is absent or cannot be moved)."""
        path = self.block_path(h)
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError:
            return None
        return aside

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
        try:
            recipe = json.loads(meta["recipe"])
            index = recipe.pop("index")
            return skeleton(recipe)[index]
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise self._corrupt(h, f"has damaged metadata ({exc!r})") from None

    def _output_shapes(self, recipe: dict[str, Any], input_size: tuple[int, ...]) -> list[tuple[tuple[int, ...], str]]:
        """Per-item output shape and dtype of every block, by shape propagation on the meta device."""
        key = json.dumps([recipe, input_size], sort_keys=True)
        if key not in self._shapes:
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
            self._shapes[key] = shapes
        return self._shapes[key]

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.match(name):
            raise StoreError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (max 200 characters)")
