"""remap: id → vocabulary-row maps, the id tokenizer, stats, and their errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import build_char_vocab_model
from workbench.config import load_stage_config
from workbench.corpus.desensitise import desensitise_texts
from workbench.errors import ConfigError, InputError
from workbench.vocab import remap as rm


def _cfg(*overrides):
    return load_stage_config("remap", None, [str(o) for o in overrides])


@pytest.fixture(scope="module")
def world(tmp_path_factory, review_lines):
    """A target model dir (vocab of the reviews' characters + digit tokens that could
    clash with ids), the reviews as reference text, and their desensitised id corpus."""
    tmp = tmp_path_factory.mktemp("remap")
    texts = review_lines[:300]
    target = build_char_vocab_model(tmp / "target", texts, extra=["10", "##0", "##1", "2010", "abc", "##xyz"])
    ref = tmp / "reference.txt"
    ref.write_text("\n".join(texts) + "\n", encoding="utf-8")
    ids, key = desensitise_texts(texts, unit="char", seed=11, offset=10)
    corpus = tmp / "ids.txt"
    corpus.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return {"tmp": tmp, "target": target, "ref": ref, "corpus": corpus, "key": key, "texts": texts}


def _tokens(directory):
    return (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]


def test_frequency_map_and_tokenizer(world):
    from transformers import BertTokenizerFast

    from workbench.stages import remap

    out = world["tmp"] / "freq"
    m = remap.run(_cfg(f"input={world['corpus']}", f"output={out}", f"target={world['target']}",
                       f"reference={world['ref']}", "discovery.enabled=false"))
    mapping = json.loads((out / "map.json").read_text(encoding="utf-8"))
    target_tokens = _tokens(world["target"])
    # rank alignment: the most frequent id sits on the row of the reference's most frequent character
    char_counts = Counter(c for t in world["texts"] for c in t if not c.isspace())
    top_char = max(char_counts, key=lambda c: (char_counts[c], -target_tokens.index(c)))
    top_id = world["key"][top_char]
    assert mapping["ids"][str(top_id)]["row"] == target_tokens.index(top_char)
    # Rows are only real CJK characters / punctuation
    rows = [v["row"] for v in mapping["ids"].values()]
    assert set(rows) <= set(rm.candidate_rows(target_tokens))
    assert not any(target_tokens[r].startswith(("[", "##")) and len(target_tokens[r]) > 1 for r in rows)

    # plain transformers: id text → exactly the mapped rows; unseen / unmapped ids → [UNK]
    tok = BertTokenizerFast.from_pretrained(str(out))
    assert len(tok) == len(target_tokens)
    some = [int(i) for i in list(mapping["ids"])[:5]]
    # ids start at 10: "0", "1", "5" are no ids but digit tokens of the target ("##0" too)
    enc = tok(" ".join(map(str, some)) + " 99999 0 1 5 100000", add_special_tokens=False)["input_ids"]
    assert enc[:5] == [mapping["ids"][str(i)]["row"] for i in some]
    assert enc[5:] == [tok.unk_token_id] * 5
    assert tok(str(some[0]))["input_ids"] == [tok.cls_token_id, mapping["ids"][str(some[0])]["row"], tok.sep_token_id]
    # rows the corpus cannot produce are [unusedN]: the masking collator never draws them
    vocab = _tokens(out)
    assert all(t.isdigit() or t.startswith("[") for t in vocab)
    stats = json.loads((out / "stats.json").read_text())
    # the tiny target has fewer CJK/punctuation rows than the corpus has ids: the rarest get none
    n_rows = len(rm.candidate_rows(target_tokens))
    assert stats["mapped_ids"] == n_rows < len(world["key"]) == stats["distinct_ids"]
    assert 0 < stats["unk_rate"] < 0.01 and stats["coverage"] == 1 - stats["unk_rate"]
    assert enc[0] != tok.unk_token_id and tok(str(stats["top_unmapped"][0][0]))["input_ids"][1] == tok.unk_token_id
    # a model directory target: its config is linked in, the output loads as a model dir
    assert m["weights"] == ["config.json"] and (out / "config.json").is_file()


def test_random_is_seeded_and_special_ids(world):
    from workbench.stages import remap
    from workbench.vocab.tokenizer import load_tokenizer

    sep_id = world["key"]["，"]
    args = [f"input={world['corpus']}", f"target={world['target']}", "strategy=random",
            "discovery.enabled=false", f"special_ids={{{sep_id}: '[SEP]'}}"]
    a = remap.run(_cfg(*args, f"output={world['tmp'] / 'r1'}", "seed=1"))
    b = remap.run(_cfg(*args, f"output={world['tmp'] / 'r2'}", "seed=1"))
    c = remap.run(_cfg(*args, f"output={world['tmp'] / 'r3'}", "seed=2"))
    assert a["outputs"]["map.json"] == b["outputs"]["map.json"] != c["outputs"]["map.json"]
    tok = load_tokenizer(str(world["tmp"] / "r1"), needed_by="test")
    mapping, specials = rm.read_map(world["tmp"] / "r1" / "map.json")
    assert specials == {sep_id: "[SEP]"} and sep_id not in mapping
    other = next(iter(mapping))
    ids = tok(f"{other} {sep_id} {other}")["input_ids"]
    assert ids == [tok.cls_token_id, mapping[other], tok.sep_token_id, mapping[other], tok.sep_token_id]
    assert tok.sep_token_id == _tokens(world["target"]).index("[SEP]")
    # the special id matches only as a whole id, not inside a longer one
    assert tok(f"{sep_id}00000", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_scratch_vocab(world):
    from workbench.stages import remap

    out = world["tmp"] / "scratch"
    remap.run(_cfg(f"input={world['corpus']}", f"output={out}", "strategy=scratch", "min_count=3",
                   "max_unk_rate=0.2", "discovery.enabled=false"))
    vocab = _tokens(out)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    counts = Counter(int(i) for line in world["corpus"].read_text().split("\n") for i in line.split())
    assert sorted(map(int, vocab[5:])) == sorted(i for i, n in counts.items() if n >= 3)
    assert counts[int(vocab[5])] == max(counts.values())
    stats = json.loads((out / "stats.json").read_text())
    rare = sum(n for n in counts.values() if n < 3)
    assert stats["unk_tokens"] == rare and 0 < stats["unk_rate"] < 0.2


def test_map_that_does_not_match_the_corpus(world, tmp_path):
    from workbench.stages import remap

    with pytest.raises(InputError, match=r"(?s)the map does not match the corpus: .* fix: lower min_count"):
        remap.run(_cfg(f"input={world['corpus']}", f"output={tmp_path / 'x'}", "strategy=scratch",
                       "min_count=50", "discovery.enabled=false"))
    base = tmp_path / "base"
    remap.run(_cfg(f"input={world['corpus']}", f"output={base}", "strategy=scratch", "discovery.enabled=false"))
    other = tmp_path / "other.txt"
    other.write_text("10 11 12 5000 5001 5002\n5003 5004\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        remap.run(_cfg(f"input={other}", f"output={tmp_path / 'y'}", f"map={base}"))
    msg = str(e.value)
    assert "5 of 8 distinct ids (5 of 8 tokens, 62.50%) have no row" in msg and "fix: remap the corpora together" in msg
    # within the threshold the map is reused and the corpus's coverage reported
    m = remap.run(_cfg(f"input={other}", f"output={tmp_path / 'z'}", f"map={base}", "max_unk_rate=0.7",
                       "discovery.enabled=false"))
    assert m["counts"]["unk_ids"] == 5 and (tmp_path / "z" / "vocab.txt").read_text() == (base / "vocab.txt").read_text()
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="no documents"):
        remap.run(_cfg(f"input={empty}", f"output={tmp_path / 'w'}", "strategy=scratch"))


def test_config_problems():
    with pytest.raises(ConfigError, match=r"special_ids.3: Input should be '\[PAD\]'"):
        _cfg("input=x.txt", "special_ids={3: '[FOO]'}")
    with pytest.raises(ConfigError) as e:
        _cfg("min_count=0", "name=a/b", "max_unk_rate=2")
    msg = str(e.value)
    assert "input: no id corpus given" in msg and "min_count: must be >= 1" in msg and "name: 'a/b'" in msg
    assert "max_unk_rate" in msg
    with pytest.raises(ConfigError, match=r"ids \[1, 2\] are all declared \[SEP\]"):
        _cfg("input=x.txt", "special_ids={1: '[SEP]', 2: '[SEP]'}")
    assert str(_cfg("input=x.txt", "name=gaiic").output_path()) == "vocab_maps/gaiic"


def test_reference_and_candidate_rows():
    counts = rm.reference_char_counts()
    assert counts.most_common(2)[0][0] == "，" and counts["的"] > 50_000 and "/" not in counts
    tokens = ["[PAD]", "[unused1]", "[UNK]", "的", "，", "a", "1", "##的", "10", "。", "the", "😀"]
    assert rm.candidate_rows(tokens) == [3, 4, 9]


def test_gaiic_on_google_vocab(shared_data, tmp_path):
    """The real GAIIC corpus on Google's bert-base-chinese vocab: every id gets a row."""
    from transformers import BertTokenizerFast

    from workbench.corpus.id_corpus import read_id_corpus
    from workbench.stages import remap

    g = shared_data / "gaiic2021_track1_desensitised"
    files = [g / "track1_round1_train_20210222.csv", g / "track1_round1_testA_20210222.csv"]
    m = remap.run(_cfg(f"input=[{files[0]},{files[1]}]", f"output={tmp_path / 'g'}", "max_id=857",
                       f"target={shared_data / 'vocab' / 'bert_base_chinese_vocab.txt'}", "discovery.enabled=false"))
    assert m["counts"]["mapped_ids"] == 858 and m["counts"]["unk_rate"] == 0.0 and m["counts"]["vocab_size"] == 21128
    tok = BertTokenizerFast.from_pretrained(str(tmp_path / "g"))
    mapping, _ = rm.read_map(tmp_path / "g" / "map.json")
    doc = next(read_id_corpus(files[0]))
    assert tok(" ".join(map(str, doc.ids)), add_special_tokens=False)["input_ids"] == [mapping[i] for i in doc.ids]
    google = (shared_data / "vocab" / "bert_base_chinese_vocab.txt").read_text(encoding="utf-8").split("\n")
    # the most frequent GAIIC id starts from Google's row of People's Daily's most frequent character
    top = max(mapping, key=lambda i: json.loads((tmp_path / "g" / "map.json").read_text())["ids"][str(i)]["count"])
    assert google[mapping[top]] == "，"
