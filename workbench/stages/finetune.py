"""finetune: train a BERT on a labelled task and keep its best evaluation on valid.

    workbench finetune task=classification model=runs/demo/pretrain \\
        train=corpora/demo/reviews/train.tsv valid=corpora/demo/reviews/dev.tsv test=corpora/demo/reviews/test.tsv
    workbench finetune task=tagging crf=true scheme=bioes model=DIR train=ner/train.txt valid=ner/dev.txt

Tasks: classification (one label per text), pair (one label per text pair), multilabel
(0..n labels per text), tagging (one tag per character: NER). Readable top to bottom:

  1. read train/valid/test (``tasks.data``; any broken line stops with file:line and a fix),
     build the label map from train and check valid/test against it (``unknown_labels``);
  2. encode: classification texts are truncated to `max_length` (counted per split);
     tagging texts are cut into sliding windows (counted), so nothing is dropped;
  3. for each seed (`seeds`, or just `seed`): a fresh model from `model` with a new head
     (+ CRF), HF Trainer; after every epoch, every `eval_steps` optimizer steps (when set)
     and at the end of training the WHOLE valid set is predicted with the same code
     ``predict`` uses (windows stitched, CRF Viterbi) and scored by the task metric
     (accuracy / macro-F1, multilabel micro-F1, entity F1); the best evaluation's weights
     are kept in memory (ties: the earlier), early stopping (counted in evaluations) optional;
  4. the best model (of the best seed) is scored on valid and test, and written atomically:
     save_pretrained (safetensors) + tokenizer with config.id2label/label2id, crf.safetensors
     (tagging with a CRF), task.json (how to run it), labels.json, metrics.json,
     confusion.png (classification), manifest.json (input hashes, base model, counts).
     With several seeds, metrics.json keeps every seed's full valid/test metrics
     (`seeds.runs`) and mean ± std of each scalar metric (`seeds.summary`).

No Trainer checkpoints are written: the best weights are held in memory (a BERT-base is
~0.4 GB), and a fine-tuning run is short enough to repeat rather than resume. With
`keep_snapshots: K` the weights after each of the last K evaluations (of the saved seed) are
also written, to `snapshots/step-<N>.safetensors` in the output, for `workbench average`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from workbench.config import FinetuneConfig
from workbench.errors import InputError
from workbench.manifest import atomic_output_dir, owns_output, scratch_dir, sibling_temp_dir, sha256_file, verify_model_dir, write_manifest
from workbench.tasks.encoder import EncoderOptions, parameter_counts, ship_modeling_file
from workbench.tasks.encoder import freeze as freeze_encoder
from workbench.tasks.heads import TaskSpec, add_lora, load_for_finetune, save_crf
from workbench.tasks.labels import LabelMap, check_labels, infer_label_map
from workbench.tasks.metrics import mean_std, summarize_runs
from workbench.tasks.tags import tag_list
from workbench.trainer_args import resolve_precision, tensorboard_dir, training_arguments
from workbench.vocab.tokenizer import load_tokenizer, unk_report

log = logging.getLogger("workbench.finetune")


# --------------------------------------------------------------------------- 1. data
def read_records(path: str, cfg: FinetuneConfig, data=None) -> tuple[list, dict]:
    """Records of one labelled file, and what the reader repaired (tagging)."""
    from workbench.tasks.data import read_tagging, read_text_records

    data = data or cfg.data
    if cfg.task == "qa":  # SQuAD-style JSON (tasks/qa.py); data.repair moves misplaced answer_starts, counted
        from workbench.tasks.qa import read_squad

        records, info = read_squad(path, repair=data.repair, encoding=data.encoding)
        if info.moved or info.not_in_context:
            log.warning("finetune: %s: %d answer_start(s) moved to their text, %d reference(s) not in the context "
                        "(scored, never trained on), e.g. %s", path, info.moved, info.not_in_context, info.examples[0])
        return records, {"squad": info.summary()}
    if cfg.task == "tagging":
        fmt = {"auto": "auto", "jsonl": "jsonl", "conll": "conll"}[data.format]
        tf = read_tagging(path, format=fmt, repair=data.repair, text_key=data.text_column,
                          label_key=data.label_column, encoding=data.encoding,
                          char_column=data.char_column, tag_column=data.tag_column, char_field=data.char_field,
                          type_suffix=data.type_suffix, overlap=data.overlap)
        return tf.records, {**tf.report(), "repairs": tf.repairs[:5]}
    fmt = data.format if data.format != "conll" else "auto"
    records = read_text_records(
        path, text=data.text_column, label=data.label_column,
        text_pair=data.text_pair_column if cfg.task == "pair" else None,
        multilabel=cfg.task == "multilabel", label_delimiter=data.label_delimiter, header=data.header,
        format=fmt, delimiter=data.delimiter, encoding=data.encoding, info=(info := {}))
    return records, info  # {"encoding": the codec used}


def build_label_map(train: list, cfg: FinetuneConfig) -> LabelMap:
    if cfg.task == "qa":
        return LabelMap(())  # spans, no labels
    lm = infer_label_map(train)
    source = train[0].source
    if cfg.task == "tagging" and not lm.labels:
        raise InputError(source, "the train file has no entities (every tag is O)",
                         "check the tag column, or the label key of a JSONL file")
    if cfg.task in ("classification", "pair") and len(lm) < 2:
        raise InputError(source, f"the train file has only one label {list(lm.labels)}",
                         "a classifier needs at least two classes in train; check the label column")
    if cfg.task == "multilabel" and not lm.labels:
        raise InputError(source, "no record in the train file has a label", "check the label column")
    return lm


# --------------------------------------------------------------------------- 2. features
def train_features(records: list, spec: TaskSpec, lm: LabelMap, tok) -> tuple[list[dict], dict]:
    """Model inputs with labels, and the length statistics (truncated texts / windows)."""
    from workbench.tasks.windows import encode_chars, encode_classification, tagging_windows

    if spec.task == "qa":
        from workbench.tasks.qa import train_features as qa_features

        return qa_features(records, tok, max_length=spec.max_length, doc_stride=spec.stride())
    if spec.task == "tagging":
        tag2id = {t: i for i, t in enumerate(spec.tags)}
        windows, stats = tagging_windows(encode_chars(tok, [r.text for r in records]), [r.spans for r in records],
                                         tag2id, scheme=spec.scheme, max_length=spec.max_length,
                                         overlap=spec.overlap(), cls_id=tok.cls_token_id, sep_id=tok.sep_token_id)
        feats = [{"input_ids": w.input_ids, "labels": w.labels} for w in windows]
        return feats, {"texts": len(records), "windows": stats.windows, "texts_split": stats.texts_split,
                       "lost_entities": stats.lost_entities, "misaligned_entities": stats.misaligned_entities}
    pairs = [r.text_pair or "" for r in records] if spec.task == "pair" else None
    enc, truncated = encode_classification(tok, [r.text for r in records], pairs, max_length=spec.max_length,
                                           strategy=spec.truncation, head=spec.head_tokens)
    labels = [lm.multi_hot(r.labels) for r in records] if spec.multilabel else [lm.label2id[r.label] for r in records]
    feats = [{"input_ids": a, "token_type_ids": t, "labels": y}
             for a, t, y in zip(enc["input_ids"], enc["token_type_ids"], labels)]
    return feats, {"texts": len(records), "truncated": truncated}


# --------------------------------------------------------------------------- 3. training
def _trainer_class():
    """Trainer with the CRF's loss and learning rate (defined lazily: importing transformers is slow)."""
    from transformers import Trainer

    class FinetuneTrainer(Trainer):
        def __init__(self, *args, crf_lr: float | None = None, loss_fn=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.crf_lr = crf_lr
            self.loss_fn = loss_fn  # tasks.losses.TaskLoss (class weights / focal), or None: the model's own loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            crf = getattr(model, "crf", None)
            if crf is None and self.loss_fn is not None:
                labels = inputs.pop("labels")
                outputs = model(**inputs)  # logits only
                loss = self.loss_fn(outputs.logits, labels)
                return (loss, outputs) if return_outputs else loss
            if crf is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)  # emissions only: BertForTokenClassification without labels
            loss = crf(outputs.logits, labels, labels != -100, reduction="mean")  # [CLS]/[SEP]/pad left out
            return (loss, outputs) if return_outputs else loss

        def create_optimizer(self, model=None):
            if self.optimizer is not None:
                return self.optimizer
            model = model or self.model
            decay, no_decay, crf_params = [], [], []
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    continue
                if name.startswith("crf."):
                    crf_params.append(p)
                elif p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias"):
                    no_decay.append(p)
                else:
                    decay.append(p)
            groups = [{"params": decay, "weight_decay": self.args.weight_decay},
                      {"params": no_decay, "weight_decay": 0.0}]
            if crf_params:
                groups.append({"params": crf_params, "weight_decay": 0.0, "lr": self.crf_lr})
            # The optimizer TrainingArguments names (default: torch's fused AdamW; `trainer.optim`
            # chooses another), with these parameter groups.
            optim_cls, optim_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optim_cls([g for g in groups if g["params"]], **optim_kwargs)
            return self.optimizer

    return FinetuneTrainer


def save_snapshot(model, directory: Path, step: int, epoch: float, scores: dict, keep: int) -> None:
    """keep_snapshots: the model's weights after an evaluation as `directory/step-<N>.safetensors`
    (its state_dict, CRF included), listed in `directory/index.json` with the valid score;
    only the last `keep` stay (for `workbench average`)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{step}.safetensors"
    save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()},
              str(directory / name), metadata={"format": "pt"})
    index_file = directory / "index.json"
    index = json.loads(index_file.read_text(encoding="utf-8")) if index_file.is_file() else []
    index = [e for e in index if e["step"] != step] + [{"file": name, "step": step, "epoch": epoch, **scores}]
    for old in index[:-keep]:
        (directory / old["file"]).unlink(missing_ok=True)
    index_file.write_text(json.dumps(index[-keep:], indent=1) + "\n", encoding="utf-8")


def _eval_callback(evaluate, main: str, patience: int | None, eval_steps: int | None, history: list, best: dict,
                   snapshot=None):
    """Scores the valid set after every epoch, every `eval_steps` optimizer steps (when set)
    and at the end of training (if it stopped mid-epoch); keeps the best evaluation's weights
    in `best` (ties: the earlier); stops early after `patience` evaluations without a better one.
    `snapshot(model, step, epoch, value)`, when given, is called after every evaluation."""
    from transformers import TrainerCallback

    class EvaluateValid(TrainerCallback):
        bad = 0
        last_step = -1

        def _evaluate(self, state, control, model):
            if self.last_step == state.global_step:
                return  # this step is scored already (an epoch end on a multiple of eval_steps)
            self.last_step = state.global_step
            metrics = evaluate(model)
            value = metrics[main]
            epoch = round(state.epoch or 0, 3)
            history.append({"epoch": epoch, "step": state.global_step, main: value,
                            "train_loss": next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)})
            log.info("finetune: epoch %.2f step %d valid %s = %.4f", state.epoch or 0, state.global_step, main, value)
            if snapshot is not None:
                snapshot(model, state.global_step, epoch, value)
            if best.get("value") is None or value > best["value"]:
                best.update(value=value, epoch=epoch, step=state.global_step, metrics=metrics,
                            state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
                self.bad = 0
            else:
                self.bad += 1
                if patience is not None and self.bad >= patience:
                    log.info("finetune: no better valid %s for %d evaluation(s): stopping early", main, self.bad)
                    control.should_training_stop = True

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if eval_steps and state.global_step % eval_steps == 0:
                self._evaluate(state, control, model)

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            self._evaluate(state, control, model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self._evaluate(state, control, model)

    return EvaluateValid()


def train_one(cfg: FinetuneConfig, spec: TaskSpec, tok, feats: list[dict], valid: list, seed: int, work: Path,
              loss_fn=None):
    """(model with the best evaluation's weights, crf or None, history, best) for one seed;
    best["parameters"] holds the trainable / total parameter counts."""
    import torch
    from transformers import set_seed

    from workbench.tasks.crf import CRF
    from workbench.tasks.inference import evaluate_records, pad_batch

    set_seed(seed)
    encoder = EncoderOptions.from_config(cfg)  # pooling / layer mix / adapters: a bert_workbench model
    model = load_for_finetune(cfg.model, spec, encoder=encoder)
    if spec.crf:
        model.crf = CRF.for_tags(spec.tags)  # a submodule while training: moved, optimised, in state_dict
    if cfg.freeze_layers is not None or cfg.freeze_encoder or encoder.adapter:
        trainable, total = freeze_encoder(model, freeze_layers=cfg.freeze_layers, freeze_encoder=cfg.freeze_encoder,
                                          adapter=encoder.adapter)
        log.info("finetune: %s: %.2f M of %.2f M parameters train",
                 f"adapters ({encoder.adapter})" if encoder.adapter else
                 f"top {0 if cfg.freeze_encoder else cfg.freeze_layers} layer(s)", trainable / 1e6, total / 1e6)
    if cfg.lora.r:
        model = add_lora(model, spec, cfg.lora)
    trainable, total = parameter_counts(model)
    model.accepts_loss_kwargs = False  # the heads return a per-batch mean loss
    cuda = torch.cuda.is_available()
    precision = resolve_precision(cfg.precision, "finetune")
    args = training_arguments(dict(
        output_dir=str(work / f"seed-{seed}"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type="linear",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy="no",  # the callback evaluates with the predict code path
        save_strategy="no",  # best weights are kept in memory
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        report_to=["tensorboard"],
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        seed=seed,
        data_seed=seed,
        use_cpu=not cuda,
        remove_unused_columns=False,
        disable_tqdm=not sys.stderr.isatty(),  # a progress bar on a terminal, none in logs
    ), cfg.trainer, needed_by="finetune")
    crf_of = lambda m: getattr(m, "crf", None)  # noqa: E731
    history: list[dict] = []
    best: dict[str, Any] = {}
    evaluate = lambda m: evaluate_records(m, crf_of(m), tok, spec, valid, batch_size=cfg.eval_batch_size)[0]  # noqa: E731
    snapshot = None
    if cfg.keep_snapshots:  # the weights of the last keep_snapshots evaluations, for `workbench average`
        snapshot = lambda m, step, epoch, value: save_snapshot(  # noqa: E731
            m, work / f"seed-{seed}" / "snapshots", step, epoch, {cfg.main_metric(): value}, cfg.keep_snapshots)
    callback = _eval_callback(evaluate, cfg.main_metric(), cfg.early_stopping_patience, cfg.eval_steps, history, best,
                              snapshot=snapshot)
    with tensorboard_dir(work / "tensorboard" / f"seed-{seed}"):
        trainer = _trainer_class()(
            model=model, args=args, train_dataset=feats, data_collator=lambda b: pad_batch(b, tok.pad_token_id),
            callbacks=[callback], crf_lr=cfg.crf_lr, loss_fn=loss_fn)
    trainer.train()
    model.load_state_dict(best["state"])
    del best["state"]
    if cfg.lora.r:
        model = model.merge_and_unload()  # adapters folded into the weights: a plain model again
    model.eval()
    best["parameters"] = {"trainable": trainable, "total": total}
    return model, crf_of(model), history, best


# --------------------------------------------------------------------------- 4. outputs
def _input_entry(name: str, path: str | None) -> dict | None:
    if not path:
        return None
    return {"role": name, "path": str(path), "sha256": sha256_file(path)}


@owns_output("finetune")
def run(cfg: FinetuneConfig) -> dict[str, Any]:
    from workbench.tasks.plots import plot_confusion

    started = time.time()
    main = cfg.main_metric()
    # The base model: a workbench output is checked against its manifest before anything else.
    base_manifest = verify_model_dir(cfg.model, needed_by="finetune")
    # 1. Data and label map.
    train, train_info = read_records(cfg.train, cfg)
    valid, valid_info = read_records(cfg.valid, cfg)
    test, test_info = read_records(cfg.test, cfg) if cfg.test else (None, {})
    qa_split = None
    if cfg.task == "qa" and cfg.qa.test_articles:  # CMRC 2018: dev's articles split into train / test
        from workbench.tasks.qa import split_by_article

        train, test = split_by_article(train, cfg.qa.test_articles, cfg.qa.split_seed)
        qa_split = {"from": cfg.train, "test_articles": cfg.qa.test_articles, "split_seed": cfg.qa.split_seed,
                    "train": {"articles": len({r.article for r in train}), "questions": len(train)},
                    "test": {"articles": len({r.article for r in test}), "questions": len(test)}}
    lm = build_label_map(train, cfg)
    multilabel = cfg.task == "multilabel"
    label_checks = {}
    if cfg.task != "qa":  # qa has spans, not labels
        valid, check = check_labels(valid, lm, unknown=cfg.unknown_labels, map_to=cfg.unknown_label_to,
                                    multilabel=multilabel)
        label_checks["valid"] = check.summary()
    if not valid:
        raise InputError(cfg.valid, "no valid record is left after dropping labels not in train",
                         "use a valid file with the train labels")
    if test is not None and cfg.task != "qa":
        test, check = check_labels(test, lm, unknown=cfg.unknown_labels, map_to=cfg.unknown_label_to, multilabel=multilabel)
        label_checks["test"] = check.summary()
    for name, info in (("train", train_info), ("valid", valid_info), ("test", test_info)):
        if info.get("repaired"):
            log.warning("finetune: %s: repaired %d invalid tag(s), e.g. %s", name, info["repaired"], info["repairs"][0])

    # 2. Tokenizer, task spec, features.
    tok = load_tokenizer(cfg.model, needed_by="finetune", lengths_handled=True)
    spec = TaskSpec(task=cfg.task, labels=list(lm.labels), max_length=cfg.max_length,
                    tags=tag_list(lm.labels, cfg.scheme) if cfg.task == "tagging" else [],
                    scheme=cfg.scheme, crf=cfg.crf, window_overlap=cfg.window_overlap, truncation=cfg.truncation,
                    head_tokens=cfg.head_tokens, threshold=cfg.threshold, data=cfg.data.model_dump(mode="json"),
                    base_model=cfg.model, doc_stride=cfg.qa.doc_stride, max_answer_length=cfg.qa.max_answer_length,
                    n_best=cfg.qa.n_best)
    feats, train_length = train_features(train, spec, lm, tok)
    if cfg.task == "qa" and (train_length["in_no_window"] or train_length["no_span"]):
        log.warning("finetune: %d train question(s) have no answer in the context (not trained on) and %d an answer "
                    "no window holds whole (only [CLS] targets; raise max_length or qa.doc_stride)",
                    train_length["no_span"], train_length["in_no_window"])
    if cfg.task == "tagging" and train_length["lost_entities"]:
        log.warning("finetune: %d train entities start inside a token or on whitespace and cannot be learnt",
                    train_length["lost_entities"])
    if train_length.get("truncated"):
        log.warning("finetune: %d of %d train texts are longer than max_length=%d tokens and were truncated (%s)",
                    train_length["truncated"], len(train), cfg.max_length, cfg.truncation)
    texts = [r.text for r in train] + [r.text_pair for r in train if getattr(r, "text_pair", None)]
    train_length["unk"] = unk_report(texts, tok)
    if train_length["unk"]["unk_rate"] > 0.005:
        log.warning("finetune: %.2f%% of the train tokens are [UNK] (most often: %s): the model's vocabulary lacks "
                    "them; clean the text the way the pretraining corpus was cleaned, or extend the vocabulary "
                    "(workbench extend-vocab)", 100 * train_length["unk"]["unk_rate"],
                    ", ".join(f"{t!r} x{c}" for t, c in train_length["unk"]["top_unk"][:5]))
    log.info("finetune: %s, %d train / %d valid / %s test records, %s, %d train inputs, model %s",
             cfg.task, len(train), len(valid), len(test) if test is not None else "no",
             "answer spans" if cfg.task == "qa" else f"{len(lm)} labels", len(feats), cfg.model)

    # 3. Train once per seed; keep the model of the best seed.
    from workbench.tasks.inference import evaluate_records
    from workbench.tasks.losses import TaskLoss

    # Class weights / focal loss (tasks/losses.py): None = the model's own cross-entropy.
    loss_fn = TaskLoss.for_task(cfg.task, cfg.loss, cfg.focal_gamma, cfg.class_weights, spec.output_labels(),
                                [f["labels"] for f in feats]) if cfg.task != "qa" else None
    if loss_fn is not None:
        log.info("finetune: loss %s", loss_fn.describe())

    seeds = cfg.seeds or [cfg.seed]
    runs = []
    chosen = None
    with scratch_dir(cfg.output_path()) as work:  # Trainer's scratch; swept if the run is killed
        for seed in seeds:
            seed_started = time.time()
            model, crf, history, best = train_one(cfg, spec, tok, feats, valid, seed, Path(work), loss_fn=loss_fn)
            valid_m = best.pop("metrics")  # the best evaluation's full valid metrics, from the callback
            test_m = evaluate_records(model, crf, tok, spec, test, batch_size=cfg.eval_batch_size)[0] if test else None
            runs.append({"seed": seed, "best_epoch": best["epoch"], "best_step": best["step"],
                         "steps": history[-1]["step"], "wall_s": round(time.time() - seed_started, 2),
                         "valid": valid_m, "test": test_m, "history": history, "parameters": best.pop("parameters")})
            if chosen is None or valid_m[main] > chosen[1]["valid"][main]:
                chosen = ((model, crf), runs[-1])
            else:
                del model, crf
        # TensorBoard logs of every seed, kept with the output (their event files hold host
        # names and times, so they are left out of the reproducible output hashes).
        tb_keep = None
        if (Path(work) / "tensorboard").is_dir():
            tb_keep = sibling_temp_dir(cfg.output_path())  # swept as a leftover if killed
            shutil.copytree(Path(work) / "tensorboard", tb_keep / "tensorboard")
        snap_keep = None
        if cfg.keep_snapshots:  # the saved seed's evaluation snapshots go with the output
            snap_keep = sibling_temp_dir(cfg.output_path())
            shutil.move(str(Path(work) / f"seed-{chosen[1]['seed']}" / "snapshots"), str(snap_keep / "snapshots"))
    (model, crf), best_run = chosen

    metrics: dict[str, Any] = {
        "task": cfg.task, "metric": main, "seed": best_run["seed"], "best_epoch": best_run["best_epoch"],
        "best_step": best_run["best_step"],
        "valid": best_run["valid"], "test": best_run["test"],
        "history": {str(r["seed"]): r["history"] for r in runs},
        "label_map": {"labels": list(lm.labels), "counts": lm.counts},
        "label_checks": label_checks,
        "length": {"max_length": cfg.max_length, "train": train_length,
                   "valid": best_run["valid"].get("length"), "test": (best_run["test"] or {}).get("length")},
    }
    if cfg.task == "qa":  # what reading found (answer_starts moved, references not in the context), the split
        metrics["squad"] = {k: v["squad"] for k, v in (("train", train_info), ("valid", valid_info),
                                                       ("test", test_info)) if v}
        metrics["split"] = qa_split
    if cfg.task == "tagging":
        metrics["tags"] = spec.tags
        metrics["repairs"] = {k: v for k, v in (("train", train_info), ("valid", valid_info), ("test", test_info)) if v}
    if len(seeds) > 1:
        # For paired comparisons by seed: every seed's full valid/test metrics (the same dicts
        # as `valid`/`test` above, per-class tables and confusion matrices included: a few
        # numbers per label), and mean ± sample std of every scalar metric.
        metrics["seeds"] = {"seeds": seeds, f"valid_{main}": mean_std([r["valid"][main] for r in runs])}
        if test:
            metrics["seeds"][f"test_{main}"] = mean_std([r["test"][main] for r in runs])
        metrics["seeds"]["per_seed"] = [{"seed": r["seed"], "valid": r["valid"][main],
                                         "test": r["test"][main] if r["test"] else None} for r in runs]
        metrics["seeds"]["runs"] = [{k: v for k, v in r.items() if k != "history"} for r in runs]
        metrics["seeds"]["summary"] = {"valid": summarize_runs([r["valid"] for r in runs]),
                                       "test": summarize_runs([r["test"] for r in runs]) if test else None}

    # How the encoder was used and what the loss was (tasks/encoder.py, tasks/losses.py).
    encoder = EncoderOptions.from_config(cfg)
    metrics["encoder"] = {"pooling": cfg.pooling, "layer_mix": cfg.layer_mix, "adapter": encoder.adapter,
                          "freeze_encoder": cfg.freeze_encoder, "freeze_layers": cfg.freeze_layers, "lora_r": cfg.lora.r,
                          "model_type": "bert_workbench" if encoder.custom else "bert"}
    metrics["parameters"] = best_run["parameters"]
    metrics["loss"] = loss_fn.describe() if loss_fn is not None else {"loss": "ce", "gamma": None}
    read_reports = {k: {x: y for x, y in v.items() if x != "repairs"}
                    for k, v in (("train", train_info), ("valid", valid_info), ("test", test_info)) if v}

    # 4. Output, atomically.
    out = cfg.output_path()
    with atomic_output_dir(out) as tmp:
        if crf is not None:
            del model.crf  # the emission model alone is a plain BertForTokenClassification
            save_crf(crf, spec.tags, tmp)
        model.save_pretrained(str(tmp), safe_serialization=True)
        if encoder.custom:  # config.json's auto_map points at it (tasks/encoder.py)
            ship_modeling_file(tmp)
        # What the model was trained on: lets a plain pipeline(text, truncation=True) cut long
        # texts as `predict` does, instead of failing past the position embeddings.
        tok.model_max_length = cfg.max_length
        tok.save_pretrained(str(tmp))
        spec.save(tmp)
        (tmp / "labels.json").write_text(lm.to_json() + "\n", encoding="utf-8")
        if qa_split:  # the held-out articles as files, for `workbench evaluate input=.../split/test.json`
            from workbench.tasks.qa import write_squad

            write_squad(train, tmp / "split" / "train.json")
            write_squad(test, tmp / "split" / "test.json")
        (tmp / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if cfg.task in ("classification", "pair"):
            for split in ("valid", "test"):
                if metrics[split]:
                    plot_confusion(metrics[split]["confusion_matrix"], spec.labels, tmp / f"confusion_{split}.png",
                                   title=f"{split}: accuracy {metrics[split]['accuracy']:.3f}")
        tb_files: tuple[str, ...] = ()
        if tb_keep is not None:
            shutil.move(str(tb_keep / "tensorboard"), str(tmp / "tensorboard"))
            shutil.rmtree(tb_keep, ignore_errors=True)
            tb_files = tuple(str(f.relative_to(tmp)) for f in (tmp / "tensorboard").rglob("*") if f.is_file())
        if snap_keep is not None:
            shutil.move(str(snap_keep / "snapshots"), str(tmp / "snapshots"))
            shutil.rmtree(snap_keep, ignore_errors=True)
        manifest = write_manifest(
            tmp, stage="finetune", config=cfg.model_dump(mode="json"),
            inputs=[e for e in (_input_entry("train", cfg.train), _input_entry("valid", cfg.valid),
                                _input_entry("test", cfg.test)) if e]
            + [{"role": "base_model", "model": cfg.model,
                "stage": (base_manifest or {}).get("stage"), "created": (base_manifest or {}).get("created")}],
            counts={"train": len(train), "valid": len(valid), "test": len(test) if test is not None else 0,
                    "labels": len(lm), "train_inputs": len(feats), **{f"train_{k}": v for k, v in train_length.items()
                                                                     if k != "texts"}},
            seed=best_run["seed"], started=started, finished=time.time(), hash_exclude=tb_files,
            extra={"task": cfg.task, "metric": main, "encoder": metrics["encoder"], "parameters": metrics["parameters"],
                   "loss": metrics["loss"], "read": read_reports,
                   "metrics": {"valid_" + main: best_run["valid"][main],  # what `workbench report` shows
                               "test_" + main: (best_run["test"] or {}).get(main)}},
        )
    summary = f"valid {main} {best_run['valid'][main]:.4f}"
    if best_run["test"]:
        summary += f", test {main} {best_run['test'][main]:.4f}"
    if len(seeds) > 1:
        ms = metrics["seeds"][f"valid_{main}"]
        summary += f"; {len(seeds)} seeds: valid {ms['mean']:.4f} ± {ms['std']:.4f}"
    print(f"finetune → {out}: {cfg.task}, {f'{len(lm)} labels, ' if cfg.task != 'qa' else ''}{summary}")
    return manifest
