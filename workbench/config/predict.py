"""Config of `predict`."""

from __future__ import annotations

from typing import Literal

from workbench.config._base import Section


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
    """classification/pair: how many labels with scores to list per text; qa: how many answers (n-best) per question."""
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
