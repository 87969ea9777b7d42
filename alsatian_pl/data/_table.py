"""Tables (``dataset=table``): a CSV / TSV / JSON-lines file (optionally .gz, .bz2 or .xz), a parquet file, or a
folder that Hugging Face ``datasets`` wrote with ``save_to_disk``, holding an image column (paths relative to the
table's folder, or encoded images: bytes, or ``{bytes, path}`` as ``datasets`` stores an ``Image``) or a text
column, and one or more label columns.

The labels give the task (``dataset.task``, ``auto`` infers it): one column of class names or integers is multiclass
(int64 class ids ``[N]``); one column of lists of labels, or several columns of 0/1, is multilabel (float32 ``[N, L]``);
one column of real numbers, or several numeric columns, is regression (float32 ``[N, T]``). Images are prepared into
the same prepared-data cache as an image folder (keyed by the table's files, the kept rows, and every image file's
size and mtime); texts are tokenised as a text file's are.

CSV, TSV and JSON lines are read with the standard library, by the reader ``text_file`` uses (one set of typing rules
whatever is installed, and line numbers in every message); parquet files and saved datasets need pyarrow
(``pip install 'alsatian-pl[tables]'``), which maps arrow files without reading them into memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import lzma
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..checks import text
from ..errors import DataError
from ._sources import DataSpec, Decoded, ImageSource, RowWriter, Source, decode_files, register_dataset
from ._text import _COMPRESSED, TextSource, _records

EXTRA = "pip install 'alsatian-pl[tables]'"
_LINES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")
_TASKS = ("auto", "multiclass", "multilabel", "regression")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


def label_columns(value: Any) -> str | tuple[str, ...]:
    """``dataset.label_column`` validated: a column name, or a list of distinct column names (several targets)."""
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping)):
        names = tuple(value)
        if names and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names):
            return names[0] if len(names) == 1 else names
        raise DataError(f"dataset.label_column must be a column name or a list of distinct column names, got "
                        f"{list(names)!r}")
    return text("dataset.label_column", value, error=DataError)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------- reading
@dataclass
class Table:
    """The columns a source needs from a table, with what messages and the prepared-data key need to know."""

    where: Path  # the file or folder, for messages
    folder: Path  # relative image paths start here
    files: list[Path]  # the files read (their sizes and mtimes key the prepared images)
    rows: int
    columns: dict[str, Any]  # name -> a list of values (lines) or a pyarrow ChunkedArray
    lines: list[int] | None = None  # CSV / JSON lines: the line of each row (None: rows are counted from 0)
    typed: bool = True  # False: CSV / TSV cells are strings, numbers are recognised in the label columns
    class_labels: dict[str, list[str]] | None = None  # columns datasets marks ClassLabel (or lists of): their names

    def at(self, row: int) -> str:
        """Where row ``row`` is, for messages."""
        return f"line {self.lines[row]}" if self.lines is not None else f"row index {row}"

    def values(self, column: str) -> list[Any]:
        """The values of a column as Python objects (CSV numbers recognised, datasets' ClassLabel ids named)."""
        data = self.columns[column]
        values = list(data) if isinstance(data, list) else data.to_pylist()
        if not self.typed:
            return [_typed(v) for v in values]
        names = (self.class_labels or {}).get(column)
        return values if names is None else [self._named(v, names, column, k) for k, v in enumerate(values)]

    def _named(self, value: Any, names: list[str], column: str, row: int) -> Any:
        if isinstance(value, list):
            return [self._named(v, names, column, row) for v in value]
        if value is None or value == -1:  # datasets' "no label"
            return None
        if not 0 <= value < len(names):
            raise DataError(f"{self.where}, {self.at(row)}: column {column!r} holds {value}, which is no class of "
                            f"its ClassLabel feature (0..{len(names) - 1}); fix the row or its feature")
        return names[value]


def read_table(path: Path, needed: dict[str, str]) -> Table:
    """The columns ``needed`` (name -> the config key that names it) of the table at ``path``; DataError for a file
    type that is no table, an empty table, a missing column (naming those there are) or a file that cannot be read."""
    if path.is_dir():
        return _read_saved(path, needed)
    kind = (path.with_suffix("") if path.suffix in _COMPRESSED else path).suffix.lower()
    if kind in _LINES:
        return _read_lines(path, kind, needed)
    if kind == ".parquet" and path.suffix == kind:
        return _read_parquet(path, needed)
    raise DataError(f"unsupported table {path.name!r}: use a .csv, .tsv or .jsonl file (optionally .gz, .bz2 or .xz), "
                    "a .parquet file, or a folder saved by Hugging Face datasets (save_to_disk)")


def _check_columns(where: Path, rows: int, names: list[str], needed: dict[str, str]) -> None:
    """DataError for a table without rows, or without a column it needs (naming the columns it has)."""
    if rows == 0:
        raise DataError(f"empty dataset: table {where} holds no rows")
    for column, key in needed.items():
        if column not in names:
            what = {"dataset.label_column": "the labels", "dataset.image_column": "the images",
                    "dataset.text_column": "the texts, or dataset.image_column to the column holding the images"}[key]
            raise DataError(f"table {where} has no column {column!r} (columns: {', '.join(names)}); set {key} to the "
                            f"column holding {what}")


def _read_lines(path: Path, kind: str, needed: dict[str, str]) -> Table:
    """A CSV / TSV / JSON-lines file read with the standard library (``_text._records``)."""
    lines, records = [], []
    try:
        for line, record in _records(path):
            lines.append(line)
            records.append(record)
    except (OSError, UnicodeDecodeError, csv.Error, EOFError, lzma.LZMAError) as exc:
        raise DataError(f"cannot read table {path}: {exc}; use a UTF-8 CSV, TSV or JSON-lines file") from exc
    _check_columns(path, len(records), list(dict.fromkeys(k for r in records for k in r if isinstance(k, str))),
                   needed)
    columns = {c: [r.get(c) for r in records] for c in needed}
    return Table(path, path.parent, [path], len(records), columns, lines, typed=kind not in (".csv", ".tsv"))


def _pyarrow(path: Path) -> Any:
    """The pyarrow module; DataError naming the extra that installs it."""
    try:
        import pyarrow
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow, which is not installed: {EXTRA}") from None
    return pyarrow


def _read_parquet(path: Path, needed: dict[str, str]) -> Table:
    """The columns ``needed`` of a parquet file (only those are read)."""
    pa = _pyarrow(path)
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read parquet file {path}: {exc}; replace it with an intact copy") from None
    _check_columns(path, meta.num_rows, meta.schema.to_arrow_schema().names, needed)
    try:
        data = pq.read_table(path, columns=list(needed), memory_map=True)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read parquet file {path}: {exc}; replace it with an intact copy") from None
    return _arrow_table(data, meta.schema.to_arrow_schema().metadata, path, path.parent, [path], needed)


def _read_saved(folder: Path, needed: dict[str, str]) -> Table:
    """A folder ``datasets`` saved: one dataset (state.json and arrow files, mapped, not read) or a DatasetDict
    (its splits, together: the search makes its own test split)."""
    splits = _json(folder / "dataset_dict.json").get("splits") if (folder / "dataset_dict.json").is_file() else None
    parts = [folder / s for s in splits] if splits else [folder]
    for part in parts:
        if not (part / "state.json").is_file():
            raise DataError(f"{part} is a folder but not one that Hugging Face datasets saved (no state.json): give a "
                            "table file (.csv, .tsv, .jsonl, .parquet) or a folder written by save_to_disk; for a "
                            "folder of images in one subfolder per class use dataset=image_folder")
    pa = _pyarrow(folder)
    import pyarrow.ipc as ipc

    files, tables = [], []
    for part in parts:
        for entry in _json(part / "state.json").get("_data_files", []):
            files.append(part / entry["filename"])
            try:
                tables.append(ipc.open_stream(pa.memory_map(str(files[-1]))).read_all())
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"cannot read {files[-1]}: {exc}; save the dataset again") from None
    if not tables:
        raise DataError(f"{folder} lists no data files in state.json; save the dataset again")
    try:
        data = pa.concat_tables(tables)
    except pa.ArrowException:
        raise DataError(f"the splits in {folder} have different columns; set dataset.path to one split's folder, "
                        f"e.g. {parts[0]}") from None
    _check_columns(folder, data.num_rows, data.column_names, needed)
    return _arrow_table(data, data.schema.metadata, folder, folder, files, needed)


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}; save the dataset again") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} is not a JSON object; save the dataset again")
    return value


def _arrow_table(data: Any, meta: Any, where: Path, folder: Path, files: list[Path], needed: dict[str, str]) -> Table:
    """A :class:`Table` of the ``needed`` columns of a pyarrow table, with the ClassLabel names that ``datasets``
    wrote into its schema metadata (``meta``)."""
    try:
        features = json.loads((meta or {})[b"huggingface"])["info"]["features"]
    except (ValueError, KeyError, TypeError):
        features = {}
    names = {}
    for column, feature in features.items() if isinstance(features, dict) else ():
        listed = isinstance(feature, dict) and feature.get("_type") in ("List", "Sequence", "LargeList")
        inner = feature.get("feature") if listed else feature
        if isinstance(inner, dict) and inner.get("_type") == "ClassLabel" and isinstance(inner.get("names"), list):
            names[column] = [str(n) for n in inner["names"]]
    columns = {c: data.column(c) for c in needed}
    return Table(where, folder, files, data.num_rows, columns, class_labels=names)


def _typed(value: Any) -> Any:
    """A CSV cell as a JSON reader would give it: an int or float where it is one, else the text (stripped)."""
    if not isinstance(value, str):
        return value
    value = value.strip()
    if _INT.fullmatch(value):
        return int(value)
    return float(value) if _FLOAT.fullmatch(value) else value


# ---------------------------------------------------------------------------------------------------------- targets
@dataclass
class Targets:
    """Labels in the shape of their task, and what to call each class / label / target."""

    task: str
    labels: np.ndarray
    names: list[str]
    without_labels: int = 0  # multilabel items with no label


def _missing(value: Any) -> str | None:
    """Why a cell holds no usable value ('empty', 'NaN', ...), else None (an empty list is a value: no label)."""
    if value is None:
        return "empty"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "infinite"
    if isinstance(value, str) and value.strip().lower() in ("", "nan"):
        return f"{value.strip()!r}, a missing value written out" if value.strip() else "empty"
    if isinstance(value, list):
        return next((f"a list holding a value that is {why}" for v in value if (why := _missing(v))), None)
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "numbers"
    if isinstance(value, str):
        return "text"
    return "lists" if isinstance(value, list) else type(value).__name__


def _one_kind(table: Table, label: str, values: list[Any], rows: np.ndarray) -> str:
    """The one kind of value a label column holds ('numbers', 'text', 'true/false', 'lists'); DataError when it
    mixes kinds, naming an example of each."""
    first: dict[str, int] = {}
    for k, value in enumerate(values):
        first.setdefault(_kind(value), k)
    odd = next((kind for kind in first if kind not in ("numbers", "text", "true/false", "lists")), None)
    if odd is not None:
        k = first[odd]
        raise DataError(f"{table.where}, {table.at(rows[k])}: {label} holds a {odd} ({values[k]!r}), which is no "
                        "label: labels are text, numbers, true/false or lists of labels")
    if len(first) == 1:
        return next(iter(first))
    shown = " and ".join(f"{kind} ({values[k]!r}, {table.at(rows[k])})" for kind, k in list(first.items())[:3])
    raise DataError(f"{table.where}: {label} mixes kinds of value: {shown}; a label column holds one kind of value: "
                    "fix those rows (or set dataset.task=multiclass to take every value as a class name)")


def targets(table: Table, columns: dict[str, list[Any]], rows: np.ndarray, task: str) -> Targets:
    """The labels of ``rows`` (their values in ``columns``) for ``task`` (``auto``: inferred, see the module)."""
    if task not in _TASKS:
        raise DataError(f"dataset.task must be one of {', '.join(_TASKS)}, got {task!r}")
    names = list(columns)
    if task == "multiclass":
        if len(names) > 1:
            raise DataError(f"dataset.task=multiclass takes one label column, got {len(names)}: {', '.join(names)}")
        return _multiclass(table, names[0], columns[names[0]], rows, mixed=True)
    kinds = {c: _one_kind(table, f"column {c!r}", v, rows) for c, v in columns.items()}
    if len(names) == 1:
        return _one_column(table, names[0], columns[names[0]], rows, kinds[names[0]], task)
    odd = next((c for c in names if kinds[c] not in ("numbers", "true/false")), None)
    if odd is not None:
        raise DataError(f"{table.where}: label column {odd!r} holds {kinds[odd]} (e.g. {columns[odd][0]!r}, "
                        f"{table.at(rows[0])}), but several label columns must all hold numbers: 0/1 for multilabel, "
                        "real values for regression targets")
    binary = next(((c, k) for c in names for k, v in enumerate(columns[c]) if v not in (0, 1)), None)
    if task == "multilabel" and binary is not None:
        c, k = binary
        raise DataError(f"{table.where}: dataset.task=multilabel needs label columns of 0/1, but column {c!r} holds "
                        f"{columns[c][k]!r} ({table.at(rows[k])})")
    if binary is None and task != "regression":
        return _label_columns(table, columns)
    return _regression(table, columns)


def _one_column(table: Table, column: str, values: list[Any], rows: np.ndarray, kind: str, task: str) -> Targets:
    """The targets of one label column: lists are multilabel; under ``auto`` real numbers are a regression target
    and anything else (text, whole numbers, true/false) class labels."""
    if kind == "lists":
        if task == "regression":
            raise DataError(f"{table.where}: column {column!r} holds lists of labels, which are no regression "
                            "targets; set dataset.task=multilabel (or auto)")
        return _label_lists(table, column, values, rows)
    if task == "multilabel":
        raise DataError(f"{table.where}: dataset.task=multilabel needs a column of lists of labels, or several "
                        f"columns of 0/1 (one per label); column {column!r} holds {kind}")
    if task == "auto" and (kind != "numbers" or all(isinstance(v, int) for v in values)):
        return _multiclass(table, column, values, rows)
    if kind not in ("numbers", "true/false"):
        raise DataError(f"{table.where}: regression targets must be numbers, but column {column!r} holds {kind} (e.g. "
                        f"{values[0]!r}, {table.at(rows[0])}); fix those rows, or set dataset.task=multiclass")
    return _regression(table, {column: values})


def _multiclass(table: Table, column: str, values: list[Any], rows: np.ndarray, mixed: bool = False) -> Targets:
    """Class ids in the order of datasets' ClassLabel names where there are some, else sorted (numbers first)."""
    odd = next((k for k, v in enumerate(values) if not isinstance(v, (bool, int, float, str))), None) if mixed else None
    if odd is not None:  # task=multiclass: any text, number or true/false is a class name
        kind = _kind(values[odd])
        why = "that is multilabel; set dataset.task=multilabel (or auto)" if kind == "lists" else "which is no class"
        raise DataError(f"{table.where}, {table.at(rows[odd])}: column {column!r} holds {kind} ({values[odd]!r}), "
                        f"{why}")
    keys = {v: str(v) for v in values}  # a class per name: with task=multiclass, 1 and "1" are one class
    names = list(dict.fromkeys(keys[v] for v in sorted(keys, key=_order)))  # text as an image folder sorts it
    order = (table.class_labels or {}).get(column)
    if order:
        names.sort(key={n: k for k, n in enumerate(order)}.__getitem__)
    if len(names) < 2:
        raise DataError(f"{table.where}: column {column!r} holds one class only ({names[0]!r}); model search needs at "
                        "least two classes")
    index = {n: k for k, n in enumerate(names)}
    return Targets("multiclass", np.array([index[keys[v]] for v in values], dtype=np.int64), names)


def _order(value: Any) -> tuple[int, float, str]:
    """Numbers by value, then text as ``sorted`` orders it (the order of an image folder's class folders)."""
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def _label_lists(table: Table, column: str, values: list[list[Any]], rows: np.ndarray) -> Targets:
    """Multilabel from a column of lists: one 0/1 target per label that occurs (datasets' order, else sorted)."""
    inner = [v for labels in values for v in labels]
    if inner:
        _one_kind(table, f"the lists in column {column!r}", inner, np.repeat(rows, [len(v) for v in values]))
    names = list(dict.fromkeys(str(v) for v in sorted(set(inner), key=_order)))
    order = (table.class_labels or {}).get(column)
    if order:
        names.sort(key={n: k for k, n in enumerate(order)}.__getitem__)
    if not names:
        raise DataError(f"{table.where}: every list in column {column!r} is empty; multilabel items need labels")
    index = {n: k for k, n in enumerate(names)}
    labels = np.zeros((len(values), len(names)), dtype=np.float32)
    for k, item in enumerate(values):
        labels[k, [index[str(v)] for v in item]] = 1
    return Targets("multilabel", labels, names, int((labels.sum(1) == 0).sum()))


def _label_columns(table: Table, columns: dict[str, list[Any]]) -> Targets:
    """Multilabel from several 0/1 columns (one per label); a label that is never 1 is refused."""
    labels = np.array([columns[c] for c in columns], dtype=np.float32).T
    never = [c for c, n in zip(columns, labels.sum(0)) if n == 0]
    if never:
        raise DataError(f"{table.where}: label column(s) {', '.join(map(repr, never))} are 0 in every row: no item has "
                        "that label; remove them from dataset.label_column")
    return Targets("multilabel", labels, list(columns), int((labels.sum(1) == 0).sum()))


def _regression(table: Table, columns: dict[str, list[Any]]) -> Targets:
    """float32 targets ``[N, T]``; a target with one value in every row is refused (nothing to rank models on)."""
    for c, values in columns.items():
        if len(set(values)) < 2:
            raise DataError(f"{table.where}: regression target {c!r} is {values[0]!r} in every row, so it ranks no "
                            "model; use a target that varies")
    return Targets("regression", np.array([columns[c] for c in columns], dtype=np.float32).T, list(columns))


# ------------------------------------------------------------------------------------------------------------ images
class _Encoded(io.BytesIO):
    """An encoded image held in memory; ``str()`` names where it came from (PIL's messages say it)."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


class TableImages:
    """The image of each kept row: a file (``paths[k]``) or, where ``paths[k]`` is None, encoded bytes in the
    arrow column ``blobs`` at row ``rows[k]``."""

    def __init__(self, table: Table, column: str, rows: np.ndarray, paths: list[Path | None], blobs: Any):
        self.where, self.column, self.rows, self.paths, self.blobs = table.where, column, rows, paths, blobs

    def __len__(self) -> int:
        return len(self.rows)

    def open(self, k: int) -> Path | _Encoded:
        """What PIL opens for item ``k``."""
        path = self.paths[k]
        return path if path is not None else _Encoded(self.blobs[int(self.rows[k])].as_py(), self.name(k))

    def name(self, k: int) -> str:
        """Item ``k``'s file, or where its bytes are, for messages."""
        path = self.paths[k]
        return str(path) if path is not None else f"{self.where}, row index {self.rows[k]}, column {self.column!r}"


class _Opened:
    """The images of ``indices``, opened one at a time when a decoding process asks (not all held at once)."""

    def __init__(self, images: TableImages, indices: np.ndarray):
        self.images, self.indices = images, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> Path | _Encoded:
        return self.images.open(int(self.indices[j]))


class TableImageSource(ImageSource):
    """Images named or held by a table, decoded as an image folder's are (the same pixels, the same rows)."""

    def __init__(self, images: TableImages, found: Targets, spec: DataSpec, files: list[Path], notes: dict[str, int]):
        self.images, self.spec, self.files, self.notes = images, spec, files, notes
        self.labels, self.class_names, self.task = found.labels, found.names, found.task

    def identity(self) -> str:
        """Every image file's path, size and mtime in row order; where rows hold encoded images, also the table's
        files and the rows kept (a table of paths relabelled keeps its prepared images)."""
        h = hashlib.sha256(b"table\n")
        if any(path is None for path in self.images.paths):
            h.update(f"{self.images.column}\n{''.join(map(_stat, self.files))}".encode())
            h.update(np.ascontiguousarray(self.images.rows, dtype=np.int64).tobytes())
        for path in self.images.paths:
            h.update(b"-\n" if path is None else _stat(path).encode())
        return h.hexdigest()

    def decode(self, indices: np.ndarray, workers: int, writer: RowWriter | None = None) -> Iterator[Decoded]:
        return decode_files(_Opened(self.images, indices), self.spec.image_size, workers, writer)

    def item_name(self, index: int) -> str:
        return self.images.name(index)


def _stat(path: Path) -> str:
    """A file's path, size and mtime (``missing``: it is skipped when decoded, with dataset.skip_unreadable)."""
    try:
        st = path.stat()
    except OSError:
        return f"{path}\0missing\n"
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n"


def image_cells(table: Table, column: str) -> tuple[list[Path | None], Any, list[str | None]]:
    """``(paths, blobs, missing)`` of every row: a path where the row names a file (relative to the table's folder),
    else None and its bytes are in ``blobs`` (an arrow column); ``missing[k]``: why row k has no image, else None."""
    data = table.columns[column]
    if isinstance(data, list):
        return _paths(table, column, data), None, [_missing(v) for v in data]
    import pyarrow as pa
    import pyarrow.compute as pc

    kind, blobs, names = data.type, None, None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        names = data.to_pylist()
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        blobs = data
    elif pa.types.is_struct(kind) and {kind.field(i).name for i in range(kind.num_fields)} & {"bytes", "path"}:
        fields = {kind.field(i).name for i in range(kind.num_fields)}
        blobs = pc.struct_field(data, "bytes") if "bytes" in fields else None
        names = pc.struct_field(data, "path").to_pylist() if "path" in fields else None
    else:
        raise DataError(f"{table.where}: image column {column!r} holds {kind} values, neither image paths (text) nor "
                        "encoded images (bytes, or {bytes, path} as datasets stores them); set dataset.image_column "
                        "to the column holding the images")
    held = np.zeros(table.rows, bool) if blobs is None else ~pc.is_null(blobs).to_numpy(zero_copy_only=False)
    held &= pc.is_valid(data).to_numpy(zero_copy_only=False)
    named = _paths(table, column, names or [None] * table.rows)
    paths = [None if held[k] else named[k] for k in range(table.rows)]
    return paths, blobs, [None if held[k] or paths[k] is not None else "empty" for k in range(table.rows)]


def _paths(table: Table, column: str, values: list[Any]) -> list[Path | None]:
    """Image paths (relative ones from the table's folder); DataError for a value that is no path."""
    paths: list[Path | None] = []
    for k, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise DataError(f"{table.where}, {table.at(k)}: image column {column!r} holds {_kind(value)} "
                            f"({value!r}), neither image paths (text) nor encoded images (bytes, or {{bytes, path}} "
                            "as datasets stores them); set dataset.image_column to the column holding the images")
        paths.append(table.folder / Path(value.strip()).expanduser() if value and value.strip() else None)
    return paths


def _refuse_missing_files(table: Table, images: TableImages) -> None:
    """DataError when an image path names no file (with dataset.skip_unreadable such rows are skipped when decoded,
    as an unreadable file in an image folder is)."""
    gone = [k for k, p in enumerate(images.paths) if p is not None and not p.is_file()]
    if gone:
        k = gone[0]
        raise DataError(f"{table.where}, {table.at(images.rows[k])}: image file {images.paths[k]} does not exist "
                        f"({len(gone)} of {len(images)} image paths name no file; relative paths start at "
                        f"{table.folder}); fix the paths, or set dataset.skip_unreadable=true to leave those rows out")


# ------------------------------------------------------------------------------------------------------------ source
@register_dataset("table")
def table_source(spec: DataSpec) -> Source:
    """A table at ``spec.path`` (see the module docstring): images in ``spec.image_column``, or texts in
    ``spec.text_column``; labels in ``spec.label_column`` (one column or several)."""
    if spec.path is None:
        raise DataError("dataset table needs a table: set dataset.path=/path/to/data.csv (or .tsv, .jsonl, .parquet, "
                        "or a folder saved by Hugging Face datasets)")
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise DataError(f"table {path} does not exist; set dataset.path to a CSV, TSV, JSON-lines or parquet file, "
                        "or a folder saved by Hugging Face datasets")
    label_names = [spec.label_column] if isinstance(spec.label_column, str) else list(spec.label_column)
    item = spec.image_column or spec.text_column
    if item in label_names:
        raise DataError(f"column {item!r} is both the {'image' if spec.image_column else 'text'} column and a label "
                        "column; set dataset.label_column to the column(s) holding the labels")
    needed = {**{c: "dataset.label_column" for c in label_names},
              item: "dataset.image_column" if spec.image_column else "dataset.text_column"}
    table = read_table(path, needed)
    columns = {c: table.values(c) for c in label_names}
    if spec.image_column:
        paths, blobs, missing = image_cells(table, item)
    else:
        texts = _texts(table, item)
        missing = [_missing(t) for t in texts]
    rows, dropped = _complete_rows(table, columns, missing, item, spec.skip_unreadable)
    found = targets(table, {c: [v[r] for r in rows] for c, v in columns.items()}, rows,
                    getattr(spec, "task", "auto"))  # dataset.task where this version has task types
    notes = {"table_rows": table.rows, "rows_missing_values": dropped, **(
        {"items_without_labels": found.without_labels} if found.task == "multilabel" else {})}
    if not spec.image_column:
        source = TextSource([texts[r] for r in rows], found.labels, found.names, spec)
        source.task, source.notes = found.task, notes  # type: ignore[attr-defined]
        return source
    images = TableImages(table, item, rows, [paths[r] for r in rows], blobs)
    if not spec.skip_unreadable:
        _refuse_missing_files(table, images)
    return TableImageSource(images, found, spec, table.files, notes)


def _texts(table: Table, column: str) -> list[Any]:
    """A text column's values (None where empty); DataError for a value that is no text."""
    values = table.columns[column]
    values = values if isinstance(values, list) else values.to_pylist()
    for k, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise DataError(f"{table.where}, {table.at(k)}: text column {column!r} holds {_kind(value)} ({value!r}), "
                            "not text; set dataset.text_column to the column holding the texts")
    return [v.strip() if isinstance(v, str) else v for v in values]


def _complete_rows(table: Table, columns: dict[str, list[Any]], missing: list[str | None], item: str,
                   skip: bool) -> tuple[np.ndarray, int]:
    """``(rows with every value, how many were left out)``: a missing label or item is refused, or with ``skip``
    (dataset.skip_unreadable) the row is left out and counted."""
    why = [next(((c, w) for c in columns if (w := _missing(columns[c][k]))), None) or
           ((item, missing[k]) if missing[k] else None) for k in range(table.rows)]
    bad = [k for k, w in enumerate(why) if w is not None]
    if bad and not skip:
        column, reason = why[bad[0]]  # type: ignore[misc]
        raise DataError(f"{table.where}, {table.at(bad[0])}: the value in column {column!r} is {reason} ({len(bad)} "
                        f"row(s) miss a value); fill them in or delete them, or set dataset.skip_unreadable=true to "
                        "leave them out (counted in results.json)")
    if bad:
        warnings.warn(f"left out {len(bad)} row(s) of {table.where} that miss a label or an item "
                      "(dataset.skip_unreadable=true), e.g. " + table.at(bad[0]), stacklevel=3)
    keep = np.setdiff1d(np.arange(table.rows), np.asarray(bad, dtype=np.int64))
    if not len(keep):
        raise DataError(f"empty dataset: every row of {table.where} misses a label or an item")
    return keep, len(bad)
