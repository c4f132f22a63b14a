"""Streaming readers for corpus files: txt, jsonl, csv/tsv, parquet (optionally .gz/.bz2/.xz).

Each reader yields one ``Row`` per input record, never holding more than a line (text
formats) or a record batch (parquet) in memory. A record that cannot be used becomes a
``Row`` with ``reject`` set (a reason code) and ``detail`` (what exactly), so the prepare
stage can count it and write it to ``rejects.jsonl``; nothing is dropped silently.
Problems that concern the whole file (binary data, a missing column, a bad header) raise
``InputError`` naming the file, the line and the fix.

What counts as a row: a non-blank line (txt, line mode), a paragraph (txt, paragraph
mode), a non-blank jsonl line, a csv/tsv record after the header, a parquet row. Blank
lines are not rows; their number is reported separately.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import hashlib
import json
import lzma
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from workbench.config import ReadConfig
from workbench.errors import InputError
from workbench.manifest import MANIFEST, sha256_file

_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_FORMATS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
            ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_SNIFF_BYTES = 1 << 20
_CHUNK = 1 << 20
_NEWLINE = re.compile(rb"\r\n|\r|\n")


@dataclass(slots=True)
class Row:
    source: str
    row: int  # 1-based record number within the file
    line: int | None  # 1-based physical line where the record starts (text formats)
    text: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    reject: str | None = None  # reason code when the record cannot be used
    detail: str = ""


@dataclass
class FileStats:
    """What the manifest records about one input file."""

    path: str
    format: str
    encoding: str | None
    bytes: int = 0
    sha256: str = ""
    rows: int = 0
    blank_lines: int = 0
    lines: int = 0  # physical lines read (a byte range's count puts the next range's line numbers right)
    field_seen: bool = False  # jsonl: some object has read.text_field (checked over the whole file)
    first_keys: list[str] | None = None  # jsonl: the keys of the first object, for that error


# --------------------------------------------------------------------------- inputs
def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files named by paths, folders (recursive, hidden files skipped) and globs, in order."""
    out: list[Path] = []
    for pattern in patterns:
        p = Path(pattern)
        if any(ch in pattern for ch in "*?["):
            anchor = Path(p.anchor) if p.is_absolute() else Path(".")
            rel = str(p.relative_to(p.anchor)) if p.is_absolute() else pattern
            # Like the shell, globs skip hidden files (.DS_Store, editor swap files).
            matches = sorted(m for m in anchor.glob(rel) if m.is_file() and not m.name.startswith("."))
            if not matches:
                raise InputError(pattern, "the glob matches no file", "check the pattern (quote it so the shell does not expand it)")
            out += matches
        elif p.is_dir():
            if (p / MANIFEST).exists():
                raise InputError(
                    pattern,
                    "this is a workbench stage output (it has a manifest.json), not a corpus",
                    "give prepare the raw corpus files; later stages take this directory as input=",
                )
            files = sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                raise InputError(pattern, "the folder contains no files", "point input= at the corpus files")
            out += files
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(pattern, "no such file or folder", "check the path in prepare.input (relative paths are relative to where you run workbench)")
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def detect_format(path: Path, configured: str) -> str:
    if configured != "auto":
        return configured
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise InputError(path, f"cannot tell the format from the extension '{''.join(path.suffixes)}'",
                         "set prepare.read.format to txt, jsonl, csv, tsv or parquet")
    return fmt


def _open_binary(path: Path) -> BinaryIO:
    opener = _COMPRESSED.get(path.suffix.lower())
    return opener(path, "rb") if opener else open(path, "rb")


# --------------------------------------------------------------------------- encoding
def sniff_encoding(path: Path, configured: str) -> tuple[str, int]:
    """(codec, BOM length) for a text file; raises InputError for binary or UTF-16 data."""
    with _open_binary(path) as f:
        sample = f.read(_SNIFF_BYTES)
    if sample.startswith(codecs.BOM_UTF8):
        return ("utf-8" if configured in ("auto", "utf-8", "utf-8-sig") else configured), len(codecs.BOM_UTF8)
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(path, "the file is UTF-16 (it starts with a UTF-16 byte-order mark)",
                         f"convert it: iconv -f UTF-16 -t UTF-8 '{path}' > '{path.stem}.utf8{path.suffix}'", line=1)
    nul = sample.find(b"\x00")
    if nul >= 0:
        line = sample.count(b"\n", 0, nul) + 1
        raise InputError(path, f"binary data: NUL byte at offset {nul}; this is not a text corpus file",
                         "remove it from input=, or decompress it first (.gz/.bz2/.xz are read directly)", line=line)
    if configured != "auto":
        return configured, 0
    # A multi-byte character may be cut at the end of the sample: decode incrementally.
    for codec in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(codec)().decode(sample, final=len(sample) < _SNIFF_BYTES)
            return codec, 0
        except UnicodeDecodeError:
            pass
    # Neither decodes cleanly: take the one with fewer bad bytes; bad rows get rejected.
    bad = {c: sample.decode(c, errors="replace").count("\ufffd") for c in ("utf-8", "gb18030")}
    return min(bad, key=bad.get), 0


# --------------------------------------------------------------------------- lines
def _physical_lines(
    f: BinaryIO, stats: FileStats, advance: Callable[[int], None], skip: int, max_line_bytes: int,
    hashed: bool = True,
) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes without the line ending) for \\n, \\r\\n and \\r endings alike.

    A line longer than `max_line_bytes` is yielded as None and never held in memory.
    Also hashes every byte read into `stats` (unless `hashed` is false: a byte range of a
    file, hashed whole elsewhere) and reports progress through `advance`.
    """
    h = hashlib.sha256() if hashed else None
    buf = b""
    more: list[bytes] = []  # chunks of a line still open, joined to buf only once its end arrives:
    more_len = 0  # buf += chunk and re-splitting buf per chunk would be quadratic in the line length
    line_no = 0
    overlong = False
    first = True
    while True:
        chunk = f.read(_CHUNK)
        if chunk:
            if h is not None:
                h.update(chunk)
            stats.bytes += len(chunk)
            advance(len(chunk))
            if first:
                chunk, first = chunk[skip:], False
        if chunk and b"\n" not in chunk and b"\r" not in chunk and not buf.endswith(b"\r"):
            if not overlong:  # an overlong line is yielded as None: its bytes are not kept
                more.append(chunk)
                more_len += len(chunk)
                if len(buf) + more_len > max_line_bytes:
                    overlong, buf, more, more_len = True, b"", [], 0
            continue
        if more:
            buf, more, more_len = b"".join([buf, *more]), [], 0
        buf += chunk
        if chunk and buf.endswith(b"\r"):
            # Could be the first half of \r\n: wait for the next chunk, unless that is empty.
            keep_cr = True
        else:
            keep_cr = False
        parts = _NEWLINE.split(buf[:-1] if keep_cr else buf)
        tail = parts.pop()  # text after the last line ending (possibly incomplete)
        for part in parts:
            line_no += 1
            if overlong or len(part) > max_line_bytes:
                overlong = False
                yield line_no, None
            else:
                yield line_no, part
        buf = tail + (b"\r" if keep_cr else b"")
        if len(buf) > max_line_bytes:
            overlong, buf = True, b""
        if not chunk:
            break
    if buf or overlong:
        line_no += 1
        yield line_no, (None if overlong else buf)
    stats.lines = line_no
    if h is not None:
        stats.sha256 = h.hexdigest()


def _decode(raw: bytes, encoding: str, on_error: str) -> tuple[str, str | None]:
    """(text, problem or None)."""
    try:
        return raw.decode(encoding), None
    except UnicodeDecodeError as e:
        problem = f"bytes {e.start}-{e.end} of the line are not valid {encoding}: {raw[e.start:e.end]!r}"
        return raw.decode(encoding, errors="replace"), (problem if on_error == "reject" else None)


# --------------------------------------------------------------------------- readers
def read_file(path: Path, cfg: ReadConfig, advance: Callable[[int], None] = lambda n: None) -> tuple[FileStats, Iterator[Row]]:
    """Stats (filled in as the rows are consumed) and the row iterator for one file."""
    fmt = detect_format(path, cfg.format)
    if fmt == "parquet":
        stats = FileStats(str(path), fmt, None)
        return stats, _checked(path, cfg, stats, _read_parquet(path, cfg, stats, advance))
    encoding, bom = sniff_encoding(path, cfg.encoding)
    stats = FileStats(str(path), fmt, encoding)
    reader = {"txt": _read_txt, "jsonl": _read_jsonl, "csv": _read_csv, "tsv": _read_csv}[fmt]
    return stats, _checked(path, cfg, stats, reader(path, cfg, stats, advance, encoding, bom, fmt))


# --------------------------------------------------------------------------- byte ranges
# prepare's worker processes read large txt (line mode) and jsonl files themselves, each a
# byte range that ends just after a b"\n": the main process then only plans the ranges and
# writes results instead of decoding every line and shipping it to a worker. Row and line
# numbers come back numbered from 1 within the range; the caller, taking the ranges in
# order, adds the rows and lines of the ranges before (FileStats.rows / .lines). A "\n" byte
# ends a line in UTF-8, GB18030 and every ASCII-compatible encoding (never inside a
# multi-byte character), and "\r\n" stays whole: a cut after "\n" is a line boundary.
# Files with only "\r" endings find no cut and stay one range.


def splittable(path: Path, cfg: ReadConfig) -> bool:
    """Whether `read_range` can read parts of this file: uncompressed txt in line mode or jsonl."""
    if path.suffix.lower() in _COMPRESSED:
        return False
    fmt = detect_format(path, cfg.format)
    return fmt == "jsonl" or (fmt == "txt" and cfg.txt_documents == "line")


def plan_ranges(path: Path, target: int) -> Iterator[tuple[int, int]]:
    """[start, end) byte ranges of about `target` bytes covering the file, each but the last
    ending just after a b"\n" (an overlong line makes its range longer). Lazy: on a 100 GB
    file the first range is handed out before the later cuts are looked for."""
    size = path.stat().st_size
    pos = 0
    with open(path, "rb") as f:
        while pos + target < size:
            f.seek(pos + target - 1)  # a cut just after a "\n" at pos + target - 1 lands on pos + target
            cut, probe = None, 1 << 13
            while cut is None:
                piece = f.read(probe)
                if not piece:
                    break
                i = piece.find(b"\n")
                if i >= 0:
                    cut = f.tell() - len(piece) + i + 1
                probe = min(probe * 2, 1 << 20)
            if cut is None or cut >= size:
                break
            yield pos, cut
            pos = cut
    yield pos, size


class _ByteRange:
    """A read-only binary file object over [start, end) of an uncompressed file."""

    def __init__(self, path: Path, start: int, end: int):
        self._f = open(path, "rb")
        self._f.seek(start)
        self._left = end - start

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def read_range(path: Path, cfg: ReadConfig, encoding: str, bom: int, start: int, end: int) -> tuple[FileStats, Iterator[Row]]:
    """Stats and rows of one byte range from `plan_ranges` (rows and lines numbered from 1 in
    the range; the whole-file checks are the caller's: `check_rows`, `check_jsonl_field`)."""
    fmt = detect_format(path, cfg.format)
    stats = FileStats(str(path), fmt, encoding)
    reader = {"txt": _read_txt, "jsonl": _read_jsonl}[fmt]
    rows = reader(path, cfg, stats, lambda n: None, encoding, bom, fmt, (start, end))

    def counted() -> Iterator[Row]:
        for r in rows:
            stats.rows += 1
            yield r

    return stats, counted()


def check_rows(path: Path, cfg: ReadConfig, stats: FileStats) -> None:
    """A file without rows is an error unless read.allow_empty_files (stats of the whole file)."""
    if stats.rows == 0 and not cfg.allow_empty_files:
        what = "is empty" if stats.bytes == 0 else "has no rows (only blank lines or a header)"
        raise InputError(path, f"the file {what}", "remove it from input=, or set prepare.read.allow_empty_files=true")


def _checked(path: Path, cfg: ReadConfig, stats: FileStats, rows: Iterator[Row]) -> Iterator[Row]:
    for r in rows:
        stats.rows += 1
        yield r
    check_rows(path, cfg, stats)


def _lines(path, cfg, stats, advance, encoding, bom, span=None):
    """Decoded physical lines: (line number, text or None, problem or None). With `span`
    (start, end): the lines of that byte range of an uncompressed file, numbered from 1."""
    with _open_binary(path) if span is None else _ByteRange(path, *span) as f:
        skip = bom if span is None or span[0] == 0 else 0
        for line_no, raw in _physical_lines(f, stats, advance, skip, cfg.max_line_bytes, hashed=span is None):
            if raw is None:
                yield line_no, None, f"line longer than read.max_line_bytes={cfg.max_line_bytes}"
            else:
                text, problem = _decode(raw, encoding, cfg.on_decode_error)
                yield line_no, text, problem


def _read_txt(path, cfg, stats, advance, encoding, bom, fmt, span=None) -> Iterator[Row]:
    src = str(path)
    if cfg.txt_documents == "line":
        row = 0
        for line_no, text, problem in _lines(path, cfg, stats, advance, encoding, bom, span):
            if text is not None and not text.strip() and problem is None:
                stats.blank_lines += 1
                continue
            row += 1
            yield _row_or_reject(src, row, line_no, text, problem)
        return
    # Paragraph mode: a document is a run of non-blank lines.
    assert span is None, "paragraph mode is read whole (a paragraph may cross any line)"
    row, start, buf, problems = 0, None, [], []
    for line_no, text, problem in _lines(path, cfg, stats, advance, encoding, bom):
        if text is not None and not text.strip() and problem is None:
            stats.blank_lines += 1
            if buf or problems:
                row += 1
                yield _row_or_reject(src, row, start, "\n".join(buf), "; ".join(problems) or None)
                start, buf, problems = None, [], []
            continue
        start = start or line_no
        buf.append(text or "")
        if problem:
            problems.append(f"line {line_no}: {problem}")
    if buf or problems:
        row += 1
        yield _row_or_reject(src, row, start, "\n".join(buf), "; ".join(problems) or None)


def _row_or_reject(src: str, row: int, line: int, text: str | None, problem: str | None) -> Row:
    if problem is None:
        return Row(src, row, line, text)
    reason = "line_too_long" if text is None else "undecodable"
    return Row(src, row, line, text, reject=reason, detail=problem)


def _read_jsonl(path, cfg, stats, advance, encoding, bom, fmt, span=None) -> Iterator[Row]:
    """Rows of a JSON Lines file; with `span`, of that byte range (the whole-file checks,
    a JSON array and a text_field no object has, are then the caller's: see FileStats)."""
    src, row = str(path), 0
    first_range = span is None or span[0] == 0
    for line_no, text, problem in _lines(path, cfg, stats, advance, encoding, bom, span):
        if text is not None and not text.strip() and problem is None:
            stats.blank_lines += 1
            continue
        row += 1
        if problem:
            yield _row_or_reject(src, row, line_no, text, problem)
            continue
        if row == 1 and first_range and text.lstrip().startswith("["):
            raise InputError(path, "this is a JSON array, not JSON Lines (one object per line)",
                             f"convert it: jq -c '.[]' '{path}' > '{path.with_suffix('.jsonl').name}'", line=line_no)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield Row(src, row, line_no, text, reject="invalid_json", detail=f"{e.msg} at column {e.colno}")
            continue
        if not isinstance(obj, dict):
            yield Row(src, row, line_no, text, reject="jsonl_not_object",
                      detail=f"expected a JSON object with key '{cfg.text_field}', got {type(obj).__name__}")
            continue
        if stats.first_keys is None:
            stats.first_keys = list(obj)
        value = obj.get(cfg.text_field)
        fields = {k: obj.get(k) for k in cfg.keep_fields}
        if cfg.text_field not in obj or value is None:
            yield Row(src, row, line_no, text, fields, reject="missing_field", detail=f"no '{cfg.text_field}' key")
            continue
        stats.field_seen = True
        if not isinstance(value, str):
            yield Row(src, row, line_no, text, fields, reject="text_not_string",
                      detail=f"'{cfg.text_field}' is a {type(value).__name__}")
            continue
        yield Row(src, row, line_no, value, fields)
    if span is None:
        check_jsonl_field(path, cfg, stats)


def check_jsonl_field(path, cfg: ReadConfig, stats: FileStats) -> None:
    """A jsonl file whose objects all lack read.text_field is a config mistake, not rows to reject."""
    if stats.rows and stats.first_keys is not None and not stats.field_seen:
        raise InputError(path, f"no object in the file has the key '{cfg.text_field}' (keys of the first object: "
                         f"{stats.first_keys})", "set prepare.read.text_field to the key that holds the text")


def _read_csv(path, cfg, stats, advance, encoding, bom, fmt) -> Iterator[Row]:
    src = str(path)
    delimiter = cfg.delimiter or ("\t" if fmt == "tsv" else ",")
    multi = len(delimiter) > 1  # e.g. GAIIC's "|,|": csv.reader takes one character, so it
    quoting = cfg.quoting if cfg.quoting != "auto" else ("csv" if fmt == "csv" and not multi else "none")
    bad_lines: dict[int, str] = {}

    def text_lines() -> Iterator[str]:
        for line_no, text, problem in _lines(path, cfg, stats, advance, encoding, bom):
            if problem:
                bad_lines[line_no] = problem
            text = text or ""
            if multi:  # ... reads the line with the separator replaced by U+001F (never in text)
                if "\x1f" in text:
                    bad_lines[line_no] = "contains U+001F, which a multi-character read.delimiter needs free"
                text = text.replace(delimiter, "\x1f")
            yield text + "\n"

    reader = csv.reader(
        text_lines(), delimiter="\x1f" if multi else delimiter, strict=True,
        quoting=csv.QUOTE_MINIMAL if quoting == "csv" else csv.QUOTE_NONE,
        **({"quotechar": None} if quoting == "none" else {}),
    )
    quote_hint = "" if quoting == "none" else " (if the text has stray quotes, set prepare.read.quoting=none)"
    header: list[str] | None = None
    text_idx: int | None = None
    keep_idx: dict[str, int] = {}
    row = 0
    prev_line = 0
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            row += 1
            start, prev_line = prev_line + 1, reader.line_num
            yield Row(src, row, start, None, reject="csv_parse_error", detail=f"lines {start}-{reader.line_num}: {e}{quote_hint}")
            continue
        start, end = prev_line + 1, reader.line_num
        prev_line = end
        if not rec or rec == [""] or all(not c.strip() for c in rec):
            stats.blank_lines += end - start + 1
            continue
        if header is None and cfg.header:
            header = [c.strip() for c in rec]
            if cfg.text_field not in header:
                raise InputError(path, f"no column '{cfg.text_field}' in the header {header}",
                                 f"set prepare.read.text_field to one of {header}, or read.header=false if the file has no header", line=start)
            missing = [k for k in cfg.keep_fields if k not in header]
            if missing:
                raise InputError(path, f"keep_fields {missing} are not in the header {header}",
                                 "fix prepare.read.keep_fields", line=start)
            text_idx = header.index(cfg.text_field)
            keep_idx = {k: header.index(k) for k in cfg.keep_fields}
            continue
        if text_idx is None:  # no header: columns are numbered from 0
            text_idx = int(cfg.text_field)
            keep_idx = {k: int(k) for k in cfg.keep_fields if k.isdigit()}
        row += 1
        bad = [f"line {n}: {bad_lines.pop(n)}" for n in range(start, end + 1) if n in bad_lines]
        if bad:
            yield Row(src, row, start, ",".join(rec)[:200], reject="undecodable", detail="; ".join(bad))
            continue
        if end - start + 1 > cfg.max_record_lines:
            yield Row(src, row, start, None, reject="csv_unbalanced_quote",
                      detail=f"one record spans lines {start}-{end} (more than read.max_record_lines={cfg.max_record_lines}){quote_hint}")
            continue
        if header is not None and len(rec) != len(header):
            yield Row(src, row, start, delimiter.join(rec), reject="csv_field_count",
                      detail=f"{len(rec)} fields, header has {len(header)}{quote_hint}")
            continue
        if text_idx >= len(rec):
            yield Row(src, row, start, delimiter.join(rec), reject="csv_missing_column",
                      detail=f"{len(rec)} fields, text column {text_idx} is missing")
            continue
        fields = {k: (rec[i] if i < len(rec) else None) for k, i in keep_idx.items()}
        yield Row(src, row, start, rec[text_idx], fields)


def _read_parquet(path: Path, cfg: ReadConfig, stats: FileStats, advance) -> Iterator[Row]:
    import pyarrow.parquet as pq

    src = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for non-parquet data
        raise InputError(path, f"not a readable parquet file ({e})", "check the file, or set prepare.read.format") from None
    names = pf.schema_arrow.names
    missing = [c for c in [cfg.text_field, *cfg.keep_fields] if c not in names]
    if missing:
        raise InputError(path, f"columns {missing} are not in the parquet schema {names}",
                         "set prepare.read.text_field / keep_fields to existing columns")
    stats.bytes = path.stat().st_size
    stats.sha256 = sha256_file(path)
    row = 0
    bytes_per_row = stats.bytes / max(pf.metadata.num_rows, 1)
    for batch in pf.iter_batches(batch_size=4096, columns=[cfg.text_field, *cfg.keep_fields]):
        cols = batch.to_pydict()
        texts = cols[cfg.text_field]
        for i, value in enumerate(texts):
            row += 1
            fields = {k: cols[k][i] for k in cfg.keep_fields}
            if value is None:
                yield Row(src, row, None, None, fields, reject="missing_field", detail=f"'{cfg.text_field}' is null")
            elif not isinstance(value, str):
                yield Row(src, row, None, None, fields, reject="text_not_string", detail=f"'{cfg.text_field}' is {type(value).__name__}")
            else:
                yield Row(src, row, None, value, fields)
        advance(int(bytes_per_row * len(texts)))
