"""Model zoos built into a BlockStore: synthetic M_syn zoos (paper §6) of timm models or Hugging Face BERT-style
encoders (the pretrained EfficientNet-Lite0 and all-MiniLM-L6-v2 bases, bert-base), and zoos imported from the user's
own checkpoints (timm state dicts, Hugging Face model folders). A zoo is built once, recorded under ``zoos/``, and
reused while its configuration stays the same (:func:`cached_zoo`). Text models carry the tag ``tokenizer:<key>``;
their tokenizer is stored once as ``tokenizers/<key>.json`` in the store.

The ``models`` config group instantiates one validated zoo spec per kind (:func:`synthetic_spec` gives a
:class:`ZooConfig`, :func:`checkpoint_spec` a :class:`CheckpointFolder`, :func:`hf_dirs_spec` an :class:`HFFolder`):
nothing is built until ``spec.build(store)``, so a bad value is refused before the store is touched. The factories
:func:`synthetic_zoo`, :func:`checkpoint_zoo`, :func:`hf_dirs_zoo` do both in one call.

Choosing candidates: a ``models.where`` filter (:class:`Where`: architecture, family, parameter bounds, tags, name
and source globs) cuts any spec's models after its build; :func:`store_spec` (``models=store``) takes every stored
model that matches, :func:`zoos_spec` (``models=zoos``) several zoo configs in one search.
"""

from __future__ import annotations

from ._checkpoints import (CheckpointFolder, checkpoint_spec, checkpoint_zoo, efficientnet_lite0_checkpoint,
                           import_checkpoint_folder, import_timm, load_checkpoint, read_state_dict, resolve_checkpoint,
                           timm_model)
from ._hf import HFFolder, hf_dirs_spec, hf_dirs_zoo, import_hf_dir, import_hf_folder
from ._timm_names import TimmNames, timm_names_spec, timm_names_zoo  # noqa: F401  (models=timm_names)
from ._record import (StoreModels, Where, Zoo, ZooList, cached_zoo, expected_size, select, spec_of, store_spec, zoo_id,
                      zoos_spec)
from ._synthetic import (DISTRIBUTIONS, ZooConfig, build_synthetic_zoo, reinit_block, sample_num_reinit, synthetic_spec,
                         synthetic_zoo)
from ._tokenizers import model_tokenizer, tokenizer_file, tokenizer_of, tokenizer_tag

__all__ = ["Zoo", "ZooConfig", "DISTRIBUTIONS", "cached_zoo", "zoo_id",
           "Where", "StoreModels", "ZooList", "select", "spec_of", "expected_size", "store_spec", "zoos_spec",
           "synthetic_zoo", "checkpoint_zoo", "hf_dirs_zoo", "synthetic_spec", "checkpoint_spec", "hf_dirs_spec",
           "CheckpointFolder", "HFFolder",
           "build_synthetic_zoo", "import_checkpoint_folder", "import_hf_dir", "import_hf_folder", "import_timm",
           "load_checkpoint", "read_state_dict", "timm_model", "efficientnet_lite0_checkpoint", "resolve_checkpoint",
           "sample_num_reinit", "reinit_block", "model_tokenizer", "tokenizer_of", "tokenizer_file", "tokenizer_tag"]
