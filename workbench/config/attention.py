"""Config of `attention`."""

from __future__ import annotations

import typing

from pydantic import field_validator

from workbench.config._base import StageConfig, _as_list


class AttentionConfig(StageConfig):
    """Attention views of a model on given sentences: one self-contained HTML page (all layers and heads, token-to-token lines) and a PNG grid of layer x head attention maps per sentence."""

    output_dir_name: typing.ClassVar[str] = "attention"

    model: str | None = None
    """A pretrain, finetune or export output (or any BERT save_pretrained directory)."""
    sentences: list[str] = []
    """Sentences to show, e.g. `sentences=[今天天气不错,我爱北京]` or one `sentences=今天天气不错`."""
    input: str | None = None
    """A UTF-8 .txt file, one sentence per line (blank lines skipped), instead of / besides `sentences`."""
    max_length: int = 64
    """Tokens per sentence, [CLS] and [SEP] included; longer sentences are cut (said in the page)."""
    max_sentences: int = 20
    """At most this many sentences (the page embeds every attention map of each)."""
    screenshot: bool = False
    """Also save `screenshot.png` of the page taken with headless Chromium (the system's `chromium`); an error when it is missing."""

    @field_validator("sentences", mode="before")
    @classmethod
    def _one_sentence(cls, v):
        return _as_list(v)

    def problems(self) -> list[str]:
        out = []
        if not self.model:
            out.append("model: required; pass model=DIR (a pretrain, finetune or export output)")
        if not self.sentences and not self.input:
            out.append("sentences / input: give sentences=[...] or input=FILE (one sentence per line)")
        if self.max_length < 3:
            out.append("max_length: must be >= 3 ([CLS], one token, [SEP])")
        if self.max_sentences < 1:
            out.append("max_sentences: must be >= 1")
        return out
