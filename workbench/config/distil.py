"""Config of `distil`: a fine-tuned teacher → a smaller student trained on its soft targets."""

from __future__ import annotations

import typing
from typing import Any, Literal

from workbench.config._base import StageConfig
from workbench.config.finetune import TaskDataConfig

# BertConfig keys a randomly initialised student may change (the vocabulary, positions and
# labels stay the teacher's: the student reads the same inputs and predicts the same outputs).
STUDENT_CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")


class DistilConfig(StageConfig):
    """Distil a fine-tuned teacher (a finetune output) into a smaller student: soft targets with a temperature plus the hard labels; reports student vs teacher metric, size and CPU latency."""

    output_dir_name: typing.ClassVar[str] = "distil"

    teacher: str | None = None
    """The fine-tuned teacher: a `finetune` output (or an `average` / `distil` output). Tasks: classification, pair, multilabel, tagging without a CRF (a CRF teacher is refused: its soft targets would be whole-sequence scores, not per-token distributions)."""
    train: str | None = None
    """Labelled train file; default the teacher's own train file (from its manifest). Its labels must be the teacher's."""
    valid: str | None = None
    """Labelled validation file, evaluated after every epoch (the best evaluation's weights are kept); default the teacher's."""
    test: str | None = None
    """Labelled test file, scored once for teacher and student; default the teacher's (none if it had none)."""
    data: TaskDataConfig | None = None
    """Columns and format of the labelled files; default the ones the teacher was fine-tuned with."""
    unknown_labels: Literal["error", "drop"] = "error"
    """A label the teacher does not know: error, or drop it (counted)."""
    init: Literal["teacher", "random"] = "teacher"
    """teacher: the student is the teacher with fewer encoder layers, those of `layer_map` copied (embeddings, pooler and head copied too). random: a new BERT of the teacher's shape changed by `student_config`, randomly initialised."""
    student_layers: int | None = None
    """Encoder layers of the student; default half the teacher's (at least 1). With init=teacher they are copied from teacher layers picked evenly, the top one included (4 → 2: layers 1, 3; 12 → 6: 1, 3, 5, 7, 9, 11), unless `layer_map` names them."""
    layer_map: list[int] | None = None
    """init=teacher: the teacher layers (0-based, increasing) copied into student layers 0, 1, ...; e.g. [0, 2] (DistilBERT's every other layer from the bottom)."""
    student_config: dict[str, int] = {}
    """init=random: BertConfig changes for the student, among hidden_size, intermediate_size, num_attention_heads, num_hidden_layers (e.g. {hidden_size: 128, intermediate_size: 512})."""
    temperature: float = 2.0
    """Softmax temperature T of the soft targets (teacher and student logits divided by T); the soft loss is scaled by T² so its gradients keep their size as T changes."""
    alpha: float = 0.5
    """Weight of the soft loss: loss = alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · hard-label loss. 0 trains the same student on the labels alone (the no-teacher baseline)."""
    max_length: int | None = None
    """Tokens per input; default the teacher's (the student keeps the teacher's truncation / windows)."""
    epochs: int = 3
    """Passes over the train data; valid is evaluated after each."""
    max_steps: int = -1
    """Optimizer steps to train; > 0 overrides `epochs`."""
    eval_steps: int | None = None
    """Also evaluate valid every this many optimizer steps; null: per epoch (and at the end) only."""
    batch_size: int = 32
    """Examples (tagging: windows) per optimizer step."""
    eval_batch_size: int = 64
    """Examples per forward pass when evaluating (and when computing the teacher's logits)."""
    lr: float = 5e-5
    """Peak learning rate (AdamW). Students usually take a larger one than fine-tuning the teacher did."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on biases and LayerNorm weights)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up linearly from 0."""
    early_stopping_patience: int | None = None
    """Stop after this many valid evaluations without a better valid metric; null = off."""
    seeds: list[int] = []
    """Train one student per seed; metrics.json keeps each seed's valid/test metrics and mean ± std; the student of the best valid seed is saved. Empty: one run with `seed`."""
    logging_steps: int = 50
    """Log the train loss every this many steps."""
    latency_batch_sizes: list[int] = [1, 32]
    """Batch sizes at which teacher and student CPU latency is measured (inputs: the first valid texts, encoded as in predict)."""
    latency_repeats: int = 7
    """Timed repeats per model and batch size, teacher and student interleaved; the median is reported. 0 skips the latency measurement."""
    latency_threads: int | None = 1
    """torch CPU threads while timing (1: comparable on a shared machine); null keeps torch's setting."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Mixed precision of the student's training (as in finetune). auto: bf16 on a GPU that supports it, else fp32; fp16 needs a GPU (on CPU it falls back to fp32)."""
    trainer: dict[str, Any] = {}
    """Other `transformers.TrainingArguments` fields, passed through (as in finetune)."""

    def problems(self) -> list[str]:
        from workbench.trainer_args import FINETUNE_OWNED, trainer_problems

        out = trainer_problems(self.trainer, FINETUNE_OWNED)
        if not self.teacher:
            out.append("teacher: required; pass teacher=DIR (a finetune output)")
        if self.temperature <= 0:
            out.append(f"temperature: must be > 0 (got {self.temperature})")
        if not 0.0 <= self.alpha <= 1.0:
            out.append(f"alpha: must be in [0, 1] (got {self.alpha}); 0 = hard labels only, 1 = soft targets only")
        if self.student_layers is not None and self.student_layers < 1:
            out.append(f"student_layers: must be >= 1 (got {self.student_layers})")
        if self.layer_map is not None:
            if self.init != "teacher":
                out.append("layer_map: only with init=teacher (a random student copies no layer)")
            if not self.layer_map or any(i < 0 for i in self.layer_map) or self.layer_map != sorted(set(self.layer_map)):
                out.append(f"layer_map: must list distinct teacher layers (0-based) in increasing order (got {self.layer_map})")
            if self.student_layers is not None and self.layer_map and len(self.layer_map) != self.student_layers:
                out.append(f"layer_map has {len(self.layer_map)} layers but student_layers is {self.student_layers}; "
                           "drop student_layers (it follows layer_map)")
        if self.student_config:
            if self.init != "random":
                out.append("student_config: only with init=random (init=teacher keeps the teacher's width; "
                           "use student_layers / layer_map)")
            bad = [k for k in self.student_config if k not in STUDENT_CONFIG_KEYS]
            if bad:
                out.append(f"student_config: unknown key(s) {bad}; allowed: {', '.join(STUDENT_CONFIG_KEYS)}")
            if any(not isinstance(v, int) or v < 1 for v in self.student_config.values()):
                out.append("student_config: values must be integers >= 1")
            if "num_hidden_layers" in self.student_config and self.student_layers is not None:
                out.append("student_config.num_hidden_layers and student_layers are both set; use one")
        if self.max_length is not None and self.max_length < 8:
            out.append(f"max_length: must be at least 8 (got {self.max_length})")
        if self.max_steps <= 0 and self.epochs <= 0:
            out.append("epochs and max_steps are both <= 0: nothing to train")
        for name in ("batch_size", "eval_batch_size", "logging_steps"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1")
        if self.lr <= 0:
            out.append("lr: must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            out.append(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            out.append("early_stopping_patience: must be >= 1 or null")
        if self.eval_steps is not None and self.eval_steps < 1:
            out.append(f"eval_steps: must be >= 1 or null (got {self.eval_steps})")
        if len(set(self.seeds)) != len(self.seeds):
            out.append(f"seeds: duplicates in {self.seeds}")
        if any(b < 1 for b in self.latency_batch_sizes) or self.latency_repeats < 0:
            out.append("latency_batch_sizes: each >= 1; latency_repeats: >= 0")
        if self.latency_threads is not None and self.latency_threads < 1:
            out.append("latency_threads: must be >= 1 or null")
        return out
