"""evaluate: score a task model on a labelled file, or any masked LM's MLM loss on a segment output.

Which one is decided by `input`: a file is task evaluation, a directory (a `segment` output)
is MLM scoring. A mixture (a finetune model with a segment output, a masked LM with a
labelled file, options of the other kind) is an error naming both.

Task evaluation: score a finetune/export directory on a labelled file.

    workbench evaluate model=runs/demo/finetune-classification input=corpora/demo/reviews/test.tsv output=runs/demo/eval-test

The file is read the way the model's training files were (task.json's `data`, or `data.*`
given here), labels are checked against the model's (unknown: error or drop), and the
texts are predicted with the same code as `predict` (truncation / windows + stitching /
CRF). Written atomically to the output directory:

  metrics.json   the task's metrics (accuracy, macro-F1, per-class; multilabel micro-F1;
                 entity P/R/F1 per type), length statistics, label checks
  report.md      the same as tables
  confusion.png  classification / pair: confusion matrix (rows true, columns predicted)
  errors.jsonl   the `worst` errors: classification, the most confident wrong predictions;
                 multilabel, records whose label set is wrong, largest probability error
                 first; tagging, sentences with the most missed + spurious entities
  manifest.json  model, input file hash, counts

MLM scoring ("did continued pretraining help?": the base model and the pretrained one on
the same held-out text, with the same masks):

    workbench evaluate model=runs/demo/base-model input=runs/demo/segmented output=runs/demo/mlm-base
    workbench evaluate model=runs/demo/pretrain   input=runs/demo/segmented output=runs/demo/mlm-pretrain

The model must be a masked LM with its MLM head (a random head would give a meaningless
loss) and the blocks must be made with its vocabulary (the check pretrain makes). Blocks of
`split` are batched in their stored order and masked by pretrain's own evaluation collator
(``pretrain.eval_mask_collator``: batch k's masks are drawn from (seed, eval stream, 0, k)),
so the masks depend on the blocks, `masking`, `seed` and `batch_size` only, never on the
model, and are the ones pretrain's final evaluation drew. No training, nothing large written:

  metrics.json   loss (mean cross-entropy per labelled token, nats), perplexity = exp(loss),
                 masked_accuracy, loss_batch_mean (mean over batches of each batch's loss: the
                 way HF Trainer averages, i.e. pretrain's eval_loss for the same batch_size),
                 blocks / tokens / labelled_tokens, split, masking, seed, batch_size and
                 masks_sha256 (a hash of every batch's masked inputs and labels: equal
                 values, identical masks)
  manifest.json  model, segment manifest hash, vocabulary hash, counts
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import EvaluateConfig, TaskDataConfig
from workbench.errors import ConfigError, InputError, StageInputError
from workbench.manifest import (MANIFEST, atomic_output_dir, load_stage_dataset, owns_output, read_manifest,
                                require_stage_output, sha256_file, verify_model_dir, write_manifest)
from workbench.report.escape import md_cell, md_code, md_fence
from workbench.tasks.heads import load_task_model
from workbench.tasks.labels import LabelMap, check_labels
from workbench.tasks.metrics import format_table


def _errors(spec, records, preds: dict, worst: int) -> list[dict]:
    from workbench.tasks.inference import entities

    out = []
    if spec.task == "qa":  # wrong answers, lowest F1 first (tasks/qa.py)
        from workbench.tasks.qa import errors as qa_errors

        return qa_errors(records, preds, worst)
    if spec.task == "tagging":
        for r, tags in zip(records, preds["tags"]):
            gold = {(s, e, t) for s, e, t in r.spans}
            pred = {(e["start"], e["end"], e["type"]) for e in entities(r.text, tags, spec.scheme)}
            if gold != pred:
                span = lambda x: {"start": x[0], "end": x[1], "type": x[2], "text": r.text[x[0]:x[1]]}  # noqa: E731
                out.append({"line": r.line, "text": r.text, "missed": [span(x) for x in sorted(gold - pred)],
                            "spurious": [span(x) for x in sorted(pred - gold)], "_key": len(gold ^ pred)})
    elif spec.multilabel:
        lm = LabelMap(tuple(spec.labels))
        probs = preds["probs"]
        for r, p in zip(records, probs):
            gold = np.array(lm.multi_hot(r.labels))
            predicted = [spec.labels[j] for j in range(len(p)) if p[j] >= spec.threshold]
            if set(predicted) != set(r.labels):
                out.append({"line": r.line, "text": r.text, "labels": list(r.labels), "predicted": predicted,
                            "_key": float(np.abs(gold - p).max())})
    else:
        probs = preds["probs"]
        for r, p in zip(records, probs):
            j = int(p.argmax())
            if spec.labels[j] != r.label:
                row = {"line": r.line, "text": r.text, "label": r.label, "predicted": spec.labels[j],
                       "score": round(float(p[j]), 6), "_key": float(p[j])}
                if r.text_pair is not None:
                    row["text_pair"] = r.text_pair
                out.append(row)
    out.sort(key=lambda x: -x["_key"])
    for row in out:
        del row["_key"]
    return out[:worst]


def _report(spec, metrics: dict, source: str, n_errors: int) -> str:
    lines = [f"# Evaluation: {spec.task}", "", f"- input: {md_code(source)} ({metrics.get('n', '?')} records)"]
    keys = {"tagging": ("precision", "recall", "f1", "macro_f1"), "multilabel": ("micro_f1", "macro_f1", "exact_match"),
            "qa": ("em", "f1")}
    for k in keys.get(spec.task, ("accuracy", "macro_f1", "weighted_f1")):
        lines.append(f"- {k}: {metrics[k]:.4f}")
    lines += [f"- errors listed in errors.jsonl: {n_errors}", ""]
    table = metrics.get("per_type" if spec.task == "tagging" else "per_class") or {}
    lines += ["| " + ("entity" if spec.task == "tagging" else "label") + " | precision | recall | f1 | support |",
              "|---|---|---|---|---|"] if table else []  # qa: no per-class table
    lines += [f"| {md_cell(k)} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
              for k, v in table.items()]
    if "confusion_matrix" in metrics:
        lines += ["", "Confusion matrix (rows true, columns predicted):", "",
                  "| | " + " | ".join(map(md_cell, spec.labels)) + " |", "|---" * (len(spec.labels) + 1) + "|"]
        lines += [f"| {md_cell(spec.labels[i])} | " + " | ".join(str(c) for c in row) + " |"
                  for i, row in enumerate(metrics["confusion_matrix"])]
    lines += ["", md_fence(format_table(table)), ""] if table else [""]
    return "\n".join(lines)


TASK_BATCH_SIZE, MLM_BATCH_SIZE = 64, 32  # batch_size defaults (MLM: pretrain's, so its eval masks)
MLM_STAGES = ("init-model", "extend-vocab", "pretrain")
TASK_STAGES = ("finetune", "export")


@owns_output("evaluate")
def run(cfg: EvaluateConfig) -> dict[str, Any]:
    mode = "mlm" if Path(cfg.input).is_dir() else "task"
    problems = cfg.mode_problems(mode)
    if problems:
        raise ConfigError(problems)
    default = MLM_BATCH_SIZE if mode == "mlm" else TASK_BATCH_SIZE
    cfg = cfg.model_copy(update={"batch_size": cfg.batch_size or default})
    return score_mlm(cfg) if mode == "mlm" else _evaluate_task(cfg)


def _model_kind(model: str) -> tuple[str | None, bool]:
    """(the stage that wrote directory `model`, if any; whether it holds a task model)."""
    from workbench.tasks.heads import TASK_FILE

    path = Path(model)
    if not path.is_dir():
        return None, False
    stage = (read_manifest(path) or {}).get("stage")
    return stage, stage in TASK_STAGES or (path / TASK_FILE).is_file()


def _evaluate_task(cfg: EvaluateConfig) -> dict[str, Any]:
    from workbench.stages.finetune import read_records
    from workbench.tasks.inference import evaluate_records
    from workbench.tasks.plots import plot_confusion

    started = time.time()
    stage, is_task = _model_kind(cfg.model)
    if not is_task and (stage in MLM_STAGES or (Path(cfg.model) / "config.json").is_file()):
        what = f"a masked LM (`{stage}` output)" if stage in MLM_STAGES else "a model directory without task.json"
        raise StageInputError(
            f"evaluate: model {cfg.model} is {what}, not a task model, but input={cfg.input} is a "
            "labelled file\n  fix: to evaluate a task model on this file, pass model= a `finetune` or `export` output; "
            "to score this model's MLM loss, pass input= a `segment` output directory")
    model_manifest = verify_model_dir(cfg.model, needed_by="evaluate") or {}
    model, crf, tok, spec = load_task_model(cfg.model, needed_by="evaluate")
    data = cfg.data or TaskDataConfig(**spec.data)
    records, read_info = read_records(cfg.input, types.SimpleNamespace(task=spec.task, data=data), data)
    records, check = check_labels(records, LabelMap(tuple(spec.labels)), unknown=cfg.unknown_labels,
                                  multilabel=spec.multilabel)
    if not records:
        raise InputError(cfg.input, "no record is left after dropping labels the model does not know",
                         "evaluate on a file with the model's labels")
    metrics, preds = evaluate_records(model, crf, tok, spec, records, batch_size=cfg.batch_size)
    metrics["label_check"] = check.summary()
    if read_info.get("repaired"):
        metrics["repaired"] = read_info["repaired"]
    errors = _errors(spec, records, preds, cfg.worst)
    out = cfg.output_path()
    with atomic_output_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(_report(spec, metrics, cfg.input, len(errors)), encoding="utf-8")
        (tmp / "errors.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors), encoding="utf-8")
        if "confusion_matrix" in metrics:
            plot_confusion(metrics["confusion_matrix"], spec.labels, tmp / "confusion.png",
                           title=f"accuracy {metrics['accuracy']:.3f}")
        manifest = write_manifest(
            tmp, stage="evaluate", config=cfg.model_dump(mode="json"),
            inputs=[{"role": "input", "path": str(cfg.input), "sha256": sha256_file(cfg.input)},
                    {"role": "model", "path": str(cfg.model), "stage": model_manifest.get("stage"),
                     "model_sha256": model_manifest.get("outputs", {}).get("model.safetensors")}],
            counts={"records": len(records), "errors_listed": len(errors), "dropped": check.dropped_records},
            seed=cfg.seed, started=started, finished=time.time(), extra={"task": spec.task},
        )
    main = {"tagging": "f1", "multilabel": "micro_f1", "qa": "f1"}.get(spec.task, "accuracy")
    print(f"evaluate → {out}: {len(records)} records, {main} {metrics[main]:.4f}, {len(errors)} errors listed")
    return manifest


# --------------------------------------------------------------------------- MLM scoring
def score_mlm(cfg: EvaluateConfig) -> dict[str, Any]:
    """Held-out MLM loss of the masked LM `cfg.model` on the `cfg.split` blocks of the segment
    output `cfg.input`, with pretrain's evaluation masks (module doc). Writes metrics.json +
    manifest.json to the output directory; returns the manifest."""
    import torch

    from workbench.stages.pretrain import _perplexity, check_blocks_vocab, eval_mask_collator
    from workbench.vocab.normalize import install_char_map
    from workbench.vocab.tokenizer import load_tokenizer

    started = time.time()
    # 1. Inputs: a verified segment output, a masked LM (not a task model) with its vocabulary.
    in_dir = Path(cfg.input)
    found = read_manifest(in_dir)
    if found is not None and found.get("stage") != "segment":
        raise StageInputError(
            f"evaluate: input {in_dir} is a `{found.get('stage')}` output; evaluate reads a labelled file (a task "
            "model's evaluation) or a `segment` output directory (MLM scoring)\n"
            f"  fix: for MLM scoring run `workbench segment input={in_dir} model={cfg.model}` first and pass its output")
    upstream = require_stage_output(in_dir, "segment", needed_by="evaluate")
    stage, is_task = _model_kind(cfg.model)
    if is_task:
        raise StageInputError(
            f"evaluate: model {cfg.model} is a {'`' + stage + '` output' if stage else 'task model (task.json)'}, "
            f"a fine-tuned task model without an MLM head, but input={in_dir} is a `segment` output (MLM scoring)\n"
            "  fix: to score MLM loss, pass model= a masked LM (an init-model / extend-vocab / pretrain output or a BERT "
            "with its MLM head); to evaluate the task model, pass input= a labelled file")
    model_manifest = verify_model_dir(cfg.model, needed_by="evaluate") or {}
    tok = load_tokenizer(cfg.model, needed_by="evaluate")
    tok = install_char_map(tok, (upstream.get("tokenizer") or {}).get("char_map") or {})  # as pretrain does
    vocab = check_blocks_vocab(in_dir, upstream, cfg.model, tok, needed_by="evaluate")
    blocks = _split_blocks(load_stage_dataset(in_dir, needed_by="evaluate", manifest=upstream), cfg.split, in_dir)
    if cfg.max_blocks is not None and cfg.max_blocks < len(blocks):
        blocks = blocks.select(range(cfg.max_blocks))
    model = _load_masked_lm_with_head(cfg.model)
    if model.config.vocab_size < len(tok):
        raise StageInputError(f"evaluate: model '{cfg.model}' has vocab_size {model.config.vocab_size} but its "
                              f"tokenizer {len(tok)} tokens")

    # 2. Score: pretrain's eval collator, restarted, over the blocks in order; no gradients.
    collator = eval_mask_collator(cfg.masking, tok, cfg.seed)
    collator.start_pass(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    totals = _score_batches(model, blocks, collator, cfg.batch_size, device)
    if not totals["labelled_tokens"]:
        raise StageInputError(f"evaluate: no token of the {len(blocks)} {cfg.split} blocks in {in_dir} was masked "
                              "(only special tokens?); nothing to score")
    loss = totals.pop("ce_sum") / totals["labelled_tokens"]
    metrics = {
        "task": "mlm",
        "model": str(cfg.model),
        "input": str(in_dir),
        "split": cfg.split,
        "loss": loss,
        "perplexity": _perplexity(loss),
        "masked_accuracy": totals.pop("correct") / totals["labelled_tokens"],
        "loss_batch_mean": _batch_mean(totals.pop("batch_losses")),
        **totals,
        "masking": cfg.masking.model_dump(mode="json"),
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "max_blocks": cfg.max_blocks,
        "vocab_sha256": vocab,
    }

    # 3. Output: metrics.json + manifest, atomically.
    out = cfg.output_path()
    with atomic_output_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        manifest = write_manifest(
            tmp, stage="evaluate", config=cfg.model_dump(mode="json"),
            inputs=[{"role": "input", "path": str(in_dir), "stage": "segment",
                     "manifest_sha256": sha256_file(in_dir / MANIFEST)},
                    {"role": "model", "path": str(cfg.model), "stage": model_manifest.get("stage"),
                     "model_sha256": model_manifest.get("outputs", {}).get("model.safetensors")}],
            counts={k: metrics[k] for k in ("blocks", "batches", "tokens", "labelled_tokens")},
            seed=cfg.seed, started=started, finished=time.time(),
            extra={"task": "mlm", "metrics": {k: metrics[k] for k in ("split", "loss", "perplexity", "masked_accuracy",
                                                                      "loss_batch_mean", "masks_sha256")},
                   "tokenizer": {"model": str(cfg.model), "vocab_size": len(tok), "vocab_sha256": vocab}},
        )
    print(f"evaluate (MLM) → {out}: {metrics['blocks']:,} {cfg.split} blocks, {metrics['labelled_tokens']:,} labelled "
          f"tokens; loss {loss:.4f}, perplexity {metrics['perplexity']:.2f}, masked accuracy "
          f"{metrics['masked_accuracy']:.2%}" + _pretrain_note(model_manifest, cfg, in_dir, metrics))
    return manifest


def _split_blocks(dd, split: str, in_dir: Path):
    """The blocks of `split` (all: train, valid, test concatenated in that order); an error
    naming the splits there are when it has none."""
    import datasets

    names = [s for s in ("train", "valid", "test") if s in dd] if split == "all" else [split]
    parts = [dd[s] for s in names if s in dd and len(dd[s])]
    if not parts:
        there = ", ".join(f"{k} {len(v):,}" for k, v in dd.items()) or "none"
        have = [k for k in ("valid", "test", "train") if k in dd and len(dd[k])]
        raise StageInputError(f"evaluate: {in_dir} has no {split} blocks (blocks per split: {there})\n"
                              f"  fix: pass split={have[0] if have else 'valid'} (or split=all), or re-run prepare with "
                              f"split.valid_fraction > 0 (1.0 holds every document out) and segment")
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _load_masked_lm_with_head(model_name: str):
    """modeling.load_masked_lm, but a checkpoint without its MLM head is an error: a newly
    initialised head scores random guesses, not the model (its warning is silenced here)."""
    from workbench.modeling import load_masked_lm

    modeling_log = logging.getLogger("workbench.modeling")
    level = modeling_log.level
    modeling_log.setLevel(logging.ERROR)
    try:
        model, head_missing = load_masked_lm(model_name, needed_by="evaluate")
    finally:
        modeling_log.setLevel(level)
    if head_missing:
        raise StageInputError(
            f"evaluate: model '{model_name}' has no MLM head weights ({', '.join(head_missing[:3])}"
            f"{' ...' if len(head_missing) > 3 else ''}): a newly initialised head would give a meaningless loss\n"
            "  fix: pass a checkpoint saved with its MLM head (BertForMaskedLM / BertForPreTraining): an init-model, "
            "extend-vocab or pretrain output, or a BERT such as bert-base-chinese")
    return model


def _score_batches(model, blocks, collator, batch_size: int, device) -> dict[str, Any]:
    """Sums over the batches of `blocks` (in order) masked by `collator`: cross-entropy and
    correct argmax over the labelled tokens, counts, each batch's mean loss, a hash of the masks."""
    import torch
    from tqdm.auto import tqdm

    from workbench.masking.collator import IGNORE_INDEX

    digest = hashlib.sha256()
    ce_sum, correct, labelled, tokens, batches, batch_losses = 0.0, 0, 0, 0, 0, []
    n = len(blocks)
    with torch.inference_mode(), tqdm(total=n, desc="evaluate", unit="block", disable=None, mininterval=1) as bar:
        for start in range(0, n, batch_size):
            rows = blocks[start:start + batch_size]  # column → list, as the Trainer's DataLoader hands them
            batch = collator([dict(zip(rows, values)) for values in zip(*rows.values())])
            labels = batch["labels"]
            digest.update(batch["input_ids"].numpy().tobytes())
            digest.update(labels.numpy().tobytes())
            labelled_at = labels != IGNORE_INDEX                          # [B, L]
            k = int(labelled_at.sum())
            tokens += int(batch["attention_mask"].sum())
            batches += 1
            bar.update(len(labels))
            if not k:  # HF Trainer drops such a batch's NaN loss from eval_loss too
                continue
            logits = _labelled_logits(model, {key: batch[key].to(device) for key in
                                              ("input_ids", "attention_mask", "token_type_ids")}, labelled_at.to(device))
            target = labels[labelled_at].to(device)                       # [k]
            ce = torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum").item()
            ce_sum += ce
            batch_losses.append((ce / k, len(labels)))
            correct += int((logits.argmax(dim=-1) == target).sum())
            labelled += k
    return {"ce_sum": ce_sum, "correct": correct, "batch_losses": batch_losses, "blocks": n,
            "batches": batches, "tokens": tokens, "labelled_tokens": labelled, "masks_sha256": digest.hexdigest()}


def _batch_mean(batch_losses: list[tuple[float, int]]) -> float:
    """HF Trainer's eval_loss: each batch's mean loss counted once per block in the batch
    (``loss.repeat(batch_size)``, the last, shorter batch cut to its blocks by
    ``gather_for_metrics``), averaged; batches without a labelled token left out (NaN)."""
    blocks = sum(n for _, n in batch_losses)
    return sum(loss * n for loss, n in batch_losses) / blocks if blocks else float("nan")


def _labelled_logits(model, inputs: dict, labelled_at):
    """[k, V] MLM logits at the k labelled positions (row-major over the batch). A BERT runs its
    head (H x vocab decoder) only there, as pretrain's sparse head does; other masked LMs run whole."""
    from transformers import BertForMaskedLM

    if isinstance(model, BertForMaskedLM):
        hidden = model.bert(**inputs, return_dict=True)[0]               # [B, L, H]
        return model.cls(hidden[labelled_at])
    return model(**inputs).logits[labelled_at]


def _pretrain_note(model_manifest: dict, cfg: EvaluateConfig, in_dir: Path, metrics: dict) -> str:
    """When the model is a pretrain output evaluated on these blocks with these masks: its own
    final eval_loss, for comparison with loss_batch_mean (the same averaging)."""
    pc, final = model_manifest.get("config") or {}, (model_manifest.get("metrics") or {}).get("eval_loss")
    same_input = any(i.get("stage") == "segment" and i.get("path") and Path(i["path"]).resolve() == in_dir.resolve()
                     for i in model_manifest.get("inputs") or [])
    if (model_manifest.get("stage") != "pretrain" or final is None or not same_input or cfg.split != "valid"
            or cfg.max_blocks is not None or pc.get("seed") != cfg.seed or pc.get("batch_size") != cfg.batch_size
            or pc.get("masking") != cfg.masking.model_dump(mode="json")):
        return ""
    return (f"\n  same blocks, masks and batches as pretrain's final evaluation: its eval_loss {final:.4f}, "
            f"loss_batch_mean here {metrics['loss_batch_mean']:.4f} (Trainer's averaging over batches)")
