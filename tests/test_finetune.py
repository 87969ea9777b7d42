"""Search-then-fine-tune on a tiny zoo (4 x mobilenetv3_small_050 at 32 px, 300 Fashion-MNIST items, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from alsatian_pl.errors import ConfigError
from alsatian_pl.app import run_finetune
from alsatian_pl.finetune import FinetuneModule, load_finetuned
from alsatian_pl.store import BlockStore, block_tensors

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["models.arch=mobilenetv3_small_050", "models.num_models=4", "models.checkpoint=null",
        "dataset.num_items=300", "dataset.image_size=32", "++search.scorer.kwargs.epochs=5", "search.progress=false"]


def train_cfg(tmp: Path, store: Path, *overrides: str):
    """The train.yaml config as a user composes it, on the tiny zoo, with the quick `smoke` trainer."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*TINY, f"store.root={store}", f"output_dir={tmp}", "trainer=smoke",
                                           *overrides])


class Capture(L.Callback):
    """Records the installed backbone's tensors and the optimizer's parameters when fitting starts."""

    def on_fit_start(self, trainer, pl_module):
        self.tensors = {k: v.detach().clone() for k, v in block_tensors(pl_module.backbone).items()}
        self.head = {k: v.detach().clone() for k, v in pl_module.head.state_dict().items()}
        self.opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One search-then-fine-tune run (the callback searches), training the last block and the head."""
    tmp = tmp_path_factory.mktemp("ft")
    cfg = train_cfg(tmp / "out", tmp / "store", "finetune.train_blocks=1")
    capture = Capture()
    module, trainer, hand_off = run_finetune(cfg, callbacks=[capture])
    return cfg, module, trainer, hand_off, capture


def test_callback_installs_exactly_the_winner(fitted):
    cfg, module, trainer, hand_off, capture = fitted
    results = json.loads((Path(cfg.output_dir) / "results.json").read_text())
    winner = results["ranking"][0]["model"]
    assert module.provenance["model"] == winner == hand_off.report["ranking"][0]["model"]
    stored = block_tensors(BlockStore(cfg.store.root).load_model(winner))
    assert capture.tensors.keys() == stored.keys()
    assert all(torch.equal(capture.tensors[k], stored[k]) for k in stored)
    assert capture.head["1.weight"].shape[0] == 10  # a fresh head for the 10 classes
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert capture.opt_params == trainable and {id(p) for p in module.head.parameters()} <= trainable


def test_freezing_keeps_frozen_blocks_unchanged(fitted):
    cfg, module, trainer, _, capture = fitted
    assert trainer.global_step == 2
    frozen, trained = list(module.backbone)[:-1], module.backbone[-1]
    assert module.frozen_blocks == len(module.backbone) - 1
    assert not any(p.requires_grad for b in frozen for p in b.parameters())
    stored = block_tensors(BlockStore(cfg.store.root).load_model(module.provenance["model"]))
    now = block_tensors(module.backbone)
    last = f"{len(module.backbone) - 1}."
    # frozen: weights and BatchNorm statistics exactly as stored; the trained block and the head moved
    assert all(torch.equal(now[k].cpu(), stored[k]) for k in now if not k.startswith(last))
    assert any(not torch.equal(p.detach().cpu(), stored[last + n]) for n, p in trained.named_parameters())
    assert not torch.equal(module.head[1].weight.detach().cpu(), capture.head["1.weight"])


def test_checkpoint_round_trips(fitted):
    cfg, module, trainer, _, _ = fitted
    path = Path(cfg.finetune.checkpoint)
    loaded = load_finetuned(path)
    ours = {**{f"b.{k}": v for k, v in block_tensors(module.backbone).items()},
            **{f"h.{k}": v for k, v in block_tensors(module.head).items()}}
    theirs = {**{f"b.{k}": v for k, v in block_tensors(loaded.backbone).items()},
              **{f"h.{k}": v for k, v in block_tensors(loaded.head).items()}}
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k].cpu(), theirs[k]) for k in ours)
    p = loaded.provenance
    assert p["model"] == module.provenance["model"] and p["search_rank"] == 1
    assert p["results"] == str((Path(cfg.output_dir) / "results.json").resolve())
    assert p["config"]["finetune"]["train_blocks"] == 1 and p["config"]["models"]["arch"] == "mobilenetv3_small_050"
    assert "val/acc" in p["metrics"] and p["manifest"]["name"] == p["model"]
    x = torch.randn(4, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        assert torch.allclose(module.cpu()(x), loaded(x))


def test_results_file_and_explicit_model(fitted, tmp_path):
    cfg, *_ = fitted
    results = Path(cfg.output_dir) / "results.json"
    last = json.loads(results.read_text())["ranking"][-1]["model"]
    short = last.rpartition("-")[2]  # as the ranking prints it: the one stored model ending in -<short>
    cfg2 = train_cfg(tmp_path / "out", Path(cfg.store.root), f"finetune.results={results}", f"finetune.model={short}",
                     "finetune.train_blocks=0", "trainer.limit_train_batches=1", "finetune.checkpoint=null",
                     "finetune.scheduler=null")
    module, trainer, hand_off = run_finetune(cfg2)
    assert module.provenance["model"] == last and module.provenance["search_rank"] == 4
    assert module.frozen_blocks == len(module.backbone)  # head only
    assert not (tmp_path / "out" / "results.json").exists()  # no second search
    assert not (tmp_path / "out" / "finetuned.safetensors").exists()


def test_module_without_callback_says_what_is_missing():
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 3), torch.zeros(4).long()))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match="FinetuneCallback"):
        trainer.fit(FinetuneModule(), data)


def test_trained_blocks_with_batchnorm_train_on_stored_weights(zoo):
    """A stored block's tensors are views of one buffer; training a block that holds BatchNorm must still work (its
    running statistics are updated in place during the forward pass) and leave the store's copy untouched."""
    from alsatian_pl.finetune import make_head
    from torch import nn

    store, name = zoo.store, zoo.models[0]
    backbone = store.load_model(name)
    with_bn = [i for i, b in enumerate(backbone) if any(isinstance(m, nn.BatchNorm2d) for m in b.modules())]
    train_blocks = len(backbone) - with_bn[-1]  # the last block with BatchNorm trains
    module = FinetuneModule(train_blocks=train_blocks)
    module.install(backbone, make_head(store.manifest(name).blocks[-1].out_shape, 3), 3)
    module.train()
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    stored = store.load_model(name)  # a fresh copy: what the store holds
    changed = [not torch.equal(a, b) for a, b in zip(module.backbone[with_bn[-1]].state_dict().values(),
                                                     stored[with_bn[-1]].state_dict().values())]
    assert any(changed)  # the block trained (weights and running statistics moved)
    assert all(torch.equal(a, b) for a, b in zip(module.backbone[0].state_dict().values(),
                                                 stored[0].state_dict().values()))  # a frozen block did not


def test_a_diverged_fine_tune_saves_nothing_and_says_why(tmp_path):
    """NaN or infinite weights are never written as the fine-tuned checkpoint: one DataError naming the fix."""
    from torch import nn

    from alsatian_pl.errors import DataError
    from alsatian_pl.finetune import make_head, save_finetuned

    module = FinetuneModule(train_blocks="all")
    module.install(nn.Sequential(nn.Sequential(nn.Linear(4, 4))), make_head((4,), 3), 3)
    path = save_finetuned(module, tmp_path / "ok.safetensors")
    assert path.is_file()
    with torch.no_grad():
        module.backbone[0][0].weight[0, 0] = float("nan")
        module.head[-1].bias[1] = float("inf")
    with pytest.raises(DataError, match=r"fine-tuning diverged: 2 weights are NaN or infinite .*nothing was saved"
                                        r".*finetune.optimizer.lr"):
        save_finetuned(module, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_lightning_says_only_what_the_user_needs(caplog, monkeypatch):
    """No accelerator inventory or advertisement, no warning about Lightning's internals, no v_num in the bar."""
    import logging
    import warnings

    from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
    from lightning.pytorch.utilities import rank_zero_info
    from omegaconf import OmegaConf

    from alsatian_pl.app.finetune import _progress_bar, _quiet

    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with _quiet():
            rank_zero_info("GPU available: False, used: False")
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", DeprecationWarning)
        warnings.warn("a warning of the user's own")
    assert "GPU available" not in caplog.text and [str(w.message) for w in seen] == ["a warning of the user's own"]
    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, t, m: {"v_num": 0, "val/acc": 0.5})
    bars = _progress_bar(OmegaConf.create({"trainer": {"enable_progress_bar": True}}), None)
    assert len(bars) == 1 and bars[0].get_metrics(None, None) == {"val/acc": 0.5}
    assert _progress_bar(OmegaConf.create({"trainer": {"enable_progress_bar": False}}), None) == []
    assert _progress_bar(OmegaConf.create({"trainer": {}}), [ProgressBar()]) == []  # the caller's own bar wins


def test_confirmation_fine_tunes_the_top_k_and_records_both_winners(fitted, tmp_path):
    """finetune.confirm_top_k=3 on a finished search: three short fine-tunes, the best by val accuracy fine-tuned,
    and the provenance (checkpoint metadata too) names the search's and the confirmation's winners."""
    cfg, *_ = fitted
    results = Path(cfg.output_dir) / "results.json"
    ranking = [r["model"] for r in json.loads(results.read_text())["ranking"]]
    cfg2 = train_cfg(tmp_path / "out", Path(cfg.store.root), f"finetune.results={results}",
                     "finetune.confirm_top_k=3", "finetune.train_blocks=0", "finetune.scheduler=null",
                     f"finetune.checkpoint={tmp_path / 'ft.safetensors'}")
    module, trainer, hand_off = run_finetune(cfg2)
    record = module.provenance["confirmation"]
    assert [r["model"] for r in record["candidates"]] == ranking[:3] and record["search_winner"] == ranking[0]
    assert [r["search_rank"] for r in record["candidates"]] == [1, 2, 3] and record["epochs"] == 1
    accs = [r["val_acc"] for r in record["candidates"]]
    assert all(0 <= a <= 1 for a in accs) and record["winner_val_acc"] == max(accs)
    assert record["winner"] == record["candidates"][accs.index(max(accs))]["model"] == module.provenance["model"]
    assert load_finetuned(tmp_path / "ft.safetensors").provenance["confirmation"] == record


def test_confirming_the_confident_set_needs_one(fitted, tmp_path):
    from alsatian_pl.finetune import confirm_candidates
    report = {"ranking": [{"model": "a", "score": 0.9}, {"model": "b", "score": 0.8}], "confident_set": None}
    with pytest.raises(ConfigError, match="search.confidence=0.9 or give a number"):
        confirm_candidates(report, "confident")
    assert confirm_candidates({**report, "confident_set": ["a", "b"]}, "confident") == ["a", "b"]
    assert confirm_candidates(report, 1) == ["a"]
    with pytest.raises(ConfigError, match="finetune.confirm_top_k"):
        confirm_candidates(report, 0)


def test_more_blocks_to_train_than_the_backbone_has_is_a_warning_and_trains_all():
    from torch import nn

    from alsatian_pl.errors import AlsatianWarning
    from alsatian_pl.finetune import make_head

    module = FinetuneModule(train_blocks=999)
    with pytest.warns(AlsatianWarning, match="finetune.train_blocks=999, but the backbone has 2 blocks: all of them"):
        module.install(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), make_head((4,), 3), 3)
    assert module.frozen_blocks == 0 and all(p.requires_grad for p in module.backbone.parameters())
