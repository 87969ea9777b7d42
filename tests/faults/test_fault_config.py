"""Bad config values, for every key of search.py's config and fine-tuning's own keys: each is refused with one
``error:`` line naming the key, exit status 2, before anything touches the store or writes a file."""

from __future__ import annotations

import pytest

from _harness import compose, in_process, one_error_line

FILE = "<a file>"  # replaced by the path of an existing file: a folder setting that points at it must be refused
BAD = {  # key -> bad values as a user types them (Hydra parses them: abc is a string, 1.5 a float, [1,2] a list)
    "dataset._target_": ["nowhere.Nothing"],
    "dataset.name": ["imagenet", "[a,b]"],
    "dataset.path": ["/nonexistent/fashion"],
    "dataset.num_items": ["abc", "-1", "1.5"],
    "dataset.image_size": ["abc", "0", "1", "1.5"],
    "dataset.test_fraction": ["abc", "0", "1", "1.5"],
    "dataset.seed": ["abc", "-1", "1.5"],
    "dataset.mean": ["abc", "[1,2]", "[a,b,c]"],
    "dataset.std": ["[1,0,1]", "abc"],
    "dataset.data_cache": [FILE],
    "dataset.skip_unreadable": ["abc"],
    "dataset.task": ["classification", "[multilabel]"],
    "dataset.num_workers": ["abc", "-1", "1.5"],
    "models._target_": ["nowhere.nothing"],
    "models.kind": ["checkpoints"],
    "models.name": ["bad/name", "''"],
    "models.arch": ["no_such_net", "[a]"],
    "models.num_models": ["abc", "0", "1.5"],
    "models.distribution": ["top99"],
    "models.seed": ["abc", "-1"],
    "models.checkpoint": ["/nonexistent.pth"],
    "models.image_size": ["abc", "0"],
    "models.on_invalid": ["maybe", "[skip]"],
    "search._target_": ["nowhere.nothing"],
    "search._partial_": ["false"],
    "search.scorer.name": ["nope"],
    "search.scorer.kwargs.epochs": ["abc", "0", "1.5"],
    "search.scorer.kwargs.lr": ["abc", "-1", "0"],
    "search.scorer.kwargs.batch_size": ["abc", "0", "1.5"],
    "search.strategy": ["greedy"],
    "search.cache_budget": ["lots", "-1", "nan"],
    "search.spill_dir": [FILE],
    "search.result_size": ["abc", "0", "1.5"],
    "search.batch_size": ["abc", "0", "1.5"],
    "search.device": ["tpu"],
    "search.channels_last": ["abc"],
    "search.prefetch": ["sometimes"],
    "search.device_capacity": ["lots"],
    "search.seed": ["abc", "-1", "18446744073709551616"],
    "search.feature_cache": [FILE],
    "search.feature_cache_bytes": ["lots"],
    "search.checkpoint_dir": [FILE],
    "search.resume": ["abc"],
    "search.min_class_items": ["abc", "0", "-1", "1.5", "[1]"],
    "search.noise_margin": ["abc", "-1", "nan", "inf", "[1]"],
    "search.progress": ["abc"],
    "search.devices": ["abc", "0", "1.5"],
    "search.num_nodes": ["abc", "0", "2"],  # 2 without a launcher: it waited forever
    "search.confidence": ["abc", "0.3", "1", "nan", "true"],
    "search.precision": ["fp8", "7"],
    "search.threads": ["abc", "0", "-1", "1.5"],
    "search.block_batches": ["abc", "0", "-1", "1.5", "[2]"],
    "search.accelerator": ["tpu"],
    "search.rebalance_below": ["abc", "0", "-1", "1.5", "nan", "[1]"],
    "logger._target_": ["nowhere.Nothing"],
    "logger.save_dir": [FILE],
    "logger.name": ["''", "[a]"],
    "store.root": [FILE, f"{FILE}/store", "''"],
}
NAMED_BY = {"_partial_": "SuccessiveHalving"}


def _leaves(node, prefix=""):
    from omegaconf import OmegaConf

    for key in node:
        path = f"{prefix}{key}"
        if path == "hydra":
            continue
        value = node._get_node(key)
        if OmegaConf.is_dict(value):
            yield from _leaves(value, f"{path}.")
        else:
            yield path


def test_every_key_of_the_search_config_has_bad_values():
    """The table covers the whole composed config: a new key needs its bad values here."""
    assert sorted(_leaves(compose("store.root=/tmp/unused"))) == sorted(BAD)


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, values in BAD.items() for v in values])
def test_a_bad_value_is_refused_in_one_line_before_the_store_is_touched(key, value, tmp_path, capsys):
    from alsatian_pl.app import run_search

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    value = value.replace(FILE, str(blocker))
    store = tmp_path / "store"
    overrides = [f"store.root={store}", f"{key}={value}"] if key != "store.root" else [f"{key}={value}"]
    status, err = in_process(capsys, run_search, compose(*overrides), tmp_path / "out")
    assert status == 2, err
    line, leaf = one_error_line(err), key.rpartition(".")[2]
    assert NAMED_BY.get(leaf, leaf) in line or value in line, line  # it names the key or the value
    assert not store.exists() and not (tmp_path / "out").exists()


TRAIN_BAD = {
    "finetune.train_blocks": ["abc", "1.5", "-2"],
    "finetune.batch_size": ["abc", "0"],
    "finetune.seed": ["abc", "-1"],
    "finetune.results": ["/nonexistent/results.json", "<damaged>"],
    "finetune.model": ["nope"],
    "finetune.checkpoint": [f"{FILE}/finetuned.safetensors"],
    "finetune.optimizer.lr": ["abc", "-1", "0"],
    "trainer.max_epochs": ["abc", "0", "-1", "1.5"],
    "finetune.confirm_top_k": ["abc", "0", "1.5"],
    "finetune.confirm_epochs": ["abc", "0"],
    "trainer.precision": ["7"],  # Lightning's refusal used to end in a "bug" traceback
    "trainer.devices": ["abc"],
}


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, values in TRAIN_BAD.items() for v in values])
def test_a_bad_fine_tuning_value_is_refused_in_one_line(key, value, built, tmp_path, capsys):
    from alsatian_pl.app import run_finetune

    blocker, damaged = tmp_path / "a-file", tmp_path / "results.json"
    blocker.write_text("not a folder")
    damaged.write_text('{"ranking": [{"model": "x", "sco')  # what a full disk left before writes were atomic
    value = value.replace(FILE, str(blocker)).replace("<damaged>", str(damaged))
    cfg = compose(f"store.root={built[0]}", f"output_dir={tmp_path}", "trainer=smoke", f"{key}={value}",
                  config="train")
    status, err = in_process(capsys, run_finetune, cfg)
    assert status == 2, err
    leaf = key.rpartition(".")[2]
    one_error_line(err, {"results": "results", "model": "nope"}.get(leaf, leaf))
    assert not (tmp_path / "finetuned.safetensors").exists()
