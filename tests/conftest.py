"""Shared fixtures: deterministic CPU torch, temporary stores."""

from __future__ import annotations

import pytest

import alsatian_pl  # noqa: F401  first: OpenMP's idle threads wait passively (alsatian_pl/threads.py)
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def store(tmp_path):
    from alsatian_pl.store import BlockStore

    return BlockStore(tmp_path / "store")


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The tiny zoo most search tests share: 6 mobilenetv3_small_050 variants at 32 px (Top 25%, seed 1)."""
    from alsatian_pl.store import BlockStore
    from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo

    store = BlockStore(tmp_path_factory.mktemp("store"))
    cfg = ZooConfig("tiny", "mobilenetv3_small_050", num_models=6, distribution="top25", seed=1,
                    input_size=(3, 32, 32))
    return build_synthetic_zoo(store, cfg, progress=False)


@pytest.fixture
def ctrl_c_in_round(monkeypatch):
    """``arm(r)``: from then on a search's scoring of round ``r`` (0-based) raises KeyboardInterrupt, as a Ctrl-C
    there would (``monkeypatch.undo()`` disarms it)."""
    from alsatian_pl.halving import SuccessiveHalving

    score = SuccessiveHalving._score

    def arm(r: int) -> None:
        def interrupted(self, state, engine):
            if state.round == r:
                raise KeyboardInterrupt
            return score(self, state, engine)

        monkeypatch.setattr(SuccessiveHalving, "_score", interrupted)

    return arm
