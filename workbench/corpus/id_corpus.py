"""Reading desensitised ("id") corpora: documents whose text is space-separated integer ids.

Layouts, as published or as `workbench desensitise` writes them:
  gaiic  GAIIC 2021 track 1:   `report_ID|,|623 328 538 ... |,|2 15`   (labels optional:
         the test file has `report_ID|,|ids` only; an empty label field means "no label")
  tsv    Tianchi news:         header `label<TAB>text`, then `2<TAB>2967 6758 339 ...`
  csv    the same with commas (standard csv quoting), header first
  jsonl  one object per line: `{"text_a": "623 328", "text_b": "538 12", "label": 1}`
         (tsv/csv/jsonl: the id columns/keys are named by `text_columns`, e.g. the text_a
         and text_b of a sentence pair; every other column is kept as a field and is NEVER
         counted as ids: a label is not a token)
  lines  one document per line: `623 328 538 ...` (our own `workbench desensitise` output
         of a txt corpus). A tab in such a line is an error: it is a column separator, and
         reading the columns as ids would count a label column as ids.
`auto` picks gaiic when the first non-blank line contains `|,|`, tsv / csv / jsonl by the
extension (.tsv, .csv, .jsonl/.json), else lines. Blank lines are skipped (they are not
documents).

Problems are `InputError`s naming the file, the line and the fix: a token that is not a
non-negative integer, an id above `max_id` (when the corpus declares its id range), a
tsv without the text column, a file with no documents, a corpus with no ids at all.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import InputError

FORMATS = ("auto", "gaiic", "tsv", "csv", "jsonl", "lines")
GAIIC_SEP = "|,|"
_ONLY_IDS = re.compile(r"[0-9 \t]*")
_SUFFIX_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


@dataclass(slots=True)
class IdDoc:
    ids: list[int]  # the ids of every text column, in `text_columns` order
    line: int  # 1-based physical line
    fields: dict[str, str] = field(default_factory=dict)  # gaiic: report_id, labels; tsv/csv/jsonl: the other columns
    parts: list[list[int]] | None = None  # one id list per text column (None: one text column, `ids`)

    @property
    def texts(self) -> list[list[int]]:
        """The id sequences of the document, one per text column (n-grams never cross them)."""
        return self.parts if self.parts is not None else [self.ids]


def detect_format(path: str | Path) -> str:
    path = Path(path)
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if line.strip():
                if GAIIC_SEP in line:
                    return "gaiic"
                break
    return _SUFFIX_FORMATS.get(path.suffix.lower(), "lines")


def parse_ids(text: str, path: str | Path, line: int, max_id: int | None = None) -> list[int]:
    """The ids of one document's text; InputError on a bad token or an id above max_id."""
    if _ONLY_IDS.fullmatch(text) is None:
        bad = next(t for t in text.split() if not t.isdigit() or not t.isascii())
        raise InputError(path, f"token {bad[:40]!r} is not a non-negative integer id "
                               f"(text starts {text[:60]!r})",
                         "an id corpus holds space-separated integers only; fix or remove this line, "
                         "or check the format (gaiic `id|,|ids|,|labels`, tsv with a text column, or lines)",
                         line=line)
    ids = list(map(int, text.split()))
    if max_id is not None and ids:
        top = max(ids)
        if top > max_id:
            raise InputError(path, f"id {top} is above the declared max_id {max_id}",
                             f"raise max_id (the largest id in the corpus is at least {top}) or fix the line",
                             line=line)
    return ids


def _columns(text_column: str | list[str]) -> list[str]:
    cols = [text_column] if isinstance(text_column, str) else list(dict.fromkeys(text_column))
    if not cols:
        raise ValueError("no text column given")
    return cols


def _doc(path: Path, no: int, texts: list[str], fields: dict, max_id: int | None) -> IdDoc:
    parts = [parse_ids(t, path, no, max_id) for t in texts]
    if len(parts) == 1:
        return IdDoc(parts[0], no, fields)
    return IdDoc([i for p in parts for i in p], no, fields, parts)


def read_id_corpus(path: str | Path, fmt: str = "auto", *, text_column: str | list[str] = "text",
                   max_id: int | None = None) -> Iterator[IdDoc]:
    """Documents of one id-corpus file, streamed. Raises InputError (see the module doc).

    `text_column`: the column(s) (jsonl: keys) holding ids, e.g. ["text_a", "text_b"] for
    sentence pairs (tsv/csv/jsonl). Only they are parsed as ids; other columns are fields."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file", "check the path in input=")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    if fmt == "auto":
        fmt = detect_format(path)
    cols = _columns(text_column)
    if fmt in ("csv", "jsonl"):
        yield from (_read_csv if fmt == "csv" else _read_jsonl)(path, cols, max_id)
        return
    n = 0
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = enumerate((ln.rstrip("\r\n") for ln in f), 1)
        header: list[str] | None = None
        text_idx: list[int] = []
        if fmt == "tsv":
            for no, line in lines:
                if line.strip():
                    header = line.split("\t")
                    break
            if header is None:
                raise InputError(path, "the file is empty", "remove it from input=")
            missing = [c for c in cols if c not in header]
            if missing:
                raise InputError(path, f"the header {header} has no column {missing[0]!r}",
                                 "set text_column (and text_columns) to the column(s) holding the ids "
                                 "(Tianchi: text; a sentence pair: text_a and text_b)", line=1)
            text_idx = [header.index(c) for c in cols]
        for no, line in lines:
            if not line.strip():
                continue
            if fmt == "lines" and "\t" in line:
                raise InputError(path, f"the line has {line.count(chr(9)) + 1} tab-separated columns, but format "
                                       "lines reads one document of ids per line: every column, a label too, "
                                       "would be counted as ids",
                                 "read it as a table: format=tsv with a header row naming the columns, "
                                 "text_column=<the id column> (and text_columns=[...] for a second text)", line=no)
            if fmt == "gaiic":
                parts = line.split(GAIIC_SEP)
                if len(parts) not in (2, 3):
                    raise InputError(path, f"{len(parts)} fields separated by '|,|' (expected 2 or 3: "
                                           "report_id|,|ids[|,|labels])",
                                     "fix the line, or set format=lines/tsv if this is not a GAIIC file", line=no)
                fields = {"report_id": parts[0].strip()}
                if len(parts) == 3:
                    fields["labels"] = parts[2].strip()
                text = parts[1]
            elif fmt == "tsv":
                parts = line.split("\t")
                if len(parts) != len(header):
                    raise InputError(path, f"{len(parts)} tab-separated fields, the header has {len(header)}",
                                     "fix the line (a tab inside a field?)", line=no)
                fields = {h: v for j, (h, v) in enumerate(zip(header, parts)) if j not in text_idx}
                n += 1
                yield _doc(path, no, [parts[j] for j in text_idx], fields, max_id)
                continue
            else:
                fields, text = {}, line
            n += 1
            yield IdDoc(parse_ids(text, path, no, max_id), no, fields)
    if n == 0:
        _no_documents(path)


def _no_documents(path: Path) -> None:
    raise InputError(path, "the file has no documents (empty, blank lines or only a header)",
                     "remove it from input=, or point input= at the id corpus")


def _read_csv(path: Path, cols: list[str], max_id: int | None) -> Iterator[IdDoc]:
    n = 0
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        header: list[str] | None = None
        prev = 0
        try:
            for rec in reader:
                no, prev = prev + 1, reader.line_num
                if not rec or all(not c.strip() for c in rec):
                    continue
                if header is None:
                    header = [c.strip() for c in rec]
                    missing = [c for c in cols if c not in header]
                    if missing:
                        raise InputError(path, f"the header {header} has no column {missing[0]!r}",
                                         "set text_column (and text_columns) to the column(s) holding the ids",
                                         line=no)
                    idx = [header.index(c) for c in cols]
                    continue
                if len(rec) != len(header):
                    raise InputError(path, f"{len(rec)} comma-separated fields, the header has {len(header)}",
                                     "fix the line (quote a field that holds a comma)", line=no)
                fields = {h: v for j, (h, v) in enumerate(zip(header, rec)) if j not in idx}
                n += 1
                yield _doc(path, no, [rec[j] for j in idx], fields, max_id)
        except csv.Error as e:
            raise InputError(path, f"not valid csv ({e})", "fix the quoting of the line", line=prev + 1) from None
    if n == 0:
        _no_documents(path)


def _read_jsonl(path: Path, cols: list[str], max_id: int | None) -> Iterator[IdDoc]:
    n = 0
    with open(path, encoding="utf-8-sig") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(path, f"not valid JSON ({e.msg} at column {e.colno})", "fix the line",
                                 line=no) from None
            if not isinstance(obj, dict):
                raise InputError(path, f"a JSON {type(obj).__name__}, not an object", "one object per line",
                                 line=no)
            texts = []
            for c in cols:
                v = obj.get(c)
                if v is not None and not isinstance(v, str):
                    raise InputError(path, f"key {c!r} holds a {type(v).__name__}, not a string of ids",
                                     "set text_column / text_columns to the keys holding the ids", line=no)
                if c not in obj and not texts:
                    raise InputError(path, f"no key {c!r} (keys: {list(obj)[:10]})",
                                     "set text_column to the key holding the ids", line=no)
                texts.append(v or "")
            n += 1
            yield _doc(path, no, texts, {k: v for k, v in obj.items() if k not in cols}, max_id)
    if n == 0:
        _no_documents(path)


def count_ids(paths: list[str | Path], fmt: str = "auto", *, text_column: str | list[str] = "text",
              max_id: int | None = None) -> tuple[np.ndarray, dict]:
    """How often each id occurs over all files: (counts indexed by id, int64; stats). Only
    the text column(s) are counted, never labels or other fields.

    Raises InputError when the corpus holds no ids at all."""
    counts = np.zeros(0 if max_id is None else max_id + 1, dtype=np.int64)
    docs = tokens = 0
    for p in paths:
        for doc in read_id_corpus(p, fmt, text_column=text_column, max_id=max_id):
            docs += 1
            if not doc.ids:
                continue
            arr = np.asarray(doc.ids, dtype=np.int64)
            if arr.max() >= len(counts):
                counts = np.concatenate([counts, np.zeros(int(arr.max()) + 1 - len(counts), np.int64)])
            counts += np.bincount(arr, minlength=len(counts))
            tokens += len(arr)
    if tokens == 0:
        raise InputError(", ".join(map(str, paths)) or "(no files)",
                         f"the id corpus is empty: {docs} documents, no ids",
                         "point input= at files with space-separated ids")
    stats = {"documents": docs, "tokens": tokens, "distinct_ids": int((counts > 0).sum()),
             "max_id": int(np.flatnonzero(counts).max())}
    return counts, stats
