"""Config of `pretrain`: continued MLM pretraining (masking, mixing, objectives, trainer)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

from workbench.config._base import Section, StageConfig


class MaskingConfig(Section):
    """How the pretraining collator masks tokens; new masks every time a block is batched."""

    strategy: Literal["token", "whole_word", "entity_ngram", "span", "mixture"] = "whole_word"
    """token: BERT's original; whole_word: jieba words masked whole; entity_ngram: entities whole, else n-grams of 1..max_ngram whole words (ERNIE); span: SpanBERT spans of whole words; mixture: a per-sequence draw from `mixture`."""
    mask_prob: float = 0.15
    """Share of the non-special tokens of each sequence that get a label (the mask budget)."""
    replace_mask: float = 0.8
    """Of the labelled tokens, the share replaced by [MASK]."""
    replace_random: float = 0.1
    """Of the labelled tokens, the share replaced by a random real vocabulary token (never a special or [unusedN]); the rest stay unchanged."""
    max_ngram: int = 3
    """entity_ngram: longest n-gram, in whole words."""
    ngram_p: float = 0.2
    """entity_ngram and span: geometric parameter of the n-gram/span length distribution (SpanBERT uses 0.2), truncated at max_ngram / max_span."""
    max_span: int = 10
    """span: longest span, in whole words."""
    mixture: dict[str, float] = {}
    """mixture: strategy → weight, e.g. {whole_word: 0.5, entity_ngram: 0.5}."""
    sop: bool = False
    """Sentence-order prediction (ALBERT): for sentence-pair blocks, swap the two segments with probability 0.5 and emit `sentence_order_label`."""

    def problems(self) -> list[str]:
        out = []
        if not 0.0 < self.mask_prob < 1.0:
            out.append("masking.mask_prob: must be in (0, 1)")
        if self.replace_mask < 0 or self.replace_random < 0 or self.replace_mask + self.replace_random > 1.0:
            out.append("masking.replace_mask + masking.replace_random must be within [0, 1]")
        if self.max_ngram < 1 or self.max_span < 1:
            out.append("masking.max_ngram and masking.max_span must be >= 1")
        if not 0.0 < self.ngram_p <= 1.0:
            out.append("masking.ngram_p: must be in (0, 1]")
        if self.strategy == "mixture":
            bad = [k for k in self.mixture if k not in ("token", "whole_word", "entity_ngram", "span")]
            if not self.mixture or bad or any(w < 0 for w in self.mixture.values()) or sum(self.mixture.values()) <= 0:
                out.append("masking.mixture: give positive weights for some of token, whole_word, entity_ngram, span"
                           + (f" (unknown: {bad})" if bad else ""))
        elif self.mixture:
            out.append(f"masking.mixture is set but masking.strategy is '{self.strategy}'; use strategy=mixture")
        return out


class MixInput(Section):
    input: str
    """Another `segment` output (e.g. general text), made with the same model vocabulary."""
    weight: float
    """Its share of the training blocks, in (0, 1); the main `input` gets 1 - the sum of these."""


class PretrainConfig(StageConfig):
    """Continue masked-LM pretraining of a BERT on segmented blocks (HF Trainer; DeepSpeed by config file)."""

    output_dir_name: typing.ClassVar[str] = "pretrain"
    input_dir_name: typing.ClassVar[str] = "segmented"

    input: str | None = None
    """A `segment` output directory; default `<run>/segmented`."""
    model: str = "bert-base-chinese"
    """Model directory or hub id to continue from (its MLM head is continued); its vocab must be the one segment used."""
    masking: MaskingConfig = MaskingConfig()
    """Dynamic masking of the training (and, with a fixed seed, the evaluation) batches."""
    max_steps: int = -1
    """Optimizer steps to train; > 0 overrides `epochs`."""
    epochs: float = 1.0
    """Passes over the train blocks (used when `max_steps` <= 0)."""
    batch_size: int = 32
    """Blocks per device per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum x devices)."""
    lr: float = 5e-5
    """Peak learning rate (AdamW)."""
    warmup_ratio: float = 0.06
    """Share of the optimizer steps spent warming the learning rate up linearly from 0."""
    schedule: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    """Learning-rate schedule after warmup."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision. fp16 needs a GPU (on CPU the run warns and trains in fp32); bf16 works on recent CPUs and GPUs."""
    eval_steps: int = 500
    """Evaluate on the valid blocks every this many optimizer steps (loss, perplexity, masked-token accuracy)."""
    save_steps: int = 500
    """Write a checkpoint to `<output>-checkpoints/` every this many optimizer steps."""
    save_total_limit: int = 2
    """Checkpoints kept (older ones deleted; with early stopping the best one is kept too)."""
    logging_steps: int = 50
    """Log the train loss and learning rate every this many optimizer steps."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without a lower eval loss and keep the best checkpoint; null = off."""
    resume: bool = True
    """Resume from the latest checkpoint in `<output>-checkpoints/` if there is one; false deletes them and starts over."""
    deepspeed: str | None = None
    """Path to a DeepSpeed JSON config (e.g. configs/deepspeed/zero2.json), passed to the Trainer; launch with `deepspeed`/`accelerate launch`."""
    dataloader_workers: int = 0
    """DataLoader worker processes for collating (masking) batches; 0 = in the training process."""
    sparse_mlm_head: bool = True
    """Run the MLM head (H x vocab decoder) only at the labelled ~15% of positions in training steps: same loss, less compute; evaluation and the saved model are plain BertForMaskedLM."""
    trainer: dict[str, Any] = {}
    """Other `transformers.TrainingArguments` fields, passed through (e.g. {torch_compile: true, optim: adamw_torch_fused, gradient_checkpointing: true, report_to: [tensorboard, wandb]}); unknown keys are refused with a did-you-mean, keys the workbench sets with the workbench key."""
    objective: Literal["mlm", "mlm+nsp", "mlm+sop"] = "mlm"
    """mlm: masked LM (BertForMaskedLM). mlm+nsp: plus next-sentence prediction on `segment pairs=nsp` blocks; mlm+sop: plus sentence-order prediction (ALBERT) on `segment pairs=sop` blocks, the collator swapping half of them. Both train BertForPreTraining's pair head, saved with the model."""
    mix: list[MixInput] = []
    """Replay: other segment outputs mixed into training, each a share of the blocks (e.g. [{input: runs/base/segmented, weight: 0.2}] = 80% domain, 20% general), drawn per seed, exact on resume; evaluation stays on `input`'s valid blocks."""

    def checkpoints_path(self) -> Path:
        """Persistent checkpoints beside the (atomically written) output: `<output>-checkpoints`."""
        out = self.output_path()
        return out.parent / f"{out.name}-checkpoints"

    def problems(self) -> list[str]:
        out = []
        if self.max_steps <= 0 and self.epochs <= 0:
            out.append(f"max_steps ({self.max_steps}) and epochs ({self.epochs}) are both <= 0: nothing to train; "
                       "set max_steps > 0 or epochs > 0")
        for name in ("batch_size", "grad_accum", "eval_steps", "save_steps", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1 (got {getattr(self, name)})")
        if self.lr <= 0:
            out.append(f"lr: must be > 0 (got {self.lr})")
        if not 0.0 <= self.warmup_ratio < 1.0:
            out.append(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if self.weight_decay < 0:
            out.append("weight_decay: must be >= 0")
        if self.dataloader_workers < 0:
            out.append("dataloader_workers: must be >= 0")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                out.append("early_stopping_patience: must be >= 1 or null")
            if self.eval_steps >= 1 and self.save_steps % self.eval_steps:
                out.append(f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) "
                           "with early stopping: the best model is taken from the checkpoint of an evaluation")
        if self.masking.sop and self.objective != "mlm+sop":
            out.append("masking.sop: sentence-order labels are made by objective=mlm+sop (which sets it); "
                       "set objective=mlm+sop, or masking.sop=false")
        out += self.masking.problems()
        from workbench.trainer_args import PRETRAIN_OWNED, trainer_problems

        out += trainer_problems(self.trainer, PRETRAIN_OWNED)
        for i, m in enumerate(self.mix):
            if not 0.0 < m.weight < 1.0:
                out.append(f"mix[{i}].weight: {m.weight} must be in (0, 1)")
        total = sum(m.weight for m in self.mix)
        if self.mix and total >= 1.0:
            out.append(f"mix: the weights add up to {total:g}; they must leave the main input a share (sum < 1)")
        if len({m.input for m in self.mix}) < len(self.mix):
            out.append("mix: an input is listed twice; give it one weight")
        return out
