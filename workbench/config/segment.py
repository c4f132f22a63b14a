"""Config of `segment`: jieba word boundaries and entity spans, once."""

from __future__ import annotations

import typing
from typing import Literal

from workbench.config._base import Section, StageConfig, _shard_size_problems


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
