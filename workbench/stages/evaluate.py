"""evaluate: score a finetune/export directory on a labelled file.

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
"""

from __future__ import annotations

import json
import time
import types
from typing import Any

import numpy as np

from workbench.config import EvaluateConfig, TaskDataConfig
from workbench.errors import InputError
from workbench.manifest import atomic_output_dir, owns_output, sha256_file, verify_model_dir, write_manifest
from workbench.report.escape import md_cell, md_code, md_fence
from workbench.tasks.heads import load_task_model
from workbench.tasks.labels import LabelMap, check_labels
from workbench.tasks.metrics import format_table


def _errors(spec, records, preds: dict, worst: int) -> list[dict]:
    from workbench.tasks.inference import entities

    out = []
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
    keys = {"tagging": ("precision", "recall", "f1", "macro_f1"), "multilabel": ("micro_f1", "macro_f1", "exact_match")}
    for k in keys.get(spec.task, ("accuracy", "macro_f1", "weighted_f1")):
        lines.append(f"- {k}: {metrics[k]:.4f}")
    lines += [f"- errors listed in errors.jsonl: {n_errors}", ""]
    table = metrics.get("per_type" if spec.task == "tagging" else "per_class") or {}
    lines += ["| " + ("entity" if spec.task == "tagging" else "label") + " | precision | recall | f1 | support |",
              "|---|---|---|---|---|"]
    lines += [f"| {md_cell(k)} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
              for k, v in table.items()]
    if "confusion_matrix" in metrics:
        lines += ["", "Confusion matrix (rows true, columns predicted):", "",
                  "| | " + " | ".join(map(md_cell, spec.labels)) + " |", "|---" * (len(spec.labels) + 1) + "|"]
        lines += [f"| {md_cell(spec.labels[i])} | " + " | ".join(str(c) for c in row) + " |"
                  for i, row in enumerate(metrics["confusion_matrix"])]
    lines += ["", md_fence(format_table(table)), ""] if table else [""]
    return "\n".join(lines)


@owns_output("evaluate")
def run(cfg: EvaluateConfig) -> dict[str, Any]:
    from workbench.stages.finetune import read_records
    from workbench.tasks.inference import evaluate_records
    from workbench.tasks.plots import plot_confusion

    started = time.time()
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
    main = {"tagging": "f1", "multilabel": "micro_f1"}.get(spec.task, "accuracy")
    print(f"evaluate → {out}: {len(records)} records, {main} {metrics[main]:.4f}, {len(errors)} errors listed")
    return manifest
