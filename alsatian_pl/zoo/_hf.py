"""Hugging Face encoders into the store: a local model folder (config.json + model.safetensors) as one model, or a
folder of them as a zoo; each model's tokenizer is stored with it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..blocks import hf_recipe
from ..blocks._bert import load_encoder, model_dir
from ..checks import choice, text, whole
from ..errors import StoreError
from ..store import BlockStore, ModelManifest
from ._record import Zoo, cached_zoo, expect_kind, file_digests, zoo_id
from ._tokenizers import tokenizer_tag


def import_hf_dir(store: BlockStore, name: str, path: str | Path, *, pooling: str = "cls", max_length: int = 128,
                  tokenizer: str | None = None, tags: Sequence[str] = (), overwrite: bool = True) -> ModelManifest:
    """Import a local Hugging Face encoder folder (config.json + model.safetensors) as one model; blocks already in
    the store (same hash) are not written again. Its tokenizer (``tokenizer``, else the folder's own if it has one)
    is stored with it."""
    from ..data._text import _tokenizer_files
    folder = model_dir(path).resolve()
    model = load_encoder(folder, pooling)
    ref = tokenizer or (str(folder) if _tokenizer_files(folder) else None)
    return store.import_model(name, model, recipe=hf_recipe(model.config, pooling), input_size=(2, max_length),
                              source=str(folder), tags=[*tags, *tokenizer_tag(store, ref)], overwrite=overwrite)


@dataclass(frozen=True)
class HFFolder:
    """A Hugging Face model folder, or every model folder (holding config.json) directly under ``path``, as a zoo to
    import (validated on construction; nothing is read or written until :meth:`build`). ``tokenizer``: one for every
    model; None or a folder of model folders (e.g. ``path``): each model folder's own, where it has one."""

    name: str
    path: str
    pooling: str = "cls"
    max_length: int = 128
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        text("models.name", self.name)
        choice("models.pooling", self.pooling, ("cls", "mean"))
        whole("models.max_length", self.max_length, at_least=2)
        text("models.tokenizer", self.tokenizer, optional=True)
        self.dirs  # noqa: B018 - refuses a path without model folders now, before anything runs

    @property
    def dirs(self) -> list[Path]:
        """The model folders, sorted; StoreError when there are none."""
        folder = Path(text("models.path", self.path)).expanduser()
        dirs = ([folder] if (folder / "config.json").is_file() else
                sorted(p for p in folder.iterdir() if (p / "config.json").is_file()) if folder.is_dir() else [])
        if not dirs:
            raise StoreError(f"no Hugging Face model folders (config.json + model.safetensors) in {folder}; set "
                             "models.path to one such folder or to a folder of them")
        return dirs

    @property
    def size(self) -> int:
        return len(self.dirs)

    def build(self, store: BlockStore, *, progress: bool = True) -> Zoo:
        """Import the folders as a zoo (reused while their files' contents stay the same); blocks shared between the
        models are found by hash and stored once."""
        from ..data._text import _tokenizer_files
        folder, dirs, tokenizer = Path(self.path).expanduser(), self.dirs, self.tokenizer
        own = tokenizer is None or (model_dir(tokenizer).is_dir() and _tokenizer_files(model_dir(tokenizer)) is None)
        cfg = {"kind": "hf_dirs", "path": str(folder.resolve()), "pooling": self.pooling,
               "max_length": self.max_length, "tokenizer": tokenizer,
               "files": file_digests(folder, (f for d in dirs for f in sorted(d.rglob("*")) if f.is_file()))}
        zid = zoo_id(self.name, cfg)

        def build():
            for d in dirs:
                model_name = f"{zid}-{re.sub(r'[^A-Za-z0-9._-]', '_', d.name)}"
                import_hf_dir(store, model_name, d, pooling=self.pooling, max_length=self.max_length,
                              tokenizer=None if own else tokenizer, tags=[f"zoo:{self.name}"])
                yield model_name
        return cached_zoo(store, zid, cfg, build, task=f"importing {len(dirs)} Hugging Face models",
                          total=len(dirs), progress=progress)


def import_hf_folder(store: BlockStore, *, name: str, path: str, pooling: str = "cls", max_length: int = 128,
                     tokenizer: str | None = None, progress: bool = True) -> Zoo:
    """Import a Hugging Face model folder, or a folder of them, as a zoo (see :class:`HFFolder`)."""
    return HFFolder(name, str(path), pooling, max_length, tokenizer).build(store, progress=progress)


def hf_dirs_spec(*, name: str, path: str, pooling: str = "cls", max_length: int = 128, tokenizer: str | None = None,
                 kind: str = "hf_dirs") -> HFFolder:
    """The ``models=hf_dirs`` config, validated: an :class:`HFFolder` of items of ``(2, max_length)`` tokens."""
    expect_kind(kind, "hf_dirs", "alsatian_pl.zoo.hf_dirs_spec")
    return HFFolder(name, path, pooling, max_length, tokenizer)


def hf_dirs_zoo(store: BlockStore, *, progress: bool = True, **options: Any) -> Zoo:
    """The zoo of a ``models=hf_dirs`` config (``options``: :func:`hf_dirs_spec`'s), imported or reused."""
    return hf_dirs_spec(**options).build(store, progress=progress)
