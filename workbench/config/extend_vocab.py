"""Config of `extend-vocab`: new domain tokens added to a tokenizer and model."""

from __future__ import annotations

import typing
from typing import Literal

from workbench.config._base import StageConfig
from workbench.config.segment import LexiconConfig


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
