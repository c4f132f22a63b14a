"""Reading desensitised ("id") corpora: documents whose text is space-separated integer ids.

Three layouts, as published:
  gaiic  GAIIC 2021 track 1:   `report_ID|,|623 328 538 ... |,|2 15`   (labels optional:
         the test file has `report_ID|,|ids` only; an empty label field means "no label")
  tsv    Tianchi news:         header `label<TAB>text`, then `2<TAB>2967 6758 339 ...`
         (the text column is named by `text_column`; other columns are kept as fields)
  lines  one document per line: `623 328 538 ...` (our own `workbench desensitise` output
         of a txt corpus)
`auto` picks gaiic when the first non-blank line contains `|,|`, tsv for .tsv files, else
lines. Blank lines are skipped (they are not documents).

Problems are `InputError`s naming the file, the line and the fix: a token that is not a
non-negative integer, an id above `max_id` (when the corpus declares its id range), a
tsv without the text column, a file with no documents, a corpus with no ids at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import InputError

FORMATS = ("auto", "gaiic", "tsv", "lines")
GAIIC_SEP = "|,|"
_ONLY_IDS = re.compile(r"[0-9 \t]*")


@dataclass(slots=True)
class IdDoc:
    ids: list[int]
    line: int  # 1-based physical line
    fields: dict[str, str] = field(default_factory=dict)  # gaiic: report_id, labels; tsv: the other columns


def detect_format(path: str | Path) -> str:
    path = Path(path)
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if line.strip():
                if GAIIC_SEP in line:
                    return "gaiic"
                break
    return "tsv" if path.suffix.lower() == ".tsv" else "lines"


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


def read_id_corpus(path: str | Path, fmt: str = "auto", *, text_column: str = "text",
                   max_id: int | None = None) -> Iterator[IdDoc]:
    """Documents of one id-corpus file, streamed. Raises InputError (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file", "check the path in input=")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    if fmt == "auto":
        fmt = detect_format(path)
    n = 0
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = enumerate((ln.rstrip("\r\n") for ln in f), 1)
        header: list[str] | None = None
        text_idx = 0
        if fmt == "tsv":
            for no, line in lines:
                if line.strip():
                    header = line.split("\t")
                    break
            if header is None:
                raise InputError(path, "the file is empty", "remove it from input=")
            if text_column not in header:
                raise InputError(path, f"the header {header} has no column {text_column!r}",
                                 "set text_column to the column holding the ids (Tianchi: text)", line=1)
            text_idx = header.index(text_column)
        for no, line in lines:
            if not line.strip():
                continue
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
                fields = {h: v for j, (h, v) in enumerate(zip(header, parts)) if j != text_idx}
                text = parts[text_idx]
            else:
                fields, text = {}, line
            n += 1
            yield IdDoc(parse_ids(text, path, no, max_id), no, fields)
    if n == 0:
        raise InputError(path, "the file has no documents (empty, blank lines or only a header)",
                         "remove it from input=, or point input= at the id corpus")


def count_ids(paths: list[str | Path], fmt: str = "auto", *, text_column: str = "text",
              max_id: int | None = None) -> tuple[np.ndarray, dict]:
    """How often each id occurs over all files: (counts indexed by id, int64; stats).

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
