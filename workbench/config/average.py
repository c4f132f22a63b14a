"""Config of `average`: the last K checkpoints of a pretrain or finetune run, averaged."""

from __future__ import annotations

import typing

from workbench.config._base import StageConfig


class AverageConfig(StageConfig):
    """Average the last K checkpoints of a pretrain run (or the evaluation snapshots a finetune run kept with keep_snapshots) into a new model; scores the average against the last checkpoint."""

    output_dir_name: typing.ClassVar[str] = "average"

    input: str | None = None
    """A `pretrain` output (its Trainer checkpoints are averaged) or a `finetune` output trained with keep_snapshots=K (its snapshots are averaged)."""
    last: int = 3
    """K: how many of the latest checkpoints / snapshots to average (pretrain keeps `save_total_limit` checkpoints: raise it to keep K)."""
    checkpoints: list[str] = []
    """Average exactly these instead of the last K: checkpoint directory names of a pretrain run (e.g. [checkpoint-2500, checkpoint-3000]) or snapshot files of a finetune run (e.g. [step-40.safetensors, step-60.safetensors])."""
    checkpoints_dir: str | None = None
    """pretrain: the directory holding checkpoint-<step>/ (default the one the pretrain manifest records, `<output>-checkpoints`)."""
    score: bool = True
    """Score the average and the last checkpoint with the same data: pretrain, held-out MLM loss on the pretrain input's valid blocks with pretrain's masks, seed and batch size (`workbench evaluate`'s code); finetune, the task metric on its valid (and test) file."""
    max_blocks: int | None = None
    """pretrain scoring: only the first this many valid blocks; null = all."""
    batch_size: int | None = None
    """Scoring batch size: default pretrain's batch_size (so the last checkpoint's loss is pretrain's eval_loss) or 64 texts for a task."""

    def problems(self) -> list[str]:
        out = []
        if not self.input:
            out.append("input: required; pass input=DIR (a pretrain output, or a finetune output with snapshots)")
        if self.last < 2 and not self.checkpoints:
            out.append(f"last: must be >= 2 to average anything (got {self.last})")
        if self.checkpoints and len(self.checkpoints) < 2:
            out.append(f"checkpoints: name at least two (got {self.checkpoints})")
        if len(set(self.checkpoints)) != len(self.checkpoints):
            out.append(f"checkpoints: duplicates in {self.checkpoints}")
        if self.max_blocks is not None and self.max_blocks < 1:
            out.append(f"max_blocks: must be >= 1 or null (got {self.max_blocks})")
        if self.batch_size is not None and self.batch_size < 1:
            out.append(f"batch_size: must be >= 1 or null (got {self.batch_size})")
        return out
