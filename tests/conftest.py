"""Shared fixtures: deterministic CPU torch, temporary stores."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def store(tmp_path):
    from alsatian_pl.store import BlockStore

    return BlockStore(tmp_path / "store")
