"""Searches over text models of several tokenizers: one set of prepared inputs and one task tree per tokenizer, the
same scores as searching each tokenizer's models alone, the hf_dirs models config, fine-tuning on the winner's
tokenizer's items. Tiny random-init BERT encoders (3 layers, hidden 32) on a 60-review CSV, CPU."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from alsatian_pl.data import SearchDataModule, _text
from alsatian_pl.errors import DataError
from alsatian_pl.execute import Executor
from alsatian_pl.finetune import FinetuneCallback, FinetuneModule
from alsatian_pl.halving import SuccessiveHalving
from alsatian_pl.store import BlockStore
from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo, tokenizer_file, tokenizer_of
from _tokenizer import WORDS, write_tokenizer

import transformers  # noqa: F401  a dependency: missing, these tests fail rather than skip
CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37, vocab_size=40,
            max_position_embeddings=24)
LENGTH = 12


def write_reviews(path: Path, n: int = 60) -> Path:
    texts = ["a good film", "the great movie", "Good, GOOD plot", "a film", "awful awful awful movie", "bad plot",
             "the bad film the bad film the bad film the bad film", "awful"]
    rows = [f'"{texts[i % 8]}",{"pos" if i % 8 < 4 else "neg"}' for i in range(n)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """One store holding zoo a (tokenizer A), zoo c (a copy of A: same key) and zoo b (tokenizer B, and the same
    seed as a, so a's and b's models have identical blocks and differ only in their inputs)."""
    tmp = tmp_path_factory.mktemp("mixed")
    tok_a = write_tokenizer(tmp / "a.json")
    tok_c = shutil.copy(tok_a, tmp / "c.json")
    tok_b = write_tokenizer(tmp / "b.json", words=WORDS[::-1])
    store = BlockStore(tmp / "store")
    zoos = {}
    for name, tok, seed, n in (("a", tok_a, 3, 3), ("c", tok_c, 4, 2), ("b", tok_b, 3, 3)):
        cfg = ZooConfig(name, arch="bert-base", num_models=n, seed=seed, input_size=(2, LENGTH), builder="hf",
                        tokenizer=str(tok), model_kwargs=TINY)
        zoos[name] = build_synthetic_zoo(store, cfg, progress=False).models
    return {"store": store, "csv": write_reviews(tmp / "reviews.csv"), "tok_a": str(tok_a), "tok_b": str(tok_b),
            "zoos": zoos, "tmp": tmp}


def data(setup, tokenizer="tok_a") -> SearchDataModule:
    return SearchDataModule(name="text_file", path=str(setup["csv"]), tokenizer=setup[tokenizer], max_length=LENGTH)


def search(setup, dm, models, strategy="alsatian", **kwargs):
    kwargs = {"batch_size": 16, "device": "cpu", "progress": False, "scorer_kwargs": {"epochs": 10}, **kwargs}
    return SuccessiveHalving(BlockStore(setup["store"].root), dm, strategy=strategy, **kwargs).run(models)


def scores(result):
    return {r.model: (r.score, r.test_loss) for r in result.ranking}


def everything(setup):
    z = setup["zoos"]
    return [*z["a"], *z["b"], *z["c"]]


def test_models_of_one_tokenizer_share_inputs_and_each_tokenizer_is_tokenised_once(setup, monkeypatch):
    store, zoos = setup["store"], setup["zoos"]
    key = {z: tokenizer_of(store.manifest(zoos[z][0])) for z in zoos}
    assert key["a"] == key["c"] != key["b"]
    calls = []
    prepare = _text.TextSource.prepare

    def counting(self, indices, tokenizer=None):
        calls.append(tokenizer)
        return prepare(self, indices, tokenizer)

    runs = []
    run_round = Executor.run_round

    def spying(self, plan, inputs, sink):
        run_round(self, plan, inputs, sink)
        runs.append((set(plan.models), inputs.tensor(), plan.peak_bytes, self.cache.peak))

    monkeypatch.setattr(_text.TextSource, "prepare", counting)
    monkeypatch.setattr(Executor, "run_round", spying)
    dm = data(setup)
    result = search(setup, dm, everything(setup))
    b_file = str(tokenizer_file(store, store.manifest(zoos["b"][0])))
    assert calls == [None, b_file]  # the dataset's tokenizer (shared by zoos a and c), then b's: once each
    assert set(dm._prep.inputs) == {key["a"], key["b"]}
    assert [r.models for r in result.rounds] == [8, 4, 2] and len(result.ranking) == 8
    # one tree per tokenizer: zoos a and c together on the default items, zoo b alone on its own items
    group_a, group_b = set(zoos["a"] + zoos["c"]), set(zoos["b"])
    first = runs[:result.rounds[0].groups]
    assert result.rounds[0].groups == 2 and [m for m, *_ in first] == [group_a, group_b]
    n0 = len(dm.chunk(0)[0])
    for (models, inputs, *_), tok in zip(first, (None, b_file)):
        assert torch.equal(inputs, (dm.chunk(0, tok)[0] + dm.test_items(tok)[0]).tensor()) and len(inputs) > n0
    assert not torch.equal(first[0][1], first[1][1])
    later = [m for m, *_ in runs[2:]]
    assert all(m <= group_a or m <= group_b for m in later)  # pruning shrinks each tree; groups never mix
    assert len(runs) == sum(r.groups for r in result.rounds)
    # the planner's peak is the cache's observed peak for every group's plan, and so for every round
    assert all(planned == observed for *_, planned, observed in runs)
    assert all(r.planned_peak_bytes == r.observed_peak_bytes for r in result.rounds)
    assert result.timings_s["prepare_data"] == dm.prepare_seconds > 0
    # zoos a and b have identical blocks: run once per tokenizer; on the CPU a block is mapped from the store at
    # most once per group and round (the weight cache drops it after its last use in the group's plan)
    assert store.manifest(zoos["a"][0]).hashes == store.manifest(zoos["b"][0]).hashes
    distinct = {h for m in everything(setup) for h in store.manifest(m).hashes}
    assert result.rounds[0].distinct_blocks == len(distinct)
    assert len(distinct) <= result.cache["weight_loads"] <= sum(r.groups * r.distinct_blocks for r in result.rounds)


def scored(setup, dm, models, strategy):
    """The search's result and the train/test features each model was scored on (one round: result_size 4)."""
    searcher = SuccessiveHalving(BlockStore(setup["store"].root), dm, strategy=strategy, batch_size=16, device="cpu",
                                 progress=False, scorer_kwargs={"epochs": 10}, result_size=4)
    seen, score = {}, searcher.scorer.score

    def spy(train, train_labels, test, test_labels, num_classes):
        seen.update({m: (train[m].clone(), test[m].clone(), train_labels, test_labels) for m in train})
        return score(train, train_labels, test, test_labels, num_classes)

    searcher.scorer.score = spy
    return searcher.run(models), seen


@pytest.mark.parametrize("strategy", ["alsatian", "base"])
def test_each_model_scores_as_when_its_tokenizer_is_searched_alone(setup, strategy):
    zoos = setup["zoos"]
    # result_size 4: one round for all 8 models and for each group alone, so every model sees the same items
    mixed, seen = scored(setup, data(setup), everything(setup), strategy)
    alone_a, seen_a = scored(setup, data(setup), zoos["a"] + zoos["c"], strategy)
    alone_b, seen_b = scored(setup, data(setup, "tok_b"), zoos["b"], strategy)  # b's tokenizer as the default
    assert len(mixed.rounds) == len(alone_a.rounds) == len(alone_b.rounds) == 1
    alone, seen_alone = {**scores(alone_a), **scores(alone_b)}, {**seen_a, **seen_b}
    assert seen.keys() == seen_alone.keys() == set(everything(setup))
    for m, tensors in seen.items():  # bitwise the same features and labels
        assert all(torch.equal(x, y) for x, y in zip(tensors, seen_alone[m])), m
    for m, (score, loss) in scores(mixed).items():
        # the same accuracy; the loss up to float32 rounding (the scorer trains 8 heads together here, 3 or 5 alone)
        assert score == alone[m][0] and loss == pytest.approx(alone[m][1], rel=1e-6), m
    a0, b0 = zoos["a"][0], zoos["b"][0]  # identical blocks, different inputs: different features and losses
    assert not torch.equal(seen[a0][0], seen[b0][0]) and scores(mixed)[a0][1] != scores(mixed)[b0][1]


def test_alsatian_and_shift_rank_a_mixed_search_identically(setup):
    a = search(setup, data(setup), everything(setup), "alsatian")
    s = search(setup, data(setup), everything(setup), "shift")
    assert [r.model for r in a.ranking] == [r.model for r in s.ranking]
    assert [r.eliminated_in_round for r in a.ranking] == [r.eliminated_in_round for r in s.ranking]
    for ra, rs in zip(a.ranking, s.ranking):
        assert abs(ra.score - rs.score) <= 1e-5 and abs(ra.test_loss - rs.test_loss) <= 1e-5
    for res in (a, s):
        assert all(r.planned_peak_bytes == r.observed_peak_bytes for r in res.rounds)
    assert sum(r.block_runs for r in a.rounds) < sum(r.block_runs for r in s.rounds)  # shared prefixes run once


def test_a_tight_budget_splits_each_groups_rounds_and_keeps_the_scores(setup):
    """A budget below batch-major's peak (below the default's, the steps first run fewer batches block by block)."""
    ample = search(setup, data(setup), everything(setup), block_batches=1)
    budget = max(r.planned_peak_bytes for r in ample.rounds) - 1
    tight = search(setup, data(setup), everything(setup), cache_budget=budget)
    assert any(r.partitions > 1 for r in tight.rounds)
    assert all(r.planned_peak_bytes == r.observed_peak_bytes <= budget for r in tight.rounds)
    assert scores(tight) == scores(ample)


def test_a_model_whose_stored_tokenizer_is_missing_or_changed_is_refused(setup, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(setup["store"].root, root)
    b0 = setup["zoos"]["b"][0]
    stored = tokenizer_file(BlockStore(root), BlockStore(root).manifest(b0))
    shutil.copy(setup["tok_a"], stored)  # someone overwrote b's tokenizer
    dm = data(setup)
    with pytest.raises(DataError, match=f"model {b0} was stored with tokenizer .* is changed: rebuild or re-import"):
        SuccessiveHalving(BlockStore(root), dm, device="cpu", progress=False).run([setup["zoos"]["a"][0], b0])
    stored.unlink()
    with pytest.raises(DataError, match=f"model {b0} .* is missing: .*or set dataset.tokenizer"):
        SuccessiveHalving(BlockStore(root), dm, device="cpu", progress=False).run([b0])
    long = SearchDataModule(name="text_file", path=str(setup["csv"]), tokenizer=setup["tok_a"], max_length=LENGTH + 4)
    with pytest.raises(DataError, match=f"expects inputs of size \\[2, {LENGTH}\\].*set dataset.max_length"):
        search(setup, long, everything(setup))


# ---------------------------------------------------------------------------------------------- models=hf_dirs
def write_hf_folder(path: Path, seed: int, tokenizer_words=None) -> Path:
    from alsatian_pl.blocks._bert import build_encoder

    torch.manual_seed(seed)
    build_encoder({"model_type": "bert", **TINY}).save_pretrained(path)
    if tokenizer_words is not None:
        write_tokenizer(path / "tokenizer.json", words=tokenizer_words)
    return path


def test_hf_dirs_config_searches_model_folders_with_their_own_tokenizers(setup, tmp_path):
    from hydra import compose, initialize_config_dir

    from alsatian_pl.app import run_search

    folders = tmp_path / "hf"
    write_hf_folder(folders / "m1", 1, WORDS)
    write_hf_folder(folders / "m2", 2, WORDS[::-1])
    write_hf_folder(folders / "m3", 3)  # no tokenizer of its own: takes the dataset's items (m1's tokenizer)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=[
            "dataset=text_file", f"dataset.path={setup['csv']}", f"dataset.max_length={LENGTH}", "models=hf_dirs",
            f"models.path={folders}", f"store.root={tmp_path / 'store'}", "search.progress=false",
            "search.batch_size=16", "search.device=cpu", "++search.scorer.kwargs.epochs=10"])
    assert cfg.models.kind == "hf_dirs" and cfg.models.max_length == LENGTH and cfg.models.pooling == "cls"
    assert cfg.dataset.tokenizer == cfg.models.tokenizer == str(folders)
    result, report = run_search(cfg, tmp_path / "out")
    store = BlockStore(tmp_path / "store")
    tags = {r.model.rsplit("-", 1)[1]: tokenizer_of(store.manifest(r.model)) for r in result.ranking}
    assert tags == {"m1": _text.tokenizer_key(str(folders / "m1")), "m2": _text.tokenizer_key(str(folders / "m2")),
                    "m3": None}
    assert tags["m1"] != tags["m2"] and report["dataset"]["tokenizer"] == str(folders)
    assert report["rounds"][0]["groups"] == 2  # m1 and m3 on the default items, m2 on its own
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["ranking"]) == 3 and saved["ranking"][0]["model"] == result.winner


# ---------------------------------------------------------------------------------------------------- fine-tuning
class Batches(L.Callback):
    def __init__(self):
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append(batch[0].clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch[0].clone())


def finetune(setup, model):
    dm = data(setup)
    dm.batch_size = 8
    batches = Batches()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False,
                        callbacks=[FinetuneCallback(model=model, store_root=setup["store"].root), batches])
    module = FinetuneModule(train_blocks=0)
    with warnings.catch_warnings():  # frozen blocks are in eval mode on purpose
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        trainer.fit(module, datamodule=dm)
    return dm, module, batches


def rows(x: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(r.flatten().tolist()) for r in x}


def test_finetuning_uses_the_winners_tokenizer(setup):
    store, b0, a0 = setup["store"], setup["zoos"]["b"][0], setup["zoos"]["a"][0]
    dm, module, batches = finetune(setup, b0)
    b_file = str(tokenizer_file(store, store.manifest(b0)))
    assert dm.loader_tokenizer == b_file and module.provenance["model"] == b0
    own, default = rows(dm.train_items(tokenizer=b_file)[0].tensor()), rows(dm.train_items()[0].tensor())
    seen = rows(torch.cat(batches.train))
    assert len(batches.train) == 2 and seen <= own and not seen <= default
    assert torch.equal(batches.val[0], dm.test_items(tokenizer=b_file)[0][:8].tensor())
    dm, _, batches = finetune(setup, a0)  # the dataset's own tokenizer: its own items, nothing tokenised again
    assert dm.loader_tokenizer is None and rows(torch.cat(batches.train)) <= default and len(dm._prep.inputs) == 1
