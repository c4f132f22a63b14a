"""A cheap downstream probe of a (partly) pretrained encoder: frozen features + a linear head.

The encoder is not trained: each text's last-layer states are mean-pooled over its tokens
(shape [texts, hidden]), standardised, and a logistic regression (scikit-learn, L2, lbfgs,
fixed seed) is fitted on a fixed train subset and scored on a fixed valid subset. It costs
two forward passes over a few thousand texts, so it can run at every pretraining
checkpoint and show when continued pretraining stops making the representation more
useful for the task (the MLM loss alone does not tell: it keeps falling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def encode_features(model_dir: str | Path, tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None,
                    *, max_length: int = 128, batch_size: int = 64):
    """Mean-pooled last hidden states, float32 numpy [len(texts), hidden]."""
    import numpy as np
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False)
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            a = list(texts[i:i + batch_size])
            b = list(pairs[i:i + batch_size]) if pairs is not None else None
            enc = tokenizer(a, b, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state                   # [batch, length, hidden]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [batch, length, 1]
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))
    return np.concatenate([o.float().numpy() for o in out]) if out else np.zeros((0, model.config.hidden_size))


def linear_probe(model_dir: str | Path, tokenizer, train: Sequence[Any], valid: Sequence[Any], *,
                 max_length: int = 128, seed: int = 0) -> dict[str, float]:
    """Fit on `train`, score on `valid` (TextRecords with one label each): accuracy and
    macro-F1 of the logistic regression on frozen features."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    def feats(records):
        pairs = [r.text_pair or "" for r in records] if any(r.text_pair for r in records) else None
        return encode_features(model_dir, tokenizer, [r.text for r in records], pairs, max_length=max_length)

    x_train, x_valid = feats(train), feats(valid)
    y_train = np.array([r.labels[0] for r in train])
    y_valid = np.array([r.labels[0] for r in valid])
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(scaler.transform(x_train), y_train)
    pred = clf.predict(scaler.transform(x_valid))
    return {"accuracy": float(accuracy_score(y_valid, pred)),
            "macro_f1": float(f1_score(y_valid, pred, average="macro")),
            "train": len(train), "valid": len(valid)}
