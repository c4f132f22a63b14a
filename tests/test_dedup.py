"""Exact and MinHash near-duplicate detection on real review text, with both MinHash
implementations (rensa, the default, and the datasketch reference)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from workbench.config import DedupConfig
from workbench.corpus.dedup import EXACT, KEEP, NEAR, Fingerprinter, FingerprintWriter, find_duplicates


@pytest.fixture(params=["rensa", "numpy", "datasketch"], autouse=True)
def minhash(request, monkeypatch):
    monkeypatch.setattr(DedupConfig.model_fields["minhash"], "default", request.param)
    DedupConfig.model_rebuild(force=True)
    yield request.param
    monkeypatch.undo()
    DedupConfig.model_rebuild(force=True)


def run(texts: list[str], batch: int = 3, **kw):
    cfg = DedupConfig(**kw)
    fp = Fingerprinter(cfg)
    with tempfile.TemporaryDirectory() as d:
        w = FingerprintWriter(Path(d), cfg)
        for start in range(0, len(texts), batch):
            w.write(*fp.batch(texts[start:start + batch]))
        w.close()
        return find_duplicates(Path(d), w.n, cfg)


def test_exact_near_and_unrelated(review_lines):
    base = [t for t in dict.fromkeys(review_lines) if len(t) > 60][:50]
    a = base[0]
    near = a[:-3] + "。真的"  # a small edit at the end of a long review
    texts = base + [a, near, " " + a.upper() + " "]
    d = run(texts)
    n = len(base)
    assert d.kind[n] == EXACT and d.of[n] == 0
    assert d.kind[n + 2] == EXACT and d.of[n + 2] == 0  # case and whitespace are ignored
    assert d.kind[n + 1] == NEAR and d.of[n + 1] == 0 and d.similarity[n + 1] >= 0.8
    assert (d.kind[:n] == KEEP).all(), "distinct real reviews must not be flagged"


def test_earliest_copy_is_kept_and_chains_collapse():
    s = "北京市今天召开新闻发布会，介绍了今年以来全市经济运行的基本情况和下一步工作安排。"
    texts = ["无关的第一条文本内容，完全不同的句子放在这里。", s + "补充", s, s + "补充说明"]
    d = run(texts)
    assert d.kind[1] == KEEP
    assert d.of[2] == 1 and d.of[3] == 1  # both point at the earliest member


def test_switches():
    texts = ["同一段文字出现两次，用来测试开关。"] * 2
    assert (run(texts, exact=False, near=False).kind == KEEP).all()
    d = run(texts, exact=False)
    assert d.kind[1] == NEAR and d.similarity[1] == 1.0


def test_threshold_controls_near():
    a = "这本书的内容非常丰富，讲解也很清楚，适合初学者阅读，推荐购买。"
    b = "这本书的内容非常丰富，讲解也很清楚，适合所有人阅读，值得推荐。"
    assert run([a, b], threshold=0.95).kind[1] == KEEP
    # true Jaccard 0.42: with 64 bands of 2 rows the pair is a candidate with p > 0.999
    assert run([a, b], threshold=0.3, bands=64).kind[1] == NEAR


def test_empty_and_short():
    assert len(run([]).kind) == 0
    d = run(["好", "好", "赞"])
    assert list(d.kind) == [KEEP, EXACT, KEEP]


def test_fingerprints_do_not_depend_on_batching(review_lines, minhash):
    texts = list(dict.fromkeys(review_lines))[:300] + ["好", "", "短文本", "ＡＢ  ｃ"]
    fp = Fingerprinter(DedupConfig(minhash=minhash))
    whole = fp.batch(texts)
    parts = [fp.batch(texts[i:i + 7]) for i in range(0, len(texts), 7)]
    for k in range(3):
        assert np.array_equal(whole[k], np.concatenate([p[k] for p in parts]))


def test_estimated_similarity_tracks_the_true_jaccard(review_lines, minhash):
    """Pairs of real reviews edited by a known amount: the MinHash estimate is within a few
    points of the exact Jaccard of the 5-character shingle sets."""
    from workbench.corpus.dedup import shingles

    base = [t for t in dict.fromkeys(review_lines) if len(t) > 80][:60]
    rng = np.random.default_rng(0)
    a_texts, b_texts = [], []
    for i, t in enumerate(base):
        cut = int(len(t) * rng.uniform(0.0, 0.6))
        a_texts.append(t)
        b_texts.append(t[cut:] + base[(i + 1) % len(base)][: cut // 2])
    fp = Fingerprinter(DedupConfig(minhash=minhash, num_perm=256, bands=16))
    sa, sb = fp.batch(a_texts)[1], fp.batch(b_texts)[1]
    est = (sa == sb).mean(axis=1)
    true = np.array([len(set(shingles(a, 5)) & set(shingles(b, 5))) / len(set(shingles(a, 5)) | set(shingles(b, 5)))
                     for a, b in zip(a_texts, b_texts)])
    assert true.min() < 0.5 < true.max()  # a spread of similarities
    assert np.abs(est - true).mean() < 0.03 and np.abs(est - true).max() < 0.12
