"""predict: run a fine-tuned (or exported) model on texts, write JSONL.

    workbench predict model=runs/demo/finetune-classification input=reviews.txt output=preds.jsonl
    echo 今天天气不错 | workbench predict model=runs/demo/export/tagging

Input: `-` (stdin) or a file; .txt has one text per line (a pair model takes `a<TAB>b`),
.tsv/.csv/.jsonl have a text column (`text_column`, pairs also `text_pair_column`).
One JSON object per input text, in input order:

    classification / pair  {"text", "label", "score", "top_k": [{"label", "score"}, ...]}
    multilabel             {"text", "labels": [...], "scores": {label: probability}}
    tagging                {"text", "entities": [{"start", "end", "type", "text"}]}
    qa                     {"id", "question", "answer", "start", "end", "score", "n_best": [top_k answers]}

QA input: a SQuAD-style .json file (question ids kept), .jsonl with {"question", "context"[,
"id"]}, or text lines `question<TAB>context`; offsets are characters into the context.

Entity offsets are character offsets [start, end) into the input text. Long texts are
truncated (classification) or windowed and stitched (tagging) exactly as in finetune; a
model trained with a CRF is decoded with Viterbi (crf.safetensors). Texts are not cleaned:
give them as the model was trained on (the workbench does not normalise full-width forms
in fine-tuning data either, so train and predict agree).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
import tempfile
from pathlib import Path

from workbench.config import PredictConfig
from workbench.errors import InputError
from workbench.manifest import claim_output, verify_model_dir
from workbench.tasks.heads import TaskSpec, load_task_model

log = logging.getLogger("workbench.predict")


def read_inputs(cfg: PredictConfig, spec: TaskSpec) -> tuple[list[str], list[str] | None]:
    """(texts, pairs or None) from cfg.input."""
    from workbench.tasks.data import read_lines, read_text_records

    pair = spec.task == "pair"
    src = cfg.input
    fmt = cfg.format
    with tempfile.TemporaryDirectory() as tmp:
        if src == "-":
            fmt = "txt" if fmt == "auto" else fmt
            path = Path(tmp) / f"stdin.{fmt}"
            path.write_text(sys.stdin.read(), encoding="utf-8")
        else:
            path = Path(src)
            if fmt == "auto":
                suffix = path.suffix.lower()
                fmt = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(suffix, "txt")
        if fmt == "txt":
            lines = [line for line in read_lines(path, "auto") if line.strip()]  # UTF-8 or GB18030, as prepare
            if not pair:
                return lines, None
            bad = next((i for i, line in enumerate(lines, 1) if line.count("\t") != 1), None)
            if bad is not None:
                raise InputError(src, "a pair model needs two texts per line separated by one tab", "write 'text_a<TAB>text_b'", line=bad)
            return [line.split("\t")[0] for line in lines], [line.split("\t")[1] for line in lines]
        records = read_text_records(path, text=cfg.text_column, label=None,
                                    text_pair=cfg.text_pair_column if pair else None, format=fmt, encoding="auto")
        return [r.text for r in records], [r.text_pair or "" for r in records] if pair else None


def predict_rows(model, crf, tok, spec: TaskSpec, texts: list[str], pairs: list[str] | None, *,
                 top_k: int = 3, batch_size: int = 64, threshold: float | None = None) -> list[dict]:
    from workbench.tasks.inference import classify, entities, tag

    if spec.task == "tagging":
        tags, _ = tag(model, crf, tok, spec, texts, batch_size=batch_size)
        return [{"text": t, "entities": entities(t, tg, spec.scheme)} for t, tg in zip(texts, tags)]
    probs, truncated = classify(model, tok, spec, texts, pairs, batch_size=batch_size)
    if truncated:
        log.warning("predict: %d of %d texts are longer than max_length=%d tokens and were truncated (%s), as in training",
                    truncated, len(texts), spec.max_length, spec.truncation)
    rows = []
    for i, text in enumerate(texts):
        p = probs[i]
        row: dict = {"text": text}
        if pairs is not None:
            row["text_pair"] = pairs[i]
        if spec.multilabel:
            th = threshold if threshold is not None else spec.threshold
            row["labels"] = [spec.labels[j] for j in range(len(p)) if p[j] >= th]
            row["scores"] = {spec.labels[j]: round(float(p[j]), 6) for j in range(len(p))}
        else:
            order = p.argsort()[::-1]
            row["label"] = spec.labels[int(order[0])]
            row["score"] = round(float(p[order[0]]), 6)
            row["top_k"] = [{"label": spec.labels[int(j)], "score": round(float(p[j]), 6)} for j in order[:top_k]]
        rows.append(row)
    return rows


def _is_predictions(path: Path) -> bool:
    """Whether `path` looks like an earlier output of predict (JSONL rows with "text" and a
    prediction), so that re-running predict may replace it."""
    try:
        with open(path, encoding="utf-8") as f:
            row = json.loads(f.readline())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(row, dict) and (("text" in row and any(k in row for k in ("label", "labels", "entities")))
                                      or ("question" in row and "answer" in row))


def run(cfg: PredictConfig) -> list[dict]:
    if cfg.output != "-":
        inputs = [p for p in (cfg.input, cfg.model) if p and p != "-"]
        with claim_output(Path(cfg.output), stage="predict", inputs=inputs, is_own=_is_predictions):
            return _predict(cfg)
    return _predict(cfg)


def _predict(cfg: PredictConfig) -> list[dict]:
    verify_model_dir(cfg.model, needed_by="predict")
    model, crf, tok, spec = load_task_model(cfg.model, needed_by="predict")
    if spec.task == "qa":  # SQuAD-style .json, {"question", "context"[, "id"]} JSONL, or question<TAB>context lines
        from workbench.tasks import qa

        records = qa.read_questions(cfg.input, cfg.format, text=sys.stdin.read() if cfg.input == "-" else None)
        rows = qa.predict_rows(model, tok, spec, records, top_k=cfg.top_k, batch_size=cfg.batch_size)
    else:
        texts, pairs = read_inputs(cfg, spec)
        rows = predict_rows(model, crf, tok, spec, texts, pairs, top_k=cfg.top_k, batch_size=cfg.batch_size,
                            threshold=cfg.threshold)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if cfg.output == "-":
        sys.stdout.write(lines)
    else:
        out = Path(cfg.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.write_text(lines, encoding="utf-8")
        tmp.replace(out)
        print(f"predict → {out}: {len(rows)} texts ({spec.task}{', CRF' if crf is not None else ''})", file=sys.stderr)
    return rows
