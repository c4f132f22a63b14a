"""Readers for fine-tuning data: classification, sentence pairs, multi-label, tagging.

Each reader returns plain records (dataclasses) that keep their source file and 1-based
line, so every later complaint (an unknown label in dev, an entity that does not fit)
can name the place to fix. Unlike the pretraining corpus readers, nothing here is
rejected and counted: a labelled dataset with a broken line is a broken dataset, so
problems raise ``InputError`` (file, line, problem, fix).

Formats
  - TSV / CSV with a header (columns by name) or without (columns by 0-based index).
    TSV is split on the delimiter with quoting OFF: Chinese text contains " and ' freely
    (ChnSentiCorp has 55 lines with quotes). CSV uses standard quoting. A multi-character
    delimiter (GAIIC's ``|,|``) works with quoting off.
  - JSONL, one object per line, with configurable keys.
  - CoNLL-style tagging files: ``char<space or tab>tag`` per line, a blank line between
    sentences (MSRA NER). The last sentence may lack the blank line; CRLF and a UTF-8
    BOM are fine. A line whose "character" is itself a space (``"  O"``) is read as that
    space.
  - CLUENER JSONL: ``{"text": ..., "label": {"TYPE": {"mention": [[start, end_incl]]}}}``.

Datasets as published (options of ``read_tagging``, config ``data.*``):
  - CoNLL files with more columns (``char_column`` / ``tag_column``), and Weibo NER's
    ``char+position`` field (``美0``: ``char_field="first"`` takes the character, the rest
    must be digits);
  - ``.NAM`` / ``.NOM`` type suffixes (Weibo NER: named / nominal mentions) kept as types of
    their own or folded (``type_suffix``), counted;
  - overlapping CLUENER entities: an error, or resolved by a stated policy (``overlap``:
    longest / first), the dropped ones counted per file;
  - encodings: ``encoding="auto"`` decides as ``prepare`` does (``corpus.readers.sniff_encoding``:
    a UTF-8 BOM or a valid UTF-8 start → UTF-8, else GB18030, which reads GBK / GB2312).
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import InputError
from workbench.tasks.tags import (
    Span,
    check_spans,
    parse_tag,
    scheme_of_prefixes,
    spans_to_tags,
    tags_to_spans,
)

log = logging.getLogger("workbench.tasks")

_NEWLINE = re.compile(r"\r\n|\r|\n")
_JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}


# --------------------------------------------------------------------------- records
@dataclass(slots=True)
class TextRecord:
    """One classification, sentence-pair or multi-label example."""

    text: str
    labels: tuple[str, ...]  # exactly one for classification/pair; 0..n for multi-label; () if unlabelled
    text_pair: str | None = None
    source: str = ""
    line: int = 0  # 1-based line of the record in `source`

    @property
    def label(self) -> str:
        """The single label of a classification / pair record."""
        if len(self.labels) != 1:
            raise ValueError(f"{self.source}, line {self.line}: expected one label, the record has {list(self.labels)}")
        return self.labels[0]


@dataclass(slots=True)
class TaggedRecord:
    """One tagging sentence: its text and entity spans over characters."""

    text: str
    spans: list[Span]  # sorted, non-overlapping (start, end_exclusive, type)
    source: str = ""
    line: int = 0  # 1-based line of the first character (CoNLL) or of the JSON object
    char_per_line: bool = False  # CoNLL: character i sits on line `line + i`

    def line_of(self, char_index: int) -> int:
        """The line to point a user at for character `char_index`."""
        return self.line + char_index if self.char_per_line else self.line

    def tags(self, scheme: str = "bio") -> list[str]:
        return spans_to_tags(self.spans, len(self.text), scheme)


@dataclass
class TaggedFile:
    """What a tagging reader found in one file."""

    path: str
    records: list[TaggedRecord]
    scheme: str  # 'bio' | 'bioes' | 'bmes' for CoNLL files, 'spans' for JSONL
    repaired: int = 0  # invalid tags turned into valid ones (only with repair=True)
    repairs: list[str] = field(default_factory=list)  # the first 20, as "line N: problem → repair"
    encoding: str = ""  # the codec the file was read with
    folded: int = 0  # entities whose .NAM/.NOM suffix was folded (type_suffix="fold")
    overlap: dict = field(default_factory=dict)  # CLUENER: {policy, records, dropped, examples} when any overlapped

    def report(self) -> dict:
        """What the manifest records about how the file was read (no corpus text)."""
        out = {"scheme": self.scheme, "encoding": self.encoding, "repaired": self.repaired}
        if self.folded:
            out["folded_suffixes"] = self.folded
        if self.overlap:
            out["overlap"] = self.overlap
        return out


# --------------------------------------------------------------------------- lines
def read_lines(path: str | Path, encoding: str = "utf-8", info: dict | None = None) -> list[str]:
    """The file's lines without line endings (\\n, \\r\\n or \\r), a UTF-8 BOM removed.

    `encoding="auto"`: UTF-8 or GB18030 as ``prepare`` decides (``sniff_encoding`` on the
    first MiB); the whole file must then decode in that codec. The codec used goes into
    `info["encoding"]` when `info` is given.
    Raises InputError for a missing, empty (or whitespace-only), UTF-16 or undecodable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file", "check the path in the task config (relative paths are relative to where you run workbench)")
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(path, "the file is UTF-16", f"convert it: iconv -f UTF-16 -t UTF-8 '{path}' > '{path.stem}.utf8{path.suffix}'", line=1)
    if encoding == "auto":
        from workbench.corpus.readers import sniff_encoding

        encoding, _ = sniff_encoding(path, "auto")  # a BOM, else UTF-8 if its first MiB decodes, else GB18030
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(path, f"bytes {raw[e.start:e.end]!r} are not valid {encoding}",
                         "convert the file to UTF-8 (e.g. iconv -f GB18030 -t UTF-8), or set the task's encoding "
                         "(data.encoding=gb18030 for GBK files)", line=line) from None
    if info is not None:
        info["encoding"] = encoding
    if not text.strip():
        raise InputError(path, "the file is empty", "point the task at a file with records")
    lines = _NEWLINE.split(text)
    if lines[-1] == "":
        lines.pop()  # the final line ending does not start another line
    return lines


def _is_jsonl(path: Path, fmt: str) -> bool:
    return fmt == "jsonl" or (fmt == "auto" and path.suffix.lower() in _JSONL_SUFFIXES)


def parse_json_line(path: Path, line_no: int, line: str) -> dict:
    if line_no == 1 and line.lstrip().startswith("["):
        raise InputError(path, "this is a JSON array, not JSON Lines (one object per line)",
                         f"convert it: jq -c '.[]' '{path}' > '{path.with_suffix('.jsonl').name}'", line=1)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON ({e.msg} at column {e.colno})", "fix the line; each line must be one JSON object", line=line_no) from None
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", "each line must be one JSON object", line=line_no)
    return obj


# --------------------------------------------------------------------------- text records
def read_text_records(
    path: str | Path,
    *,
    text: str | int = "text_a",
    label: str | int | None = "label",
    text_pair: str | int | None = None,
    multilabel: bool = False,
    label_delimiter: str = ",",
    header: bool = True,
    format: str = "auto",
    delimiter: str | None = None,
    encoding: str = "utf-8",
    info: dict | None = None,
) -> list[TextRecord]:
    """Classification / pair / multi-label records from a TSV, CSV or JSONL file.

    `text`, `label`, `text_pair` name the columns (or JSON keys); without a header they
    are 0-based column indices (ints or digit strings). `label=None` reads an unlabelled
    file. Multi-label labels are a JSON list, or a string split on `label_delimiter`
    (an empty string means no labels). `format`: auto (from the extension: .jsonl/.json →
    jsonl, .csv → csv, anything else tsv), tsv, csv or jsonl.
    """
    path = Path(path)
    if format not in ("auto", "tsv", "csv", "jsonl"):
        raise ValueError(f"format must be auto, tsv, csv or jsonl, not '{format}'")
    lines = read_lines(path, encoding, info)
    if _is_jsonl(path, format):
        records = _text_records_jsonl(path, lines, text, label, text_pair, multilabel, label_delimiter)
    else:
        fmt = format if format != "auto" else ("csv" if path.suffix.lower() == ".csv" else "tsv")
        records = _text_records_table(path, lines, fmt, text, label, text_pair, multilabel, label_delimiter, header, delimiter)
    if not records:
        raise InputError(path, "the file has no records (only a header or blank lines)", "point the task at a file with records")
    return records


def _labels_of(value, path: Path, line_no: int, multilabel: bool, delimiter: str, name) -> tuple[str, ...]:
    """Labels from a cell / JSON value: stripped strings, duplicates removed in order."""
    if multilabel:
        if isinstance(value, list):
            parts = [str(v).strip() for v in value]
        elif isinstance(value, str | int):
            # The cell's own leading/trailing whitespace is not an entry (GAIIC writes "15 ");
            # an empty entry between two delimiters ("2,,3") still is an error below.
            cell = str(value).strip()
            parts = [p.strip() for p in cell.split(delimiter)] if cell else []
        else:
            raise InputError(path, f"multi-label '{name}' is a {type(value).__name__}", "give a list or a delimited string", line=line_no)
        if any(not p for p in parts):
            raise InputError(path, f"empty label in '{value}'", f"remove the empty entry (labels are split on '{delimiter}')", line=line_no)
        return tuple(dict.fromkeys(parts))
    if isinstance(value, list | dict) or value is None:
        raise InputError(path, f"label '{name}' is {json.dumps(value, ensure_ascii=False)[:60]}, not a single value",
                         "give one label per record, or set multilabel=true", line=line_no)
    label = str(value).strip()
    if not label:
        raise InputError(path, f"the label column '{name}' is empty", "give every record a label (or label=None for an unlabelled file)", line=line_no)
    return (label,)


def _text_records_table(path, lines, fmt, text, label, text_pair, multilabel, label_delimiter, header, delimiter) -> list[TextRecord]:
    delim = delimiter if delimiter is not None else ("\t" if fmt == "tsv" else ",")
    if fmt == "csv":
        if len(delim) != 1:
            raise ValueError(f"a CSV delimiter must be one character, not '{delim}'; use format=tsv for '{delim}'")
        rows = _csv_rows(path, lines, delim)
    else:  # quoting off: every delimiter splits
        rows = ((i, line.split(delim)) for i, line in enumerate(lines, 1))
    wanted = {"text": text, "label": label, "text_pair": text_pair}
    wanted = {k: v for k, v in wanted.items() if v is not None}
    columns: dict[str, int] | None = None
    width: int | None = None
    records: list[TextRecord] = []
    for line_no, cells in rows:
        if all(not c.strip() for c in cells):
            continue  # blank line
        if columns is None:
            if header:
                names = [c.strip() for c in cells]
                missing = [str(v) for v in wanted.values() if str(v) not in names]
                if missing:
                    raise InputError(path, f"no column {missing} in the header; the columns are {names}",
                                     f"set the task's column names to some of {names}, or header=false if the file has no header row",
                                     line=line_no)
                columns = {k: names.index(str(v)) for k, v in wanted.items()}
                width = len(names)
                continue
            bad = [f"{k}={v!r}" for k, v in wanted.items() if not str(v).isdigit()]
            if bad:
                raise ValueError(f"without a header, columns are 0-based indices; got {', '.join(bad)}")
            columns = {k: int(v) for k, v in wanted.items()}
        if width is not None and len(cells) != width:
            hint = " (is there a tab inside the text?)" if fmt == "tsv" else ""
            raise InputError(path, f"{len(cells)} fields, the header has {width}{hint}",
                             "make every line have one field per header column", line=line_no)
        need = max(columns.values()) + 1
        if len(cells) < need:
            raise InputError(path, f"{len(cells)} fields, but column {need - 1} is needed ({columns})",
                             "check the column indices, or the delimiter", line=line_no)
        labels = _labels_of(cells[columns["label"]], path, line_no, multilabel, label_delimiter, label) if "label" in columns else ()
        records.append(TextRecord(cells[columns["text"]], labels, cells[columns["text_pair"]] if "text_pair" in columns else None,
                                  str(path), line_no))
    return records


def _csv_rows(path: Path, lines: list[str], delim: str):
    """(first line of the record, cells) with standard CSV quoting; records may span lines."""
    reader = csv.reader((line + "\n" for line in lines), delimiter=delim, strict=True)
    prev = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(path, f"CSV parse error: {e}", "fix the quoting, or read the file as tsv (quoting off)", line=prev + 1) from None
        start, prev = prev + 1, reader.line_num
        yield start, cells


def _text_records_jsonl(path, lines, text, label, text_pair, multilabel, label_delimiter) -> list[TextRecord]:
    records = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        obj = parse_json_line(path, line_no, line)
        for key in (text, label, text_pair):
            if key is not None and str(key) not in obj:
                raise InputError(path, f"no key '{key}' in the object; its keys are {list(obj)}",
                                 "set the task's text/label/text_pair keys to the file's keys", line=line_no)
        values = {k: obj[str(k)] for k in (text, text_pair) if k is not None}
        for key, value in values.items():
            if not isinstance(value, str):
                raise InputError(path, f"'{key}' is a {type(value).__name__}, not a string", "store the text as a JSON string", line=line_no)
        labels = _labels_of(obj[str(label)], path, line_no, multilabel, label_delimiter, label) if label is not None else ()
        records.append(TextRecord(values[text], labels, values.get(text_pair) if text_pair is not None else None, str(path), line_no))
    return records


# --------------------------------------------------------------------------- tagging
def read_tagging(path: str | Path, *, format: str = "auto", repair: bool = False, text_key: str = "text",
                 label_key: str = "label", encoding: str = "utf-8", char_column: int | None = None,
                 tag_column: int | None = None, char_field: str = "exact", type_suffix: str = "keep",
                 overlap: str = "error") -> TaggedFile:
    """A tagging file: CLUENER JSONL (.jsonl/.json, or format=jsonl) or CoNLL (anything else).
    See the module docstring for the options that read datasets as published."""
    path = Path(path)
    if format not in ("auto", "conll", "jsonl"):
        raise ValueError(f"format must be auto, conll or jsonl, not '{format}'")
    if _is_jsonl(path, format):
        return read_cluener(path, text_key=text_key, label_key=label_key, encoding=encoding, type_suffix=type_suffix,
                            overlap=overlap)
    return read_conll(path, repair=repair, encoding=encoding, char_column=char_column, tag_column=tag_column,
                      char_field=char_field, type_suffix=type_suffix)


_NAM_NOM = re.compile(r"\.(NAM|NOM)$", re.IGNORECASE)


def fold_type_suffix(entity_type: str) -> str:
    """'PER.NAM' / 'PER.NOM' → 'PER'; other types unchanged."""
    return _NAM_NOM.sub("", entity_type)


def _conll_fields(path: Path, line_no: int, line: str, char_column: int, tag_column: int) -> tuple[str, str]:
    """(character field, tag) of a line with several columns, split on tabs (or spaces when there is no tab)."""
    parts = line.split("\t") if "\t" in line else line.split()
    width = len(parts)
    if not (-width <= char_column < width and -width <= tag_column < width):
        raise InputError(path, f"{width} field(s) on the line; data.char_column={char_column} / data.tag_column="
                         f"{tag_column} name a column it does not have",
                         "set data.char_column and data.tag_column to the file's columns (0-based; -1 = the last)",
                         line=line_no)
    return parts[char_column].strip() or " ", parts[tag_column]


def _split_conll_line(path: Path, line_no: int, line: str, char_column: int | None = None,
                      tag_column: int | None = None, char_field: str = "exact") -> tuple[str, str]:
    """'中 B-LOC' / '中\\tB-LOC' → ('中', 'B-LOC'); '  O' → (' ', 'O'); with columns, the named ones."""
    if char_column is not None and tag_column is not None:
        char, tag = _conll_fields(path, line_no, line, char_column, tag_column)
        return _one_char(path, line_no, char, char_field), tag.strip()
    if "\t" in line:
        parts = line.split("\t")
        if len(parts) != 2:
            raise InputError(path, f"{len(parts)} tab-separated fields; expected a character and its tag",
                             "write one 'char<TAB>tag' pair per line, or name the columns: data.char_column=0 "
                             "data.tag_column=-1", line=line_no)
        char, tag = parts
    else:
        cut = line.rstrip().rfind(" ")
        if cut < 0:
            raise InputError(path, f"no tag on the line ({line!r})", "write 'char tag' (space or tab separated), or a blank line between sentences", line=line_no)
        char, tag = line[:cut], line[cut + 1:]
        if char.strip():  # a visible character, possibly padded: '中  O'
            char = char.strip()
        else:  # the character is itself whitespace: ' O' / '　 O'
            char = char[:1] if char else " "
    return _one_char(path, line_no, char, char_field), tag.strip()


def _one_char(path: Path, line_no: int, char: str, char_field: str) -> str:
    """The character of a CoNLL character field; char_field="first" reads Weibo's `美0` as 美."""
    if len(char) == 1:
        return char
    if char_field == "first" and len(char) > 1 and char[1:].isdigit():
        return char[0]
    weibo = len(char) > 1 and char[1:].isdigit()
    fix = ("this looks like Weibo NER's char+position field: set data.char_field=first" if weibo and char_field != "first"
           else "write one character per line (split multi-character tokens: B- on the first, I- on the rest); "
                "a file with more columns: set data.char_column / data.tag_column")
    raise InputError(path, f"expected one character before the tag, got {char!r} ({len(char)} characters)"
                     + (" (char_field=first takes one character followed by digits only)" if char_field == "first" else ""),
                     fix, line=line_no)


def read_conll(path: str | Path, *, repair: bool = False, encoding: str = "utf-8", char_column: int | None = None,
               tag_column: int | None = None, char_field: str = "exact", type_suffix: str = "keep") -> TaggedFile:
    """Sentences from a char-per-line tagging file, with the scheme detected for the file.

    The scheme (BIO / BIOES / BMES) is decided once per file from the prefixes it uses;
    mixing I- and M- is an error naming the first line of each. Invalid sequences (an
    I-X that continues nothing, a BIOES entity without its E-X) are errors unless
    `repair` is true, which applies the fixes described in ``tags_to_spans`` and reports
    how many it made (logged, and in ``TaggedFile.repaired``). Columns, the ``char+position``
    field and ``.NAM``/``.NOM`` folding: see the module docstring.
    """
    path = Path(path)
    info: dict = {}
    lines = read_lines(path, encoding, info)
    folded = 0
    sentences: list[tuple[int, list[str], list[str]]] = []  # (line of first char, chars, tags)
    first_seen: dict[str, int] = {}  # tag prefix → first line it appears on
    chars: list[str] = []
    tags: list[str] = []
    start = 0
    for line_no, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if chars:
                sentences.append((start, chars, tags))
                chars, tags = [], []
            continue
        char, tag = _split_conll_line(path, line_no, line, char_column, tag_column, char_field)
        try:
            prefix, typ = parse_tag(tag)
        except ValueError as e:
            raise InputError(path, str(e), "use tags like O, B-PER, I-PER (BIO), E-/S- (BIOES) or M-/E-/S- (BMES)", line=line_no) from None
        if type_suffix == "fold" and typ is not None and fold_type_suffix(typ) != typ:
            tag = tag[:2] + fold_type_suffix(typ)
            folded += prefix in "BSU"  # one count per entity: at its first tag (I-only starts are repairs)
        if prefix != "O":
            first_seen.setdefault(prefix, line_no)
        if not chars:
            start = line_no
        chars.append(char)
        tags.append(tag)
    if chars:  # the last sentence may lack its blank line
        sentences.append((start, chars, tags))
    if not sentences:
        raise InputError(path, "the file has no sentences", "write one 'char tag' per line, sentences separated by blank lines")

    try:
        scheme = scheme_of_prefixes({p: f"line {n}" for p, n in first_seen.items()})
    except ValueError as e:
        raise InputError(path, str(e), "convert the file to one scheme (all BIO/BIOES, or all BMES)",
                         line=max(first_seen["I"], first_seen["M"])) from None
    evidence = {"bio": "only B-/I- tags", "bioes": "E-/S- tags", "bmes": "M- tags"}[scheme]
    records, repairs, repaired = [], [], 0
    for start, chars, tags in sentences:
        spans, problems = tags_to_spans(tags, scheme)
        if problems and not repair:
            p = problems[0]
            raise InputError(path, f"{p.problem} [scheme {scheme.upper()}: the file has {evidence}]",
                             f"fix the tag, or set repair=true to read it as described ({p.repair}; repairs are counted and reported)",
                             line=start + p.index)
        repaired += len(problems)
        repairs += [f"line {start + p.index}: {p.problem} → {p.repair}" for p in problems][: max(0, 20 - len(repairs))]
        records.append(TaggedRecord("".join(chars), spans, str(path), start, char_per_line=True))
    if repaired:
        log.warning("%s: repaired %d invalid tag(s), e.g. %s", path, repaired, repairs[0])
    return TaggedFile(str(path), records, scheme, repaired, repairs, encoding=info.get("encoding", encoding), folded=folded)


def read_cluener(path: str | Path, *, text_key: str = "text", label_key: str = "label", encoding: str = "utf-8",
                 type_suffix: str = "keep", overlap: str = "error") -> TaggedFile:
    """CLUENER-style JSONL: ``{"text": ..., "label": {TYPE: {mention: [[start, end_inclusive], ...]}}}``.

    Offsets are checked against the mention text. A line without `label_key` (or with
    null) has no entities, as in CLUENER's unlabelled test file; if no line at all has the
    key, the key is probably misconfigured and that is an error. An exact duplicate is kept
    once. Overlapping entities (flat tags cannot nest them): `overlap="error"` stops at the
    first; "longest" / "first" keep one of each overlapping group (``resolve_overlaps``),
    and ``TaggedFile.overlap`` counts what was dropped.
    """
    path = Path(path)
    records: list[TaggedRecord] = []
    label_seen = False
    first_keys: list[str] = []
    info: dict = {}
    stats = {"policy": overlap, "records": 0, "dropped": 0, "examples": []}
    folded = 0
    for line_no, line in enumerate(read_lines(path, encoding, info), 1):
        if not line.strip():
            continue
        obj = parse_json_line(path, line_no, line)
        first_keys = first_keys or list(obj)
        text = obj.get(text_key)
        if not isinstance(text, str):
            what = f"no key '{text_key}' (keys: {list(obj)})" if text_key not in obj else f"'{text_key}' is not a string"
            raise InputError(path, what, "set the task's text_key", line=line_no)
        label = obj.get(label_key)
        label_seen = label_seen or label_key in obj
        spans, n_folded = _cluener_spans(path, line_no, text, label or {}, label_key, type_suffix, overlap, stats)
        folded += n_folded
        records.append(TaggedRecord(text, spans, str(path), line_no))
    if not records:
        raise InputError(path, "the file has no records", "write one JSON object per line")
    if not label_seen:
        raise InputError(path, f"no object has the key '{label_key}' (keys of the first object: {first_keys})",
                         "set the task's label_key to the key holding the entities")
    if stats["records"]:
        log.warning("%s: %d record(s) with overlapping entities; overlap=%s dropped %d entities", path,
                    stats["records"], overlap, stats["dropped"])
    return TaggedFile(str(path), records, "spans", encoding=info.get("encoding", encoding), folded=folded,
                      overlap=stats if stats["records"] else {})


def resolve_overlaps(spans, policy: str) -> tuple[list[Span], list[Span]]:
    """(kept, dropped) for entity spans that may overlap, greedily by the policy's order:
    "longest" takes longer spans first (ties: the leftmost), "first" the leftmost first
    (ties: the longer); a span overlapping one already kept is dropped."""
    if policy == "longest":
        order = sorted(spans, key=lambda x: (-(x[1] - x[0]), x[0], x[2]))
    elif policy == "first":
        order = sorted(spans, key=lambda x: (x[0], -(x[1] - x[0]), x[2]))
    else:
        raise ValueError(f"overlap policy must be longest or first, not '{policy}'")
    kept: list[Span] = []
    dropped: list[Span] = []
    for s, e, t in order:
        (dropped if any(s < ke and ks < e for ks, ke, _ in kept) else kept).append((s, e, t))
    return sorted(kept), sorted(dropped)


def _cluener_spans(path: Path, line_no: int, text: str, label, label_key: str, type_suffix: str = "keep",
                   overlap: str = "error", stats: dict | None = None) -> tuple[list[Span], int]:
    fix = f"'{label_key}' must be {{TYPE: {{mention: [[start, end_inclusive], ...]}}}}"
    folded = 0
    if not isinstance(label, dict):
        raise InputError(path, f"'{label_key}' is a {type(label).__name__}", fix, line=line_no)
    spans: set[Span] = set()
    for typ, mentions in label.items():
        if not isinstance(mentions, dict):
            raise InputError(path, f"entities of type '{typ}' are a {type(mentions).__name__}", fix, line=line_no)
        for mention, offsets in mentions.items():
            if not isinstance(offsets, list) or not all(isinstance(o, list) and len(o) == 2 and all(isinstance(x, int) for x in o) for o in offsets):
                raise InputError(path, f"offsets of '{mention}' ({typ}) are {offsets!r}", fix, line=line_no)
            for s, e in offsets:
                if not (0 <= s <= e < len(text)) or text[s:e + 1] != mention:
                    found = text[s:e + 1] if 0 <= s <= e else ""
                    raise InputError(path, f"{typ} '{mention}' at [{s}, {e}] but the text there is '{found}'",
                                     "offsets are 0-based [start, end] with the end INCLUSIVE; fix them to point at the mention",
                                     line=line_no)
                if type_suffix == "fold" and fold_type_suffix(typ) != typ:
                    folded += 1
                spans.add((s, e + 1, fold_type_suffix(typ) if type_suffix == "fold" else typ))
    if overlap != "error":
        kept, dropped = resolve_overlaps(spans, overlap)
        if dropped and stats is not None:
            stats["records"] += 1
            stats["dropped"] += len(dropped)
            if len(stats["examples"]) < 20:  # types and offsets only: no corpus text in a manifest
                stats["examples"].append(f"line {line_no}: kept {kept}, dropped {dropped}")
        spans = set(kept)
    try:
        return check_spans(spans, len(text)), folded
    except ValueError as e:
        raise InputError(path, str(e), "keep one of the overlapping entities (flat tagging has one tag per character), "
                         "or set data.overlap=longest|first to resolve them by that policy (counted)", line=line_no) from None
