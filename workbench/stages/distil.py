"""distil: a fine-tuned teacher → a smaller student trained on the teacher's soft targets.

    workbench distil teacher=runs/demo/finetune-classification student_layers=1 output=runs/demo/distil
    workbench distil teacher=runs/ner/finetune-tagging layer_map=[0,2] alpha=0.7 temperature=4

Readable top to bottom:

  1. the teacher (a `finetune` output, verified) and its task: classification, pair,
     multilabel, or tagging WITHOUT a CRF. A CRF teacher is refused: its prediction is the
     Viterbi path over whole-sequence scores, so its per-token emissions are not the
     distribution it predicts, and matching them would distil something the teacher does
     not output (distil a crf=false teacher, or fine-tune the student with a CRF yourself);
  2. data: train/valid/test default to the teacher's own files (its manifest), read with
     finetune's readers and the teacher's label map (``finetune.read_records``,
     ``tasks.labels.check_labels``), encoded with finetune's ``train_features``;
  3. the teacher's logits on every train input, computed once (the teacher is in eval mode,
     so they are the same in every epoch: no teacher forward pass per step);
  4. the student: init=teacher copies the embeddings, the pooler, the head and the encoder
     layers of `layer_map` (default evenly spaced, the top layer included) into a BERT with
     fewer layers; init=random builds a BERT of the shape `student_config` gives;
  5. per seed, HF Trainer with finetune's optimizer groups and per-evaluation callback (the
     whole valid set through the predict code path, best evaluation kept), the loss
         alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(s, y)
     (Hinton et al. 2015; multilabel: the same with per-label Bernoulli distributions;
     tagging: per token, over the tokens that carry a label); alpha=0 is the same student
     trained without the teacher;
  6. teacher and student scored on valid and test with the same code, sizes (parameters,
     bytes of model.safetensors) and CPU latency at each of `latency_batch_sizes`, measured
     in this run: medians of `latency_repeats` timings, teacher and student interleaved;
  7. a finetune-style output (save_pretrained + tokenizer, task.json, labels.json,
     metrics.json with a `distil` section), so `predict`, `evaluate` and `export` read it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import DistilConfig, TaskDataConfig
from workbench.errors import InputError, StageInputError
from workbench.manifest import (MANIFEST, atomic_output_dir, owns_output, read_manifest, require_stage_output,
                                scratch_dir, sha256_file, write_manifest)
from workbench.stages.finetune import _eval_callback, _trainer_class, read_records, train_features
from workbench.tasks.heads import TASK_FILE, TaskSpec, load_task_model
from workbench.tasks.labels import LabelMap, check_labels
from workbench.tasks.metrics import mean_std, summarize_runs
from workbench.trainer_args import resolve_precision, tensorboard_dir, training_arguments

log = logging.getLogger("workbench.distil")

TEACHER_STAGES = ("finetune", "average", "distil")
DISTIL_TASKS = ("classification", "pair", "multilabel", "tagging")
_LAYER_KEY = re.compile(r"^(.*\.encoder\.layer\.)(\d+)(\..+)$")


# --------------------------------------------------------------------------- the loss
def distillation_loss(student_logits, teacher_logits, labels, *, task: str, temperature: float, alpha: float):
    """alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · hard-label loss, a scalar.

    classification / pair: logits (B, C), labels (B,) class ids; KL of the softmax at T,
    averaged over the batch; hard loss = cross-entropy.
    multilabel: logits (B, C), labels (B, C) multi-hot; KL of each label's Bernoulli at T
    (sigmoid(logit / T)), averaged over examples and labels; hard loss = binary cross-entropy.
    tagging: logits (B, L, T), labels (B, L) with -100 where no tag is learnt ([CLS], [SEP],
    padding); both terms averaged over the labelled tokens only.
    The T² keeps the soft gradients' size independent of T (their size goes as 1/T²)."""
    import torch
    import torch.nn.functional as F

    T = float(temperature)
    s, t = student_logits.float(), teacher_logits.float()
    if task == "multilabel":
        p_t = torch.sigmoid(t / T)
        # KL(Bern(p_t) ‖ Bern(p_s)) = BCE(p_s; p_t) − H(p_t), with BCE computed stably from logits.
        entropy = F.binary_cross_entropy(p_t, p_t, reduction="none")
        soft = (F.binary_cross_entropy_with_logits(s / T, p_t, reduction="none") - entropy).mean()
        hard = F.binary_cross_entropy_with_logits(s, labels.float())
    else:
        if task == "tagging":
            keep = labels != -100                          # (B, L)
            s, t, labels = s[keep], t[keep], labels[keep]  # (N_tokens, T)
        if s.shape[0] == 0:
            return student_logits.sum() * 0.0
        log_p_s = F.log_softmax(s / T, dim=-1)
        log_p_t = F.log_softmax(t / T, dim=-1)
        soft = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="sum") / s.shape[0]
        hard = F.cross_entropy(s, labels)
    return alpha * T * T * soft + (1.0 - alpha) * hard


# --------------------------------------------------------------------------- the student
def pick_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers, the top one included: the last layer of each of
    `student_layers` equal groups (4 → 2: [1, 3]; 12 → 6: [1, 3, 5, 7, 9, 11]; 12 → 4: [2, 5, 8, 11])."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"student_layers must be in 1..{teacher_layers}")
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def student_from_teacher(teacher, layer_map: list[int]):
    """A copy of `teacher` (a BERT task model) with only the encoder layers in `layer_map`
    (teacher layer layer_map[i] → student layer i); embeddings, pooler and head copied."""
    import copy

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layer_map)
    student = type(teacher)(config)
    state = {}
    for key, value in teacher.state_dict().items():
        m = _LAYER_KEY.match(key)
        if m is None:
            state[key] = value.clone()
        elif int(m.group(2)) in layer_map:
            state[f"{m.group(1)}{layer_map.index(int(m.group(2)))}{m.group(3)}"] = value.clone()
    result = student.load_state_dict(state, strict=True)  # every student weight comes from the teacher
    assert not result.missing_keys and not result.unexpected_keys
    return student


def random_student(teacher, changes: dict[str, int], seed: int):
    """A new BERT task model of the teacher's config with `changes`, randomly initialised."""
    import copy

    from transformers import set_seed

    config = copy.deepcopy(teacher.config)
    for key, value in changes.items():
        setattr(config, key, value)
    if config.hidden_size % config.num_attention_heads:
        raise StageInputError(f"distil: student_config: hidden_size {config.hidden_size} is not a multiple of "
                              f"num_attention_heads {config.num_attention_heads}")
    set_seed(seed)
    return type(teacher)(config)


def build_student(teacher, cfg: DistilConfig, seed: int) -> tuple[Any, dict]:
    """(student model, how it was made: for the manifest)."""
    n_teacher = teacher.config.num_hidden_layers
    if cfg.init == "random":
        changes = dict(cfg.student_config)
        if cfg.student_layers is not None:
            changes["num_hidden_layers"] = cfg.student_layers
        changes.setdefault("num_hidden_layers", max(1, n_teacher // 2))
        return random_student(teacher, changes, seed), {"init": "random", "config_changes": changes}
    layer_map = list(cfg.layer_map) if cfg.layer_map else pick_layers(n_teacher, cfg.student_layers or max(1, n_teacher // 2))
    if layer_map[-1] >= n_teacher:
        raise StageInputError(f"distil: layer_map {layer_map} names layer {layer_map[-1]}, but the teacher "
                              f"{cfg.teacher} has layers 0..{n_teacher - 1}")
    return student_from_teacher(teacher, layer_map), {"init": "teacher", "layer_map": layer_map}


# --------------------------------------------------------------------------- teacher and data
def load_teacher(cfg: DistilConfig):
    """(model, tokenizer, spec, manifest) of a verified teacher; a CRF teacher is refused."""
    path = Path(cfg.teacher)
    if path.is_dir() and not (path / TASK_FILE).is_file() and (read_manifest(path) or {}).get("stage") not in TEACHER_STAGES:
        raise StageInputError(f"distil: teacher {path} is not a fine-tuned task model (no {TASK_FILE})\n"
                              "  fix: pass teacher= a `workbench finetune` output directory")
    manifest = require_stage_output(path, TEACHER_STAGES, needed_by="distil")
    model, crf, tok, spec = load_task_model(path, needed_by="distil")
    if spec.task not in DISTIL_TASKS:
        raise StageInputError(f"distil: teacher {path} is a `{spec.task}` model; distil handles "
                              f"{', '.join(DISTIL_TASKS)} (soft targets over classes or tags)")
    if spec.crf or crf is not None:
        raise StageInputError(
            f"distil: teacher {path} decodes with a CRF. Its predictions are Viterbi paths over whole-sequence scores, "
            "so its per-token emissions are not the distribution it predicts and cannot serve as soft targets\n"
            "  fix: distil a teacher fine-tuned with crf=false (workbench finetune task=tagging crf=false ...); "
            "a student with a CRF can then be fine-tuned from the distilled student")
    model.eval()
    return model, tok, spec, manifest


def _teacher_file(manifest: dict, role: str) -> str | None:
    return next((e.get("path") for e in manifest.get("inputs") or [] if e.get("role") == role), None)


def read_split(path: str, spec: TaskSpec, data: TaskDataConfig, unknown: str) -> tuple[list, dict]:
    """Records of a labelled file, read as finetune reads it and checked against the teacher's labels."""
    records, info = read_records(path, types.SimpleNamespace(task=spec.task, data=data), data)
    records, check = check_labels(records, LabelMap(tuple(spec.labels)), unknown=unknown, multilabel=spec.multilabel)
    if not records:
        raise InputError(path, "no record is left after dropping labels the teacher does not know",
                         "use a file labelled with the teacher's labels")
    info["label_check"] = check.summary()
    return records, info


def teacher_logits(teacher, feats: list[dict], pad_id: int, batch_size: int) -> list[np.ndarray]:
    """The teacher's logits on each input (classification: (C,), tagging: (L, T) for its L tokens)."""
    import torch

    from workbench.tasks.inference import pad_batch

    out = []
    with torch.inference_mode():
        for i in range(0, len(feats), batch_size):
            chunk = feats[i:i + batch_size]
            batch = pad_batch([{k: v for k, v in f.items() if k != "labels"} for f in chunk], pad_id)
            logits = teacher(**batch).logits.float().numpy()
            out += [logits[j, :len(f["input_ids"])] if logits.ndim == 3 else logits[j] for j, f in enumerate(chunk)]
    return out


def collate(features: list[dict], pad_id: int) -> dict:
    """finetune's pad_batch, plus the teacher's logits padded to the batch (tagging: zeros
    at padding, where the labels are -100 and nothing is learnt)."""
    import torch

    from workbench.tasks.inference import pad_batch

    batch = pad_batch([{k: v for k, v in f.items() if k != "teacher_logits"} for f in features], pad_id)
    logits = [f["teacher_logits"] for f in features]
    if logits[0].ndim == 2:
        width = batch["input_ids"].shape[1]
        padded = np.zeros((len(logits), width, logits[0].shape[1]), dtype=np.float32)
        for i, x in enumerate(logits):
            padded[i, :len(x)] = x
        batch["teacher_logits"] = torch.from_numpy(padded)
    else:
        batch["teacher_logits"] = torch.from_numpy(np.stack(logits).astype(np.float32))
    return batch


# --------------------------------------------------------------------------- training
def _distil_trainer_class(task: str, temperature: float, alpha: float):
    base = _trainer_class()  # finetune's Trainer: its AdamW parameter groups

    class DistilTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("teacher_logits")
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = distillation_loss(outputs.logits, targets, labels, task=task, temperature=temperature, alpha=alpha)
            return (loss, outputs) if return_outputs else loss

    return DistilTrainer


def train_student(cfg: DistilConfig, teacher, spec: TaskSpec, tok, feats: list[dict], valid: list, seed: int,
                  work: Path, precision: str = "fp32"):
    """(student with the best evaluation's weights, history, best, how it was made) for one seed."""
    import torch
    from transformers import set_seed

    from workbench.tasks.inference import evaluate_records

    set_seed(seed)
    student, made = build_student(teacher, cfg, seed)
    student.accepts_loss_kwargs = False
    cuda = torch.cuda.is_available()
    args = training_arguments(dict(
        output_dir=str(work / f"seed-{seed}"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type="linear",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy="no",  # finetune's callback evaluates with the predict code path
        save_strategy="no",  # the best weights are kept in memory
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        report_to=["tensorboard"],
        seed=seed,
        data_seed=seed,
        use_cpu=not cuda,
        remove_unused_columns=False,  # the collator's teacher_logits reach compute_loss
        disable_tqdm=not sys.stderr.isatty(),
    ), cfg.trainer, needed_by="distil")
    history: list[dict] = []
    best: dict[str, Any] = {}
    main = main_metric(spec)
    evaluate = lambda m: evaluate_records(m, None, tok, spec, valid, batch_size=cfg.eval_batch_size)[0]  # noqa: E731
    callback = _eval_callback(evaluate, main, cfg.early_stopping_patience, cfg.eval_steps, history, best)
    with tensorboard_dir(work / "tensorboard" / f"seed-{seed}"):
        trainer = _distil_trainer_class(spec.task, cfg.temperature, cfg.alpha)(
            model=student, args=args, train_dataset=feats, data_collator=lambda b: collate(b, tok.pad_token_id),
            callbacks=[callback])
    trainer.train()
    student.load_state_dict(best["state"])
    del best["state"]
    student.eval()
    return student, history, best, made


def main_metric(spec: TaskSpec) -> str:
    return {"tagging": "f1", "multilabel": "micro_f1"}.get(spec.task, "accuracy")


# --------------------------------------------------------------------------- size and latency
def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_latency(models: dict[str, Any], feats: list[dict], pad_id: int, batch_sizes: list[int], repeats: int,
                    threads: int | None) -> dict:
    """CPU latency of each model's forward pass on the first inputs of `feats` (encoded as in
    predict), per batch size: {name: {"batch_<b>": {"median_ms", "per_input_ms", "runs_ms"}}}.
    The models run in turn inside each repeat (the order alternates), so a slower moment of a
    shared machine hits both; one untimed warm-up pass each first."""
    import torch

    from workbench.tasks.inference import pad_batch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        cpu = {name: m.to("cpu").eval() for name, m in models.items()}
        out: dict[str, dict] = {name: {} for name in cpu}
        for b in batch_sizes:
            chunk = [{k: v for k, v in f.items() if k in ("input_ids", "token_type_ids")} for f in feats[:b]]
            if len(chunk) < b:  # fewer inputs than the batch size: repeat them
                chunk = (chunk * (b // max(len(chunk), 1) + 1))[:b]
            batch = pad_batch(chunk, pad_id)
            times: dict[str, list[float]] = {name: [] for name in cpu}
            with torch.inference_mode():
                for m in cpu.values():
                    m(**batch)
                for r in range(repeats):
                    order = list(cpu) if r % 2 == 0 else list(reversed(cpu))
                    for name in order:
                        t0 = time.perf_counter()
                        cpu[name](**batch)
                        times[name].append((time.perf_counter() - t0) * 1000)
            for name, runs in times.items():
                med = statistics.median(runs)
                out[name][f"batch_{b}"] = {"median_ms": round(med, 3), "per_input_ms": round(med / b, 3),
                                           "runs_ms": [round(x, 3) for x in runs], "tokens": int(batch["attention_mask"].sum())}
        out["threads"] = torch.get_num_threads()
        out["repeats"] = repeats
        return out
    finally:
        torch.set_num_threads(old_threads)


# --------------------------------------------------------------------------- the stage
def _input_entry(role: str, path: str | None) -> dict | None:
    return {"role": role, "path": str(path), "sha256": sha256_file(path)} if path else None


@owns_output("distil")
def run(cfg: DistilConfig) -> dict[str, Any]:
    from workbench.tasks.inference import evaluate_records
    from workbench.tasks.plots import plot_confusion

    started = time.time()
    # 1. Teacher.
    teacher, tok, spec, teacher_manifest = load_teacher(cfg)
    teacher_dir = Path(cfg.teacher)
    if cfg.max_length is not None:
        if cfg.max_length > teacher.config.max_position_embeddings:
            raise StageInputError(f"distil: max_length {cfg.max_length} is longer than the teacher's "
                                  f"max_position_embeddings ({teacher.config.max_position_embeddings})")
        spec.max_length = cfg.max_length
    spec.base_model = str(teacher_dir)

    # 2. Data: the teacher's files unless given, read as the teacher's were.
    data = cfg.data or TaskDataConfig(**spec.data)
    spec.data = data.model_dump(mode="json")
    files = {role: getattr(cfg, role) or _teacher_file(teacher_manifest, role) for role in ("train", "valid", "test")}
    for role in ("train", "valid"):
        if not files[role]:
            raise StageInputError(f"distil: the teacher's manifest names no {role} file; pass {role}=FILE")
        if not Path(files[role]).is_file():
            raise StageInputError(f"distil: {role} file {files[role]} does not exist"
                                  + ("" if getattr(cfg, role) else " (taken from the teacher's manifest)")
                                  + f"\n  fix: pass {role}=FILE")
    if files["test"] and not Path(files["test"]).is_file():
        if cfg.test:
            raise StageInputError(f"distil: test file {files['test']} does not exist")
        log.warning("distil: the teacher's test file %s is gone; no test scores", files["test"])
        files["test"] = None
    train, train_info = read_split(files["train"], spec, data, cfg.unknown_labels)
    valid, valid_info = read_split(files["valid"], spec, data, cfg.unknown_labels)
    test, test_info = read_split(files["test"], spec, data, cfg.unknown_labels) if files["test"] else (None, {})
    lm = LabelMap(tuple(spec.labels))
    feats, train_length = train_features(train, spec, lm, tok)
    main = main_metric(spec)
    log.info("distil: %s teacher %s (%d layers), %d train / %d valid / %s test records, %d train inputs",
             spec.task, teacher_dir, teacher.config.num_hidden_layers, len(train), len(valid),
             len(test) if test is not None else "no", len(feats))

    # 3. The teacher's logits on the train inputs, once.
    t0 = time.time()
    for f, logits in zip(feats, teacher_logits(teacher, feats, tok.pad_token_id, cfg.eval_batch_size)):
        f["teacher_logits"] = logits
    teacher_logits_s = round(time.time() - t0, 2)

    # 4.-5. One student per seed; the best valid seed is kept.
    seeds = cfg.seeds or [cfg.seed]
    precision = resolve_precision(cfg.precision, "distil")
    runs, chosen = [], None
    with scratch_dir(cfg.output_path()) as work:
        for seed in seeds:
            seed_started = time.time()
            student, history, best, made = train_student(cfg, teacher, spec, tok, feats, valid, seed, Path(work), precision)
            valid_m = best.pop("metrics")
            test_m = evaluate_records(student, None, tok, spec, test, batch_size=cfg.eval_batch_size)[0] if test else None
            runs.append({"seed": seed, "best_epoch": best["epoch"], "best_step": best["step"],
                         "steps": history[-1]["step"], "wall_s": round(time.time() - seed_started, 2),
                         "valid": valid_m, "test": test_m, "history": history})
            if chosen is None or valid_m[main] > chosen[1]["valid"][main]:
                chosen = (student, runs[-1], made)
            else:
                del student
    student, best_run, made = chosen

    # 6. Teacher vs student: the same records and code; sizes; latency in this run.
    teacher_valid = evaluate_records(teacher, None, tok, spec, valid, batch_size=cfg.eval_batch_size)[0]
    teacher_test = evaluate_records(teacher, None, tok, spec, test, batch_size=cfg.eval_batch_size)[0] if test else None
    latency = None
    if cfg.latency_repeats and cfg.latency_batch_sizes:
        valid_feats, _ = train_features(valid, spec, lm, tok)
        latency = measure_latency({"teacher": teacher, "student": student}, valid_feats, tok.pad_token_id,
                                  cfg.latency_batch_sizes, cfg.latency_repeats, cfg.latency_threads)
        for b in cfg.latency_batch_sizes:
            t_ms, s_ms = latency["teacher"][f"batch_{b}"]["median_ms"], latency["student"][f"batch_{b}"]["median_ms"]
            latency[f"speedup_batch_{b}"] = round(t_ms / s_ms, 3) if s_ms else None

    def side(model, valid_m: dict, test_m: dict | None, bytes_: int | None) -> dict:
        return {"valid_" + main: valid_m[main], "test_" + main: (test_m or {}).get(main),
                "parameters": parameter_count(model), "layers": model.config.num_hidden_layers,
                "hidden_size": model.config.hidden_size, "safetensors_bytes": bytes_}

    teacher_file = teacher_dir / "model.safetensors"
    distil_report: dict[str, Any] = {
        "teacher": side(teacher, teacher_valid, teacher_test, teacher_file.stat().st_size if teacher_file.is_file() else None),
        "student": side(student, best_run["valid"], best_run["test"], None),
        "student_made": made,
        "temperature": cfg.temperature, "alpha": cfg.alpha,
        "precision": precision,
        "teacher_valid": teacher_valid, "teacher_test": teacher_test,
        "teacher_logits_s": teacher_logits_s,
        "latency": latency,
    }
    metrics: dict[str, Any] = {
        "task": spec.task, "metric": main, "seed": best_run["seed"], "best_epoch": best_run["best_epoch"],
        "best_step": best_run["best_step"], "valid": best_run["valid"], "test": best_run["test"],
        "history": {str(r["seed"]): r["history"] for r in runs},
        "label_map": json.loads((teacher_dir / "labels.json").read_text(encoding="utf-8"))
        if (teacher_dir / "labels.json").is_file() else {"labels": spec.labels},
        "label_checks": {k: v["label_check"] for k, v in (("train", train_info), ("valid", valid_info),
                                                          ("test", test_info)) if v},
        "length": {"max_length": spec.max_length, "train": train_length},
        "distil": distil_report,
    }
    if len(seeds) > 1:
        metrics["seeds"] = {"seeds": seeds, f"valid_{main}": mean_std([r["valid"][main] for r in runs]),
                            "per_seed": [{"seed": r["seed"], "valid": r["valid"][main],
                                          "test": r["test"][main] if r["test"] else None} for r in runs],
                            "summary": {"valid": summarize_runs([r["valid"] for r in runs]),
                                        "test": summarize_runs([r["test"] for r in runs]) if test else None}}
        if test:
            metrics["seeds"][f"test_{main}"] = mean_std([r["test"][main] for r in runs])

    # 7. A finetune-style output, atomically.
    out = cfg.output_path()
    with atomic_output_dir(out) as tmp:
        student.save_pretrained(str(tmp), safe_serialization=True)
        distil_report["student"]["safetensors_bytes"] = (tmp / "model.safetensors").stat().st_size
        tok.model_max_length = spec.max_length
        tok.save_pretrained(str(tmp))
        spec.save(tmp)
        if (teacher_dir / "labels.json").is_file():
            shutil.copy2(teacher_dir / "labels.json", tmp / "labels.json")
        else:
            (tmp / "labels.json").write_text(lm.to_json() + "\n", encoding="utf-8")
        (tmp / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if spec.task in ("classification", "pair"):
            for split in ("valid", "test"):
                if metrics[split]:
                    plot_confusion(metrics[split]["confusion_matrix"], spec.labels, tmp / f"confusion_{split}.png",
                                   title=f"{split}: accuracy {metrics[split]['accuracy']:.3f}")
        manifest = write_manifest(
            tmp, stage="distil", config=cfg.model_dump(mode="json"),
            inputs=[e for e in (_input_entry("train", files["train"]), _input_entry("valid", files["valid"]),
                                _input_entry("test", files["test"])) if e]
            + [{"role": "teacher", "path": str(teacher_dir), "stage": teacher_manifest.get("stage"),
                "manifest_sha256": sha256_file(teacher_dir / MANIFEST),
                "model_sha256": (teacher_manifest.get("outputs") or {}).get("model.safetensors")}],
            counts={"train": len(train), "valid": len(valid), "test": len(test) if test is not None else 0,
                    "labels": len(spec.labels), "train_inputs": len(feats)},
            seed=best_run["seed"], started=started, finished=time.time(),
            extra={"task": spec.task, "metric": main,
                   "metrics": {"valid_" + main: best_run["valid"][main], "test_" + main: (best_run["test"] or {}).get(main)},
                   "distil": {"teacher": distil_report["teacher"], "student": distil_report["student"], "student_made": made, "temperature": cfg.temperature, "alpha": cfg.alpha,
                              "latency_speedup": {k: v for k, v in (latency or {}).items() if k.startswith("speedup")}}},
        )
    t, s = distil_report["teacher"], distil_report["student"]
    line = (f"distil → {out}: {spec.task}, student {s['layers']} layers ({s['parameters'] / 1e6:.2f} M parameters) "
            f"valid {main} {s['valid_' + main]:.4f} vs teacher {t['layers']} layers ({t['parameters'] / 1e6:.2f} M) "
            f"{t['valid_' + main]:.4f}")
    if test:
        line += f"; test {s['test_' + main]:.4f} vs {t['test_' + main]:.4f}"
    if latency:
        line += "; CPU latency " + ", ".join(
            f"batch {b}: {latency['student'][f'batch_{b}']['median_ms']:.1f} vs "
            f"{latency['teacher'][f'batch_{b}']['median_ms']:.1f} ms (x{latency[f'speedup_batch_{b}']})"
            for b in cfg.latency_batch_sizes)
    if len(seeds) > 1:
        ms = metrics["seeds"][f"valid_{main}"]
        line += f"; {len(seeds)} seeds: valid {ms['mean']:.4f} ± {ms['std']:.4f}"
    print(line)
    return manifest
