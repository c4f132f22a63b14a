"""Exact and MinHash near-duplicate detection on real review text."""

from __future__ import annotations

from workbench.config import DedupConfig
from workbench.corpus.dedup import EXACT, KEEP, NEAR, FingerprintWriter, find_duplicates


def run(texts: list[str], **kw):
    cfg = DedupConfig(**kw)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        w = FingerprintWriter(Path(d), cfg)
        for t in texts:
            w.add(t)
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
    assert run([a, b], threshold=0.3, bands=32).kind[1] == NEAR


def test_empty_and_short():
    assert len(run([]).kind) == 0
    d = run(["好", "好", "赞"])
    assert list(d.kind) == [KEEP, EXACT, KEEP]
