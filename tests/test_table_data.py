"""dataset=table: CSV / TSV / JSON-lines / parquet tables and folders saved by Hugging Face datasets, with images
(paths or encoded bytes) or texts and one or more label columns; the same pixels whatever the source; bad input."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alsatian_pl.data import SearchDataModule
from alsatian_pl.data._sources import DataSpec, fashion_mnist_embedded, folder_source
from alsatian_pl.data._table import read_table, table_source, targets
from alsatian_pl.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["models.arch=mobilenetv3_small_050", "models.num_models=6", "models.checkpoint=null", "dataset.num_items=null",
        "dataset.image_size=32", "dataset.num_workers=0", "++search.scorer.kwargs.epochs=10", "search.progress=false",
        "search.batch_size=32"]


def spec(path: Path, label="label", image=None, text="text", skip=False) -> DataSpec:
    return DataSpec("table", str(path), None, 16, 0.25, 0, (0.5,) * 3, (0.5,) * 3, 16, None, text, label, image, skip)


def write_csv(path: Path, header: list[str], rows: list[list], delimiter=",") -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def class_folder(root: Path, per_class: int = 4, classes=("cat", "dog", "emu")) -> list[tuple[str, str]]:
    """Class folders of Fashion-MNIST items (PNG); ``(relative path, class)`` in the order an image folder lists
    them."""
    images, labels, _ = fashion_mnist_embedded()
    rows = []
    for c, name in enumerate(classes):
        (root / "images" / name).mkdir(parents=True)
        for k, index in enumerate(np.flatnonzero(labels == c)[:per_class]):
            Image.fromarray(images[index]).save(root / "images" / name / f"{k:02d}.png")
            rows.append((f"images/{name}/{k:02d}.png", name))
    return rows


# -- labels and tasks

def test_class_names_from_text_or_numbers_without_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # CSV, TSV and JSON lines need no extra
    write_csv(tmp_path / "a.tsv", ["text", "label"], [["good film", "pos"], ["bad film", "neg"], ["fine", "pos"]],
              delimiter="\t")
    source = table_source(spec(tmp_path / "a.tsv"))
    assert source.task == "multiclass" and source.class_names == ["neg", "pos"]
    assert source.labels.dtype == np.int64 and source.labels.tolist() == [1, 0, 1] and source.texts[0] == "good film"
    write_jsonl(tmp_path / "b.jsonl", [{"text": t, "label": y} for t, y in (("a", 10), ("b", 9), ("c", 10))])
    numbers = table_source(spec(tmp_path / "b.jsonl"))
    assert numbers.class_names == ["9", "10"] and numbers.labels.tolist() == [1, 0, 1]


def test_label_lists_are_multilabel_and_items_without_labels_are_counted(tmp_path):
    records = [{"text": "a", "tags": ["x", "y"]}, {"text": "b", "tags": []}, {"text": "c", "tags": ["y"]}]
    source = table_source(spec(write_jsonl(tmp_path / "t.jsonl", records), label="tags"))
    assert source.task == "multilabel" and source.class_names == ["x", "y"]
    assert source.labels.dtype == np.float32 and source.labels.tolist() == [[1, 1], [0, 0], [0, 1]]
    assert source.notes["items_without_labels"] == 1


def test_several_columns_are_multilabel_when_0_1_else_regression_targets(tmp_path):
    rows = [["a", 1, 0, 0.5, 3], ["b", 0, 1, 1.5, 4], ["c", 0, 0, 2.0, 4]]
    table = write_csv(tmp_path / "t.csv", ["text", "is_x", "is_y", "age", "size"], rows)
    multi = table_source(spec(table, label=("is_x", "is_y")))
    assert multi.task == "multilabel" and multi.class_names == ["is_x", "is_y"]
    assert multi.labels.dtype == np.float32 and multi.labels.tolist() == [[1, 0], [0, 1], [0, 0]]
    assert multi.notes["items_without_labels"] == 1
    reg = table_source(spec(table, label=("age", "size")))
    assert reg.task == "regression" and reg.class_names == ["age", "size"]
    assert reg.labels.dtype == np.float32 and reg.labels.tolist() == [[0.5, 3], [1.5, 4], [2.0, 4]]
    one = table_source(spec(table, label="age"))
    assert one.task == "regression" and one.labels.shape == (3, 1)
    whole = table_source(spec(table, label="size"))  # whole numbers in one column: class ids
    assert whole.task == "multiclass" and whole.class_names == ["3", "4"]


def test_an_explicit_task_overrides_the_inferred_one(tmp_path):
    table = read_table(write_csv(tmp_path / "t.csv", ["y", "z"], [["1", "0"], ["2", "1"], ["cat", "1"]]),
                       {"y": "dataset.label_column", "z": "dataset.label_column"})
    rows = np.arange(3)
    y, z = table.values("y"), table.values("z")
    assert targets(table, {"y": y}, rows, "multiclass").names == ["1", "2", "cat"]  # mixed: every value a name
    assert targets(table, {"z": z}, rows, "regression").labels.tolist() == [[0], [1], [1]]
    with pytest.raises(DataError, match="mixes kinds of value: numbers \\(1, line 2\\) and text \\('cat', line 4\\)"):
        targets(table, {"y": y}, rows, "auto")
    with pytest.raises(DataError, match="multiclass takes one label column, got 2"):
        targets(table, {"y": y, "z": z}, rows, "multiclass")
    with pytest.raises(DataError, match="multilabel needs a column of lists of labels, or several columns of 0/1"):
        targets(table, {"z": z}, rows, "multilabel")
    with pytest.raises(DataError, match="dataset.task must be one of auto, multiclass"):
        targets(table, {"z": z}, rows, "ranking")


FEATURES = {"image": {"_type": "Image"}, "label": {"names": ["zebra", "ant"], "_type": "ClassLabel"},
            "tags": {"feature": {"names": ["p", "q"], "_type": "ClassLabel"}, "_type": "List"}}


def saved_by_hand(folder: Path, columns: dict) -> None:
    """The folder ``Dataset.save_to_disk`` writes: an arrow stream file, state.json and dataset_info.json, the
    features also in the schema's metadata."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.ipc as ipc

    table = pa.table(columns).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": FEATURES}})})
    folder.mkdir(parents=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": FEATURES}))


def saved_columns(root: Path) -> dict:
    rows = class_folder(root, per_class=2, classes=("a", "b"))
    images = [{"bytes": (root / p).read_bytes(), "path": Path(p).name} for p, _ in rows]
    return {"image": images, "label": [0, 1, 1, 0], "tags": [[0], [0, 1], [], [1]]}


def test_saved_dataset_folder_with_class_labels_and_encoded_images(tmp_path):
    columns = saved_columns(tmp_path)
    for split, part in (("train", slice(0, 2)), ("test", slice(2, 4))):
        saved_by_hand(tmp_path / "ds" / split, {c: v[part] for c, v in columns.items()})
    (tmp_path / "ds" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    source = table_source(spec(tmp_path / "ds", image="image"))
    assert source.class_names == ["zebra", "ant"] and source.labels.tolist() == [0, 1, 1, 0]  # ClassLabel's order
    assert source.task == "multiclass" and len(source.files) == 2  # both splits: the search makes its own split
    assert all(p is None for p in source.images.paths)  # the bytes, not the files they came from
    tags = table_source(spec(tmp_path / "ds", label="tags", image="image"))
    assert tags.class_names == ["p", "q"] and tags.labels.tolist() == [[1, 0], [1, 1], [0, 0], [0, 1]]
    folder = folder_source(dataclasses.replace(spec(tmp_path / "images"), name="image_folder"))
    pixels = torch.cat([b.pixels for b in source.decode(np.arange(4), 0)])
    assert torch.equal(pixels, torch.cat([b.pixels for b in folder.decode(np.arange(4), 0)]))
    saved_by_hand(tmp_path / "unlabelled", {**columns, "label": [0, -1, 1, 0]})  # -1: datasets' "no label"
    with pytest.raises(DataError, match="row index 1: the value in column 'label' is empty"):
        table_source(spec(tmp_path / "unlabelled", image="image"))


def test_a_folder_that_datasets_saved_reads_as_the_same_folder_laid_out_by_hand(tmp_path):
    datasets = pytest.importorskip("datasets")
    columns = saved_columns(tmp_path)
    saved_by_hand(tmp_path / "by_hand", columns)
    datasets.Dataset.from_dict(columns, features=datasets.Features.from_dict(FEATURES)).save_to_disk(tmp_path / "ds")
    for label in ("label", "tags"):
        real, hand = (table_source(spec(tmp_path / f, label=label, image="image")) for f in ("ds", "by_hand"))
        assert real.class_names == hand.class_names and np.array_equal(real.labels, hand.labels)
        assert torch.equal(next(real.decode(np.arange(4), 0)).pixels, next(hand.decode(np.arange(4), 0)).pixels)


# -- the same pixels whatever the source

@pytest.fixture(scope="module")
def three_sources(tmp_path_factory):
    """The same 60 Fashion-MNIST images as class folders, a CSV of their paths and (with pyarrow) a parquet file of
    their encoded bytes, rows in the order the folder lists them."""
    root = tmp_path_factory.mktemp("three")
    rows = class_folder(root, per_class=20)
    write_csv(root / "paths.csv", ["file", "label"], [list(r) for r in rows])
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return root
    images = [{"bytes": (root / p).read_bytes(), "path": Path(p).name} for p, _ in rows]
    pq.write_table(pa.table({"image": images, "label": [c for _, c in rows]}), root / "bytes.parquet")
    return root


def _results(root: Path, name: str, *overrides: str) -> dict:
    from hydra import compose, initialize_config_dir

    from alsatian_pl.app import run_search

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("search", overrides=[*TINY, f"store.root={root / 'store'}", *overrides])
    run_search(cfg, root / name)
    return json.loads((root / name / "results.json").read_text())


@pytest.mark.parametrize("table", ["csv", "parquet"])
def test_a_table_ranks_as_the_class_folders_of_the_same_images(three_sources, table):
    root = three_sources
    if table == "parquet":
        pytest.importorskip("pyarrow")
    if not (root / "folder" / "results.json").is_file():
        _results(root, "folder", "dataset=image_folder", f"dataset.path={root / 'images'}")
    folder = json.loads((root / "folder" / "results.json").read_text())
    path, column = {"csv": ("paths.csv", "file"), "parquet": ("bytes.parquet", "image")}[table]
    got = _results(root, table, "dataset=table", f"dataset.path={root / path}", f"dataset.image_column={column}")
    assert got["dataset"]["prepared"]["decoded"] == 60 and got["dataset"]["classes"] == 3
    assert [(r["model"], r["score"]) for r in got["ranking"]] == [(r["model"], r["score"]) for r in folder["ranking"]]
    assert len({r["score"] for r in got["ranking"]}) > 1  # the scores tell models apart: the comparison means something


def test_a_text_table_tokenises_as_the_text_file_of_the_same_rows(tmp_path):
    from _tokenizer import write_tokenizer

    rows = [("a good film", "pos"), ("bad plot", "neg"), ("the great movie", "pos"), ("awful", "neg")] * 5
    write_csv(tmp_path / "t.csv", ["text", "label"], [list(r) for r in rows])
    write_jsonl(tmp_path / "t.jsonl", [{"review": t, "id": k, "y": y} for k, (t, y) in enumerate(rows)])
    tokenizer = str(write_tokenizer(tmp_path / "tok.json"))
    text_file = SearchDataModule(name="text_file", path=str(tmp_path / "t.csv"), tokenizer=tokenizer, max_length=8)
    table = SearchDataModule(name="table", path=str(tmp_path / "t.jsonl"), text_column="review", label_column="y",
                             tokenizer=tokenizer, max_length=8)
    (x, y), (tx, ty) = text_file.train_items(), table.train_items()
    assert torch.equal(tx.tensor(), x.tensor()) and torch.equal(ty, y) and table.class_names == ["neg", "pos"]


def test_encoded_images_reuse_and_heal_their_prepared_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = class_folder(tmp_path, per_class=3, classes=("a", "b"))
    pq.write_table(pa.table({"png": [(tmp_path / p).read_bytes() for p, _ in rows], "label": [c for _, c in rows]}),
                   tmp_path / "t.parquet")

    def prepared() -> SearchDataModule:
        data = SearchDataModule(name="table", path=str(tmp_path / "t.parquet"), image_column="png", image_size=16,
                                test_fraction=0.3, num_workers=0, data_cache=str(tmp_path / "cache"))
        data.setup()
        return data

    first = prepared()
    reference = first.train_items()[0].tensor()
    assert first.describe()["prepared"]["decoded"] == 6 and prepared().describe()["prepared"]["reused"] == 6
    items = next((tmp_path / "cache").glob("*/items.npy"))
    with open(items, "r+b") as f:  # flip a byte of the last row
        f.seek(items.stat().st_size - 1)
        byte = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(UserWarning, match=r"t\.parquet, row index 5, column 'png'\) .* decoded it again"):
        healed = prepared().train_items()[0].tensor()
    assert torch.equal(healed, reference) and len(healed) == 4


# -- bad input: one clear line

def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def test_missing_label_column_names_the_columns_there_are(tmp_path):
    table = write_csv(tmp_path / "t.csv", ["file", "kind"], [["a.png", "x"]])
    with pytest.raises(DataError, match=r"has no column 'label' \(columns: file, kind\); set dataset.label_column"):
        table_source(spec(table, image="file"))
    with pytest.raises(DataError, match="no column 'text'.*set dataset.text_column.*or dataset.image_column"):
        table_source(spec(table, label="kind"))
    with pytest.raises(DataError, match="'file' is both the image column and a label column"):
        table_source(spec(table, label="file", image="file"))


def test_missing_targets_are_refused_or_left_out_and_counted(tmp_path):
    table = write_csv(tmp_path / "t.csv", ["text", "y"], [["a", "1.5"], ["b", "nan"], ["c", ""], ["d", "2.5"],
                                                          ["", "3.5"]])
    with pytest.raises(DataError, match=r"line 3: the value in column 'y' is NaN \(3 row\(s\) miss a value\).*"
                                        "dataset.skip_unreadable=true"):
        table_source(spec(table, label="y"))
    with pytest.warns(UserWarning, match="left out 3 row"):
        source = table_source(spec(table, label="y", skip=True))
    assert source.labels.tolist() == [[1.5], [2.5]] and source.notes["rows_missing_values"] == 3
    lists = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "tags": ["x", None]}])
    with pytest.raises(DataError, match="a list holding a value that is empty"):
        table_source(spec(lists, label="tags"))


def test_a_regression_target_with_one_value_is_refused(tmp_path):
    table = write_csv(tmp_path / "t.csv", ["text", "y", "z"], [["a", "1.5", "0.1"], ["b", "1.5", "0.2"]])
    with pytest.raises(DataError, match="regression target 'y' is 1.5 in every row"):
        table_source(spec(table, label=("z", "y")))


def test_mixed_label_kinds_are_refused(tmp_path):
    table = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "cat"}, {"text": "b", "label": ["cat"]}])
    with pytest.raises(DataError, match=r"column 'label' mixes kinds of value: text \('cat', line 1\) and lists"):
        table_source(spec(table))
    several = write_csv(tmp_path / "t.csv", ["text", "a", "b"], [["x", "1", "cat"], ["y", "0", "dog"]])
    with pytest.raises(DataError, match="label column 'b' holds text.*several label columns must all hold numbers"):
        table_source(spec(several, label=("a", "b")))


def test_a_missing_image_file_is_refused_or_skipped(tmp_path):
    rows = class_folder(tmp_path, per_class=3, classes=("a", "b"))
    table = write_csv(tmp_path / "t.csv", ["file", "label"], [*map(list, rows), ["images/a/gone.png", "a"]])
    with pytest.raises(DataError, match=r"line 8: image file .*gone\.png does not exist \(1 of 7 image paths.*"
                                        "skip_unreadable=true"):
        table_source(spec(table, image="file"))
    data = SearchDataModule(name="table", path=str(table), image_column="file", image_size=16, test_fraction=0.3,
                            skip_unreadable=True, num_workers=0, data_cache=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="skipped 1 image"):
        data.setup()
    prepared = data.describe()["prepared"]
    assert prepared["skipped_unreadable"] == 1 and prepared["skipped_files"][0].endswith("gone.png")
    assert data.describe()["items"] == 6


def test_an_image_column_of_neither_paths_nor_bytes_is_refused(tmp_path):
    table = write_jsonl(tmp_path / "t.jsonl", [{"image": 3, "label": "a"}])
    with pytest.raises(DataError, match="line 1: image column 'image' holds numbers \\(3\\), neither image paths"):
        table_source(spec(table, image="image"))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [1.5, 2.5], "label": ["a", "b"]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="image column 'image' holds double values, neither image paths"):
        table_source(spec(tmp_path / "t.parquet", image="image"))


def test_files_that_are_no_table_are_refused(tmp_path, monkeypatch):
    (tmp_path / "t.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unsupported table 't.xlsx': use a .csv, .tsv or .jsonl file"):
        table_source(spec(tmp_path / "t.xlsx"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="not one that Hugging Face datasets saved.*dataset=image_folder"):
        table_source(spec(tmp_path / "folder"))
    with pytest.raises(DataError, match="does not exist"):
        table_source(spec(tmp_path / "nowhere.csv"))
    (tmp_path / "t.parquet").write_bytes(b"not parquet")
    if _has_pyarrow():
        with pytest.raises(DataError, match="cannot read parquet file .*t.parquet.*replace it with an intact copy"):
            table_source(spec(tmp_path / "t.parquet"))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(DataError, match=r"needs pyarrow, which is not installed: pip install 'alsatian-pl\[tables\]'"):
        table_source(spec(tmp_path / "t.parquet"))


def test_label_column_setting_and_text_file_with_several_columns(tmp_path):
    with pytest.raises(DataError, match="dataset.label_column must be a column name or a list of distinct"):
        SearchDataModule(name="table", path="x.csv", label_column=["a", "a"])
    assert SearchDataModule(name="table", path="x.csv", label_column=["a"]).spec.label_column == "a"
    table = write_csv(tmp_path / "t.csv", ["text", "a", "b"], [["x", "1", "0"]])
    with pytest.raises(DataError, match="text_file takes one label column.*use dataset=table"):
        SearchDataModule(name="text_file", path=str(table), label_column=["a", "b"]).setup()


def instantiate_config(*overrides: str) -> SearchDataModule:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return instantiate(compose(overrides=["+dataset=table", *overrides]).dataset)


def test_table_config_composes(tmp_path):
    rows = class_folder(tmp_path, per_class=2, classes=("a", "b"))
    table = write_csv(tmp_path / "t.csv", ["file", "y"], [list(r) for r in rows])
    data = instantiate_config(f"dataset.path={table}", "dataset.image_column=file", "dataset.label_column=y",
                              "dataset.image_size=8", "dataset.data_cache=null")
    assert data.class_names == ["a", "b"] and data.spec.image_column == "file"
    several = instantiate_config(f"dataset.path={table}", "dataset.label_column=[p,q]")
    assert several.spec.label_column == ("p", "q")
