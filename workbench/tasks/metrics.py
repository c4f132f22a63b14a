"""Evaluation metrics for fine-tuning: classification, multi-label, entity-level tagging.

Classification and multi-label metrics are small numpy code (scikit-learn is not a
dependency of the workbench; the tests compare against hand-computed values and, where
it happens to be installed, against scikit-learn). Tagging uses ``seqeval``, the
reference implementation of CoNLL entity-level scoring:
  - BIO tags: seqeval's default (conlleval) mode, which also scores an entity that a
    model starts with I- (as conlleval does);
  - BIOES tags: strict mode with the IOBES scheme, where an entity counts only when it
    is spelt correctly (B- ... E- or S-).

Conventions: a precision/recall/F1 whose denominator is zero is 0 (a class never
predicted has precision 0), never NaN; ``support`` is the number of true items.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from workbench.tasks.tags import scheme_of_tag_list


def _prf(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 arrays (0 where undefined)."""
    tp, n_pred, n_true = (np.asarray(x, dtype=np.float64) for x in (tp, n_pred, n_true))
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def _per_class(names: Sequence[str], p, r, f, support) -> dict[str, dict[str, float]]:
    return {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, name in enumerate(names)}


# --------------------------------------------------------------------------- classification
def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> np.ndarray:
    """(num_labels, num_labels) int64 counts; row = true label, column = predicted label."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape}, y_pred {p.shape}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_labels):
        raise ValueError(f"label ids must be in 0..{num_labels - 1}")
    return np.bincount(t * num_labels + p, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, macro / micro / weighted F1 and per-class P/R/F1 for single-label ids.

    Macro F1 averages the per-class F1 over ALL `labels` (a class absent from both
    y_true and y_pred counts as F1 0, as scikit-learn does with labels=...). For
    single-label data micro F1 equals accuracy; it is reported to make that visible.
    """
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm)
    n_true, n_pred = cm.sum(axis=1), cm.sum(axis=0)
    p, r, f = _prf(tp, n_pred, n_true)
    total = cm.sum()
    _, _, micro_f1 = _prf(tp.sum(keepdims=True), n_pred.sum(keepdims=True), n_true.sum(keepdims=True))
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f.mean()) if len(labels) else 0.0,
        "micro_f1": float(micro_f1[0]),
        "weighted_f1": float((f * n_true).sum() / total) if total else 0.0,
        "per_class": _per_class(labels, p, r, f, n_true),
        "confusion_matrix": cm.tolist(),
        "n": int(total),
    }


# --------------------------------------------------------------------------- multi-label
def multilabel_metrics(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], *, threshold: float = 0.5) -> dict:
    """Micro / macro F1, exact-match ratio and per-label P/R/F1 for a multi-label task.

    `y_true`: (N, L) 0/1 matrix; `scores`: (N, L) probabilities (or 0/1 predictions); a
    label is predicted when its score >= `threshold`. Macro F1 averages over all L labels.
    """
    t = np.asarray(y_true).astype(bool)
    pred = np.asarray(scores) >= threshold
    if t.shape != pred.shape or t.ndim != 2 or t.shape[1] != len(labels):
        raise ValueError(f"y_true {t.shape} and scores {pred.shape} must both be (N, {len(labels)})")
    tp = (t & pred).sum(axis=0)  # (L,)
    n_true, n_pred = t.sum(axis=0), pred.sum(axis=0)
    p, r, f = _prf(tp, n_pred, n_true)
    mp, mr, mf = _prf(tp.sum(keepdims=True), n_pred.sum(keepdims=True), n_true.sum(keepdims=True))
    return {
        "micro_precision": float(mp[0]),
        "micro_recall": float(mr[0]),
        "micro_f1": float(mf[0]),
        "macro_f1": float(f.mean()) if len(labels) else 0.0,
        "exact_match": float((t == pred).all(axis=1).mean()) if len(t) else 0.0,
        "per_class": _per_class(labels, p, r, f, n_true),
        "threshold": threshold,
        "n": len(t),
    }


# --------------------------------------------------------------------------- tagging
def tagging_metrics(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]], scheme: str | None = None) -> dict:
    """Entity-level micro P/R/F1, macro F1 and a per-type table, via seqeval.

    `scheme`: 'bio' or 'bioes'; None detects it from the true tags (E-/S- → BIOES).
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOBES

    if len(y_true) != len(y_pred) or any(len(a) != len(b) for a, b in zip(y_true, y_pred)):
        raise ValueError("y_true and y_pred must have the same number of sentences and tags per sentence")
    y_true, y_pred = [list(s) for s in y_true], [list(s) for s in y_pred]
    if scheme is None:
        scheme = scheme_of_tag_list([t for s in y_true for t in s])
    if scheme not in ("bio", "bioes"):
        raise ValueError(f"scheme must be bio or bioes, not '{scheme}'")
    kwargs = {"mode": "strict", "scheme": IOBES} if scheme == "bioes" else {}
    with warnings.catch_warnings():  # seqeval warns on empty classes; we define those as 0
        warnings.simplefilter("ignore")
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0, **kwargs)
    types = sorted(k for k in report if not k.endswith(" avg"))
    per_type = {k: {"precision": float(report[k]["precision"]), "recall": float(report[k]["recall"]),
                    "f1": float(report[k]["f1-score"]), "support": int(report[k]["support"])} for k in types}
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "macro_f1": float(np.mean([v["f1"] for v in per_type.values()])) if per_type else 0.0,
        "per_type": per_type,
        "scheme": scheme,
    }


# --------------------------------------------------------------------------- across runs
def mean_std(values: Sequence[float]) -> dict:
    """{"values", "mean", "std"} of runs (e.g. seeds); std is the sample std (ddof=1), 0 for one run."""
    arr = np.asarray(values, dtype=np.float64)
    return {"values": [float(v) for v in arr], "mean": float(arr.mean()),
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def summarize_runs(runs: Sequence[dict], skip: Sequence[str] = ("n", "threshold")) -> dict:
    """mean_std of every top-level scalar metric shared by all `runs` (metric dicts of one
    split, e.g. each seed's valid metrics): accuracy, macro_f1, f1, ... Counts and settings
    (`skip`) and nested tables (per_class, per_type, confusion_matrix) are left out."""
    def scalar(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not runs:
        return {}
    keys = [k for k, v in runs[0].items() if k not in skip and scalar(v) and all(scalar(r.get(k)) for r in runs)]
    return {k: mean_std([r[k] for r in runs]) for k in keys}


def format_table(per_class: dict[str, dict[str, float]]) -> str:
    """A plain-text P/R/F1/support table (for logs and the model card)."""
    width = max([len(k) for k in per_class] + [5])
    lines = [f"{'label':<{width}}  precision  recall      f1  support"]
    for name, m in per_class.items():
        lines.append(f"{name:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:6.4f}  {m['support']:7d}")
    return "\n".join(lines)
