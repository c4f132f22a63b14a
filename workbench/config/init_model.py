"""Config of `init-model`: a fresh BERT of a given size."""

from __future__ import annotations

import typing
from pathlib import Path

from workbench.config._base import StageConfig


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
