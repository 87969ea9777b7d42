"""Synthetic M_syn zoos (paper §6): model 0 is a base (a timm model or a Hugging Face BERT-style encoder, random init
or pretrained); model i copies a random earlier model and re-initialises its last k blocks, k drawn from one of the
paper's three distributions. The same :class:`ZooConfig` always yields the same models, block for block."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..blocks import MINILM, PRESETS, arch_config, build_model, hf_recipe, load_encoder, model_dir, split_model
from ..checks import choice, mapping, text, whole
from ..errors import ConfigError, StoreError
from ..io import file_digest
from ..store import BlockStore
from ._checkpoints import SHIPPED_CHECKPOINT, check_timm_arch, resolve_checkpoint, timm_model
from ._record import Zoo, cached_zoo, digest, expect_kind, file_digests, zoo_id
from ._tokenizers import tokenizer_tag

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

    def __post_init__(self) -> None:
        """Refuse bad values before anything is built (types, ranges, choices, a base checkpoint that is absent)."""
        try:
            BlockStore._check_name(text("models.name", self.name))
        except StoreError as exc:
            raise ConfigError(f"models.name: {exc}") from None
        text("models.arch", self.arch)
        whole("models.num_models", self.num_models)
        choice("models.distribution", self.distribution, DISTRIBUTIONS)
        whole("models.seed", self.seed, at_least=0)
        if not isinstance(self.input_size, (tuple, list)) or not all(whole("models.input_size", v)
                                                                      for v in self.input_size):
            raise ConfigError(f"models.input_size must be positive whole numbers, got {self.input_size!r}")
        mapping("models.model_kwargs", self.model_kwargs)
        choice("models.builder", self.builder, ("timm", "hf"))
        choice("models.pooling", self.pooling, ("cls", "mean"))
        text("models.tokenizer", self.tokenizer, optional=True)
        checkpoint = text("models.checkpoint", self.checkpoint, optional=True)
        if self.builder == "timm" and checkpoint not in (None, SHIPPED_CHECKPOINT) \
                and not Path(checkpoint).expanduser().is_file():
            raise ConfigError(f"models.checkpoint={checkpoint} does not exist: give a .pth/.pt/.safetensors file, "
                              f"{SHIPPED_CHECKPOINT} (the shipped ImageNet weights) or null (random init)")
        if self.builder == "timm":
            check_timm_arch(self.arch)
        elif checkpoint and self.model_kwargs:
            raise ConfigError("models.model_kwargs cannot change the architecture of a pretrained checkpoint; "
                              "set models.checkpoint=null for a random-init base")
        elif checkpoint and not (model_dir(checkpoint) / "config.json").is_file():
            raise ConfigError(f"models.checkpoint={checkpoint} is not a Hugging Face model folder (no config.json "
                              f"in {model_dir(checkpoint)}); give such a folder, {MINILM} or null (random init)")

    @property
    def size(self) -> int:
        """How many models the zoo holds (known before it is built)."""
        return self.num_models

    def build(self, store: BlockStore, *, progress: bool = True) -> Zoo:
        """The zoo in ``store``: :func:`build_synthetic_zoo`."""
        return build_synthetic_zoo(store, self, progress=progress)

    def as_dict(self) -> dict[str, Any]:
        """The defining fields; timm zoos leave out the hf-only ones (so their keys are as before those existed)."""
        hf_only = ("builder", "pooling", "tokenizer") if self.builder == "timm" else ()
        return {k: v for k, v in asdict(self).items() if k not in hf_only}

    def key(self) -> str:
        return digest(self.as_dict())


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


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch's CPU random state seeded with ``seed`` inside, restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def reinit_block(block: nn.Module, seed: int) -> nn.Module:
    """A copy of ``block`` with freshly initialised parameters and reset normalisation statistics (seeded)."""
    block = copy.deepcopy(block)
    with _seeded(seed):
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


def _base_model(store: BlockStore, config: ZooConfig) -> tuple[nn.Module, dict[str, Any], str, list[str]]:
    """The zoo's base model (seeded init, then the checkpoint's weights), its recipe, its source and extra tags."""
    if config.builder == "timm":
        checkpoint = resolve_checkpoint(config.checkpoint) or None
        with _seeded(config.seed):
            base, recipe = timm_model(config.arch, config.model_kwargs, checkpoint)
        return base, recipe, checkpoint or f"timm:{config.arch} (random init, seed {config.seed})", []
    label = None if config.model_kwargs else config.arch
    if config.checkpoint:
        base = load_encoder(config.checkpoint, config.pooling)
        recipe, source = hf_recipe(base.config, config.pooling, label), str(model_dir(config.checkpoint))
    else:
        recipe = hf_recipe(arch_config(config.arch, config.model_kwargs), config.pooling, label)
        with _seeded(config.seed):
            base = build_model(recipe).eval()
        source = f"hf:{config.arch} (random init, seed {config.seed})"
    return base, recipe, source, tokenizer_tag(store, _tokenizer_ref(config))


def _synthetic_models(store: BlockStore, config: ZooConfig, zid: str) -> Iterator[str]:
    """Store the zoo's models one after another (named ``<zoo id>-<i:03d>``), yielding each name."""
    base, recipe, source, extra_tags = _base_model(store, config)
    blocks = split_model(base)
    trainable = [i for i, b in enumerate(blocks) if any(True for _ in b.parameters())]
    rng = np.random.default_rng(config.seed)
    names = [f"{zid}-{i:03d}" for i in range(config.num_models)]
    hashes: list[list[str]] = []
    for i, name in enumerate(names):
        new, tags, parent = blocks, ["base"], None
        if i > 0:
            p = int(rng.integers(0, i))
            k = sample_num_reinit(rng, len(trainable), config.distribution)
            new, tags, parent = list(hashes[p]), [f"reinit:{k}"], names[p]
            for j in trainable[-k:]:
                new[j] = reinit_block(blocks[j], seed=config.seed * 1_000_003 + i * 1_009 + j)
        man = store.put_model(name, new, recipe=recipe, input_size=config.input_size, source=source,
                              tags=[f"zoo:{config.name}", *tags, *extra_tags], parent=parent, overwrite=True)
        hashes.append(list(man.hashes))
        yield name


def build_synthetic_zoo(store: BlockStore, config: ZooConfig, *, progress: bool = True) -> Zoo:
    """Build (or reuse) an M_syn zoo: model 0 is the base; model i copies a random earlier model and re-initialises
    its last k parameterised blocks, k drawn from the config's distribution. The record holds the base checkpoint's
    content digest: a checkpoint rewritten in place rebuilds the zoo."""
    zid = zoo_id(config.name, config.as_dict())
    return cached_zoo(store, zid, {**config.as_dict(), "kind": "synthetic", **_source_digests(config)},
                      lambda: _synthetic_models(store, config, zid), task=f"building zoo {config.name}",
                      total=config.num_models, progress=progress)


def _source_digests(config: ZooConfig) -> dict[str, Any]:
    """Content digests of the local files the zoo is built from (the base checkpoint; hf: the model folders of the
    checkpoint and the architecture, and the tokenizer's key), recorded with it: one rewritten in place rebuilds it."""
    if config.builder == "timm":
        path = resolve_checkpoint(config.checkpoint)
        return {} if path is None else {"checkpoint_sha256": file_digest(path)}
    from ..data import tokenizer_key
    out: dict[str, Any] = {}
    for key, ref in (("checkpoint", config.checkpoint), ("arch", config.arch)):
        folder = None if not ref or ref in PRESETS or (key == "arch" and ref == config.checkpoint) else model_dir(ref)
        if folder is not None and folder.is_dir():
            out[f"{key}_sha256"] = file_digests(folder, sorted(f for f in folder.iterdir() if f.is_file()))
    out["tokenizer_key"] = tokenizer_key(_tokenizer_ref(config))
    return out


def _tokenizer_ref(config: ZooConfig) -> str:
    """The tokenizer an hf zoo's models are stored with: its own, the checkpoint's or arch folder's, else MiniLM's."""
    return config.tokenizer or config.checkpoint or (MINILM if config.arch in PRESETS else config.arch)


def synthetic_spec(*, name: str, arch: str, num_models: int = 35, distribution: str = "top_layers", seed: int = 0,
                   checkpoint: str | None = None, model_kwargs: dict[str, Any] | None = None, builder: str = "timm",
                   pooling: str = "cls", tokenizer: str | None = None, image_size: int = 224, max_length: int = 128,
                   kind: str = "synthetic", on_invalid: str = "error") -> ZooConfig:
    """A synthetic ``models`` config, validated (nothing is built): items are ``(3, image_size, image_size)``
    images, or for ``builder="hf"`` ``(2, max_length)`` token ids and masks. ``.build(store)`` makes the zoo."""
    expect_kind(kind, "synthetic", "alsatian_pl.zoo.synthetic_spec")
    choice("models.on_invalid", on_invalid, ("error", "skip"))  # read by the search (SuccessiveHalving)
    size = ((2, whole("models.max_length", max_length, at_least=2)) if builder == "hf" else
            (3, whole("models.image_size", image_size), whole("models.image_size", image_size)))
    return ZooConfig(name=name, arch=arch, num_models=num_models, distribution=distribution, seed=seed,
                     input_size=size, model_kwargs=mapping("models.model_kwargs", model_kwargs),
                     checkpoint=checkpoint, builder=builder, pooling=pooling, tokenizer=tokenizer)


def synthetic_zoo(store: BlockStore, *, progress: bool = True, **options: Any) -> Zoo:
    """The zoo of a synthetic ``models`` config (``options``: :func:`synthetic_spec`'s), built or reused."""
    return synthetic_spec(**options).build(store, progress=progress)
