"""Config of `evaluate`."""

from __future__ import annotations

import typing
from typing import Literal

from workbench.config._base import StageConfig
from workbench.config.finetune import TaskDataConfig
from workbench.config.pretrain import MaskingConfig


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
