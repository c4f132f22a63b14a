"""Config of `prepare`: reading, cleaning, deduplicating and splitting a corpus."""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import field_validator

from workbench.config._base import Section, StageConfig, _as_list, _shard_size_problems, shard_bytes


class ReadConfig(Section):
    format: Literal["auto", "txt", "jsonl", "csv", "tsv", "parquet"] = "auto"
    """File format. `auto` decides by extension: .txt, .jsonl/.json, .csv, .tsv, .parquet (each optionally .gz/.bz2/.xz)."""
    txt_documents: Literal["line", "paragraph"] = "line"
    """txt: one document per line, or documents separated by blank lines."""
    text_field: str = "text"
    """jsonl key / csv, tsv, parquet column that holds the text. With `header: false`, a 0-based column number."""
    keep_fields: list[str] = []
    """Other keys/columns copied unchanged into the dataset, e.g. `[label]`."""
    header: bool = True
    """csv/tsv: the first record names the columns."""
    quoting: Literal["auto", "csv", "none"] = "auto"
    """csv/tsv quotes: `csv` = standard double-quote quoting, `none` = quotes are plain characters, `auto` = csv for .csv and none for .tsv (Chinese TSV corpora are full of unbalanced quotes)."""
    delimiter: str | None = None
    """csv/tsv field separator; default `,` for csv and a tab for tsv. Several characters (e.g. GAIIC's `|,|`) work too, with quotes read as plain characters."""
    encoding: str = "auto"
    """`auto` (BOM, else UTF-8, else GB18030, tried on the first MiB) or a Python codec name such as `gbk` or `big5`."""
    on_decode_error: Literal["reject", "replace"] = "reject"
    """A row with bytes invalid in the file's encoding: reject it (reason `undecodable`) or keep it with U+FFFD."""
    max_record_lines: int = 50
    """csv: a quoted record spanning more physical lines than this is rejected as a likely unbalanced quote."""
    max_line_bytes: int = 16 * 1024 * 1024
    """A physical line longer than this is rejected (reason `line_too_long`) without being held in memory."""
    allow_empty_files: bool = False
    """An input file with no rows is an error unless this is true."""

    @field_validator("keep_fields", mode="before")
    @classmethod
    def _keep_fields_list(cls, v: Any) -> Any:
        return _as_list(v)

    def problems(self) -> list[str]:
        out = []
        if not self.header and not self.text_field.isdigit():
            out.append(
                f"read.text_field: '{self.text_field}' is a column name but read.header is false; "
                "give a 0-based column number (e.g. text_field=1) or set read.header=true"
            )
        if self.text_field in self.keep_fields:
            out.append(f"read.keep_fields: contains the text field '{self.text_field}'; it is always kept as `text`")
        if self.delimiter is not None and (not self.delimiter or "\n" in self.delimiter or "\x1f" in self.delimiter):
            out.append("read.delimiter: must be a non-empty string without newlines")
        elif self.delimiter and len(self.delimiter) > 1 and self.quoting == "csv":
            out.append(f"read.delimiter '{self.delimiter}' has several characters, which csv quoting cannot parse; "
                       "set read.quoting=none (or auto)")
        if self.encoding != "auto":
            import codecs

            try:
                codecs.lookup(self.encoding)
            except LookupError:
                out.append(f"read.encoding: unknown codec '{self.encoding}' (try utf-8, gb18030, gbk, big5 or auto)")
        if self.max_record_lines < 1:
            out.append("read.max_record_lines: must be >= 1")
        return out


class PIIConfig(Section):
    enabled: bool = False
    """Replace mobile numbers, e-mail addresses and 18-digit ID card numbers with placeholders."""
    phone: str = "<PHONE>"
    """Placeholder for mainland mobile numbers (optionally +86)."""
    email: str = "<EMAIL>"
    """Placeholder for e-mail addresses."""
    id_card: str = "<IDCARD>"
    """Placeholder for 18-digit resident ID numbers (checksum-validated)."""


class CleanConfig(Section):
    urls: bool = True
    """Remove http(s):// and www. URLs (t.cn short links included)."""
    mentions: bool = True
    """Remove @user mentions."""
    repost_chains: Literal["keep_text", "drop", "off"] = "keep_text"
    """Weibo `//@user:` repost chains: keep_text removes the `//@user:` markers, drop cuts from the first marker on, off leaves them."""
    reply_prefix: bool = True
    """Remove `回复@user:` reply prefixes."""
    hashtags: Literal["keep_text", "drop", "off"] = "keep_text"
    """Weibo `#topic#`: keep_text removes the # marks, drop removes the topic, off leaves it."""
    emoji_codes: bool = True
    """Remove Weibo emoticon codes such as [哈哈] or [doge]."""
    unicode_emoji: Literal["keep", "drop"] = "keep"
    """Unicode emoji such as 😂: keep or drop."""
    fullwidth: Literal["off", "alnum", "all"] = "alnum"
    """Full-width → half-width: alnum converts letters, digits and the ideographic space; all also converts punctuation (，→ ,)."""
    punct_to_ascii: bool = False
    """Map “ ” ‘ ’ — – … to " " ' ' - - ... : Google's bert-base-chinese vocab lacks them, so they become [UNK] (~1% of People's Daily tokens)."""
    traditional_to_simplified: bool = False
    """Convert traditional to simplified characters with OpenCC (t2s)."""
    control_chars: bool = True
    """Remove control, format and zero-width characters (newlines inside a document are kept)."""
    whitespace: bool = True
    """Collapse runs of spaces/tabs to one space and runs of newlines to one; strip the ends."""
    min_chars: int = 5
    """Reject documents shorter than this after cleaning (reason `too_short`; `empty` when nothing is left)."""
    max_chars: int | None = 200_000
    """Reject documents longer than this after cleaning (reason `too_long`); null for no limit."""
    min_cjk_ratio: float = 0.0
    """Reject documents whose share of CJK characters (ignoring spaces) is below this (reason `low_cjk_ratio`)."""
    pii: PIIConfig = PIIConfig()
    """Personal data scrubbing."""

    def problems(self) -> list[str]:
        out = []
        if self.min_chars < 0:
            out.append("clean.min_chars: must be >= 0")
        if self.max_chars is not None and self.max_chars < max(self.min_chars, 1):
            out.append(f"clean.max_chars ({self.max_chars}) is below clean.min_chars ({self.min_chars}): every document would be rejected")
        if not 0.0 <= self.min_cjk_ratio <= 1.0:
            out.append("clean.min_cjk_ratio: must be between 0 and 1")
        return out


class DedupConfig(Section):
    exact: bool = True
    """Drop documents identical to an earlier one (after cleaning, ignoring case and whitespace)."""
    near: bool = True
    """Drop near-duplicates: MinHash-LSH over character shingles, verified against `threshold`."""
    threshold: float = 0.8
    """Estimated Jaccard similarity of shingle sets at or above which a document is a near-duplicate."""
    shingle_chars: int = 5
    """Characters per shingle."""
    num_perm: int = 128
    """MinHash permutations (signature length)."""
    bands: int = 16
    """LSH bands; `num_perm / bands` rows per band. More bands find lower-similarity pairs."""
    minhash: Literal["auto", "rensa", "numpy", "datasketch"] = "auto"
    """MinHash implementation: rensa (Rust, batched; fastest on long documents), numpy (vectorised multiply-shift hashing; fastest on short texts such as Weibo posts), datasketch (the earlier, slowest path, kept as a reference), or auto (the default): numpy when the first 1,000 records of each of the first 4 input files average under 150 characters, else rensa; decided once per run from the inputs alone (never from worker counts) and recorded in the manifest. All estimate the same Jaccard similarity; their signatures differ, so a few borderline pairs may differ (benchmarks/results/bench_dedup.txt)."""

    def problems(self) -> list[str]:
        out = []
        if not 0.0 < self.threshold <= 1.0:
            out.append("dedup.threshold: must be in (0, 1]")
        if self.shingle_chars < 1:
            out.append("dedup.shingle_chars: must be >= 1")
        if self.near and (self.bands < 1 or self.num_perm % self.bands):
            out.append(f"dedup.bands ({self.bands}) must divide dedup.num_perm ({self.num_perm})")
        return out


class SplitConfig(Section):
    valid_fraction: float = 0.01
    """Share of documents in the `valid` split, chosen by a seeded hash of the text (stable as the corpus grows). 1.0 makes a held-out set: every document in `valid`, `train` empty (for `evaluate`, not for `pretrain`)."""
    test_fraction: float = 0.0
    """Share of documents in a `test` split (none when 0; 1.0: every document in `test`)."""

    def problems(self) -> list[str]:
        out = []
        for name in ("valid_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                out.append(f"split.{name}: must be in [0, 1] (got {getattr(self, name)})")
        if self.valid_fraction + self.test_fraction > 1.0 + 1e-9:
            out.append(f"split: valid_fraction + test_fraction is {self.valid_fraction + self.test_fraction:g}, "
                       "above 1 (at exactly 1 every document is held out and nothing is left to train on)")
        return out


class ExcludeConfig(Section):
    files: list[str] = []
    """Evaluation files whose text must never be pretrained on (the task's valid/test sets: TSV/CSV with a header, JSONL, CoNLL or one text a line). A document sharing a run of `ngram` characters with one of their texts, or equal to a shorter one, is rejected (reason eval_overlap, with the file and line it matched)."""
    text_fields: list[str] = ["text", "text_a", "text_b", "sentence", "question", "context"]
    """Columns / JSON keys read as text from TSV, CSV and JSONL files (every one present)."""
    ngram: int = 20
    """Characters in a shared run that count as overlap (after cleaning both sides the same way)."""

    @field_validator("files", mode="before")
    @classmethod
    def _files_list(cls, v: Any) -> Any:
        return _as_list(v)

    def problems(self) -> list[str]:
        return ["exclude.ngram: must be >= 5"] if self.ngram < 5 else []


class PrepareConfig(StageConfig):
    """Clean, deduplicate and split raw corpus files into an Arrow dataset."""

    output_dir_name: typing.ClassVar[str] = "prepared"
    execution_keys: typing.ClassVar[frozenset[str]] = frozenset({"workers", "engine", "scheduler", "batch_rows", "batch_bytes", "read_in_workers"})

    input: list[str] = []
    """Corpus files, folders (read recursively) or globs."""
    read: ReadConfig = ReadConfig()
    """How to read the input files."""
    clean: CleanConfig = CleanConfig()
    """Text cleaning and length filters."""
    dedup: DedupConfig = DedupConfig()
    """Duplicate removal."""
    split: SplitConfig = SplitConfig()
    """Train/valid/test split."""
    exclude: ExcludeConfig = ExcludeConfig()
    """Decontamination: drop documents that contain text of evaluation sets."""
    workers: int | None = None
    """Processes that clean and fingerprint rows (null: every core this process may use, or
    this process alone for inputs under 4 MiB). The output is identical for every value."""
    engine: Literal["local", "dask"] = "local"
    """local: this machine (a process pool of `workers`); dask: a Dask cluster (`scheduler`
    address, or a local cluster of `workers` processes): the same output."""
    scheduler: str | None = None
    """engine=dask: the scheduler address (tcp://host:8786, or a scheduler JSON file);
    null starts a local cluster for the run."""
    batch_rows: int = 2048
    """Rows per batch handed to a worker (memory per batch in flight; not the output)."""
    batch_bytes: str = "4MiB"
    """When workers read (`read_in_workers`): bytes of an uncompressed txt (line mode) or jsonl
    file that a worker reads itself per task, so that the main process does not decode and ship
    every line (its speed-up bound). csv/tsv, parquet, compressed files and txt paragraphs are
    always read by the main process. Memory per task in flight; not the output."""
    read_in_workers: bool | None = None
    """Whether worker processes read txt/jsonl files themselves in `batch_bytes` ranges.
    null: yes for engine=local with workers > 1, no for dask (set true when every Dask worker
    sees the input paths at the same place, e.g. a shared filesystem). The output is the same."""
    shard_size: str = "500MB"
    """Largest Arrow shard of the output dataset (e.g. 500MB, 2GB); the manifest lists the shards."""

    @field_validator("input", mode="before")
    @classmethod
    def _input_list(cls, v: Any) -> Any:
        return _as_list(v)

    def problems(self) -> list[str]:
        out = []
        if not self.input:
            out.append("input: no corpus given; set prepare.input in the config or pass input=PATH")
        for section in (self.read, self.clean, self.dedup, self.split, self.exclude):
            out += section.problems()
        if self.workers is not None and self.workers < 1:
            out.append(f"workers: {self.workers} must be >= 1 (or null for every core)")
        if self.batch_rows < 1:
            out.append(f"batch_rows: {self.batch_rows} must be >= 1")
        if self.read_in_workers and self.engine == "local" and self.workers == 1:
            out.append("read_in_workers: workers=1 has no worker processes (this process reads and works); "
                       "set workers > 1 or leave read_in_workers unset")
        try:
            if shard_bytes(self.batch_bytes) < 1:
                out.append(f"batch_bytes: '{self.batch_bytes}' must be at least 1 byte")
        except ValueError:
            out.append(f"batch_bytes: '{self.batch_bytes}' is not a size; write e.g. 4MiB or 500KB")
        out += _shard_size_problems(self.shard_size)
        if self.scheduler and self.engine != "dask":
            out.append("scheduler: only used with engine=dask; set engine=dask or drop scheduler")
        return out
