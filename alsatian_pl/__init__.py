"""alsatian-pl: the Alsatian model search (SIGMOD 2025) as a PyTorch Lightning extension.

    import alsatian_pl as ap
    store = ap.BlockStore(".alsatian/store")
    zoo = ap.build_synthetic_zoo(store, ap.ZooConfig("mine", "resnet18", num_models=8, input_size=(3, 32, 32)))
    result = ap.search(zoo, ap.SearchDataModule(num_items=600, image_size=32), cache_budget="1GB")
    print(result.winner)

Names load on first use, so ``import alsatian_pl`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import threads

threads.wait_passively()  # before torch loads OpenMP: idle threads sleep instead of spinning (alsatian_pl/threads.py)

__version__ = "0.1.0"

_EXPORTS = {
    "search": "api", "SuccessiveHalving": "halving", "SearchResult": "halving", "SearchState": "halving",
    "BlockStore": "store", "SearchDataModule": "data", "register_dataset": "data",
    "ProxyScorer": "score", "ProxyScore": "score", "register_scorer": "score", "available_scorers": "score",
    "SearchCallback": "halving", "ProgressBar": "halving", "LogMetrics": "halving", "RoundCheckpoint": "halving",
    "RoundLog": "halving", "MemoryMonitor": "halving",
    "Strategy": "halving", "STRATEGIES": "halving", "register_family": "blocks", "BlockFamily": "blocks",
    "ZooConfig": "zoo", "build_synthetic_zoo": "zoo", "import_checkpoint_folder": "zoo", "import_hf_folder": "zoo",
    "FinetuneCallback": "finetune", "FinetuneModule": "finetune", "RoundMemory": "plan", "Registry": "registry",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alsatian_pl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
