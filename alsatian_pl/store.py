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
import mmap
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import xxhash
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import nn

from .blocks import check_split, family_of, skeleton, skeleton_family
from .errors import AlsatianWarning, CorruptBlockError, CorruptFileError, DiskError, StoreError
from .io import atomic_write as _atomic_write  # the store's one writer (tests replace it to simulate crashes)
from .io import check_folder, json_bytes, read_json

BLOCK_FORMAT = "alsatian-block-v1"  # the block file's own format key: unchanged by store format 2 (old readers read it)
STORE_FORMAT = 2  # 1: blocks verified by their sha256 name on read; 2: each block file carries a checksum of its bytes
FORMAT_FILE = "format.json"  # at the store root: the store's format version (absent in format-1 stores)
CHECKSUM = "xxh3_128"  # block metadata key: xxh3-128 of the block's name and whole file (its own digits read as "0")
HEAD_FORMAT = "alsatian-head-v1"  # also the spec a head's content hash covers
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
class HeadEntry:
    """A model's classifier head, stored apart from its feature blocks: ``heads/<h[:2]>/<hash>.safetensors``.

    ``in_features``: the size of the features it reads (the model's last block's output); ``out_features``: its
    class count; ``keys``: its tensors' names in the original model (e.g. ``fc.weight``, ``fc.bias``)."""

    hash: str
    nbytes: int
    in_features: int
    out_features: int
    keys: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "HeadEntry":
        return cls(d["hash"], int(d["nbytes"]), int(d["in_features"]), int(d["out_features"]),
                   tuple(d.get("keys", ())))


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
    head: HeadEntry | None = None  # the classifier head it was imported with (manifests without one still load)

    @property
    def head_hash(self) -> str | None:
        return self.head.hash if self.head is not None else None

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
        if self.head is None:  # headless manifests are written exactly as before heads existed
            d.pop("head")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelManifest":
        blocks = tuple(BlockEntry(b["hash"], b["nbytes"], b["params"], tuple(b["out_shape"]), b["out_dtype"])
                       for b in d["blocks"])
        return cls(d["name"], d["arch"], d["family"], d["recipe"], tuple(d["input_size"]), blocks,
                   d.get("source", ""), tuple(d.get("tags", ())), d.get("created", ""), d.get("parent"),
                   HeadEntry.from_json(d["head"]) if d.get("head") else None)


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


# ------------------------------------------------------------------------------------------------------ block files
# A block file is safetensors whose metadata holds its format, spec, recipe and (store format 2) CHECKSUM: xxh3-128
# over the block's name and every byte of the file, the checksum's own digits read as zeros, so one pass at ~28 GiB/s
# (sha256: ~2) covers header, metadata and data alike, and a file put under another block's name fails too. The name
# stays the block's sha256 content hash, computed once at import.
_BLANK = b"0" * 32
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def block_file_bytes(h: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """The safetensors bytes of block ``h``'s file holding ``tensors`` and ``meta``, sealed with its CHECKSUM."""
    data = bytearray(st_save(tensors, metadata={**meta, CHECKSUM: _BLANK.decode()}))
    at = _checksum_offset(data, _BLANK)
    data[at:at + 32] = _file_checksum(h, data, at).encode()
    return bytes(data)


def _file_checksum(name: str, buf: Any, at: int) -> str:
    """xxh3-128 of ``name`` and ``buf``, the 32 bytes at ``at`` (the checksum's digits) read as zeros."""
    view = memoryview(buf).cast("B")
    h = xxhash.xxh3_128(name.encode())
    h.update(view[:at])
    h.update(_BLANK)
    h.update(view[at + 32:])
    return h.hexdigest()


def _checksum_offset(buf: Any, value: bytes) -> int:
    """Where the digits of the checksum ``"<CHECKSUM>":"<value>"`` are in the file's header (JSON escapes every
    quote inside a string, so the pattern cannot occur inside the spec or a name); ValueError unless exactly once."""
    end = 8 + int.from_bytes(bytes(buf[:8]), "little")
    needle = b'"' + CHECKSUM.encode() + b'":"' + value + b'"'
    header = bytes(memoryview(buf).cast("B")[8:end])
    at = header.find(needle)
    if at < 0 or header.find(needle, at + 1) >= 0 or len(value) != 32:
        raise ValueError("its checksum is not where the header says")
    return 8 + at + len(needle) - 33


def _map_file(path: Path) -> torch.Tensor:
    """The bytes of a block file as a private (copy-on-write) memory map in one uint8 tensor, page-aligned.

    Warm, its pages are the OS page cache's own: no fresh memory is zeroed and nothing is copied (measured on
    ResNet-152 blocks: 7.5 GiB/s read and verified, against 0.6 GiB/s reading into fresh memory). A block file is
    never changed in place (the store replaces files by renaming), so the mapping stays valid for the tensors'
    lifetime, even after the file is deleted or replaced. ValueError for an empty file."""
    with open(path, "rb", buffering=0) as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    return torch.frombuffer(mapped, dtype=torch.uint8)


def _parse_block(buf: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (views into ``buf``, no copy) and metadata of a safetensors file's bytes; ValueError (or KeyError,
    TypeError) where the bytes are not a well-formed safetensors file."""
    if len(buf) < 8:
        raise ValueError(f"{len(buf)} bytes: shorter than a header")
    start = 8 + int.from_bytes(bytes(buf[:8].numpy()), "little")
    if start > len(buf):
        raise ValueError(f"a header of {start - 8} bytes in a file of {len(buf)}")
    header = json.loads(bytes(buf[8:start].numpy()))
    meta = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        dtype, shape, (lo, hi) = _DTYPES[info["dtype"]], [int(s) for s in info["shape"]], info["data_offsets"]
        size = dtype.itemsize * int(torch.Size(shape).numel())
        if not 0 <= lo <= hi == lo + size <= len(buf) - start:
            raise ValueError(f"tensor {name!r}: data range {lo}:{hi} does not fit its shape {shape} or the file")
        raw = buf[start + lo:start + hi]
        if (start + lo) % dtype.itemsize:  # not aligned for a view: a copy
            raw = raw.clone()
        tensors[name] = raw.view(dtype).reshape(shape) if size else torch.empty(shape, dtype=dtype)
    return tensors, meta


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


def head_sizes(tensors: dict[str, torch.Tensor]) -> tuple[int, int]:
    """``(in_features, out_features)`` of a classifier head's tensors: the first weight's input size and the last
    weight's output size (weights: the tensors of 2 or more dimensions, in order); StoreError when it has none."""
    weights = [t for t in tensors.values() if t.dim() >= 2]
    if not weights:
        raise StoreError(f"a classifier head needs a weight of 2 or more dimensions; got {sorted(tensors)}")
    return int(weights[0].shape[1]), int(weights[-1].shape[0])


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


def _adds_models(method: Any) -> Any:
    """A store write that adds a model, run under the store's shared :class:`StoreLock`."""
    import functools

    @functools.wraps(method)
    def locked(self: "BlockStore", *args: Any, **kwargs: Any) -> Any:
        with StoreLock(self.root, exclusive=False):
            return method(self, *args, **kwargs)
    return locked


# ------------------------------------------------------------------------------------------------------- the store
class BlockStore:
    """Content-addressed block store under ``root``: ``blocks/<h[:2]>/<hash>.safetensors`` and ``models/<name>.json``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = check_folder(root, "store.root")
        self.blocks_dir = self.root / "blocks"
        self.models_dir = self.root / "models"
        self.blocks_read: Counter[str] = Counter()  # how often each block's file was read by this instance
        self._shapes: dict[str, list[tuple[tuple[int, ...], str]]] = {}
        self.format_version = self._open_format()  # a format-1 store is upgraded here, once

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
            self._write_format()
            _atomic_write(path, block_file_bytes(h, {n: t.contiguous().clone() for n, t in tensors.items()}, meta))
        return h, path.stat().st_size, params

    @_adds_models
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
               tags: Iterable[str] = (), names: Iterable[str] | None = None, min_params: int | None = None,
               name: str | None = None, source: str | None = None) -> list[ModelManifest]:
        """Manifests matching a search query's metadata conditions (all given conditions must hold): architecture,
        family, parameter bounds (inclusive), every one of ``tags``, ``names`` (exact), and the globs ``name`` over
        the model's name and ``source`` over where it came from (``fnmatch``, case-sensitive)."""
        wanted, tags = (set(names) if names is not None else None), set(tags)
        out = []
        for n in self.model_names():
            if (wanted is not None and n not in wanted) or not self._glob(n, name):
                continue
            m = self.manifest(n)
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

        The file is mapped (:func:`_map_file`); its CHECKSUM (xxh3-128 of every byte) is checked, and the tensors
        are views into the mapping. A block without one (written by format 1) is checked against its sha256 name
        instead, which a format-2 store refuses: there a missing checksum is damage too."""
        path = self.block_path(h)
        if not path.is_file():
            raise self._corrupt(h, "is missing")
        try:
            buf = _map_file(path)
            tensors, meta = _parse_block(buf)
            raw, sealed = buf.numpy(), CHECKSUM in meta
            if sealed and _file_checksum(h, raw, _checksum_offset(raw, meta[CHECKSUM].encode())) != meta[CHECKSUM]:
                sealed = None
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

    @_adds_models
    def put_head(self, name: str, tensors: dict[str, torch.Tensor]) -> ModelManifest:
        """Store ``tensors`` (e.g. ``{"fc.weight": [C, D], "fc.bias": [C]}``) as the classifier head of stored model
        ``name``, content-addressed and written once, and link it from the model's manifest (the new manifest)."""
        manifest = self.manifest(name)
        in_features, out_features = head_sizes(tensors)
        feats = manifest.blocks[-1].out_shape if manifest.blocks else ()
        if len(feats) == 1 and feats[0] != in_features:
            raise StoreError(f"the head {sorted(tensors)} of model {name!r} reads {in_features} features but the "
                             f"model's feature extractor gives {feats[0]}; it belongs to another architecture")
        h = content_hash(HEAD_FORMAT, tensors)
        path = self.head_path(h)
        if not path.is_file():
            _atomic_write(path, st_save({n: t.detach().contiguous().clone() for n, t in tensors.items()},
                                        metadata={"format": HEAD_FORMAT}))
        entry = HeadEntry(h, path.stat().st_size, in_features, out_features, tuple(tensors))
        manifest = dataclasses.replace(manifest, head=entry)
        _atomic_write(self.models_dir / f"{name}.json", json_bytes(manifest.to_json(), sealed=True))
        return manifest

    def head_info(self, name: str) -> HeadEntry | None:
        """The stored head of a model (hash, in/out sizes, tensor names), or None when it was stored without one."""
        return self.manifest(name).head

    def read_head(self, name: str) -> tuple[dict[str, torch.Tensor], HeadEntry]:
        """The verified tensors of a model's stored head and its entry; StoreError when it has none,
        CorruptBlockError when the file is missing or does not match its hash."""
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
        """The model's blocks (and stored head) whose files are missing or damaged, found cheaply: a file of the size
        its manifest records counts as intact, one of another size is checked against its hash (another model of another recipe
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
        head = manifest.head
        if head is not None:  # a head file of another size than recorded (or none): the model is re-imported too
            try:
                if self.head_path(head.hash).stat().st_size != head.nbytes:
                    bad.append(head.hash)
            except FileNotFoundError:
                bad.append(head.hash)
        return bad

    UNLOCKED_TMP_S = 3600.0  # temporary files of writers that do not take the lock (tokenizers) must be this old

    def gc(self, grace_s: float = 0.0) -> int:
        """Delete blocks and heads no manifest uses, damaged files moved aside and leftover temporary files; returns
        the bytes freed. Safe against a concurrent import: it holds the store's :class:`StoreLock` exclusively while
        imports (``put_model``, ``import_model``, zoo records) hold it shared, and it spares every file younger than
        ``grace_s`` seconds (for writers on filesystems without locks). A feature cache or search checkpoints kept
        under the store's folder are theirs to manage, never collected here."""
        import time

        now = time.time()
        with StoreLock(self.root, exclusive=True):
            used = {h for m in self.models() for h in (*m.hashes, m.head.hash if m.head else None) if h}
            freed = 0
            for p, min_age in self._collectable(used):
                try:
                    st = p.stat()
                    if now - st.st_mtime >= max(grace_s, min_age):
                        p.unlink()
                        freed += st.st_size
                except FileNotFoundError:  # gone meanwhile (renamed into place, or another gc)
                    continue
        return freed

    def _collectable(self, used: set[str]) -> Iterable[tuple[Path, float]]:
        """The files gc may delete, each with the age it must have: unused block and head files, ``*.corrupt`` and
        ``*.tmp`` files in the store's own folders (a tokenizer's temporary file only after UNLOCKED_TMP_S)."""
        tensors = (self.blocks_dir, self.root / "heads")  # not features/ nor searches/, which may live here too
        for folder in (*tensors, self.models_dir, self.root / "zoos", self.root / "tokenizers"):
            for p in sorted(folder.rglob("*")):
                if p.name.endswith(".tmp"):
                    yield p, self.UNLOCKED_TMP_S if folder.name == "tokenizers" else 0.0
                elif p.name.endswith(".corrupt") or (folder in tensors and p.suffix == ".safetensors"
                                                     and p.stem not in used and p.is_file()):
                    yield p, 0.0

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

    # ---------------------------------------------------------------------------------------------- format
    def _open_format(self) -> int:
        """The store's format version (``format.json``); a format-1 store (blocks present, no format file, or a
        damaged one) is upgraded first. StoreError for a store written by a newer alsatian-pl."""
        path = self.root / FORMAT_FILE
        if not path.is_file():
            if not any(self.blocks_dir.glob("*/*.safetensors")):
                return STORE_FORMAT  # new or empty: format.json comes with the first block
            return self._migrate()
        try:
            version = int(read_json(path, "the store's format file", "")["version"])
        except (CorruptFileError, KeyError, TypeError, ValueError):
            return self._migrate()  # damaged: check every block once more and write it anew
        if version > STORE_FORMAT:
            raise StoreError(f"the block store at {self.root} has format {version}, newer than this alsatian-pl "
                             f"reads ({STORE_FORMAT}); upgrade alsatian-pl or choose another store.root")
        return version if version == STORE_FORMAT else self._migrate()

    def _write_format(self) -> None:
        """Write ``format.json`` (this store's format) unless present."""
        if not (self.root / FORMAT_FILE).is_file():
            _atomic_write(self.root / FORMAT_FILE, json_bytes({"format": "alsatian-store", "version": STORE_FORMAT,
                                                               "block_checksum": CHECKSUM}, sealed=True))

    def _migrate(self) -> int:
        """Upgrade a format-1 store in place, once: every block file is checked against its sha256 name (a damaged
        one is moved aside, so the zoo step re-imports its models) and rewritten with its CHECKSUM; manifests get
        the new file sizes; ``format.json`` comes last. Each file is replaced atomically and a block already upgraded
        is only checked, so an interrupted upgrade goes on at the next open. A store that cannot be written stays at
        format 1 (its blocks checked against their sha256 names on every read)."""
        self.format_version = 1
        files = sorted(self.blocks_dir.glob("*/*.safetensors"))
        warnings.warn(f"upgrading the block store at {self.root} to format {STORE_FORMAT}: checking {len(files)} "
                      "block files once and adding a checksum to each", AlsatianWarning, stacklevel=4)
        try:
            with StoreLock(self.root, exclusive=True):
                damaged = sum(not self._upgrade_block(p.stem) for p in files)
                self._resize_manifests()
                self._write_format()
        except DiskError as exc:
            warnings.warn(f"the block store at {self.root} stays at format 1 ({exc})", AlsatianWarning, stacklevel=4)
            return 1
        finally:
            self.blocks_read.clear()
        if damaged:
            warnings.warn(f"{damaged} damaged block file(s) of {self.root} were moved aside; running the same command "
                          "again re-imports the models that use them", AlsatianWarning, stacklevel=4)
        return STORE_FORMAT

    def _upgrade_block(self, h: str) -> bool:
        """Rewrite block ``h``'s file with its CHECKSUM after checking it; False if it was damaged (moved aside)."""
        try:
            tensors, meta = self.read_block_tensors(h)
        except CorruptBlockError:
            return False
        if CHECKSUM not in meta:
            _atomic_write(self.block_path(h), block_file_bytes(h, {n: t.clone() for n, t in tensors.items()}, meta))
        return True

    def _resize_manifests(self) -> None:
        """Give every readable manifest the current sizes of its block files (upgraded files are larger)."""
        for name in self.model_names():
            path = self.models_dir / f"{name}.json"
            try:
                body = read_json(path, "a manifest", "")
                for b in body["blocks"]:
                    if self.has_block(b["hash"]):
                        b["nbytes"] = self.block_path(b["hash"]).stat().st_size
                body["nbytes"] = sum(b["nbytes"] for b in body["blocks"])
            except (CorruptFileError, KeyError, TypeError, OSError):
                continue  # damaged: the zoo step finds it and re-imports the model
            if body != read_json(path, "a manifest", ""):
                _atomic_write(path, json_bytes(body, sealed=True))

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
