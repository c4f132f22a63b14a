"""The `trainer:` section of pretrain and finetune: any `transformers.TrainingArguments` field
the workbench does not set itself (torch_compile, gradient_checkpointing, optim,
dataloader_pin_memory, report_to, ...), checked against the real dataclass fields.

    pretrain:
      trainer: {torch_compile: true, optim: adamw_torch_fused, gradient_checkpointing: true}
    workbench pretrain trainer.optim=adafactor trainer.report_to=[tensorboard,wandb]

Unknown keys are refused with a did-you-mean; keys the workbench owns are refused with the
workbench key that sets them (the workbench computes them together: a `trainer.max_steps`
would contradict the schedule, the resume check and the manifest). Values are checked by
building the TrainingArguments once, so a wrong type or value names its key before any
model is loaded. The section is part of the stage config, so it is in the manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
from typing import Any

from workbench.errors import ConfigError

# TrainingArguments field → the workbench key that sets it (or why it is fixed).
_COMMON = {
    "output_dir": "output (checkpoints go beside it)",
    "overwrite_output_dir": "output (outputs are written atomically)",
    "max_steps": "max_steps",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "learning_rate": "lr",
    "warmup_steps": "warmup_ratio",
    "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay",
    "bf16": "precision",
    "fp16": "precision",
    "logging_steps": "logging_steps",
    "logging_strategy": "logging_steps",
    "seed": "seed",
    "data_seed": "seed",
    "use_cpu": "(the workbench uses the GPU when there is one)",
    "remove_unused_columns": "(the collators read columns the model does not take)",
    "disable_tqdm": "(a progress bar on a terminal, none when the output goes to a log)",
    "do_train": "(the stage decides)",
    "do_eval": "(the stage decides)",
}
PRETRAIN_OWNED = {
    **_COMMON,
    "per_device_eval_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "lr_scheduler_type": "schedule",
    "eval_strategy": "eval_steps",
    "eval_steps": "eval_steps",
    "save_strategy": "save_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "load_best_model_at_end": "early_stopping_patience",
    "metric_for_best_model": "early_stopping_patience",
    "greater_is_better": "early_stopping_patience",
    "dataloader_num_workers": "dataloader_workers",
    "deepspeed": "deepspeed",
    "include_num_input_tokens_seen": "(the manifest counts tokens seen)",
    "resume_from_checkpoint": "resume",
}
FINETUNE_OWNED = {
    **_COMMON,
    "lr_scheduler_type": "(linear, the one fine-tuning recipe)",
    "eval_strategy": "eval_steps (the workbench evaluates with the predict code path)",
    "eval_steps": "eval_steps",
    "save_strategy": "(the best weights are kept in memory and written at the end)",
    "per_device_eval_batch_size": "eval_batch_size",
}


def _fields() -> dict[str, dataclasses.Field]:
    from transformers import TrainingArguments

    return {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}


def trainer_problems(trainer: dict[str, Any], owned: dict[str, str]) -> list[str]:
    """Keys of a `trainer:` section that are not TrainingArguments fields, or that the
    workbench sets itself. Empty for an empty section (transformers is not imported)."""
    if not trainer:
        return []
    fields = _fields()
    out = []
    for key in trainer:
        if key in owned:
            out.append(f"trainer.{key}: set by the workbench; use {owned[key]}")
        elif key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            out.append(f"trainer.{key}: not a TrainingArguments field"
                       + (f" (did you mean '{close[0]}'?)" if close else " (see transformers.TrainingArguments)"))
    return out


def training_arguments(settings: dict[str, Any], trainer: dict[str, Any], needed_by: str):
    """TrainingArguments of the stage's `settings` updated by `trainer` (which may replace a
    default the stage chose but does not own, e.g. report_to); a bad value in `trainer` is a
    ConfigError naming the key (TrainingArguments' own message kept)."""
    from transformers import TrainingArguments

    try:
        return TrainingArguments(**{**settings, **trainer})
    except (TypeError, ValueError) as e:
        keys = ", ".join(f"trainer.{k}={v!r}" for k, v in trainer.items()) or "(no trainer keys)"
        raise ConfigError([f"{needed_by}: TrainingArguments refused the settings ({keys}): {e}"]) from None


def resolve_precision(precision: str, stage: str) -> str:
    """The precision a run trains in: auto → bf16 on a GPU that supports it, else fp32;
    fp16 needs a GPU (on CPU it falls back to fp32, with a warning)."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        logging.getLogger(f"workbench.{stage}").warning("%s: precision=fp16 needs a GPU; training in fp32 on CPU", stage)
        return "fp32"
    return precision


@contextlib.contextmanager
def tensorboard_dir(path):
    """TENSORBOARD_LOGGING_DIR=path while a Trainer is built (its TensorBoardCallback reads
    the log directory from the environment then), the previous value restored after."""
    old = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = old
