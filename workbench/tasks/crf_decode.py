"""Viterbi decoding for a BERT + CRF tagger exported by zh-workbench (torch + safetensors only).

The exported directory is a plain ``BertForTokenClassification`` (the CRF's emission
scores) that ``pipeline("token-classification", model=DIR)`` loads and decodes by argmax;
``crf.safetensors`` holds the CRF on top of it. This file decodes with the CRF, as the
model was trained, and needs no zh-workbench install:

    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from crf_decode import load_crf, predict

    tok = AutoTokenizer.from_pretrained(DIR)
    model = AutoModelForTokenClassification.from_pretrained(DIR).eval()
    crf = load_crf(DIR)
    predict("新华社北京电", model, tok, crf)
    # [{'start': 3, 'end': 5, 'type': 'LOC', 'text': '北京'}]

``predict`` handles texts up to the model's max_length tokens ([CLS]/[SEP] included)
and raises for longer ones; `workbench predict` cuts long texts into overlapping windows
and stitches them. Offsets are character offsets [start, end) into the text.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

FORBIDDEN = -10000.0


def load_crf(directory: str | Path) -> dict:
    """{"tags", "transitions" (T, T) [from, to], "start" (T,), "end" (T,)}, forbidden entries pinned."""
    with safe_open(str(Path(directory) / "crf.safetensors"), framework="pt") as f:
        tags = json.loads(f.metadata()["tags"])
        t = {k: f.get_tensor(k) for k in f.keys()}
    pin = torch.tensor(FORBIDDEN)
    return {
        "tags": tags,
        "transitions": torch.where(t["allowed"].bool(), t["transitions"], pin),
        "start": torch.where(t["allowed_start"].bool(), t["start_scores"], pin),
        "end": torch.where(t["allowed_end"].bool(), t["end_scores"], pin),
    }


def viterbi(emissions: torch.Tensor, crf: dict) -> list[int]:
    """The best tag ids for emissions (L, T) of one sequence (no [CLS]/[SEP], no padding)."""
    if emissions.size(0) == 0:
        return []
    em = emissions.float()
    score = crf["start"] + em[0]  # (T,) best score of a path ending in each tag
    back = []
    for i in range(1, em.size(0)):
        best, prev = (score.unsqueeze(1) + crf["transitions"]).max(dim=0)
        back.append(prev)
        score = best + em[i]
    path = [int((score + crf["end"]).argmax())]
    for prev in reversed(back):
        path.append(int(prev[path[-1]]))
    return path[::-1]


def entities(text: str, token_tags: list[str], offsets: list[tuple[int, int]]) -> list[dict]:
    """Entities from BIO/BIOES token tags and the tokens' character offsets.

    An entity runs from its first token's start to its last token's end. Like zh-workbench,
    an I-/E- that continues nothing starts a new entity (CRF paths never contain one).
    """
    spans, start, kind = [], None, None
    for i, tag in enumerate(token_tags):
        prefix, typ = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if prefix in ("I", "E") and start is not None and typ == kind:
            if prefix == "E":
                spans.append((start, i, kind))
                start = None
            continue
        if start is not None:
            spans.append((start, i - 1, kind))
            start = None
        if prefix in ("B", "I"):
            start, kind = i, typ
        elif prefix in ("S", "E"):
            spans.append((i, i, typ))
    if start is not None:
        spans.append((start, len(token_tags) - 1, kind))
    out = []
    for s, e, t in spans:
        a, b = offsets[s][0], offsets[e][1]
        out.append({"start": a, "end": b, "type": t, "text": text[a:b]})
    return out


@torch.no_grad()
def predict(text: str, model, tokenizer, crf: dict) -> list[dict]:
    """Entities of one text (at most the model's max_length tokens) by CRF Viterbi decoding."""
    enc = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    if enc["input_ids"].size(1) > model.config.max_position_embeddings:
        raise ValueError("text too long for one window; use `workbench predict` (sliding windows)")
    emissions = model(**enc).logits[0]  # (L, T) with [CLS] first and [SEP] last
    path = viterbi(emissions[1:-1], crf)
    return entities(text, [crf["tags"][i] for i in path], offsets[1:-1])
