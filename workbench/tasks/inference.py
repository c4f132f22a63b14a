"""Running a task model on texts: one code path for per-epoch evaluation, predict and evaluate.

Whatever the stage, texts go through the same steps as in training:
  - classification / pair / multilabel: ``encode_classification`` (same truncation,
    counted) → logits → softmax (sigmoid for multilabel) probabilities (N, num_labels);
  - tagging: ``encode_chars`` → ``tagging_windows`` → emissions per window → argmax, or
    CRF Viterbi over the window's real tokens (all of them, word pieces included; not
    [CLS]/[SEP]/padding) → ``stitch_tags`` → one tag per character. An exported CRF model
    (``BertCrfForTokenClassification``) runs its CRF over the same positions.
Texts are used as they are (no cleaning): the model sees at prediction time exactly what
it saw in training, and character offsets refer to the input text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.tasks.heads import TaskSpec
from workbench.tasks.windows import (
    IGNORE_INDEX,
    WindowStats,
    encode_chars,
    encode_classification,
    stitch_tags,
    tagging_windows,
)


def pad_batch(features: Sequence[dict], pad_id: int = 0) -> dict:
    """Tensors for a list of {input_ids, [token_type_ids], [labels]} dicts, right-padded.

    Labels: a list of ints (tagging) is padded with IGNORE_INDEX; a list of floats
    (multi-hot) is stacked; an int (one class) becomes a (B,) tensor.
    """
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    types = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        mask[i, :n] = 1
        if "token_type_ids" in f:
            types[i, :n] = torch.tensor(f["token_type_ids"])
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    for key in ("start_positions", "end_positions"):  # qa: answer span tokens (0 = [CLS], not in the window)
        if key in features[0]:
            batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
    if "labels" in features[0]:
        first = features[0]["labels"]
        if isinstance(first, int):
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        elif first and isinstance(first[0], float):
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float)
        else:
            labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
            for i, f in enumerate(features):
                labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
            batch["labels"] = labels
    return batch


def _device(model):
    return next(model.parameters()).device


def classify(model, tokenizer, spec: TaskSpec, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
             batch_size: int = 64) -> tuple[np.ndarray, int]:
    """(N, num_labels) probabilities and the number of texts that were truncated."""
    import torch

    enc, truncated = encode_classification(tokenizer, texts, pairs, max_length=spec.max_length,
                                           strategy=spec.truncation, head=spec.head_tokens)
    features = [{"input_ids": a, "token_type_ids": t} for a, t in zip(enc["input_ids"], enc["token_type_ids"])]
    was_training = model.training
    model.eval()
    out = []
    device = _device(model)
    with torch.no_grad():
        for i in range(0, len(features), batch_size):
            batch = {k: v.to(device) for k, v in pad_batch(features[i:i + batch_size], tokenizer.pad_token_id).items()}
            logits = model(**batch).logits.float()
            out.append((torch.sigmoid(logits) if spec.multilabel else torch.softmax(logits, -1)).cpu().numpy())
    model.train(was_training)
    return (np.concatenate(out) if out else np.zeros((0, len(spec.labels)), dtype=np.float32)), truncated


def tag(model, crf, tokenizer, spec: TaskSpec, texts: Sequence[str], *,
        batch_size: int = 64) -> tuple[list[list[str]], WindowStats]:
    """One tag (in spec.scheme) per character of each text, and the window statistics."""
    import torch

    encs = encode_chars(tokenizer, texts)
    windows, stats = tagging_windows(encs, None, None, scheme=spec.scheme, max_length=spec.max_length,
                                     overlap=spec.overlap(), cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id)
    window_tags: list[list[str]] = []
    was_training = model.training
    model.eval()
    device = _device(model)
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            chunk = windows[i:i + batch_size]
            batch = pad_batch([{"input_ids": w.input_ids} for w in chunk], tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            # (B, L, T); a CRF export's logits are CRF max-marginals, its emissions come apart
            emissions = (model.emissions(**batch) if hasattr(model, "emissions") else model(**batch).logits).float()
            lengths = batch["attention_mask"].sum(1)  # [CLS] + tokens + [SEP]
            if crf is not None:
                keep = batch["attention_mask"].bool().clone()
                keep[:, 0] = False  # [CLS]
                keep[torch.arange(len(chunk), device=device), lengths - 1] = False  # [SEP]
                paths = crf.decode(emissions, keep)
            else:
                best = emissions.argmax(-1).tolist()
                paths = [best[b][1:n - 1] for b, n in enumerate(lengths.tolist())]
            window_tags += [[spec.tags[t] for t in path] for path in paths]
    model.train(was_training)
    by_text: list[list[int]] = [[] for _ in encs]
    for j, w in enumerate(windows):
        by_text[w.record].append(j)
    out = [stitch_tags(enc, [windows[j] for j in js], [window_tags[j] for j in js], spec.scheme)
           for enc, js in zip(encs, by_text)]
    return out, stats


def evaluate_records(model, crf, tokenizer, spec: TaskSpec, records: Sequence, *, batch_size: int = 64) -> tuple[dict, dict]:
    """(metrics, predictions) of a task model on labelled records.

    predictions: classification → {"probs": (N, L)}, multilabel → {"probs"}, tagging →
    {"tags": per-record character tags}. Metrics come from ``tasks.metrics``; the count
    of truncated texts / window statistics are added under "length".
    """
    from workbench.tasks.labels import LabelMap
    from workbench.tasks.metrics import classification_metrics, multilabel_metrics, tagging_metrics

    if spec.task == "qa":  # n-best decoding over windows, CMRC 2018 EM / F1 (tasks/qa.py)
        from workbench.tasks.qa import evaluate_records as evaluate_qa

        return evaluate_qa(model, tokenizer, spec, records, batch_size=batch_size)
    if spec.task == "tagging":
        tags, stats = tag(model, crf, tokenizer, spec, [r.text for r in records], batch_size=batch_size)
        gold = [r.tags(spec.scheme) for r in records]
        metrics = tagging_metrics(gold, tags, spec.scheme)
        metrics["n"] = len(records)
        metrics["length"] = {"windows": stats.windows, "texts_split": stats.texts_split}
        return metrics, {"tags": tags}
    lm = LabelMap(tuple(spec.labels))
    pairs = [r.text_pair or "" for r in records] if spec.task == "pair" else None
    probs, truncated = classify(model, tokenizer, spec, [r.text for r in records], pairs, batch_size=batch_size)
    if spec.multilabel:
        y_true = np.array([lm.multi_hot(r.labels) for r in records]).reshape(len(records), len(lm))
        metrics = multilabel_metrics(y_true, probs, spec.labels, threshold=spec.threshold)
    else:
        metrics = classification_metrics([lm.label2id[r.label] for r in records], probs.argmax(1).tolist(), spec.labels)
    metrics["length"] = {"truncated": truncated, "of": len(records)}
    return metrics, {"probs": probs}


def entities(text: str, char_tags: Sequence[str], scheme: str) -> list[dict]:
    """[{start, end, type, text}] from character tags; offsets are [start, end) into `text`."""
    from workbench.tasks.tags import tags_to_spans

    spans, _ = tags_to_spans(list(char_tags), scheme)
    return [{"start": s, "end": e, "type": t, "text": text[s:e]} for s, e, t in spans]
