"""desensitise (library + stage) and reading id corpora (GAIIC, Tianchi tsv, lines)."""

from __future__ import annotations

import json
import stat

import pytest

from workbench.config import load_stage_config
from workbench.corpus.desensitise import UnitSplitter, build_key, desensitise_texts, read_key
from workbench.corpus.id_corpus import count_ids, detect_format, read_id_corpus
from workbench.errors import ConfigError, InputError


def _cfg(*overrides):
    return load_stage_config("desensitise", None, [str(o) for o in overrides])


# --------------------------------------------------------------------------- library
def test_key_is_a_seeded_dense_permutation(review_lines):
    units = [c for t in review_lines[:100] for c in t if not c.isspace()]
    a, b = build_key(units, seed=1, offset=10), build_key(reversed(units), seed=1, offset=10)
    assert a == b  # depends on the set of units and the seed only, not on their order
    assert sorted(a.values()) == list(range(10, 10 + len(set(units))))
    assert build_key(units, seed=2, offset=10) != a
    # a permutation, not the sorted order: ids are not monotone in the code point
    ordered = [a[u] for u in sorted(a)]
    assert ordered != sorted(ordered)


def test_texts_by_char_and_word(review_lines):
    texts = review_lines[:50]
    ids, key = desensitise_texts(texts, unit="char", seed=3)
    back = {i: u for u, i in key.items()}
    for t, line in zip(texts, ids):
        assert "".join(back[int(i)] for i in line.split()) == "".join(t.split())
    words, wkey = desensitise_texts(texts, unit="word", seed=3)
    assert len(wkey) < len(key) * 20 and sum(len(w.split()) for w in words) < sum(len(i.split()) for i in ids)
    assert UnitSplitter("word")("今天 天气很好") == ["今天", "天气", "很", "好"]


# --------------------------------------------------------------------------- stage
@pytest.fixture
def corpus_dir(tmp_path, review_lines):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "reviews.tsv").write_text("label\ttext\n" + "".join(f"{i % 3}\t{t}\n" for i, t in enumerate(review_lines[:40])),
                                   encoding="utf-8")
    (d / "plain.txt").write_text("\n".join(review_lines[40:60]) + "\n", encoding="utf-8")
    (d / "objs.jsonl").write_text("".join(json.dumps({"text": t, "label": [i]}, ensure_ascii=False) + "\n"
                                          for i, t in enumerate(review_lines[60:70])), encoding="utf-8")
    return d


def test_stage_keeps_labels_and_writes_a_private_key(tmp_path, corpus_dir, review_lines):
    from workbench.stages import desensitise

    out = tmp_path / "run" / "desensitised"
    m = desensitise.run(_cfg(f"input={corpus_dir}", f"output={out}", "read.keep_fields=[label]",
                             "offset=10", "key_seed=7"))
    key_file = tmp_path / "run" / "desensitised.key.tsv"
    assert key_file.is_file() and not (out / key_file.name).exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not any("key" in p.name for p in out.iterdir())
    # the manifest names where the key is, never the seed or the key's content
    text = (out / "manifest.json").read_text(encoding="utf-8")
    assert '"key_seed": "<secret>"' in text and "\t" not in text
    key = read_key(key_file)
    back = {i: u for u, i in key.items()}
    assert min(back) == 10 and m["counts"]["distinct_units"] == len(key)

    # tsv: header order and labels unchanged; the id text decodes to the original
    docs = list(read_id_corpus(out / "reviews.tsv"))
    assert [d.fields["label"] for d in docs] == [str(i % 3) for i in range(40)]
    assert ["".join(back[i] for i in d.ids) for d in docs] == ["".join(t.split()) for t in review_lines[:40]]
    assert (out / "reviews.tsv").read_text(encoding="utf-8").startswith("label\ttext\n")
    lines = list(read_id_corpus(out / "plain.txt"))
    assert len(lines) == 20 and detect_format(out / "plain.txt") == "lines"
    objs = [json.loads(x) for x in (out / "objs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [o["label"] for o in objs] == [[i] for i in range(10)]

    # deterministic for a seed: same output hashes; another seed, another key
    again = desensitise.run(_cfg(f"input={corpus_dir}", f"output={tmp_path / 'again'}", "read.keep_fields=[label]",
                                 "offset=10", "key_seed=7"))
    assert again["outputs"] == m["outputs"]
    other = desensitise.run(_cfg(f"input={corpus_dir}", f"output={tmp_path / 'other'}", "read.keep_fields=[label]",
                                 "offset=10", "key_seed=8"))
    assert other["outputs"]["reviews.tsv"] != m["outputs"]["reviews.tsv"]


def test_stage_by_words_cuts_once_and_decodes_back(tmp_path, corpus_dir, review_lines, monkeypatch):
    """unit=word: jieba runs once per row (pass 2 reads the words spooled by pass 1), and the
    id text decodes to the original words, row by row, in every file."""
    from workbench.corpus import desensitise as lib
    from workbench.stages import desensitise

    calls = []
    real = lib.UnitSplitter.__call__
    monkeypatch.setattr(lib.UnitSplitter, "__call__", lambda self, text: calls.append(text) or real(self, text))
    out = tmp_path / "words"
    m = desensitise.run(_cfg(f"input={corpus_dir}", f"output={out}", "unit=word", "key_seed=3"))
    assert len(calls) == m["counts"]["rows"] == 70
    back = {i: u for u, i in read_key(tmp_path / "words.key.tsv").items()}
    docs = list(read_id_corpus(out / "reviews.tsv"))
    split = lib.UnitSplitter("word")
    assert [[back[i] for i in d.ids] for d in docs] == [split(t) for t in review_lines[:40]]
    assert len(list(read_id_corpus(out / "plain.txt"))) == 20


def test_stage_refuses_a_key_inside_the_output_and_unreadable_rows(tmp_path, corpus_dir):
    from workbench.stages import desensitise

    with pytest.raises(ConfigError, match="inside the output directory"):
        _cfg(f"input={corpus_dir}", f"output={tmp_path / 'o'}", f"key_file={tmp_path / 'o' / 'k.tsv'}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好的"}\n{"label": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"line 2: row 2 cannot be read \(missing_field"):
        desensitise.run(_cfg(f"input={bad}", f"output={tmp_path / 'o'}"))
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.key.tsv").exists()


# --------------------------------------------------------------------------- id corpora
def test_read_id_corpus_formats(tmp_path):
    g = tmp_path / "g.csv"
    g.write_text("0|,|623 328 538 |,|2\n1|,|48 328 |,|\n\n2|,|12 |,|2 15\n", encoding="utf-8")
    docs = list(read_id_corpus(g))
    assert [d.ids for d in docs] == [[623, 328, 538], [48, 328], [12]]
    assert [d.fields for d in docs] == [{"report_id": "0", "labels": "2"}, {"report_id": "1", "labels": ""},
                                        {"report_id": "2", "labels": "2 15"}]
    assert [d.line for d in docs] == [1, 2, 4]
    t = tmp_path / "t.tsv"
    t.write_text("label\ttext\n2\t1 2 3\n5\t4\n", encoding="utf-8")
    assert [(d.fields, d.ids) for d in read_id_corpus(t)] == [({"label": "2"}, [1, 2, 3]), ({"label": "5"}, [4])]
    counts, stats = count_ids([g, t])
    assert counts[328] == 2 and counts[4] == 1 and stats == {"documents": 5, "tokens": 10, "distinct_ids": 9,
                                                             "max_id": 623}


def test_id_corpus_errors_name_file_line_and_fix(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 x5 6\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.txt, line 2: token 'x5' is not a non-negative integer id") as e:
        list(read_id_corpus(bad))
    assert "fix:" in str(e.value)
    big = tmp_path / "big.txt"
    big.write_text("1 2\n3 900\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 2: id 900 is above the declared max_id 857"):
        count_ids([big], max_id=857)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError, match="no documents"):
        count_ids([empty])
    blank = tmp_path / "blank.csv"
    blank.write_text("0|,| |,|1\n", encoding="utf-8")
    with pytest.raises(InputError, match="the id corpus is empty"):
        count_ids([blank])
    t = tmp_path / "t.tsv"
    t.write_text("label\tcontent\n1\t2 3\n", encoding="utf-8")
    with pytest.raises(InputError, match="has no column 'text'"):
        list(read_id_corpus(t))


def test_shared_desensitised_datasets(shared_data):
    g = shared_data / "gaiic2021_track1_desensitised"
    counts, stats = count_ids([g / "track1_round1_train_20210222.csv"], max_id=857)
    assert stats["documents"] == 10000 and stats["max_id"] == 857
    test = list(read_id_corpus(g / "track1_round1_testA_20210222.csv"))
    assert len(test) == 3000 and "labels" not in test[0].fields
    t = shared_data / "tianchi_news_desensitised_sample"
    train = list(read_id_corpus(t / "train_set_first100.tsv"))
    assert len(train) == 98 and all(d.fields["label"].isdigit() for d in train)
    assert len(list(read_id_corpus(t / "test_a_first100.tsv"))) == 100
