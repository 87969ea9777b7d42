"""Hugging Face BERT-style encoders as blocks: composition equals the pooled last hidden state, recipes rebuild every
block on the meta device, store round trips, Hugging Face folders deduplicated by hash, text zoos; real MiniLM."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from alsatian_pl.blocks import family_of, hf_recipe, skeleton, split_model
from alsatian_pl.blocks._bert import BertEmbed, BertLayerBlock, BertPool, build_encoder, load_encoder
from alsatian_pl.errors import StoreError
from alsatian_pl.zoo import ZooConfig, build_synthetic_zoo, import_hf_folder, tokenizer_file
from _tokenizer import write_tokenizer

import transformers  # noqa: F401  a dependency: missing, these tests fail rather than skip
TINY = dict(model_type="bert", hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
            vocab_size=40, max_position_embeddings=24)


def items(model, n=5, length=12, seed=0):
    """int64 [n, 2, length]: random ids, attention masks with padded rows (pad id at masked positions)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    for i in range(1, n):
        mask[i, length - 2 * i:] = 0
    ids[mask == 0] = model.config.pad_token_id
    return torch.stack([ids, mask], 1)


def reference(model, x, pooling):
    with torch.no_grad():
        h = model(input_ids=x[:, 0], attention_mask=x[:, 1]).last_hidden_state
    m = x[:, 1, :, None].float()
    return h[:, 0] if pooling == "cls" else (h * m).sum(1) / m.sum(1)


def compose(blocks, x):
    with torch.no_grad():
        for b in blocks:
            x = b(x)
    return x


@pytest.mark.parametrize("model_type", ["bert", "roberta", "electra"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_composed_blocks_equal_the_pooled_last_hidden_state(model_type, pooling):
    torch.manual_seed(0)
    extra = {"embedding_size": 16} if model_type == "electra" else {}
    model = build_encoder({**TINY, "model_type": model_type, **extra}, pooling).eval()
    blocks = split_model(model)
    assert family_of(model).name == "bert" and len(blocks) == TINY["num_hidden_layers"] + 2
    assert [type(b) for b in blocks] == [BertEmbed, *[BertLayerBlock] * 3, BertPool]
    x = items(model)
    out = compose(blocks, x)
    assert out.shape == (5, 32)
    torch.testing.assert_close(out, reference(model, x, pooling), rtol=1e-5, atol=1e-6)
    h = compose(blocks[:2], x)  # the mask travels as the last channel
    assert h.shape == (5, 12, 33) and torch.equal(h[..., -1], x[:, 1].float())


def test_recipe_rebuilds_every_block_on_meta_and_shapes_propagate(store):
    torch.manual_seed(0)
    model = build_encoder(TINY, "mean").eval()
    recipe = hf_recipe(model.config, "mean")
    assert recipe["input_dtype"] == "int64" and recipe["arch"] == "bert-L3-H32"
    blocks = skeleton(recipe)
    assert all(t.is_meta for b in blocks for t in b.state_dict().values())
    assert [repr(b) for b in blocks] == [repr(b) for b in split_model(model)]
    man = store.import_model("tiny", model, recipe=recipe, input_size=(2, 16))
    assert [b.out_shape for b in man.blocks] == [(16, 33)] * 4 + [(32,)]
    assert man.family == "bert" and man.num_params == sum(p.numel() for b in split_model(model) for p in b.parameters())
    with pytest.raises(StoreError, match="max_length"):  # longer than max_position_embeddings
        store.import_model("too-long", model, recipe=recipe, input_size=(2, 64))


def test_store_round_trip_equals_the_model(store):
    torch.manual_seed(1)
    model = build_encoder(TINY, "cls").eval()
    store.import_model("tiny", model, recipe=hf_recipe(model.config, "cls"), input_size=(2, 12))
    x = items(model)
    torch.testing.assert_close(compose(store.load_model("tiny"), x), reference(model, x, "cls"), rtol=0, atol=0)
    tail = store.load_blocks("tiny", 2)  # a partial load continues from a cached intermediate
    torch.testing.assert_close(compose(tail, compose(store.load_blocks("tiny", 0, 2), x)), reference(model, x, "cls"))


def test_hf_folders_are_imported_with_shared_blocks_stored_once(store, tmp_path):
    torch.manual_seed(2)
    model = build_encoder(TINY).eval()
    model.save_pretrained(tmp_path / "ckpts" / "a")
    write_tokenizer(tmp_path / "ckpts" / "a" / "tokenizer.json")
    shutil.copytree(tmp_path / "ckpts" / "a", tmp_path / "ckpts" / "b")
    with torch.no_grad():
        model.encoder.layer[-1].output.dense.weight.add_(1.0)  # b: a fine-tuned last layer
    model.save_pretrained(tmp_path / "ckpts" / "b")
    zoo = import_hf_folder(store, name="mine", path=str(tmp_path / "ckpts"), pooling="mean", max_length=12,
                           progress=False)
    a, b = zoo.manifests()
    assert [h1 == h2 for h1, h2 in zip(a.hashes, b.hashes)] == [True, True, True, False, True]
    stats = zoo.stats()
    assert stats.distinct_blocks == 6 and stats.physical_bytes < stats.logical_bytes
    assert a.input_size == (2, 12) and a.tags == b.tags and tokenizer_file(store, a).is_file()
    x = items(model)
    torch.testing.assert_close(compose(store.load_model(b.name), x), reference(model, x, "mean"))
    assert import_hf_folder(store, name="mine", path=str(tmp_path / "ckpts"), pooling="mean", max_length=12,
                            progress=False).models == zoo.models  # reused, nothing re-imported
    with pytest.raises(StoreError, match="no Hugging Face model folders"):
        import_hf_folder(store, name="none", path=str(tmp_path / "nowhere"), progress=False)


def test_hf_folder_with_weights_that_do_not_fit(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps(TINY))
    from safetensors.torch import save_file
    save_file({"embeddings.word_embeddings.weight": torch.zeros(40, 32)}, tmp_path / "bad" / "model.safetensors")
    with pytest.raises(StoreError, match="missing"):
        load_encoder(tmp_path / "bad")
    with pytest.raises(StoreError, match="not a Hugging Face model folder"):
        load_encoder(tmp_path)


def test_synthetic_hf_zoo_from_a_config(store, tmp_path):
    tok = write_tokenizer(tmp_path / "tok.json")
    cfg = ZooConfig("tiny", arch="bert-base", num_models=6, seed=3, input_size=(2, 12), builder="hf",
                    tokenizer=str(tok), model_kwargs={k: v for k, v in TINY.items() if k != "model_type"})
    zoo = build_synthetic_zoo(store, cfg, progress=False)
    mans = zoo.manifests()
    assert mans[0].arch == "bert-L3-H32" and mans[0].recipe["config"]["vocab_size"] == 40
    for m in mans[1:]:
        k = int(next(t for t in m.tags if t.startswith("reinit:")).split(":")[1])
        parent = store.manifest(m.parent)
        differ = [i for i, (x, y) in enumerate(zip(m.hashes, parent.hashes)) if x != y]
        assert differ == list(range(4 - k, 4))  # the last k of the 4 parameterised blocks; the pool block is shared
    assert len({tokenizer_file(store, m) for m in mans}) == 1
    assert build_synthetic_zoo(store, cfg, progress=False).models == zoo.models
    assert ZooConfig("v", arch="resnet18").as_dict().keys().isdisjoint({"builder", "pooling", "tokenizer"})


@pytest.mark.integration
def test_real_minilm_blocks_zoo_and_round_trip(store):
    from alsatian_pl.data._text import tokenize

    model = load_encoder("all-MiniLM-L6-v2", "mean")
    assert sum(p.numel() for p in model.parameters()) == 22_713_216  # 22.7M, of which the unused pooler 147,840
    x = tokenize(["A gripping, beautifully acted thriller.", "Dull.", "It is neither funny nor moving, and far too "
                  "long for what it has to say about anything at all."], "all-MiniLM-L6-v2", 32)
    for pooling in ("cls", "mean"):
        model.alsatian_pooling = pooling
        torch.testing.assert_close(compose(split_model(model), x), reference(model, x, pooling), rtol=1e-5, atol=1e-6)
    cfg = ZooConfig("minilm", arch="all-MiniLM-L6-v2", checkpoint="all-MiniLM-L6-v2", num_models=3,
                    input_size=(2, 32), builder="hf", pooling="mean", tokenizer="all-MiniLM-L6-v2")
    zoo = build_synthetic_zoo(store, cfg, progress=False)
    base = zoo.manifests()[0]
    assert base.num_params == 22_565_376 and len(base.blocks) == 8 and base.arch == "all-MiniLM-L6-v2"
    model.alsatian_pooling = "mean"
    torch.testing.assert_close(compose(store.load_model(base.name), x), reference(model, x, "mean"), rtol=1e-5,
                               atol=1e-6)
    assert zoo.stats().distinct_blocks < 3 * 8
