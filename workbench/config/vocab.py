"""Config of `vocab`: a tokenizer for a desensitised (integer-id) corpus."""

from __future__ import annotations

import typing

from workbench.config._base import StageConfig


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
