"""Word discovery on id corpora: planted words, the Segmenter interface, People's Daily boundaries."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from workbench.segment.discovery import DiscoveredSegmenter, boundary_scores, discover_words

PLANTED = [(5, 6), (7, 8, 9), (10, 11, 12, 13)]


def _synthetic(n_docs: int = 400, seed: int = 0) -> list[list[int]]:
    """Random 'characters' 100..299 with three planted words inserted at random places."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        doc: list[int] = []
        for _ in range(rng.integers(5, 15)):
            doc += list(PLANTED[rng.integers(3)]) if rng.random() < 0.1 else [int(rng.integers(100, 300))]
        docs.append(doc)
    return docs


def test_planted_words_are_discovered_and_cut():
    docs = _synthetic()
    words, unigrams = discover_words(docs, min_count=5, min_pmi=3.0, min_entropy=1.0)
    found = {w.ids for w in words}
    assert set(PLANTED) <= found
    # fragments of planted words are not free (one neighbour always follows): not words
    assert not found & {(7, 8), (8, 9), (10, 11, 12), (11, 12, 13)}
    w = next(w for w in words if w.ids == (7, 8, 9))
    assert w.count == sum(d[i:i + 3] == [7, 8, 9] for d in docs for i in range(len(d))) and w.pmi > 3
    assert unigrams[7] == w.count and unigrams[5] >= 100
    seg = DiscoveredSegmenter(words, unigrams)
    assert seg.cut_lengths([1, 7, 8, 9, 2, 5, 6, 10, 11, 12, 13]) == [1, 3, 1, 2, 4]
    greedy = DiscoveredSegmenter(words, unigrams, method="greedy")
    assert greedy.cut_lengths([7, 8, 9, 5, 6]) == [3, 2]


def test_segmenter_interface_cuts_text_into_covering_substrings(tmp_path):
    docs = _synthetic()
    seg = DiscoveredSegmenter.from_corpus(docs)
    text = "  1 7 8  9 [SEP] 5 6 x 10 11 12 13 "
    words = seg.cut(text)
    assert "".join(words) == text  # the segment stage aligns tokens by character offsets
    assert [w.split() for w in words] == [["1"], ["7", "8", "9"], ["[SEP]"], ["5", "6"], ["x"], ["10", "11", "12", "13"]]
    assert seg.cut("") == [] and seg.cut("   ") == ["   "]
    texts = ["5 6 1", "7 8 9"]
    n_words, lengths, types = seg.cut_batch(texts, {})
    assert n_words.tolist() == [2, 1] and lengths.tolist() == [len(w) for t in texts for w in seg.cut(t)]
    assert types.tolist() == [-1] * 3 and types.dtype == np.int16
    assert seg.cut_with_entities("5 6 1") == (["5 6 ", "1"], [None, None])
    assert seg.entity_types == [] and seg.lexicon_stats[0]["entries"] == len(seg.words)
    assert ("5 6", seg.words[[w.ids for w in seg.words].index((5, 6))].count, None) in seg.lexicon_words
    again = pickle.loads(pickle.dumps(seg))
    assert again.cut(text) == words
    loaded = DiscoveredSegmenter.load(seg.save(tmp_path / "words.json"))
    assert loaded.cut(text) == words and loaded.words == seg.words


def test_segment_alignment_with_an_id_tokenizer(tmp_path):
    """encode_docs (the segment stage's hot path) with a remapped tokenizer: tokens of one
    discovered word share a word id."""
    from workbench.segment.blocks import encode_docs
    from workbench.vocab import remap as rm

    docs = _synthetic(200)
    seg = DiscoveredSegmenter.from_corpus(docs)
    ids = sorted({i for d in docs for i in d})
    tokens, mapping = rm.scratch_tokens(ids, {})
    tok = rm.build_id_tokenizer(tokens, {})
    enc = encode_docs(["1 7 8 9 5 6", "10 11 12 13  2"], tok, seg, {})
    unk = tok.unk_token_id  # ids 1 and 2 are not in the corpus
    assert enc.ids.tolist() == [unk] + [mapping[i] for i in (7, 8, 9, 5, 6, 10, 11, 12, 13)] + [unk]
    assert enc.word.tolist() == [0, 1, 1, 1, 2, 2, 0, 0, 0, 0, 1]


def test_boundary_scores():
    assert boundary_scores([[2, 1]], [[2, 1]])["f1"] == 1.0
    s = boundary_scores([[1, 1, 1]], [[2, 1]])
    assert (s["precision"], s["recall"]) == (0.5, 1.0)
    with pytest.raises(ValueError):
        boundary_scores([[1, 1]], [[3]])


def test_peoples_daily_boundaries_beat_every_id_its_own_word():
    """Desensitised People's Daily (2000 paragraphs, ~110k characters): discovered words
    vs jieba's cut of the original text, and vs the corpus's manual segmentation."""
    from workbench.segment.discovery import peoples_daily_benchmark

    r = peoples_daily_benchmark(2000, min_count=5, min_pmi=3.0, min_entropy=1.0)
    assert r["words_discovered"] > 1000
    for gold in ("jieba", "manual"):
        assert r[gold]["f1"] >= r[f"trivial_{gold}"]["f1"] + 0.07, r
        assert r[gold]["precision"] >= r[f"trivial_{gold}"]["precision"] + 0.05, r
