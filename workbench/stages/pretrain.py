"""pretrain: continue masked-LM pretraining of a BERT on segmented blocks (HF Trainer).

    workbench pretrain run=runs/demo model=runs/demo/base-model max_steps=30 batch_size=16
    deepspeed --num_gpus 8 -m workbench.cli pretrain --config X deepspeed=configs/deepspeed/zero2.json

Reads a `segment` output (blocks with word ids and entity spans) and the model to continue
from; the model's vocabulary must be the one the blocks were made with (checked by hash).
Batches are masked on the fly by ``MaskingCollator`` (dynamic masking: new masks every
time a block is batched). Two directories:

    <output>-checkpoints/   (default runs/<run>/pretrain-checkpoints/) Trainer checkpoints
                  (checkpoint-<step>/: weights, optimizer, scheduler, RNG states) and
                  tensorboard/ logs. Written as training goes, so they survive a crash; the
                  next run with resume=true continues from the latest one.
    <output>/     (default runs/<run>/pretrain/) written atomically at the end: the final
                  model (save_pretrained, safetensors) + tokenizer, metrics.json, loss.png
                  (train/eval loss and eval perplexity), manifest.json.

Resume == uninterrupted. Trainer restores the weights, optimizer, scheduler, the torch/
numpy/python RNGs and the sampler position. The collator's own numpy Generator is not in a
checkpoint, so instead of one stream it is reseeded for every batch from
(seed, stream, rank, global batch number): the masks of batch k are the same whether the run
went through batch k in one go or resumed before it. The global batch number is
``global_step x grad_accum`` at the start of each pass over the data (set by a callback
right before the Trainer iterates the DataLoader) plus the batches collated since; with
DataLoader workers, batch i of a pass is collated by worker i % workers (the DataLoader
hands batches out round-robin), which gives the same numbers.
Evaluation uses its own stream, restarted at every evaluation, so every evaluation sees the
same masks and eval losses are comparable across steps and runs. `workbench evaluate` scores
any masked LM with the same collator (``eval_mask_collator``), so its masks on a segment
output are the ones pretrain's evaluation drew (same seed, masking and batch_size).

DeepSpeed lives only in its JSON config (configs/deepspeed/), handed to TrainingArguments.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench import deepspeed_shm
from workbench.config import PretrainConfig
from workbench.deepspeed_config import check_deepspeed_config
from workbench.errors import StageInputError
from workbench.manifest import (MANIFEST, atomic_output_dir, claim_output, config_inputs, load_stage_dataset, owns_output,
                                require_stage_output, sha256_file, verify_model_dir, write_manifest)
from workbench.masking.collator import IGNORE_INDEX, MaskingCollator
from workbench.modeling import (cap_model_max_length, load_masked_lm, load_masked_lm_with_pair_head,
                                set_sparse_mlm_head)
from workbench.trainer_args import tensorboard_dir, training_arguments
from workbench.vocab.normalize import install_char_map
from workbench.vocab.tokenizer import load_tokenizer, vocab_fingerprint

log = logging.getLogger("workbench.pretrain")

TRAIN_STREAM, EVAL_STREAM = 0, 1


class StepSeededCollator:
    """A MaskingCollator whose Generator is reseeded for every batch from
    (seed, stream, rank, global batch number), so masks depend on the batch's place in
    training, not on how many batches this process happened to collate (see module doc)."""

    def __init__(self, inner: MaskingCollator, seed: int, stream: int, rank: int = 0) -> None:
        self.inner, self.seed, self.stream, self.rank = inner, seed, stream, rank
        self.batches_before = 0  # global batch number of the first batch of this pass
        self.calls = 0           # batches collated in this pass by this process
        self.mix_seen: dict[int, np.ndarray] = {}  # batch number → blocks per mixture source (replay)
        self.mix_sources = 0
        self.collated = 0        # batches collated by this process over the whole call (all passes)

    def start_pass(self, batches_before: int) -> None:
        """Called before the DataLoader is iterated; DataLoader workers get a copy of this state."""
        self.batches_before, self.calls = int(batches_before), 0

    def __call__(self, examples):
        import torch

        worker = torch.utils.data.get_worker_info()
        if worker is None:
            index = self.batches_before + self.calls
        else:  # worker w of W collates batches w, w + W, w + 2W, ... of the pass
            index = self.batches_before + self.calls * worker.num_workers + worker.id
        self.calls += 1
        self.collated += 1
        if examples and "mix_source" in examples[0]:
            sources = [e.pop("mix_source") for e in examples]
            if self.mix_sources:
                self.mix_seen[index] = np.bincount(sources, minlength=self.mix_sources)
        self.inner.reseed(self.seed, self.stream, self.rank, index)
        out = self.inner(examples)
        if "sentence_order_label" in out:  # BertForPreTraining's pair head takes it as next_sentence_label
            out["next_sentence_label"] = out.pop("sentence_order_label")
        return out


def eval_mask_collator(masking, tok, seed: int, rank: int = 0) -> StepSeededCollator:
    """The evaluation collator: masks drawn from (seed, EVAL_STREAM, rank, batch number), the
    batch number restarting at 0 for every evaluation (``start_pass(0)``). Pretrain's own
    evaluation and `workbench evaluate` (MLM scoring) both build it here, so the same blocks,
    batch size, masking and seed give the same masked positions and replacement tokens."""
    return StepSeededCollator(MaskingCollator(masking, tok, seed=seed), seed, EVAL_STREAM, rank)


def check_blocks_vocab(in_dir: Path, upstream: dict, model: str, tok, *, needed_by: str) -> str:
    """The vocabulary hash of `tok` (model `model`), which must be the one the blocks in the
    segment output `in_dir` (manifest `upstream`) were made with; else StageInputError."""
    data_vocab = (upstream.get("tokenizer") or {}).get("vocab_sha256")
    model_vocab = vocab_fingerprint(tok)
    if data_vocab != model_vocab:
        raise StageInputError(
            f"{needed_by}: the blocks in {in_dir} were made with another vocabulary than model '{model}'\n"
            f"  segment tokenizer: {(upstream.get('tokenizer') or {}).get('model')} (vocab sha256 {data_vocab})\n"
            f"  model tokenizer:   {model} (vocab sha256 {model_vocab})\n"
            f"  fix: re-run `workbench segment model={model} ...` so the ids match this model, "
            "or point model= at the model segment used")
    return model_vocab


def _trainer_classes():
    """Trainer subclass + callback (defined lazily: importing transformers takes seconds)."""
    from transformers import Trainer, TrainerCallback

    class MLMTrainer(Trainer):
        """Trainer with a separate, restarted eval collator and perplexity in the eval logs."""

        def __init__(self, *args, eval_collator: StepSeededCollator, pair_objective: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.eval_collator = eval_collator
            self.pair_objective = pair_objective

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """MLM (+ the sentence-pair loss in training). The pair loss averages over the
            blocks that have a pair label (-100: a single-segment block) and is 0 for a batch
            without any; BertForPreTraining's own loss would be NaN there. Evaluation reports
            the MLM part only, so eval loss and perplexity compare with plain MLM runs."""
            if not self.pair_objective:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            import torch.nn.functional as F

            labels = inputs.pop("labels")
            pair = inputs.pop("next_sentence_label", None)
            out = model(**inputs)
            logits = out.prediction_logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
            if model.training and pair is not None:
                has = pair != IGNORE_INDEX
                rel = out.seq_relationship_logits
                loss = loss + (F.cross_entropy(rel[has].float(), pair[has]) if bool(has.any()) else rel.sum() * 0.0)
            return (loss, out) if return_outputs else loss

        def get_eval_dataloader(self, eval_dataset=None):
            train_collator = self.data_collator
            self.eval_collator.start_pass(0)  # same masks at every evaluation
            self.data_collator = self.eval_collator
            try:
                return super().get_eval_dataloader(eval_dataset)
            finally:
                self.data_collator = train_collator

        def get_resumed_dataloader(self, dataloader, num_batches):
            """Records how a resume skips the batches already trained on: by index (the batch
            sampler starts after them; nothing is read or collated) or by replay (an iterable
            dataset must be read through)."""
            resumed = super().get_resumed_dataloader(dataloader, num_batches)
            sampler = getattr(resumed, "batch_sampler", None)
            self.resume_skip = {"batches": int(num_batches),
                                "how": "index" if type(sampler).__name__ == "SkipBatchSampler" else "replay"}
            return resumed

        def log(self, logs: dict[str, float], *args, **kwargs) -> None:
            if "eval_loss" in logs:
                logs["eval_perplexity"] = _perplexity(logs["eval_loss"])
            super().log(logs, *args, **kwargs)

    class CollatorPass(TrainerCallback):
        """Tell the train collator where a pass over the data starts (before iter(DataLoader))."""

        def __init__(self, collator: StepSeededCollator):
            self.collator = collator

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.collator.rank = args.process_index
            self.collator.start_pass(state.global_step * args.gradient_accumulation_steps)

    return MLMTrainer, CollatorPass


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


def preprocess_logits_for_metrics(logits, labels):
    """Logits → [B, L] predicted ids, so evaluation does not keep V floats per token. The
    sparse head gives [N, V] logits for the N labelled positions (row-major): their argmax is
    put back at those positions (-100 elsewhere, never compared)."""
    if isinstance(logits, (tuple, list)):
        if len(logits) == 2 and logits[1].dim() == 2 and logits[1].shape[-1] == 2:  # BertForPreTraining
            mlm_labels = labels[0] if isinstance(labels, (tuple, list)) else labels
            return preprocess_logits_for_metrics(logits[0], mlm_labels), logits[1].argmax(dim=-1)
        logits = logits[0]
    if isinstance(labels, (tuple, list)):
        labels = labels[0]
    if logits.dim() == 2 and labels is not None and labels.dim() == 2:
        preds = labels.new_full(labels.shape, IGNORE_INDEX)
        preds[labels != IGNORE_INDEX] = logits.argmax(dim=-1)
        return preds
    return logits.argmax(dim=-1)


def compute_metrics(eval_pred) -> dict[str, float]:
    """Masked-token accuracy over the labelled positions (labels != -100)."""
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    pair = {}
    if isinstance(labels, (tuple, list)):  # BertForPreTraining: (MLM labels, pair labels)
        if isinstance(preds, (tuple, list)) and len(preds) == 2 and len(labels) == 2:
            p_pair, l_pair = np.asarray(preds[1]).reshape(-1), np.asarray(labels[1]).reshape(-1)
            scored = l_pair != IGNORE_INDEX
            pair = {"pair_accuracy": float((p_pair[scored] == l_pair[scored]).mean()) if scored.any() else 0.0,
                    "pair_examples": int(scored.sum())}
        labels = labels[0]
    if isinstance(preds, (tuple, list)):
        preds = preds[0]
    preds, labels = np.asarray(preds), np.asarray(labels)
    labelled = labels != IGNORE_INDEX
    n = int(labelled.sum())
    return {"masked_accuracy": float((preds[labelled] == labels[labelled]).sum() / n) if n else 0.0,
            "masked_tokens": n, **pair}


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint-<step> dir with the highest step that holds a trainer_state.json."""
    found = [(int(p.name.split("-")[1]), p) for p in directory.glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def planned_steps(cfg: PretrainConfig, train_blocks: int, world_size: int = 1) -> int:
    """Optimizer steps the run is configured for (Trainer's own arithmetic, no drop_last)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(train_blocks / (cfg.batch_size * world_size))
    return math.ceil(cfg.epochs * max(math.ceil(batches / cfg.grad_accum), 1))


def _file_problem(path: Path) -> str | None:
    """Why a checkpoint file cannot be loaded (truncated / not the format), without reading
    its data: safetensors' header gives the byte length the tensors need; torch.save files
    are zip archives whose central directory sits at the very end."""
    import struct
    import zipfile

    size = path.stat().st_size
    if path.suffix == ".safetensors":
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, too short for a safetensors header"
            n = struct.unpack("<Q", head)[0]
            if n > size - 8:
                return "the safetensors header runs past the end of the file (truncated)"
            try:
                header = json.loads(f.read(n))
            except ValueError:
                return "the safetensors header is not valid JSON (corrupted)"
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            return f"{size:,} bytes but the tensors need {8 + n + end:,} (truncated)"
    elif path.suffix in (".pt", ".pth", ".bin"):
        if not zipfile.is_zipfile(path):
            return "not a complete torch.save archive (truncated or overwritten)"
    elif path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return "not valid JSON (truncated or corrupted)"
    return None


def check_checkpoint_files(checkpoint: Path) -> None:
    """Refuse to resume from a checkpoint with a damaged file (a crash or full disk while it
    was written), naming the file and the way out, instead of a stack trace from deep inside
    torch.load mid-restore."""
    problems = [f"{p.relative_to(checkpoint)}: {why}" for p in sorted(checkpoint.rglob("*"))
                if p.is_file() and (why := _file_problem(p))]
    if problems:
        older = sorted((int(p.name.split("-")[1]), p) for p in checkpoint.parent.glob("checkpoint-*")
                       if p.name.split("-")[1].isdigit() and p != checkpoint)
        way = (f"delete {checkpoint} to resume from {older[-1][1].name}, " if older else f"delete {checkpoint}, ")
        raise StageInputError(f"pretrain: cannot resume from {checkpoint}, it is damaged:\n"
                              + "\n".join(f"  - {p}" for p in problems)
                              + f"\n  fix: {way}or pass resume=false to start over")


def _checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])


# Keys that may change between a run and its resumption: they do not change what is trained.
_RESUMABLE_CHANGES = {"resume", "output", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
                      "dataloader_workers", "early_stopping_patience"}


def _check_resume_config(ckpt_dir: Path, cfg: PretrainConfig) -> None:
    """Refuse to resume checkpoints made with different training settings (a changed lr or
    max_steps would silently mix two runs, schedules included)."""
    saved_file = ckpt_dir / "pretrain_config.json"
    if not saved_file.is_file():
        return
    saved, now = json.loads(saved_file.read_text(encoding="utf-8")), cfg.model_dump(mode="json")
    diff = [f"{k}: {saved.get(k)!r} → {now.get(k)!r}" for k in sorted(set(saved) | set(now))
            if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k)]
    if diff:
        raise StageInputError(
            f"pretrain: the checkpoints in {ckpt_dir} were made with other settings ({'; '.join(diff)}); "
            "resuming would mix two runs.\n  fix: restore those settings, choose another output=, or pass "
            "resume=false to start over (deletes those checkpoints)")


def _own_checkpoints(directory: Path) -> bool:
    """A directory of this stage's Trainer checkpoints (pretrain writes pretrain_config.json first)."""
    return (directory / "pretrain_config.json").is_file() or any(directory.glob("checkpoint-*"))


SHAPE_FILE = "workbench_shape.json"  # in each checkpoint: how many processes made it, and the global batch


def _shape_callback(shape: dict):
    """Writes `shape` (processes, batch_size, grad_accum, global batch) into every checkpoint,
    so a resume on another number of processes knows what a step meant."""
    from transformers import TrainerCallback

    class ShapeRecord(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir() and args.process_index == 0:
                (ckpt / SHAPE_FILE).write_text(json.dumps(shape) + "\n", encoding="utf-8")

    return ShapeRecord()


def resume_shape(checkpoint: Path | None, cfg: PretrainConfig, world_size: int) -> tuple[int, dict | None]:
    """(grad_accum to train with, the change or None) for resuming `checkpoint` on `world_size`
    processes. A step is one global batch (batch_size x grad_accum x processes blocks); resuming
    on another number of processes keeps it, so the step count, the learning-rate schedule and
    the data position (a prefix of the same shuffled order) all keep their meaning: grad_accum
    is rescaled (8 GPUs x 1 → 4 GPUs x 2). When that is not a whole number the resume is refused."""
    if checkpoint is None or not (checkpoint / SHAPE_FILE).is_file():
        return cfg.grad_accum, None  # a fresh run, or a checkpoint from before the shape was recorded
    saved = json.loads((checkpoint / SHAPE_FILE).read_text(encoding="utf-8"))
    if int(saved["processes"]) == world_size:
        return cfg.grad_accum, None
    global_batch = int(saved["global_batch"])
    per_micro_step = cfg.batch_size * world_size
    if global_batch % per_micro_step:
        fits = [n for n in range(1, global_batch // cfg.batch_size + 1) if (global_batch // cfg.batch_size) % n == 0]
        raise StageInputError(
            f"pretrain: {checkpoint} was made by {saved['processes']} processes with a global batch of {global_batch} "
            f"blocks (batch_size {saved['batch_size']} x grad_accum {saved['grad_accum']} x {saved['processes']}); on "
            f"{world_size} processes that needs grad_accum = {global_batch} / ({cfg.batch_size} x {world_size}), not a "
            f"whole number, so the steps, the schedule and the data position would change meaning.\n  fix: resume on "
            f"{', '.join(map(str, fits[:8]))} processes, or pass resume=false to start over")
    grad_accum = global_batch // per_micro_step
    change = {"from_processes": int(saved["processes"]), "to_processes": world_size, "global_batch": global_batch,
              "grad_accum": {"saved": int(saved["grad_accum"]), "now": grad_accum}}
    log.warning("pretrain: %s was made by %d processes, this run has %d: grad_accum %d → %d keeps the global batch at "
                "%d blocks (same steps, schedule and data order)", checkpoint, saved["processes"], world_size,
                saved["grad_accum"], grad_accum, global_batch)
    return grad_accum, change


def is_deepspeed_checkpoint(checkpoint: Path | None) -> bool:
    return checkpoint is not None and any(checkpoint.glob("global_step*"))


def load_deepspeed_fp32(checkpoint: Path, model) -> None:
    """Load the fp32 master weights of a DeepSpeed checkpoint into `model`, rebuilt from the
    ZeRO partitions by DeepSpeed's own zero_to_fp32 (whole for ZeRO-2 and ZeRO-3 alike; the
    checkpoint's model.safetensors is not, under ZeRO-3)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("position_ids")]
    if missing or unexpected:
        raise StageInputError(f"pretrain: the fp32 weights rebuilt from {checkpoint} do not fit the model "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]}).\n  fix: resume on "
                              "the number of processes that wrote it, or pass resume=false")


@contextlib.contextmanager
def _skip_engine_load():
    """HF Trainer's DeepSpeed resume (``deepspeed_load_checkpoint``) would load the
    partitioned optimizer states and fail; the weights are already in the model
    (``load_deepspeed_fp32``), so it is skipped for this one train() call. The scheduler,
    RNG and trainer state are still loaded by Trainer from the checkpoint."""
    import transformers.trainer as hf_trainer

    original = hf_trainer.deepspeed_load_checkpoint
    hf_trainer.deepspeed_load_checkpoint = lambda *a, **k: None
    try:
        yield
    finally:
        hf_trainer.deepspeed_load_checkpoint = original


def check_pair_objective(objective: str, pairs: str, in_dir) -> None:
    """The objective must use what the blocks carry: NSP labels are never dropped silently,
    and a pair objective needs the pair blocks it learns from."""
    fix = {"mlm+nsp": "nsp", "mlm+sop": "sop"}
    if objective == "mlm" and pairs == "nsp":
        raise StageInputError(
            f"pretrain: the blocks in {in_dir} carry next-sentence labels (segment pairs=nsp) that objective=mlm "
            "would ignore\n  fix: set objective=mlm+nsp to train on them, or re-run segment with pairs=none")
    if objective in fix and pairs != fix[objective]:
        raise StageInputError(
            f"pretrain: objective={objective} needs sentence-pair blocks made by `segment pairs={fix[objective]}`; "
            f"the blocks in {in_dir} were made with pairs={pairs}\n  fix: re-run segment with "
            f"pairs={fix[objective]}, or set objective=mlm")


def largest_remainder(weights: list[float], total: int) -> list[int]:
    """Integers proportional to `weights` that add up to `total` (Hamilton's method)."""
    raw = [w * total for w in weights]
    out = [int(math.floor(r)) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))[: total - sum(out)]:
        out[i] += 1
    return out


def mixed_train_set(cfg: PretrainConfig, primary, primary_name: str, model_vocab_check, world_size: int):
    """Replay: the main train blocks and each `mix` input's, drawn in their weights' shares.

    The run's blocks are fixed up front: N = max_steps x batch x grad_accum x devices (one
    pass of the Trainer's sampler is exactly the run), or, for epoch-based runs, enough for
    the main input to be seen once per epoch. Each source gives round(weight x N) blocks
    (largest remainder), drawn without replacement from seeded permutations of its blocks
    (a source smaller than its share is repeated, a larger one sampled). The Trainer's
    sampler shuffles them as usual, so order, masks and resume are exactly those of a plain
    run over this set. A `mix_source` column tells the collator which source each block came
    from; it counts them per batch (the achieved mixture in the manifest)."""
    import datasets

    weights = [1.0 - sum(m.weight for m in cfg.mix)] + [m.weight for m in cfg.mix]
    sources = [(primary_name, primary)]
    for i, m in enumerate(cfg.mix):
        path = Path(m.input)
        upstream = require_stage_output(path, "segment", needed_by=f"pretrain (mix[{i}])")
        model_vocab_check(path, upstream)
        dd = load_stage_dataset(path, needed_by=f"pretrain (mix[{i}])", manifest=upstream)
        if "train" not in dd or len(dd["train"]) == 0:
            raise StageInputError(f"pretrain: mix[{i}] {path} has no train blocks")
        sources.append((str(path), dd["train"]))
    columns = primary.column_names
    for name, ds in sources[1:]:
        missing = [c for c in columns if c not in ds.column_names]
        if missing:
            raise StageInputError(
                f"pretrain: mix input {name} has no column(s) {missing} that the main input {primary_name} has\n"
                f"  fix: segment both with the same settings (pairs, entities) so their blocks carry the same fields")
        for c in columns:
            if ds.features[c] != primary.features[c]:
                raise StageInputError(f"pretrain: column '{c}' of mix input {name} is {ds.features[c]}, but "
                                      f"{primary.features[c]} in {primary_name}; segment both with the same version")
    per_step = cfg.batch_size * cfg.grad_accum * world_size
    if cfg.max_steps > 0:
        total = cfg.max_steps * per_step
    else:
        total = math.ceil(len(primary) / weights[0])
    want = largest_remainder(weights, total)
    picks, offset = [], 0
    for k, ((name, ds), n) in enumerate(zip(sources, want)):
        rng = np.random.default_rng([cfg.seed, 0x6D6978, k])  # "mix"
        chunks, left = [], n
        while left > 0:
            chunk = rng.permutation(len(ds))[:left]
            chunks.append(chunk)
            left -= len(chunk)
        picks.append((np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)) + offset)
        offset += len(ds)
    parts = [ds.select_columns(columns).add_column("mix_source", np.full(len(ds), k, dtype=np.int8))
             for k, (_, ds) in enumerate(sources)]
    mixed = datasets.concatenate_datasets(parts).select(np.concatenate(picks))
    info = {"sources": [name for name, _ in sources], "target": weights, "blocks_planned": want,
            "source_blocks": [len(ds) for _, ds in sources],
            "repeats": [round(n / max(len(ds), 1), 3) for (_, ds), n in zip(sources, want)]}
    return mixed, info


def _mixture_callback(collator: StepSeededCollator, grad_accum: int, committed: np.ndarray):
    """Folds the batches of every finished optimizer step into `committed` and writes it into
    each checkpoint (mixture.json), so a resumed run continues the count exactly."""
    from transformers import TrainerCallback

    class MixtureCount(TrainerCallback):
        def fold(self, step: int) -> None:
            for index in [i for i in collator.mix_seen if i < step * grad_accum]:
                committed[:] += collator.mix_seen.pop(index)

        def on_save(self, args, state, control, **kwargs):
            self.fold(state.global_step)
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir() and args.process_index == 0:
                (ckpt / "mixture.json").write_text(json.dumps({"step": state.global_step,
                                                               "blocks": committed.tolist()}) + "\n")

        def on_train_end(self, args, state, control, **kwargs):
            self.fold(state.global_step)

    return MixtureCount()


@owns_output("pretrain")
def run(cfg: PretrainConfig, *, callbacks: list | None = None) -> dict[str, Any]:
    """Train, then write the output dir. `callbacks`: extra TrainerCallbacks (tests use one to
    emulate a crash). The output and the checkpoint directory each have one writer: a second
    run on either fails at once instead of resuming from the live run's checkpoints."""
    with claim_output(cfg.checkpoints_path(), stage="pretrain", inputs=config_inputs(cfg), is_own=_own_checkpoints):
        return _train(cfg, callbacks)


def _train(cfg: PretrainConfig, callbacks: list | None) -> dict[str, Any]:
    import torch
    from transformers import EarlyStoppingCallback

    started = time.time()
    # 1. Inputs: a finished segment output, made with this model's vocabulary.
    in_dir = cfg.input_path()
    upstream = require_stage_output(in_dir, "segment", needed_by="pretrain")
    verify_model_dir(cfg.model, needed_by="pretrain")
    tok = load_tokenizer(cfg.model, needed_by="pretrain")
    # The model learns text folded by prepare; its saved tokenizer folds raw text the same way.
    tok = install_char_map(tok, (upstream.get("tokenizer") or {}).get("char_map") or {})
    model_vocab = check_blocks_vocab(in_dir, upstream, cfg.model, tok, needed_by="pretrain")
    if cfg.deepspeed:
        # DeepSpeed's CPU allreduce leaves a ~66 MB shared-memory segment per rank in /dev/shm
        # (memory) unless it is unlinked: see workbench/deepspeed_shm.py.
        deepspeed_shm.release_at_exit()
        check_deepspeed_config(cfg.deepspeed, needed_by="pretrain",  # before the (slow) model load
                               settings={"schedule": cfg.schedule, "warmup_ratio": cfg.warmup_ratio, "lr": cfg.lr,
                                         "weight_decay": cfg.weight_decay})
    dd = load_stage_dataset(in_dir, needed_by="pretrain", manifest=upstream)
    if "train" not in dd or len(dd["train"]) == 0:
        raise StageInputError(f"pretrain: {in_dir}/dataset has no train blocks; re-run prepare/segment with more text")
    train_ds = dd["train"]
    eval_ds = dd["valid"] if "valid" in dd and len(dd["valid"]) else None
    if eval_ds is None:
        log.warning("pretrain: %s has no valid blocks: no evaluation, no perplexity (set prepare split.valid_fraction > 0)",
                    in_dir)

    check_pair_objective(cfg.objective, (upstream.get("config") or {}).get("pairs", "none"), in_dir)

    # 2. The model; its MLM head must be continued, not re-initialised. Weights the checkpoint
    # lacks (a new pair head) are drawn from the run's seed, so two runs start alike.
    from transformers import set_seed

    set_seed(cfg.seed)
    pair_head_new = None
    if cfg.objective == "mlm":
        model, head_missing = load_masked_lm(cfg.model, needed_by="pretrain")
        set_sparse_mlm_head(model, cfg.sparse_mlm_head)
    else:
        model, head_missing, pair_head_new = load_masked_lm_with_pair_head(cfg.model, needed_by="pretrain")
    if model.config.vocab_size < len(tok):
        raise StageInputError(f"pretrain: model '{cfg.model}' has vocab_size {model.config.vocab_size} but its "
                              f"tokenizer {len(tok)} tokens")

    # 3. Trainer arguments. Checkpoints go beside the output, not into the atomic temp dir.
    out_dir, ckpt_dir = cfg.output_path(), cfg.checkpoints_path()
    resume_from = latest_checkpoint(ckpt_dir) if cfg.resume and ckpt_dir.is_dir() else None
    if resume_from is not None:
        _check_resume_config(ckpt_dir, cfg)
        check_checkpoint_files(resume_from)
    if not cfg.resume and ckpt_dir.exists():
        log.warning("pretrain: resume=false: deleting the old checkpoints in %s", ckpt_dir)
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    # A step is one global batch; a resume on another number of processes keeps it (resume_shape).
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    grad_accum, world_change = resume_shape(resume_from, cfg, world_size)
    run_cfg = cfg.model_copy(update={"grad_accum": grad_accum})  # what this process trains with
    cuda = torch.cuda.is_available()
    precision = cfg.precision
    if precision == "fp16" and not cuda:
        log.warning("pretrain: precision=fp16 needs a GPU; training in fp32 on CPU")
        precision = "fp32"
    do_eval = eval_ds is not None
    early = cfg.early_stopping_patience is not None and do_eval
    args = training_arguments(dict(
        output_dir=str(ckpt_dir),
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=cfg.schedule,
        weight_decay=cfg.weight_decay,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy="steps" if do_eval else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        report_to=["tensorboard"],
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=cfg.dataloader_workers,
        remove_unused_columns=False,  # the collator reads word_ids / entity_tags / pair_split
        include_num_input_tokens_seen="non_padding",
        use_cpu=not cuda,
        deepspeed=cfg.deepspeed,
        disable_tqdm=not sys.stderr.isatty(),  # a progress bar on a terminal, none in logs
    ), cfg.trainer, needed_by="pretrain")
    # BertForMaskedLM.forward takes **kwargs, so Trainer assumes it normalises its loss by
    # `num_items_in_batch` over the accumulated micro-batches and skips dividing by
    # grad_accum; but it returns a plain per-batch mean. Without this, gradients and the
    # logged train loss come out grad_accum times too large.
    model.accepts_loss_kwargs = False
    if args.world_size != world_size:
        raise StageInputError(f"pretrain: the launcher says WORLD_SIZE={world_size} but the Trainer sees "
                              f"{args.world_size} processes; start the run with torchrun, deepspeed or accelerate")
    # A DeepSpeed ZeRO checkpoint holds its optimizer states partitioned over the processes that
    # wrote it; DeepSpeed refuses to load them on another number of processes, and its universal-
    # checkpoint converter needs metadata HF Trainer does not save. So the fp32 master weights are
    # rebuilt from the partitions and loaded before the engine is made; step, schedule, RNGs and
    # data position still come from the checkpoint; the Adam moments start again from zero.
    fresh_optimizer = bool(world_change and cfg.deepspeed and is_deepspeed_checkpoint(resume_from))
    if fresh_optimizer:
        load_deepspeed_fp32(resume_from, model)
        log.warning("pretrain: %s is a DeepSpeed checkpoint of %d processes: its optimizer states cannot be "
                    "re-partitioned for %d, so the fp32 weights, step, schedule and data position are restored and "
                    "the optimizer moments start from zero (expect a short bump in the loss)",
                    resume_from, world_change["from_processes"], world_size)
    MLMTrainer, CollatorPass = _trainer_classes()
    masking = cfg.masking.model_copy(update={"sop": True}) if cfg.objective == "mlm+sop" else cfg.masking
    train_collator = StepSeededCollator(MaskingCollator(masking, tok, seed=cfg.seed), cfg.seed, TRAIN_STREAM,
                                        args.process_index)
    mixture, mix_counted = None, None
    if cfg.mix:
        train_ds, mixture = mixed_train_set(
            run_cfg, train_ds, str(in_dir),
            lambda path, up: check_blocks_vocab(path, up, cfg.model, tok, needed_by="pretrain (mix)"), args.world_size)
        train_collator.mix_sources = len(mixture["sources"])
        mix_counted = np.zeros(len(mixture["sources"]), dtype=np.int64)
        if resume_from is not None and (resume_from / "mixture.json").is_file():
            mix_counted += np.array(json.loads((resume_from / "mixture.json").read_text())["blocks"], dtype=np.int64)
        elif resume_from is not None:  # e.g. written with dataloader_workers > 0: the count restarts here
            mixture["counted_from_step"] = int(resume_from.name.rsplit("-", 1)[1])
            log.warning("pretrain: %s has no mixture.json; the achieved mixture is counted from step %d on",
                        resume_from, mixture["counted_from_step"])
        log.info("pretrain: replay mixture %s over %s blocks (%s)", ", ".join(
            f"{n} {w:.0%}" for n, w in zip(mixture["sources"], mixture["target"])), f"{len(train_ds):,}",
            ", ".join(f"{b:,} drawn from {t:,}" for b, t in zip(mixture["blocks_planned"], mixture["source_blocks"])))
    eval_collator = eval_mask_collator(masking, tok, cfg.seed, args.process_index)
    global_batch = cfg.batch_size * grad_accum * args.world_size
    all_callbacks = [CollatorPass(train_collator), _shape_callback(
        {"processes": args.world_size, "batch_size": cfg.batch_size, "grad_accum": grad_accum,
         "global_batch": global_batch}), *(callbacks or [])]
    if mixture is not None and cfg.dataloader_workers == 0:
        all_callbacks.append(_mixture_callback(train_collator, grad_accum, mix_counted))
    if early:
        all_callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    with tensorboard_dir(ckpt_dir / "tensorboard"):
        trainer = MLMTrainer(
            model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
            data_collator=train_collator, eval_collator=eval_collator, processing_class=tok,
            pair_objective=cfg.objective != "mlm",
            compute_metrics=compute_metrics if do_eval else None,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics if do_eval else None,
            callbacks=all_callbacks,
        )
    (ckpt_dir / "pretrain_config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n",
                                                   encoding="utf-8")
    log.info("pretrain: %s train / %s valid blocks from %s, model %s → %s (checkpoints %s)%s",
                f"{len(train_ds):,}", f"{len(eval_ds) if eval_ds is not None else 0:,}", in_dir, cfg.model,
                out_dir, ckpt_dir, f"; resuming from {resume_from}" if resume_from else "")

    # 4. Train (resuming from the latest checkpoint if any), then a final evaluation.
    # Trainer resumed from a checkpoint at or past the last step still runs one more step
    # (it checks max_steps after a step), so a finished run only reloads its last checkpoint.
    done_step = _checkpoint_step(resume_from) if resume_from else 0
    total_steps = planned_steps(run_cfg, len(train_ds), args.world_size)
    if resume_from and done_step >= total_steps:
        from transformers import TrainerState

        log.info("pretrain: %s is already at step %d of %d; writing the output without training",
                 resume_from, done_step, total_steps)
        if cfg.deepspeed and is_deepspeed_checkpoint(resume_from):
            load_deepspeed_fp32(resume_from, trainer.model)  # no engine exists: train() never ran
        else:
            trainer._load_from_checkpoint(str(resume_from))
        trainer.state = TrainerState.load_from_json(str(resume_from / "trainer_state.json"))
        last = next((h["train_loss"] for h in reversed(trainer.state.log_history) if "train_loss" in h), None)
        train_loss = whole_run_train_loss(trainer.state.log_history, done_step, done_step, last)
        trained = False
    else:
        # HF's training_loss averages this train() call's steps only; the steps before the
        # checkpoint come from its log history, complete up to it when every save step logs.
        trainer.add_callback(_log_at_save_callback())
        with _skip_engine_load() if fresh_optimizer else contextlib.nullcontext():
            call_loss = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None).training_loss
        train_loss = whole_run_train_loss(trainer.state.log_history, done_step, trainer.state.global_step, call_loss)
        trained = True
    # The final evaluation: the Trainer's own at the last step when there was one (the model
    # has not changed since; evaluating again would cost a full pass over the valid blocks
    # for the same numbers), else one now. With early stopping the best checkpoint was
    # reloaded, so it is evaluated again.
    last_eval = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if do_eval and not early and last_eval is not None and last_eval.get("step") == trainer.state.global_step:
        final_eval = {k: v for k, v in last_eval.items() if k.startswith("eval_")}
    else:
        final_eval = trainer.evaluate() if do_eval else {}
    history = trainer.state.log_history

    # 5. Output dir, atomically: model + tokenizer, metrics, plot, manifest.
    metrics = {
        "global_step": trainer.state.global_step,
        "train_loss": train_loss,
        "eval_loss": final_eval.get("eval_loss"),
        "eval_perplexity": final_eval.get("eval_perplexity"),
        "eval_masked_accuracy": final_eval.get("eval_masked_accuracy"),
        "eval_pair_accuracy": final_eval.get("eval_pair_accuracy"),
        "best_checkpoint": trainer.state.best_model_checkpoint,
    }
    train_logs = [h for h in history if "loss" in h]
    counts = {
        "steps": trainer.state.global_step,
        "train_blocks": len(train_ds),
        "eval_blocks": len(eval_ds) if eval_ds is not None else 0,
        "tokens_seen": int(trainer.state.num_input_tokens_seen),
        "epochs": round(float(trainer.state.epoch or 0.0), 4),
        "first_train_loss": train_logs[0]["loss"] if train_logs else None,
        "last_train_loss": train_logs[-1]["loss"] if train_logs else None,
        "last_train_loss_step": train_logs[-1]["step"] if train_logs else None,
    }
    if not trainer.is_world_process_zero():
        set_sparse_mlm_head(trainer.model, False)
        # Other ranks take part in save_model (ZeRO-3 gathers the shards from every rank) but
        # write nothing; only rank 0 writes the output directory.
        if trained:
            trainer.save_model(str(ckpt_dir / f"not-written-rank{trainer.args.process_index}"))
        shutil.rmtree(ckpt_dir / f"not-written-rank{trainer.args.process_index}", ignore_errors=True)
        _leave_process_group()
        return {"stage": "pretrain", "rank": trainer.args.process_index, "metrics": metrics, "counts": counts}
    with atomic_output_dir(out_dir) as tmp:
        set_sparse_mlm_head(trainer.model, False)  # config.json names BertForMaskedLM
        if trained:
            trainer.save_model(str(tmp))  # save_pretrained (safetensors) + tokenizer; gathers ZeRO-3 shards
        else:  # no DeepSpeed engine was made: the model is a plain module holding the checkpoint's weights
            trainer.model.save_pretrained(str(tmp))
        cap_model_max_length(tok, trainer.model.config)
        tok.save_pretrained(str(tmp))
        (tmp / "metrics.json").write_text(json.dumps({"final": metrics, "log_history": history}, indent=2) + "\n",
                                          encoding="utf-8")
        _plot(history, tmp / "loss.png")
        for junk in ("training_args.bin",):
            (tmp / junk).unlink(missing_ok=True)
        manifest = write_manifest(
            tmp, stage="pretrain", config=cfg.model_dump(mode="json"),
            inputs=[{"path": str(in_dir), "stage": "segment", "manifest_sha256": sha256_file(in_dir / MANIFEST)},
                    *[{"path": m.input, "stage": "segment", "role": "mix", "weight": m.weight,
                       "manifest_sha256": sha256_file(Path(m.input) / MANIFEST)} for m in cfg.mix],
                    {"model": cfg.model}],
            counts=counts, seed=cfg.seed, started=started, finished=time.time(),
            hash_exclude=("loss.png", "metrics.json"),
            extra={
                "metrics": metrics,
                "tokenizer": {"model": cfg.model, "vocab_size": len(tok), "vocab_sha256": model_vocab},
                "mlm_head_reinitialised": bool(head_missing),
                "objective": cfg.objective,
                "pair_head_new": pair_head_new,
                "mlm_head_missing_keys": head_missing,
                "resumed_from": str(resume_from) if resume_from else None,
                "processes": args.world_size,
                "global_batch": global_batch,
                "resume": None if resume_from is None else {
                    "checkpoint": str(resume_from), "step": done_step,
                    # batches passed over in the pass it resumed in: by index (never read) or replayed
                    "skipped": getattr(trainer, "resume_skip", None),
                    # batches this process collated (0 DataLoader workers; else counted in the workers)
                    "collated_batches": train_collator.collated if cfg.dataloader_workers == 0 else None,
                    "processes_changed": world_change,
                    "optimizer": "fresh (DeepSpeed cannot re-partition ZeRO states for another world size)"
                                 if fresh_optimizer else "restored"},
                "checkpoints": str(ckpt_dir),
                "precision": precision,
                "device": "cuda" if cuda else "cpu",
                "mixture": _mixture_report(mixture, mix_counted, cfg, args.world_size),
            },
        )
    _leave_process_group()
    _print_summary(manifest, out_dir)
    return manifest


def whole_run_train_loss(history: list[dict], resumed_at: int, last_step: int, call_loss: float | None) -> float | None:
    """Mean train loss per step over steps 1..`last_step`, however many processes ran them.

    Steps up to `resumed_at` (the checkpoint this process resumed from, 0 for none) come from
    the log history restored with it: a logged `loss` is the mean over the steps since the
    previous logged one, so it counts that many times (every save step logs, see
    `_log_at_save_callback`). Steps `resumed_at`+1..`last_step` come from `call_loss`, HF's
    `training_loss` of this train() call (its mean over exactly those steps). So the result
    is the same for a run interrupted and resumed as for one that ran straight through."""
    total, steps, prev = 0.0, 0, 0
    for h in history:
        if "loss" in h and prev < h["step"] <= resumed_at:
            total += h["loss"] * (h["step"] - prev)
            steps += h["step"] - prev
            prev = h["step"]
    if call_loss is not None and last_step > resumed_at:
        total += call_loss * (last_step - resumed_at)
        steps += last_step - resumed_at
    return total / steps if steps else call_loss


def _log_at_save_callback():
    """A TrainerCallback that logs the train loss at every step that saves a checkpoint, so a
    checkpoint's log history covers every step before it (with logging_steps not dividing
    save_steps, the steps since the last log would otherwise be lost on a resume)."""
    from transformers import TrainerCallback

    class LogAtSave(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save:
                control.should_log = True
            return control

    return LogAtSave()


def _leave_process_group() -> None:
    """Under the deepspeed launcher: wait for every rank (rank 0 writes the output while the
    others are done), then tear the process group down. A rank that exits with the group
    alive can abort in the gloo/NCCL threads' destructors ("terminate called without an
    active exception", exit -6), which the launcher reports as a failed run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    ev = [(h["step"], h["eval_loss"], h.get("eval_perplexity")) for h in history if "eval_loss" in h]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax1.plot(*zip(*train), label="train loss")
    if ev:
        ax1.plot([e[0] for e in ev], [e[1] for e in ev], "o-", label="eval loss")
        ax2.plot([e[0] for e in ev], [e[2] for e in ev], "o-", color="C2", label="eval perplexity")
    ax1.set_xlabel("optimizer step"), ax1.set_ylabel("MLM loss (nats / labelled token)"), ax1.legend()
    ax2.set_xlabel("optimizer step"), ax2.set_ylabel("perplexity = exp(eval loss)"), ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mixture_report(mixture: dict | None, counted: np.ndarray | None, cfg: PretrainConfig, world_size: int):
    if mixture is None:
        return None
    out = {**mixture}
    if cfg.dataloader_workers or counted is None:
        out["blocks_trained"] = None
        out["note"] = "dataloader_workers > 0: blocks are collated in worker processes and not counted"
        return out
    total = int(counted.sum())
    out["blocks_trained"] = counted.tolist()
    out["achieved"] = [round(int(c) / total, 5) if total else None for c in counted]
    out["max_abs_deviation"] = (round(max(abs(int(c) / total - w) for c, w in zip(counted, mixture["target"])), 5)
                                if total else None)
    notes = []
    if out.get("counted_from_step"):
        notes.append(f"counted from step {out['counted_from_step']} on (the checkpoint resumed from had no "
                     "mixture.json)")
    if world_size > 1:
        notes.append(f"counted on rank 0 (its 1/{world_size} of the blocks)")
    if notes:
        out["note"] = "; ".join(notes)
    return out


def _print_summary(m: dict[str, Any], out_dir: Path) -> None:
    c, x = m["counts"], m["metrics"]

    def f(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "n/a"

    print(f"pretrain done in {m['wall_time_s']:.1f}s → {out_dir} (checkpoints {m['checkpoints']})\n"
          f"  {c['steps']:,} steps ({c['epochs']} epochs), {c['tokens_seen']:,} tokens seen; "
          f"train loss {f(c['first_train_loss'], '.3f')} (step 1) → {f(c['last_train_loss'], '.3f')} "
          f"(step {c['last_train_loss_step']}), mean {f(x['train_loss'], '.3f')}\n"
          f"  eval: loss {f(x['eval_loss'], '.4f')}, perplexity {f(x['eval_perplexity'], '.2f')}, "
          f"masked accuracy {f(x['eval_masked_accuracy'], '.2%')}"
          + ("\n  WARNING: the MLM head was newly initialised" if m["mlm_head_reinitialised"] else "")
          + (("\n  replay mixture: " + ", ".join(
              f"{Path(s).name if len(s) > 40 else s} {w:.1%} → {a:.1%}" if a is not None else f"{s} {w:.1%}"
              for s, w, a in zip(m["mixture"]["sources"], m["mixture"]["target"],
                                 m["mixture"].get("achieved") or [None] * len(m["mixture"]["sources"]))))
             if m.get("mixture") else ""))
