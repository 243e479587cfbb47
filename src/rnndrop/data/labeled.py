"""A user's own labelled text: CSV / TSV / JSONL files, a folder per class, one file per class.

:func:`read_labeled` reads the examples as they are (texts and labels, both strings);
:func:`infer_label_space` decides whether the labels are classes or numbers and turns them into
targets; :func:`stratified_split` draws a seeded train/valid/test split when the user has no
separate files (:func:`save_split` records it in the run, :func:`fingerprint` notices when the
data change under it); :class:`TextEncoder` tokenises, builds the vocabulary on train and pads.

Formats (``format="auto"`` tells them apart by the file's suffix or the folder's layout):

``csv`` / ``tsv`` (``.csv``, ``.tsv``): a header row, then one example per row; ``text_column``
and ``label_column`` name the columns. CSV fields may be quoted and then hold the delimiter,
doubled quotes and newlines, as Excel and pandas write them; a quote that does not open or close
a whole field is an error with its line (never a silently merged or shortened row)::

    text,label
    "Great film, would watch again",pos
    "Two lines
    of text",neg

TSV is read with CSV-style quoting when the whole file parses that way (pandas and Excel quote
a field that holds a tab or a quote), and otherwise without quoting, one line per example and
a quote being text (the IANA text/tab-separated-values format, what ``paste`` makes), with one
log line saying so: a review that starts ``" gun shy " is ...`` is read as written, where
CSV-style parsing would drop its quotes or swallow the lines after it.

``jsonl`` (``.jsonl``, ``.ndjson``): one JSON object per line, blank lines skipped; a label may
be a string or a number::

    {"text": "Great film", "label": "pos"}
    {"text": "Dull", "label": 0.25}

``folder``: one folder per class, one ``.txt`` file per example (the aclImdb layout)::

    train/pos/0_9.txt  train/pos/1_7.txt  ...  train/neg/0_3.txt  ...

``files``: one plain-text file per class, one example per line, blank lines skipped. Either the
files of a folder that share a stem and differ by suffix, the label being the suffix (Pang &
Lee's ``rt-polarity.pos``, ``rt-polarity.neg``), or ``files=["a.txt:label_a", ...]``.

Every file is read as bytes and decoded strictly with ``encoding``: a file in another encoding
stops with the exact byte offset rather than turning into mojibake or U+FFFD. Labels have their
surrounding whitespace removed; texts are kept as they are (a folder file's trailing newline
aside). Whatever a user can fix raises :class:`~rnndrop.data._download.DataError` with one line
that names the file (and line or byte) and says what to do.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..rundir import atomic_write_text
from ._download import DataError
from .batching import Encoded
from .imdb import PAD, UNK, encode_reviews
from .text import Vocabulary

FORMATS = ("auto", "csv", "tsv", "jsonl", "folder", "files")
TASKS = ("auto", "classification", "regression")

_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_EXAMPLE_OBJECT = '{"text": ..., "label": ...}'
_DESCRIBE = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSONL", "folder": "folder per class",
             "files": "one file per class"}
# Suffixes never read as a class of per-class files: data files or notes that sit beside them
# (``data.csv`` next to ``data.json`` is not a two-class data set).
_NOT_A_CLASS = {".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".txt", ".md", ".html", ".py",
                ".gz", ".zip", ".tar", ".tgz", ".bz2", ".xz", ".pdf"}
# Files users pass that are no text at all: their first bytes, and what to do instead.
_NOT_TEXT = {b"PK\x03\x04": "a zip archive (an Excel workbook?); save it as CSV UTF-8",
             b"\x1f\x8b": "gzip-compressed; decompress it first (gunzip)"}
_MAX_AUTO_CLASSES = 20  # more distinct labels than this and than half the examples: a wrong column


@dataclass
class LabeledTexts:
    """Examples as read: ``texts[i]`` has label ``labels[i]``, a string (numbers are parsed
    later, by :class:`LabelSpace`; ``None`` when read with ``label_column=None``).
    ``source`` describes where they came from, for logs."""
    texts: list[str]
    labels: list
    source: str

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> "LabeledTexts":
        idx = [int(i) for i in idx]
        return LabeledTexts([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                            self.source)


# --------------------------------------------------------------------------- reading files

def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _decode(path: Path, raw: bytes, encoding: str) -> str:
    """``raw`` decoded strictly; a UTF-8 BOM is dropped (Excel writes one, and it must not
    become part of the first column's name). It is dropped by hand rather than with
    ``utf-8-sig``, whose error offsets would not count it."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r} (reading {path}); pass --encoding "
                        f"utf-8, latin-1, cp1252 or another Python codec name") from None
    start = 0
    if codec in ("utf-8", "utf-8-sig"):
        codec = "utf-8"
        if raw.startswith(codecs.BOM_UTF8):
            start = len(codecs.BOM_UTF8)
    try:
        return raw[start:].decode(codec)
    except UnicodeDecodeError as e:
        for magic, what in _NOT_TEXT.items():
            if raw.startswith(magic):
                raise DataError(f"{path}: {what}, not text") from None
        # Excel's "Unicode text" is UTF-16 with a byte-order mark: latin-1 would read it as
        # NULs and mojibake, so name the encoding the mark gives away.
        fix = ("utf-16 (the file starts with a UTF-16 byte-order mark)"
               if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) and codec != "utf-16"
               else "latin-1 (or the file's encoding)")
        raise DataError(f"{path}: not valid {encoding} at byte {start + e.start}; pass "
                        f"--encoding {fix}") from None


def _read_text(path: Path, encoding: str) -> str:
    text = _decode(path, _read_bytes(path), encoding)
    if not text.strip():
        raise DataError(f"{path}: empty file, no examples")
    return text


def _lines(text: str):
    """``(line number, line)``, universal newlines as ``open()`` reads them. Not
    ``str.splitlines``: it also splits at U+0085 and U+2028, which latin-1 text (0x85 is
    cp1252's '…') and JSON strings may hold inside a line."""
    return enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1)


def _label(value: str, where: str) -> str:
    label = value.strip()
    if not label:
        raise DataError(f"{where}: empty label; give every example a label (or remove the line)")
    return label


def _read_table(path: Path, delimiter: str, text_column: str, label_column: Optional[str],
                encoding: str, log=print) -> tuple[list, list]:
    text = _read_text(path, encoding)
    if delimiter == "\t":
        try:
            return _parse_table(path, text, delimiter, text_column, label_column, quoted=True)
        except _Unquotable as e:
            where = re.search(r"line \d+", str(e))
            log(f"{path}: {where.group(0) if where else 'a line'} has a quote that CSV-style "
                f"quoting cannot parse; read without quoting, one example per line")
            return _parse_table(path, text, delimiter, text_column, label_column, quoted=False)
    return _parse_table(path, text, delimiter, text_column, label_column, quoted=True)


class _Unquotable(DataError):
    """A table that does not parse with CSV-style quoting."""


def _parse_table(path: Path, text: str, delimiter: str, text_column: str,
                 label_column: Optional[str], quoted: bool) -> tuple[list, list]:
    sep = "a tab" if delimiter == "\t" else f"'{delimiter}'"
    texts, labels = [], []
    header = None
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))  # a long document may exceed csv's 128 KiB
    try:
        rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True,
                          quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
        end = 0
        for row in rows:
            line, end = end + 1, rows.line_num  # a quoted newline makes one row span lines
            if not any(f.strip() for f in row):  # blank line, or only separators
                continue
            if header is None:
                header = [f.strip() for f in row]
                text_at = _column(path, header, text_column, "--text-column")
                if label_column is not None:
                    label_at = _column(path, header, label_column, "--label-column")
                continue
            if len(row) != len(header):
                spans = any("\n" in f for f in row)
                hint = " (a quote that is never closed?)" if spans else f"; quote fields that contain {sep}"
                n = len(row)
                raise (_Unquotable if spans else DataError)(f"{path}, line {line}: {n} field{'s' if n != 1 else ''} where the "
                                f"header has {len(header)}{hint}")
            texts.append(row[text_at])
            if label_column is not None:
                labels.append(_label(row[label_at], f"{path}, line {line}"))
    except csv.Error as e:
        raise _Unquotable(f"{path}, line {end + 1}: cannot parse the row ({e}); a field with a "
                        f"quote must be quoted whole, its quotes doubled (\"say \"\"hi\"\"\")"
                        ) from None
    finally:
        csv.field_size_limit(limit)
    if not texts:
        raise DataError(f"{path}: no examples (only a header)")
    return texts, labels if label_column is not None else [None] * len(texts)


def _column(path: Path, header: list, name: str, option: str) -> int:
    if header.count(name) > 1:
        raise DataError(f"{path}: column {name!r} appears {header.count(name)} times in the "
                        f"header; rename one")
    if name not in header:
        have = ", ".join(repr(h) for h in header[:20]) + (", ..." if len(header) > 20 else "")
        raise DataError(f"{path}: no column {name!r}; the header (first line) has {have}; pass "
                        f"{option} NAME")
    return header.index(name)


def _json_label(value, where: str) -> str:
    # Numbers become the strings a CSV would hold: 3 -> "3", 0.25 -> "0.25".
    if isinstance(value, bool):
        raise DataError(f"{where}: label is {json.dumps(value)}; write it as a string or 0/1")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{where}: label is {json.dumps(value)}; give a finite number")
        return json.dumps(value)
    if isinstance(value, str):
        return _label(value, where)
    what = "null" if value is None else type(value).__name__
    raise DataError(f"{where}: label is a JSON {what}; give a string or a number")


def _read_jsonl(path: Path, text_column: str, label_column: Optional[str],
                encoding: str) -> tuple[list, list]:
    texts, labels = [], []
    for n, line in _lines(_read_text(path, encoding)):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line "
                            f"must be one object such as {_EXAMPLE_OBJECT}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: a JSON {type(obj).__name__}, expected an object such as "
                            f"{_EXAMPLE_OBJECT}")
        for key, option in ((text_column, "--text-column"), (label_column, "--label-column")):
            if key is not None and key not in obj:
                have = ", ".join(repr(k) for k in list(obj)[:20])
                raise DataError(f"{where}: no key {key!r}; the object has {have or 'no keys'}; "
                                f"pass {option} NAME")
        if not isinstance(obj[text_column], str):
            raise DataError(f"{where}: {text_column!r} is a JSON "
                            f"{type(obj[text_column]).__name__}, expected a string")
        texts.append(obj[text_column])
        labels.append(None if label_column is None else _json_label(obj[label_column], where))
    if not texts:
        raise DataError(f"{path}: empty file, no examples")
    return texts, labels


def _subdirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name)


def _txt_files(d: Path) -> list[Path]:
    return sorted((f for f in d.iterdir() if f.suffix.lower() == ".txt" and f.is_file()),
                  key=lambda f: f.name)


def _has_txt(d: Path) -> bool:
    with os.scandir(d) as it:
        return any(e.name.lower().endswith(".txt") and e.is_file() for e in it)


def _read_folder(root: Path, encoding: str, skip_dirs: Sequence[str], log) -> tuple[list, list]:
    texts, labels = [], []
    for d in _subdirs(root):
        if d.name in skip_dirs:
            with os.scandir(d) as it:
                n = sum(1 for _ in it)
            log(f"{root}: skipping {d.name}/ ({n:,} entries; it is in skip_dirs: unlabelled)")
            continue
        files = _txt_files(d)
        if not files:
            log(f"{root}: skipping {d.name}/ (no .txt files)")
            continue
        for f in files:
            # Only the newline an editor adds at the end goes: it is no part of the example.
            texts.append(_decode(f, _read_bytes(f), encoding).rstrip("\r\n"))
            labels.append(d.name)
    if not texts:
        raise DataError(f"{root}: no class folders with .txt files (looked for "
                        f"{root}/<label>/*.txt)")
    return texts, labels


def _per_class_groups(root: Path) -> list[list[Path]]:
    """Files of ``root`` that share a stem and differ by suffix (two or more), stem by stem."""
    by_stem: dict[str, list[Path]] = {}
    for f in sorted(root.iterdir(), key=lambda f: f.name):
        if (f.suffix and f.suffix.lower() not in _NOT_A_CLASS and not f.name.startswith(".")
                and f.is_file()):
            by_stem.setdefault(f.stem, []).append(f)
    return [fs for fs in by_stem.values() if len(fs) >= 2]


def _read_lines_file(path: Path, label: str, encoding: str) -> list[str]:
    text = _decode(path, _read_bytes(path), encoding)
    out = [line for _, line in _lines(text) if line.strip()]
    if not out:
        raise DataError(f"{path}: empty file, no examples for class {label!r}")
    return out


def read_texts(path: str | os.PathLike, encoding: str = "utf-8") -> LabeledTexts:
    """Unlabelled examples, one per line of a plain text file (blank lines skipped; every label
    ``None``): the texts ``rnndrop classify predict`` labels."""
    path = Path(path)
    text = _decode(path, _read_bytes(path), encoding)
    lines = [line for _, line in _lines(text) if line.strip()]
    if not lines:
        raise DataError(f"{path}: empty file, no examples (one text per line expected)")
    return LabeledTexts(lines, [None] * len(lines), f"{path.name} (text lines, {len(lines):,} examples)")


def _parse_file_spec(spec: str) -> tuple[Path, str]:
    # The last ':' separates the label, so a path with a drive letter (C:\data\a.txt:pos) works.
    name, sep, label = str(spec).rpartition(":")
    if not sep or not name or not label.strip() or any(c in label for c in "/\\"):
        raise DataError(f"--files entry {spec!r}: expected FILE:LABEL, e.g. pos.txt:pos")
    return Path(name), label.strip()


def _read_files(specs: Sequence[tuple[Path, str]], encoding: str) -> tuple[list, list]:
    texts, labels = [], []
    for path, label in specs:
        if not path.is_file():
            raise DataError(f"{path} not found" if not path.exists() else
                            f"{path} is a folder; --files takes one text file per class")
        lines = _read_lines_file(path, label, encoding)
        texts += lines
        labels += [label] * len(lines)
    return texts, labels


def _class_files(root: Path, skip_dirs: Sequence[str]) -> list[Path]:
    """The one set of per-class files in ``root``, else a one-line error."""
    groups = _per_class_groups(root)
    if len(groups) == 1:
        return groups[0]
    if len(groups) > 1:
        stems = ", ".join(f"{g[0].stem}.*" for g in groups[:5])
        raise DataError(f"{root}: several sets of per-class files ({stems}); pass the ones to "
                        f"read with --files FILE:LABEL ...")
    hint = ""
    nested = [d.name + "/" for d in _subdirs(root)
              if any(_has_txt(s) for s in _subdirs(d) if s.name not in skip_dirs)]
    tables = sorted(f.name for f in root.iterdir() if f.suffix.lower() in _BY_SUFFIX)
    if nested:  # aclImdb/ itself rather than aclImdb/train/
        hint = f" (its subfolders {', '.join(nested[:5])} hold class folders: point at one)"
    elif tables:
        hint = f" (it holds {', '.join(tables[:5])}: point at the file)"
    raise DataError(f"{root}: no data layout found{hint}; looked for class folders "
                    f"({root.name}/<label>/*.txt) and one file per class sharing a stem "
                    f"(NAME.<label>, e.g. rt-polarity.pos + rt-polarity.neg); or pass --files "
                    f"FILE:LABEL ...")


def _guess_dir(root: Path, skip_dirs: Sequence[str]) -> str:
    if any(_has_txt(d) for d in _subdirs(root) if d.name not in skip_dirs):
        return "folder"
    _class_files(root, skip_dirs)  # one set, or its error
    return "files"


def read_labeled(path: str | os.PathLike | None, *, format: str = "auto",
                 text_column: str = "text", label_column: Optional[str] = "label",
                 encoding: str = "utf-8", files: Sequence[str] = (),
                 skip_dirs: Sequence[str] = ("unsup",),
                 log: Callable[[str], object] = print) -> LabeledTexts:
    """Read a user's labelled examples (see the module docstring for the formats).

    ``path``: a CSV / TSV / JSONL file or a folder; ``None`` when ``files`` (``"FILE:LABEL"``
    entries, one plain-text file per class) are given instead. ``label_column=None`` reads a
    CSV / TSV / JSONL without labels (for prediction; every label is then ``None``).
    ``skip_dirs``: subfolders of a folder layout that are not classes (each skip is logged).
    """
    if format not in FORMATS:
        raise DataError(f"unknown --format {format!r}; choose one of {', '.join(FORMATS)}")
    if label_column is not None and label_column == text_column:
        raise DataError(f"--text-column and --label-column are both {text_column!r}")
    if isinstance(files, (str, os.PathLike)):  # one entry, not its characters
        files = [files]
    if files:
        if path is not None:
            raise DataError(f"give either a data path ({path}) or --files, not both")
        if format not in ("auto", "files"):
            raise DataError(f"--files reads one plain-text file per class, not --format {format}")
        specs = [_parse_file_spec(s) for s in files]
        texts, labels = _read_files(specs, encoding)
        names = [p.name for p, _ in specs]
        where = ", ".join(names) if len(names) <= 3 else f"{len(names)} files"
        return _result(texts, labels, where, "files")
    if path is None:
        raise DataError("no data given: pass a file or folder (--data PATH) or --files FILE:LABEL")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found")
    if path.is_dir():
        fmt = _guess_dir(path, skip_dirs) if format == "auto" else format
        if fmt == "folder":
            return _result(*_read_folder(path, encoding, skip_dirs, log), path.name + "/", fmt)
        if fmt != "files":
            raise DataError(f"{path} is a folder; --format {fmt} reads a file: pass the file")
        group = _class_files(path, skip_dirs)
        ignored = sorted(set(f.name for f in path.iterdir() if f.is_file()) -
                         {f.name for f in group})
        if ignored:
            log(f"{path}: reading {group[0].stem}.*, ignoring {', '.join(ignored[:5])}"
                + (", ..." if len(ignored) > 5 else ""))
        texts, labels = _read_files([(f, f.suffix[1:]) for f in group], encoding)
        where = f"{group[0].stem}.{{{','.join(f.suffix[1:] for f in group)}}}"
        return _result(texts, labels, where, "files")
    if format == "auto":
        format = _BY_SUFFIX.get(path.suffix.lower())
        if format is None:
            raise DataError(f"{path}: cannot tell the format from the suffix "
                            f"{path.suffix or '(none)'!r}; known: {', '.join(_BY_SUFFIX)}; pass "
                            f"--format csv|tsv|jsonl, or --files {path}:LABEL for one example "
                            f"per line")
    if format in ("folder", "files"):
        raise DataError(f"{path} is a file; --format {format} reads a folder (for one example "
                        f"per line pass --files {path}:LABEL)")
    if format == "jsonl":
        texts, labels = _read_jsonl(path, text_column, label_column, encoding)
    else:
        texts, labels = _read_table(path, "\t" if format == "tsv" else ",", text_column,
                                    label_column, encoding, log)
    return _result(texts, labels, path.name, format)


def _result(texts: list, labels: list, where: str, fmt: str) -> LabeledTexts:
    n = len(texts)
    return LabeledTexts(texts, labels,
                        f"{where} ({_DESCRIBE[fmt]}, {n:,} example{'s' if n != 1 else ''})")


# --------------------------------------------------------------------------- labels → targets

def _number(label: str) -> Optional[float]:
    """The label's value if it is a finite number. ``float`` also takes 'nan', 'inf' and
    '1_000': no user means those as a rating."""
    try:
        v = float(label)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and "_" not in label else None


def _class_key(label: str):
    v = _number(label)  # "2" before "10"; numbers before names
    return (0, v, label) if v is not None else (1, 0.0, label)


def _as_label(label) -> str:
    if isinstance(label, str):
        return label
    if label is None or isinstance(label, bool):
        raise DataError(f"label {label!r}: every example needs a string or numeric label")
    return str(label)


def _show(items: Sequence[str], n: int = 8) -> str:
    return ", ".join(repr(c) for c in items[:n]) + (", ..." if len(items) > n else "")


@dataclass
class LabelSpace:
    """What the targets are. ``task="classification"``: ``classes`` in target-id order (sorted;
    numeric-looking names numerically); ``"regression"``: the labels are numbers and
    ``classes`` is empty."""
    task: str
    classes: list = field(default_factory=list)

    def __post_init__(self):
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {self.task!r}")
        self.classes = [str(c) for c in self.classes]
        if self.task == "classification" and len(set(self.classes)) < 2:
            raise ValueError(f"a classification needs at least two classes, got {self.classes}")

    @property
    def num_outputs(self) -> int:
        """Width of the model's head: one logit per class, or one value."""
        return len(self.classes) if self.task == "classification" else 1

    def encode(self, labels: Sequence[str], source: str = "data") -> Tensor:
        """Class ids (long) or values (float32), one per label."""
        if self.task == "regression":
            values = []
            for i, label in enumerate(labels):
                v = _number(_as_label(label))
                if v is None:
                    raise DataError(f"{source}: example {i + 1} has label {label!r}, not a number "
                                    f"(the model is a regressor)")
                values.append(v)
            return torch.tensor(values, dtype=torch.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        ids = []
        for i, label in enumerate(labels):
            j = index.get(_as_label(label))
            if j is None:
                raise DataError(f"{source}: example {i + 1} has label {label!r}, not one of the "
                                f"{len(self.classes)} classes of the model ({_show(self.classes)})")
            ids.append(j)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, target) -> str | float:
        """The label of one target: a class name, or a float."""
        if isinstance(target, Tensor):
            target = target.item()
        return self.classes[int(target)] if self.task == "classification" else float(target)

    def to_dict(self) -> dict:
        return {"task": self.task, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSpace":
        return cls(d["task"], list(d.get("classes", [])))


def infer_label_space(labels: Sequence[str], task: str = "auto",
                      source: str = "data") -> LabelSpace:
    """Classes or numbers. ``"auto"``: regression when every label is a number and some is not
    an integer or there are more than 10 distinct values; classification otherwise (0/1 and
    1–5 stars stay classes). ``source`` names the data in errors."""
    if task not in TASKS:
        raise DataError(f"unknown --task {task!r}; choose one of {', '.join(TASKS)}")
    labels = [_as_label(label) for label in labels]
    if not labels:
        raise DataError(f"{source}: no examples, hence no labels")
    values = [_number(label) for label in labels]
    first_bad = next((i for i, v in enumerate(values) if v is None), None)
    if task == "regression":
        if first_bad is not None:
            raise DataError(f"{source}: --task regression needs numeric labels, but example "
                            f"{first_bad + 1} has label {labels[first_bad]!r}")
        return LabelSpace("regression", [])
    numbers = [v for v in values if v is not None]
    numeric = bool(numbers) and (any(not v.is_integer() for v in numbers)
                                 or len(set(numbers)) > 10)
    if task == "auto" and numeric:
        if first_bad is None:
            return LabelSpace("regression", [])
        if 2 * len(numbers) > len(values):  # mostly numbers: a typo, not a class
            raise DataError(f"{source}: the labels are numbers but example {first_bad + 1} has "
                            f"label {labels[first_bad]!r}; fix it, or pass --task classification "
                            f"(every distinct label a class)")
    classes = sorted(set(labels), key=_class_key)
    if len(classes) < 2:
        raise DataError(f"only one class ({classes[0]!r}) in {source}: a classifier needs at "
                        f"least two; for numbers use --task regression")
    if len(classes) > max(_MAX_AUTO_CLASSES, len(labels) // 2):
        raise DataError(f"{source}: {len(classes):,} distinct labels in {len(labels):,} examples "
                        f"(e.g. {_show(classes, 3)}): is --label-column the label column? For "
                        f"numbers use --task regression")
    return LabelSpace("classification", classes)


# --------------------------------------------------------------------------- split

def _split_counts(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Valid and test sizes of a stratum of ``n``: rounded, at least one each (of a fraction
    above 0) when ``n >= 3``, and train keeps at least one."""
    nv, nt = int(n * valid_fraction + 0.5), int(n * test_fraction + 0.5)
    if n >= 3:
        nv, nt = max(nv, int(valid_fraction > 0)), max(nt, int(test_fraction > 0))
    floor_v = 1 if n >= 3 and valid_fraction > 0 else 0
    while nv + nt > max(n - 1, 0):
        if nv > floor_v and nv >= nt:
            nv -= 1
        else:
            nt -= 1
    return nv, nt


def stratified_split(labels: Sequence[str], valid_fraction: float = 0.1,
                     test_fraction: float = 0.1, seed: int = 0,
                     task: str = "classification") -> dict[str, list[int]]:
    """Seeded train/valid/test index lists (sorted, disjoint, covering ``range(len(labels))``).

    Each class is split in the same proportions (each split gets one of a class of three or
    more); for ``task="regression"`` the strata are quantile bins of the value (10, fewer when
    there are under 100 examples), so every split covers the range of targets. The same labels,
    fractions and seed give the same split."""
    for name, f in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f!r}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(f"valid_fraction + test_fraction must be below 1, got "
                         f"{valid_fraction} + {test_fraction}")
    labels = [_as_label(label) for label in labels]
    if task == "auto":
        task = infer_label_space(labels).task
    strata: dict = {}
    if task == "classification":
        for i, label in enumerate(labels):
            strata.setdefault(label, []).append(i)
        keys = sorted(strata, key=_class_key)
    elif task == "regression":
        values = LabelSpace("regression").encode(labels).tolist()
        order = sorted(range(len(labels)), key=lambda i: (values[i], i))
        bins = min(10, max(1, len(labels) // 10))
        for rank, i in enumerate(order):
            strata.setdefault(rank * bins // len(labels), []).append(i)
        keys = sorted(strata)
    else:
        raise ValueError(f"task must be 'classification', 'regression' or 'auto', got {task!r}")
    g = torch.Generator().manual_seed(seed)
    out: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for key in keys:
        idx = strata[key]
        idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
        nv, nt = _split_counts(len(idx), valid_fraction, test_fraction)
        out["valid"] += idx[:nv]
        out["test"] += idx[nv:nv + nt]
        out["train"] += idx[nv + nt:]
    return {k: sorted(v) for k, v in out.items()}


def fingerprint(data: LabeledTexts) -> str:
    """SHA-256 (hex) over the texts and labels in order: a saved split is valid only for the
    data it was drawn from."""
    h = hashlib.sha256(b"rnndrop-labeled-v1\n")
    for text, label in zip(data.texts, data.labels):
        # One JSON array per line: unambiguous (no text can fake a boundary).
        h.update(json.dumps([text, label], ensure_ascii=False).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


_SPLITS = ("train", "valid", "test")
_SPLIT_FORMAT = "rnndrop-split-v1"


def save_split(path: str | os.PathLike, split: dict, fingerprint: str, meta: dict) -> None:
    """Write ``split`` with the data's ``fingerprint`` and ``meta`` (fractions, seed, source:
    for a person reading the run) as JSON, atomically: a crash leaves the old file or the new."""
    path = Path(path)
    record = {"format": _SPLIT_FORMAT, "fingerprint": fingerprint, "meta": meta,
              "split": {k: [int(i) for i in split[k]] for k in _SPLITS}}
    text = json.dumps(record) + "\n"  # before the temporary file: meta that is not JSON-able
    atomic_write_text(path, text)


def load_split(path: str | os.PathLike, fingerprint: Optional[str] = None) -> dict:
    """The ``{"train", "valid", "test"}`` index lists saved by :func:`save_split`; with
    ``fingerprint``, a one-line error if the data are not the ones the split was drawn from."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found; the run's split is lost (start a new run, "
                        f"or restore the file)")

    def damaged(why: str):
        return DataError(f"{path}: damaged split file ({why}); restore it or start a new run")

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(type(e).__name__) from None
    if not isinstance(record, dict) or record.get("format") != _SPLIT_FORMAT:
        raise damaged(f"not an {_SPLIT_FORMAT} record")
    split = record.get("split")
    if not isinstance(split, dict) or any(not isinstance(split.get(k), list) for k in _SPLITS):
        raise damaged("no train/valid/test lists")
    seen: set = set()
    for k in _SPLITS:
        if any(type(i) is not int or i < 0 for i in split[k]):
            raise damaged(f"{k} holds something other than indices")
        if seen.intersection(split[k]):
            raise damaged(f"{k} overlaps another split")
        seen.update(split[k])
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        raise DataError(f"{path}: the data changed since the run was split: fingerprint "
                        f"{str(record.get('fingerprint'))[:12]} then, {fingerprint[:12]} now; "
                        f"point --data at the data the run was split from, or start a new run")
    return {k: list(split[k]) for k in _SPLITS}


# --------------------------------------------------------------------------- tokens → ids

# rnndrop.data.imdb.tokenize's pattern (words with an inner apostrophe, single punctuation
# marks) with \w in place of [a-z0-9]: the same tokens on ASCII text, but "naïve" and "für"
# stay one word instead of breaking at every non-ASCII letter, and upper case is matched for
# lower=False.
_WORD = re.compile(r"[^\W_]+(?:'[^\W\d_]+)?|[^\s\w]|_")


@dataclass
class TextEncoder:
    """Texts → padded ids. ``level="word"``: words and punctuation marks (as
    :func:`rnndrop.data.imdb.tokenize`); ``"char"``: every character. Lower-cased unless
    ``lower=False``. Texts longer than ``max_len`` tokens keep their ``keep="first"`` or
    ``"last"`` ``max_len`` tokens. :meth:`fit` builds the vocabulary on the training texts:
    ``<pad>`` = 0, ``<unk>`` = 1, then words by descending count (at least ``min_count``, at
    most ``max_vocab`` entries in all); unseen words become ``<unk>``."""
    level: str = "word"
    lower: bool = True
    max_len: int = 400
    keep: str = "first"
    min_count: int = 1
    max_vocab: Optional[int] = 20000
    vocab: Optional[Vocabulary] = field(default=None, repr=False)

    def __post_init__(self):
        if self.level not in ("word", "char"):
            raise ValueError(f"level must be 'word' or 'char', got {self.level!r}")
        if self.keep not in ("first", "last"):
            raise ValueError(f"keep must be 'first' or 'last', got {self.keep!r}")
        if self.max_len <= 0:
            raise ValueError(f"max_len must be positive, got {self.max_len}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {self.min_count}")
        if self.max_vocab is not None and self.max_vocab < 3:
            raise ValueError(f"max_vocab must be at least 3 (<pad>, <unk>, a word), "
                             f"got {self.max_vocab}")

    def tokenize(self, text: str) -> list[str]:
        if self.lower:
            text = text.lower()
        if self.level == "char":
            return list(text)
        return _WORD.findall(text.replace("<br />", " "))  # aclImdb's line breaks

    def fit(self, texts: Sequence[str]) -> "TextEncoder":
        self.vocab = Vocabulary.build((tok for t in texts for tok in self.tokenize(t)),
                                      max_size=self.max_vocab, min_count=self.min_count,
                                      specials=(PAD, UNK))
        return self

    def encode(self, texts: Sequence[str], targets: Optional[Tensor] = None) -> Encoded:
        """Ids ``(N, T)`` (T: the longest encoded text, at most ``max_len``), lengths, and
        ``targets`` (zeros when ``None``: unlabelled texts). An empty text is one ``<unk>``."""
        if self.vocab is None:
            raise RuntimeError("TextEncoder.encode before fit(): build the vocabulary on the "
                               "training texts first")
        n = len(texts)
        if targets is None:
            targets = torch.zeros(n, dtype=torch.long)
        if len(targets) != n:
            raise ValueError(f"{n} texts but {len(targets)} targets")
        ids, lengths = encode_reviews([self.tokenize(t) for t in texts], self.vocab,
                                      self.max_len, self.keep)
        if n:  # trim the padding no row uses (short texts, long max_len)
            ids = ids[:, :int(lengths.max())].clone()
        return Encoded(ids, lengths, targets)

    def to_dict(self) -> dict:
        """Everything, vocabulary included, as str/int/float/list/dict/None (a checkpoint loaded
        with ``weights_only=True`` holds nothing else)."""
        return {"level": self.level, "lower": self.lower, "max_len": self.max_len,
                "keep": self.keep, "min_count": self.min_count, "max_vocab": self.max_vocab,
                "vocab": None if self.vocab is None else self.vocab.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "TextEncoder":
        vocab = Vocabulary.from_dict(d["vocab"]) if d.get("vocab") is not None else None
        return cls(level=d["level"], lower=d["lower"], max_len=d["max_len"], keep=d["keep"],
                   min_count=d["min_count"], max_vocab=d["max_vocab"], vocab=vocab)
