"""The accelerator paths a first GPU run takes, checked on the CPU with the CUDA and NCCL calls stood in for:
the device tier's arithmetic, NCCL point-to-point batching, and where the feature store keeps its buffers."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from alsatian_pl.distributed import Group
from alsatian_pl.features import FeatureStore
from alsatian_pl.resources import DEVICE_HEADROOM, device_capacity


def test_the_device_tier_counts_the_allocators_unused_blocks_as_free(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 8000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1000)
    cuda = torch.device("cuda", 0)
    assert device_capacity(cuda, None, reserve=100) == int(3000 * DEVICE_HEADROOM) - 100
    assert device_capacity(cuda, 500, reserve=100) == 500  # at most the budget
    assert device_capacity(cuda, None, reserve=10**6) == 0  # never negative
    assert device_capacity(torch.device("cpu"), 500) is None  # one tier on the CPU


class _Work:
    def wait(self, timeout=None):
        return True


def test_nccl_point_to_point_calls_go_out_as_one_batch(monkeypatch):
    calls = []

    class P2POp:
        def __init__(self, op, tensor, peer, tag=0):
            self.op, self.tensor, self.peer, self.tag = op, tensor, peer, tag

    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(dist, "P2POp", P2POp)
    monkeypatch.setattr(dist, "batch_isend_irecv", lambda ops: calls.append(ops) or [_Work() for _ in ops])
    monkeypatch.setattr(dist, "isend", lambda *a, **k: pytest.fail("NCCL sends must be batched"))
    group = Group(rank=0, world_size=2)
    send, recv = torch.ones(3), torch.empty(2)
    group.exchange([(1, 0, send)], [(1, 1, recv)])
    assert len(calls) == 1 and [(o.op, o.peer, o.tag) for o in calls[0]] == [(dist.isend, 1, 0), (dist.irecv, 1, 1)]
    assert group.bytes_sent == send.numel() * send.element_size()


def test_feature_buffers_live_on_the_search_device_whatever_tier_the_first_rows_come_from():
    store = FeatureStore({"m": 12}, torch.device("meta"))  # meta stands in for the accelerator
    store.open_round(4)
    store.write("m", 0, torch.ones(2, 3))  # rows read back from the host tier
    assert store.current("m").device.type == "meta"
    plain = FeatureStore({"m": 12})
    plain.open_round(4)
    plain.write("m", 0, torch.ones(2, 3))
    assert plain.current("m").device.type == "cpu"


def test_16_mixed_features_that_overflowed_stop_the_search_naming_the_model():
    from types import SimpleNamespace

    from alsatian_pl.errors import DataError
    from alsatian_pl.halving.monitor import FiniteFeatures
    from alsatian_pl.precision import Precision

    features = FeatureStore({"ok": 12, "bad": 12})
    features.open_round(2)
    features.write("ok", 0, torch.ones(2, 3))
    features.write("bad", 0, torch.tensor([[1.0, float("inf"), 0.0], [0.0, 0.0, 0.0]]))
    search = SimpleNamespace(precision=Precision("16-mixed", "cuda"))
    state = SimpleNamespace(features=features, round=1)
    with pytest.raises(DataError, match="the features of model bad are not finite in round 2"):
        FiniteFeatures().on_round_executed(search, state)
