"""prepare exclude: documents containing evaluation text are rejected (eval_overlap), counted, located."""

from __future__ import annotations

import json

import pytest

from finetune_fixtures import reviews
from workbench.config import load_stage_config
from workbench.errors import ConfigError, InputError


def _prepare(tmp_path, corpus, *overrides):
    from workbench.stages.prepare import run

    out = tmp_path / "prepared"
    m = run(load_stage_config("prepare", None, [f"input={corpus}", f"output={out}", "split.valid_fraction=0",
                                                "dedup.near=false", *overrides]))
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return m, rejects


def test_eval_texts_and_documents_quoting_them_are_rejected_with_their_source(tmp_path):
    rows = reviews(30)
    long_eval = [t for _, t in rows if len(t) >= 40][:3]
    short_eval = next(t for _, t in rows if 6 <= len(t) < 20)
    other = [t for _, t in rows if t not in long_eval and t != short_eval][:20]
    test_tsv = tmp_path / "test.tsv"
    test_tsv.write_text("label\ttext_a\n" + "".join(f"1\t{t}\n" for t in long_eval + [short_eval]), encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    docs = other + [long_eval[0],                                   # the test sentence itself
                    "我想说：" + long_eval[1][5:30] + "，就这样吧。",   # quotes 25 of its characters
                    short_eval,                                      # equal to a short test text
                    "开头" + short_eval + "结尾的一句话"]             # contains a short one: kept
    corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
    m, rejects = _prepare(tmp_path, corpus, f"exclude.files=[{test_tsv}]")
    hits = [r for r in rejects if r["reason"] == "eval_overlap"]
    assert [r["line"] for r in hits] == [len(other) + 1, len(other) + 2, len(other) + 3]
    assert f"{test_tsv}:2" in hits[0]["detail"] and f"{test_tsv}:3" in hits[1]["detail"]
    c = m["counts"]
    assert c["rejected_by_reason"]["eval_overlap"] == 3
    assert c["in"] == c["kept"] + c["rejected"] + c["duplicates"] == len(docs)


def test_conll_and_jsonl_evaluation_files(tmp_path):
    sent = "中国人民银行今天宣布下调存款准备金率零点五个百分点"
    conll = tmp_path / "ner.txt"
    conll.write_text("".join(f"{ch} O\n" for ch in sent) + "\n" + "".join(f"{ch} O\n" for ch in "另一句话很短") + "\n",
                     encoding="utf-8")
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text(json.dumps({"question": "长江是中国最长的河流吗？它流经哪些省份和城市呢", "id": 1},
                                ensure_ascii=False) + "\n", encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("新闻：" + sent + "。\n有人问：长江是中国最长的河流吗？它流经哪些省份和城市呢\n无关的一句话在这里出现\n",
                      encoding="utf-8")
    m, rejects = _prepare(tmp_path, corpus, f"exclude.files=[{conll}, {jsonl}]", "clean.min_chars=2")
    assert [r["line"] for r in rejects if r["reason"] == "eval_overlap"] == [1, 2]
    assert m["counts"]["kept"] == 1


def test_bad_exclude_settings_are_clear(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("一些文字在这里出现了\n", encoding="utf-8")
    with pytest.raises(InputError, match="does not exist"):
        _prepare(tmp_path, corpus, f"exclude.files=[{tmp_path / 'nope.tsv'}]")
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\tcontent\n1\t文字\n", encoding="utf-8")
    with pytest.raises(InputError, match="text_fields"):
        _prepare(tmp_path, corpus, f"exclude.files=[{bad}]")
    with pytest.raises(ConfigError, match="ngram"):
        _prepare(tmp_path, corpus, "exclude.ngram=2")
