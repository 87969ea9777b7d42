"""Hugging Face encoders into the store: a local model folder (config.json + model.safetensors) as one model, or a
folder of them as a zoo. Text encoders (BERT family): each model's tokenizer is stored with it. Vision encoders (ViT,
DeiT, DINOv2, BEiT, ConvNeXt, Swin; ``blocks._hf_vision``): a fine-tuned folder's ``classifier`` is stored as the
model's head."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..blocks import VISION_TYPES, hf_recipe, hf_vision_recipe, load_encoder, model_dir
from ..checks import choice, text, whole
from ..errors import ConfigError, StoreError
from ..store import BlockStore, ModelManifest
from ._checkpoints import read_state_dict
from ._record import Zoo, cached_zoo, expect_kind, file_digests, import_each, zoo_id
from ._timm_names import hub_cache
from ._tokenizers import tokenizer_tag


HEAD_PREFIXES = ("classifier.",)  # the head of transformers' *ForImageClassification models


def is_vision_folder(folder: Path) -> bool:
    """Whether a model folder's config.json names a vision encoder (ViT, DeiT, DINOv2, BEiT, ConvNeXt, Swin)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type") in VISION_TYPES
    except (OSError, ValueError, AttributeError):
        return False


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a model folder's single weights file (model.safetensors or pytorch_model.bin); {} if sharded."""
    for file in ("model.safetensors", "pytorch_model.bin"):
        if (folder / file).is_file():
            return read_state_dict(folder / file)
    return {}


def vision_head(folder: Path, unexpected: Sequence[str]) -> dict[str, torch.Tensor]:
    """The ``classifier`` head in a vision folder's weights ({} when it has none), given the names of the tensors
    the encoder did not take; StoreError naming those that are not the head's."""
    extra = [k for k in unexpected if not k.startswith(HEAD_PREFIXES)]
    if extra:
        raise StoreError(f"the weights in {folder} do not fit its encoder: {len(extra)} unexpected tensor(s) (e.g. "
                         f"{', '.join(extra[:3])}); only the classifier head may be added to the encoder's tensors. "
                         "Save the model with save_pretrained")
    if not any(k.startswith(HEAD_PREFIXES) for k in unexpected):
        return {}
    return {k: v for k, v in _weights(folder).items() if k.startswith(HEAD_PREFIXES)}


def import_hf_vision_dir(store: BlockStore, name: str, folder: Path, *, image_size: int | None = None,
                         tags: Sequence[str] = (), overwrite: bool = True) -> ModelManifest:
    """Import a local Hugging Face vision folder as one model of ``(3, image_size, image_size)`` images (default:
    its config's image size); a fine-tuned folder's ``classifier`` is stored as its head."""
    unexpected: list[str] = []
    model = load_encoder(folder, "cls", unexpected=unexpected)
    head = vision_head(folder, unexpected)
    size = image_size or model.config.image_size
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    manifest = store.import_model(name, model, recipe=hf_vision_recipe(model.config), input_size=(3, *size),
                                  source=str(folder), tags=tags, overwrite=overwrite)
    return store.put_head(name, head) if head else manifest


def import_hf_dir(store: BlockStore, name: str, path: str | Path, *, pooling: str = "cls", max_length: int = 128,
                  tokenizer: str | None = None, tags: Sequence[str] = (), overwrite: bool = True,
                  image_size: int | None = None) -> ModelManifest:
    """Import a local Hugging Face encoder folder (config.json + model.safetensors) as one model; blocks already in
    the store (same hash) are not written again. Text encoders: its tokenizer (``tokenizer``, else the folder's own
    if it has one) is stored with it. Vision encoders: see :func:`import_hf_vision_dir` (``image_size``)."""
    from ..data import tokenizer_files
    folder = model_dir(path).resolve()
    if is_vision_folder(folder):
        return import_hf_vision_dir(store, name, folder, image_size=image_size, tags=tags, overwrite=overwrite)
    model = load_encoder(folder, pooling)
    ref = tokenizer or (str(folder) if tokenizer_files(folder) else None)
    return store.import_model(name, model, recipe=hf_recipe(model.config, pooling), input_size=(2, max_length),
                              source=str(folder), tags=[*tags, *tokenizer_tag(store, ref)], overwrite=overwrite)


@dataclass(frozen=True)
class HFFolder:
    """A Hugging Face model folder, or every model folder (holding config.json) directly under ``path``, as a zoo to
    import (validated on construction; nothing is read or written until :meth:`build`). ``tokenizer``: one for every
    model; None or a folder of model folders (e.g. ``path``): each model folder's own, where it has one."""

    name: str
    path: str | None
    pooling: str = "cls"
    max_length: int = 128
    tokenizer: str | None = None
    image_size: int | None = None  # vision models: the items' size (default: each model's config.image_size)
    ids: tuple[str, ...] = ()  # instead of path: Hugging Face model ids read from the local hub cache
    cache_dir: str | None = None  # the hub cache (None: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)
    on_invalid: str = "error"  # a model folder that cannot be read or split: stop (error) or leave it out (skip)

    def __post_init__(self) -> None:
        text("models.name", self.name)
        choice("models.on_invalid", self.on_invalid, ("error", "skip"))
        ids = self.ids or ()
        if isinstance(ids, str) or not all(isinstance(i, str) and i for i in ids):
            raise ConfigError(f"models.ids must be a list of Hugging Face model ids (e.g. [google/vit-base-patch16-"
                              f"224, sentence-transformers/all-MiniLM-L6-v2]), got {self.ids!r}")
        object.__setattr__(self, "ids", tuple(ids))
        if (self.path is None) == (not self.ids):
            raise ConfigError("models=hf_dirs needs exactly one of models.path (a model folder, or a folder of them) "
                              "and models.ids (model ids in the local Hugging Face cache)")
        text("models.cache_dir", self.cache_dir, optional=True)
        choice("models.pooling", self.pooling, ("cls", "mean"))
        whole("models.max_length", self.max_length, at_least=2)
        text("models.tokenizer", self.tokenizer, optional=True)
        if self.image_size is not None:
            whole("models.image_size", self.image_size)
        self.dirs  # noqa: B018 - refuses a path without model folders now, before anything runs

    @property
    def dirs(self) -> list[Path]:
        """The model folders (sorted, or the cached snapshots of ``ids`` in their order); StoreError when there are
        none, or naming every id that is not cached."""
        if self.ids:
            return cached_snapshots(self.ids, hub_cache(self.cache_dir))
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
        from ..data import tokenizer_files
        dirs, tokenizer = self.dirs, self.tokenizer
        folder = hub_cache(self.cache_dir) if self.ids else Path(str(self.path)).expanduser()
        own = tokenizer is None or (model_dir(tokenizer).is_dir() and tokenizer_files(model_dir(tokenizer)) is None)
        cfg = {"kind": "hf_dirs", "path": str(folder.resolve()), "pooling": self.pooling,
               "max_length": self.max_length, "tokenizer": tokenizer,
               "files": file_digests(folder, (f for d in dirs for f in sorted(d.rglob("*")) if f.is_file()))}
        if self.image_size is not None:  # only then: text zoos keep the ids they had
            cfg["image_size"] = self.image_size
        if self.ids:
            cfg["ids"] = list(self.ids)
        if self.on_invalid == "skip":  # only then: a zoo built without skipping keeps its id
            cfg["on_invalid"] = "skip"
        zid = zoo_id(self.name, cfg)
        skipped: dict[str, str] = {}

        def one(d: Path, label: str):
            model_name = f"{zid}-{re.sub(r'[^A-Za-z0-9._-]', '_', label)}"
            return lambda: import_hf_dir(store, model_name, d, pooling=self.pooling, max_length=self.max_length,
                                         tokenizer=None if own else tokenizer, tags=[f"zoo:{self.name}"],
                                         image_size=self.image_size).name
        labels = [self.ids[k].split("/")[-1] if self.ids else d.name for k, d in enumerate(dirs)]
        return cached_zoo(store, zid, cfg, lambda: import_each(((lb, one(d, lb)) for d, lb in zip(dirs, labels)),
                                                               self.on_invalid, skipped),
                          task=f"importing {len(dirs)} Hugging Face models", total=len(dirs), progress=progress,
                          skipped=skipped)


def import_hf_folder(store: BlockStore, *, name: str, path: str, pooling: str = "cls", max_length: int = 128,
                     tokenizer: str | None = None, progress: bool = True) -> Zoo:
    """Import a Hugging Face model folder, or a folder of them, as a zoo (see :class:`HFFolder`)."""
    return HFFolder(name, str(path), pooling, max_length, tokenizer).build(store, progress=progress)


def hf_dirs_spec(*, name: str, path: str | None = None, pooling: str = "cls", max_length: int = 128,
                 tokenizer: str | None = None, image_size: int | None = None, ids: Sequence[str] | None = None,
                 cache_dir: str | None = None, kind: str = "hf_dirs", on_invalid: str = "error") -> HFFolder:
    """The ``models=hf_dirs`` config, validated: an :class:`HFFolder` of items of ``(2, max_length)`` tokens (text
    encoders) or ``(3, image_size, image_size)`` images (vision encoders); ``ids`` instead of ``path``: models in the
    local hub cache."""
    expect_kind(kind, "hf_dirs", "alsatian_pl.zoo.hf_dirs_spec")
    ids = tuple(ids) if isinstance(ids, Sequence) and not isinstance(ids, str) else (ids or ())
    return HFFolder(name, path, pooling, max_length, tokenizer, image_size, ids, cache_dir,  # type: ignore[arg-type]
                    on_invalid)


def cached_snapshots(ids: Sequence[str], cache: Path) -> list[Path]:
    """The cached main-revision folder of each model id (``models--<org>--<name>/snapshots/<refs/main>``, holding
    config.json); one StoreError naming every id that is not cached and how to fetch it."""
    found, missing = [], []
    for repo in ids:
        root = cache / f"models--{repo.replace('/', '--')}"
        try:
            revision = (root / "refs" / "main").read_text().strip()
        except OSError:
            revision = ""
        snapshot = root / "snapshots" / revision
        if revision and (snapshot / "config.json").is_file():
            found.append(snapshot)
        else:
            missing.append((repo, root))
    if missing:
        repo, root = missing[0]
        raise StoreError(
            f"{len(missing)} Hugging Face model(s) are not in the hub cache at {cache} "
            f"({', '.join(r for r, _ in missing)}); for {repo} alsatian-pl looked for {root / 'refs' / 'main'} and "
            f"{root / 'snapshots' / '<revision>' / 'config.json'}. Nothing is downloaded at search time: on a machine "
            f"with internet access run `huggingface-cli download {repo}` and copy its hub cache here, or point "
            "models.cache_dir at a cache that holds them")
    return found


def hf_dirs_zoo(store: BlockStore, *, progress: bool = True, **options: Any) -> Zoo:
    """The zoo of a ``models=hf_dirs`` config (``options``: :func:`hf_dirs_spec`'s), imported or reused."""
    return hf_dirs_spec(**options).build(store, progress=progress)
