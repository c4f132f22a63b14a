"""Fine-tuning data: readers, tag schemes, label maps, sliding windows (workbench.tasks)."""

from __future__ import annotations

import itertools
import json
import logging
import random
from pathlib import Path

import pytest

from workbench.errors import ConfigError, InputError
from workbench.tasks.data import (
    TaggedRecord,
    TextRecord,
    read_cluener,
    read_conll,
    read_tagging,
    read_text_records,
)
from workbench.tasks.labels import (
    LabelMap,
    check_labels,
    infer_label_map,
    read_label_names,
    sort_labels,
)
from workbench.tasks.tags import detect_scheme, spans_to_tags, tag_list, tags_to_spans
from workbench.tasks.windows import (
    IGNORE_INDEX,
    encode_chars,
    encode_classification,
    stitch_tags,
    tagging_windows,
    truncate_pair,
    window_ranges,
)

REVIEW = "房间很干净，服务员态度也好，就是早餐一般。"
QUOTED = '他说"这个酒店真不错"，我也觉得挺好的'  # ASCII quotes inside TSV text
SENTENCE = "中共中央致中国致公党十一大的贺词"  # People's Daily, MSRA-style ORG entities


def write(path: Path, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def conll(pairs: list[list[tuple[str, str]]], sep: str = " ") -> str:
    return "\n\n".join("\n".join(f"{c}{sep}{t}" for c, t in sent) for sent in pairs) + "\n"


def chars_tags(text: str, tags: list[str]) -> list[tuple[str, str]]:
    assert len(text) == len(tags)
    return list(zip(text, tags))


# --------------------------------------------------------------------------- text records
def test_tsv_with_header_keeps_quotes_crlf_bom(tmp_path):
    f = write(tmp_path / "train.tsv", f"label\ttext_a\n1\t{REVIEW}\n\n0\t{QUOTED}\n", bom=True, crlf=True)
    records = read_text_records(f)
    assert [r.text for r in records] == [REVIEW, QUOTED]
    assert [r.label for r in records] == ["1", "0"]
    assert [r.line for r in records] == [2, 4]
    assert records[0].source == str(f) and records[0].text_pair is None


def test_tsv_without_header_uses_column_indices(tmp_path):
    f = write(tmp_path / "x.tsv", f"{REVIEW}\tpos\n{QUOTED}\tneg\n")
    for text, label in ((0, 1), ("0", "1")):  # ints, or digit strings as YAML overrides give them
        records = read_text_records(f, header=False, text=text, label=label)
        assert [(r.text, r.label) for r in records] == [(REVIEW, "pos"), (QUOTED, "neg")]
    with pytest.raises(ValueError, match="0-based indices"):
        read_text_records(f, header=False)


def test_sentence_pairs(tmp_path):
    f = write(tmp_path / "pairs.tsv", "sentence1\tsentence2\tlabel\n花呗怎么还款\t花呗如何还钱\t1\n借呗能提额吗\t蚂蚁森林在哪\t0\n")
    records = read_text_records(f, text="sentence1", text_pair="sentence2")
    assert records[0] == TextRecord("花呗怎么还款", ("1",), "花呗如何还钱", str(f), 2)


def test_csv_quoting_and_multiline_record(tmp_path):
    f = write(tmp_path / "x.csv", 'text,label\n"好吃，但是贵,真的贵",1\n"第一行\n第二行",0\n便宜,1\n')
    records = read_text_records(f, text="text")
    assert [r.text for r in records] == ["好吃，但是贵,真的贵", "第一行\n第二行", "便宜"]
    assert [r.line for r in records] == [2, 3, 5]


def test_jsonl_single_and_multilabel(tmp_path):
    f = write(tmp_path / "x.jsonl", "\n".join(json.dumps(o, ensure_ascii=False) for o in [
        {"sentence": REVIEW, "label": 1, "tags": ["服务", "早餐", "服务"]},
        {"sentence": QUOTED, "label": "0", "tags": "价格|位置"},
        {"sentence": "一般", "label": "0", "tags": ""},
    ]) + "\n")
    single = read_text_records(f, text="sentence")
    assert [r.label for r in single] == ["1", "0", "0"] and [r.line for r in single] == [1, 2, 3]
    multi = read_text_records(f, text="sentence", label="tags", multilabel=True, label_delimiter="|")
    assert [r.labels for r in multi] == [("服务", "早餐"), ("价格", "位置"), ()]
    with pytest.raises(InputError, match=r"line 1: label 'tags' is \[") as e:
        read_text_records(f, text="sentence", label="tags")
    assert "multilabel=true" in str(e.value)


def test_multichar_delimiter_desensitised_multilabel(tmp_path):
    # GAIIC 2021 track 1 layout: id|,|space-separated ids|,|labels (empty = none)
    f = write(tmp_path / "train.csv", "0|,|623 328 538 |,|2 15\n1|,|48 328 |,|\n")
    records = read_text_records(f, format="tsv", delimiter="|,|", header=False, text=1, label=2,
                                multilabel=True, label_delimiter=" ")
    assert [(r.text, r.labels) for r in records] == [("623 328 538 ", ("2", "15")), ("48 328 ", ())]


def test_text_reader_errors_name_file_line_and_fix(tmp_path):
    f = write(tmp_path / "cols.tsv", f"sentiment\treview\n1\t{REVIEW}\n")
    with pytest.raises(InputError) as e:
        read_text_records(f)
    msg = str(e.value)
    assert "cols.tsv, line 1" in msg and "['sentiment', 'review']" in msg and "fix:" in msg

    f = write(tmp_path / "tab.tsv", f"label\ttext_a\n1\t{REVIEW}\n0\t前半句\t后半句\n")
    with pytest.raises(InputError, match=r"tab.tsv, line 3: 3 fields, the header has 2 \(is there a tab"):
        read_text_records(f)

    f = write(tmp_path / "nolabel.tsv", f"label\ttext_a\n1\t{REVIEW}\n \t{QUOTED}\n")
    with pytest.raises(InputError, match="nolabel.tsv, line 3: the label column 'label' is empty"):
        read_text_records(f)

    with pytest.raises(InputError, match="the file is empty"):
        read_text_records(write(tmp_path / "empty.tsv", "\n\n"))
    with pytest.raises(InputError, match="no records"):
        read_text_records(write(tmp_path / "header.tsv", "label\ttext_a\n"))
    with pytest.raises(InputError, match=r"line 2: no key 'text_a' in the object; its keys are \['text', 'label'\]"):
        read_text_records(write(tmp_path / "k.jsonl", '{"text_a": "好", "label": 1}\n{"text": "差", "label": 0}\n'))
    with pytest.raises(InputError, match="JSON array"):
        read_text_records(write(tmp_path / "arr.json", '[{"text_a": "好", "label": 1}]\n'))
    with pytest.raises(InputError, match=r"line 2: invalid JSON"):
        read_text_records(write(tmp_path / "bad.jsonl", '{"text_a": "好", "label": 1}\n{"text_a": "差", \n'))
    gbk = tmp_path / "gbk.tsv"
    gbk.write_bytes(f"label\ttext_a\n1\t{REVIEW}\n".encode("gbk"))
    with pytest.raises(InputError, match=r"gbk.tsv, line 2: bytes .* are not valid utf-8"):
        read_text_records(gbk)


# --------------------------------------------------------------------------- tag schemes
def test_scheme_round_trip_on_random_spans():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(0, 12)
        spans, pos = [], 0
        while pos < n:
            pos += rng.randint(0, 3)
            length = rng.randint(1, 4)
            if pos + length <= n:
                spans.append((pos, pos + length, rng.choice(["PER", "LOC", "ORG"])))
            pos += length
        for scheme in ("bio", "bioes"):
            tags = spans_to_tags(spans, n, scheme)
            assert tags_to_spans(tags, scheme) == (spans, [])
        bmes = [t.replace("I-", "M-") for t in spans_to_tags(spans, n, "bioes")]
        assert tags_to_spans(bmes, "bmes") == (spans, [])


def test_detect_scheme_and_tag_list():
    assert detect_scheme(["B-PER", "I-PER", "O"]) == "bio"
    assert detect_scheme(["B-PER", "I-PER", "E-PER", "S-LOC"]) == "bioes"
    assert detect_scheme(["B-PER", "L-PER", "U-LOC", "O"]) == "bioes"  # BILOU
    assert detect_scheme(["B-PER", "M-PER", "E-PER"]) == "bmes"
    with pytest.raises(ValueError, match="mixed"):
        detect_scheme(["B-PER", "I-PER", "O", "B-LOC", "M-LOC", "E-LOC"])
    assert tag_list(["LOC", "PER"], "bio") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert tag_list(["LOC"], "bioes") == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags([(0, 3, "PER"), (2, 4, "LOC")], 5)


def test_repairs_are_listed():
    spans, problems = tags_to_spans(["I-PER", "I-PER", "B-LOC", "I-ORG", "O"], "bio")
    assert spans == [(0, 2, "PER"), (2, 3, "LOC"), (3, 4, "ORG")]
    assert [(p.index, p.repair) for p in problems] == [(0, "read as B-PER"), (3, "read as B-ORG")]
    spans, problems = tags_to_spans(["B-PER", "I-PER", "O", "E-LOC", "B-ORG"], "bioes")
    assert spans == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "ORG")]
    assert [p.index for p in problems] == [1, 3, 4]


# --------------------------------------------------------------------------- CoNLL reader
MSRA_LIKE = [
    chars_tags("当希望工程救助的百万儿童成长起来", ["O"] * 16),
    chars_tags(SENTENCE, ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG",
                          "I-ORG", "I-ORG", "I-ORG", "O", "O", "O"]),
    chars_tags("张三在北京", ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
]
MSRA_SPANS = [[], [(0, 4, "ORG"), (5, 13, "ORG")], [(0, 2, "PER"), (3, 5, "LOC")]]


@pytest.mark.parametrize("sep", [" ", "\t"])
def test_conll_bio_crlf_bom_and_no_final_blank_line(tmp_path, sep):
    text = conll(MSRA_LIKE, sep).rstrip("\n") + "\n"  # the last sentence has no blank line after it
    f = write(tmp_path / "train.txt", "\n" + text.replace("\n\n", "\n\n\n"), bom=True, crlf=True)
    data = read_conll(f)
    assert data.scheme == "bio" and data.repaired == 0
    assert [r.spans for r in data.records] == MSRA_SPANS
    assert [r.text for r in data.records] == ["当希望工程救助的百万儿童成长起来", SENTENCE, "张三在北京"]
    second = data.records[1]
    assert second.line == 20 and second.line_of(5) == 25  # after 1 blank, 16 chars, 2 blanks
    assert second.tags("bioes")[:5] == ["B-ORG", "I-ORG", "I-ORG", "E-ORG", "O"]


def test_conll_bioes_and_bmes_give_the_same_spans(tmp_path):
    for name, inside in (("bioes", "I"), ("bmes", "M")):
        sents = [chars_tags(r.text, [t.replace("I-", f"{inside}-") for t in spans_to_tags(s, len(r.text), "bioes")])
                 for r, s in zip(read_conll(write(tmp_path / "bio.txt", conll(MSRA_LIKE))).records, MSRA_SPANS)]
        data = read_tagging(write(tmp_path / f"{name}.txt", conll(sents)))
        assert data.scheme == name
        assert [r.spans for r in data.records] == MSRA_SPANS


def test_conll_whitespace_character_line(tmp_path):
    f = write(tmp_path / "space.txt", "I B-ORG\nB I-ORG\nM I-ORG\n  O\n公 O\n司 O\n")
    (record,) = read_conll(f).records
    assert record.text == "IBM 公司" and record.spans == [(0, 3, "ORG")]


def test_conll_mixed_schemes_name_both_lines(tmp_path):
    sents = [chars_tags("张三在北京", ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
             chars_tags("李四去上海", ["B-PER", "E-PER", "O", "B-LOC", "M-LOC"])]
    with pytest.raises(InputError) as e:
        read_conll(write(tmp_path / "mixed.txt", conll(sents)))
    msg = str(e.value)
    assert "mixed.txt, line 11" in msg and "I- first at line 2" in msg and "M- first at line 11" in msg


def test_conll_invalid_i_tag_is_an_error_unless_repair(tmp_path, caplog):
    sents = [chars_tags("张三在北京", ["B-PER", "I-PER", "O", "I-LOC", "I-LOC"]),
             chars_tags("李四去上海", ["B-PER", "I-LOC", "O", "B-LOC", "I-LOC"])]
    f = write(tmp_path / "bad.txt", conll(sents))
    with pytest.raises(InputError) as e:
        read_conll(f)
    msg = str(e.value)
    assert "bad.txt, line 4: I-LOC does not continue an entity of type LOC (it follows O)" in msg
    assert "repair=true" in msg and "B-LOC" in msg
    with caplog.at_level(logging.WARNING, logger="workbench.tasks"):
        data = read_conll(f, repair=True)
    assert data.repaired == 2 and data.repairs[1].startswith("line 8: I-LOC does not continue")
    assert [r.spans for r in data.records] == [[(0, 2, "PER"), (3, 5, "LOC")], [(0, 1, "PER"), (1, 2, "LOC"), (3, 5, "LOC")]]
    assert "repaired 2 invalid tag(s)" in caplog.text


def test_conll_unclosed_bioes_entity(tmp_path):
    f = write(tmp_path / "bioes.txt", conll([chars_tags("张三在北京", ["B-PER", "E-PER", "O", "B-LOC", "I-LOC"])]))
    with pytest.raises(InputError, match=r"line 5: LOC entity is not closed by E-LOC \(the sentence ends\) \[scheme BIOES"):
        read_conll(f)


def test_conll_line_errors(tmp_path):
    cases = {
        "notag.txt": ("张 B-PER\n三\n", "line 2: no tag"),
        "badtag.txt": ("张 PER\n", "line 1: tag 'PER' is not 'O'"),
        "cols.txt": ("张 nr B-PER\n", "line 1: expected one character before the tag, got '张 nr'"),
        "word.txt": ("张三 B-PER\n", "got '张三' \\(2 characters\\)"),
        "tabs.txt": ("张\tnr\tB-PER\n", "line 1: 3 tab-separated fields"),
        "blank.txt": ("\n\n\n", "the file is empty"),
    }
    for name, (text, expected) in cases.items():
        with pytest.raises(InputError, match=expected):
            read_conll(write(tmp_path / name, text))


# --------------------------------------------------------------------------- CLUENER JSONL
CLUENER = [
    {"text": "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。",
     "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}}},
    {"text": "生生不息CSOL生化狂潮让你填弹狂扫", "label": {"game": {"CSOL": [[4, 7]]}}},
    {"text": "今天天气很好。"},  # no label key: no entities (like CLUENER's test file)
]


def test_cluener_jsonl(tmp_path):
    f = write(tmp_path / "train.jsonl", "\n".join(json.dumps(o, ensure_ascii=False) for o in CLUENER) + "\n")
    data = read_tagging(f)
    assert data.scheme == "spans"
    assert [r.spans for r in data.records] == [[(0, 4, "company"), (9, 12, "name")], [(4, 8, "game")], []]
    assert data.records[1].line == 2 and data.records[1].tags("bio")[4:9] == ["B-game", "I-game", "I-game", "I-game", "O"]


def test_cluener_errors(tmp_path):
    def objects(*objs) -> Path:
        return write(tmp_path / "x.jsonl", "\n".join(json.dumps(o, ensure_ascii=False) for o in objs) + "\n")

    off_by_one = {"text": "叶老桂博士", "label": {"name": {"叶老桂": [[0, 3]]}}}
    with pytest.raises(InputError, match=r"(?s)line 2: name '叶老桂' at \[0, 3\] but the text there is '叶老桂博'.*INCLUSIVE"):
        read_cluener(objects(CLUENER[0], off_by_one))
    overlap = {"text": "浙商银行", "label": {"company": {"浙商银行": [[0, 3]]}, "bank": {"银行": [[2, 3]]}}}
    with pytest.raises(InputError, match="line 1: .*overlaps"):
        read_cluener(objects(overlap))
    with pytest.raises(InputError, match=r"no object has the key 'label' \(keys of the first object: \['text', 'labels'\]\)"):
        read_cluener(objects({"text": "你好", "labels": {}}))


# --------------------------------------------------------------------------- label maps
def _records(path: str, labels: list[str]) -> list[TextRecord]:
    return [TextRecord(f"第{i}条", (x,), None, path, i + 2) for i, x in enumerate(labels)]


def test_label_map_is_sorted_numerically_with_counts():
    train = _records("train.tsv", ["10", "2", "2", "9", "0"])
    lm = infer_label_map(train)
    assert lm.labels == ("0", "2", "9", "10") and lm.counts == {"10": 1, "2": 2, "9": 1, "0": 1}
    assert lm.id2label == {0: "0", 1: "2", 2: "9", 3: "10"} and lm.encode(["10", "0"]) == [3, 0]
    assert lm.table()[1] == (1, "2", 2)
    assert LabelMap.from_json(lm.to_json()) == lm
    assert sort_labels(["neg", "pos", "neutral"]) == ["neg", "neutral", "pos"]
    ordered = infer_label_map(train, order=["0", "2", "9", "10", "11"])
    assert ordered.labels[-1] == "11" and ordered.counts["11"] == 0
    with pytest.raises(InputError, match=r"train.tsv, line 2: train labels \['10'\] are not in the given label list"):
        infer_label_map(train, order=["0", "2", "9"])


def test_unknown_dev_label_policies():
    lm = infer_label_map(_records("train.tsv", ["pos", "neg", "pos"]))
    dev = _records("dev.tsv", ["pos", "neutral", "neg", "neutral", "angry"])
    with pytest.raises(InputError) as e:
        check_labels(dev, lm)
    msg = str(e.value)
    assert "dev.tsv, line 3: label 'neutral' is not among the train labels ['neg', 'pos']" in msg
    assert "neutral×2, angry×1" in msg and "unknown_labels=map" in msg

    mapped, check = check_labels(dev, lm, unknown="map", map_to="neg")
    assert [r.label for r in mapped] == ["pos", "neg", "neg", "neg", "neg"] and check.mapped == 3
    kept, check = check_labels(dev, lm, unknown="drop")
    assert [r.label for r in kept] == ["pos", "neg"] and check.dropped_records == 3
    assert "dropped 3 record(s)" in check.summary()
    with pytest.raises(ConfigError, match="'other' is not a train label"):
        check_labels(dev, lm, unknown="map", map_to="other")
    with pytest.raises(ConfigError, match="not one of"):
        check_labels(dev, lm, unknown="ignore")


def test_unknown_labels_multilabel_and_tagging():
    lm = LabelMap(("价格", "服务"))
    dev = [TextRecord("贵", ("价格", "位置"), None, "dev.jsonl", 1)]
    kept, check = check_labels(dev, lm, unknown="drop", multilabel=True)
    assert kept[0].labels == ("价格",) and check.dropped_labels == 1

    train = [TaggedRecord("张三在北京", [(0, 2, "PER"), (3, 5, "LOC")], "train.txt", 1, True)]
    types = infer_label_map(train)
    assert types.labels == ("LOC", "PER")
    dev = [TaggedRecord("李四去浙商银行", [(0, 2, "PER"), (3, 7, "ORG")], "dev.txt", 10, True)]
    with pytest.raises(InputError, match="dev.txt, line 13: label 'ORG'"):  # the line of the entity's first char
        check_labels(dev, types)
    kept, check = check_labels(dev, types, unknown="drop")
    assert kept[0].spans == [(0, 2, "PER")] and kept[0].tags()[3:] == ["O"] * 4 and check.dropped_labels == 1
    mapped, _ = check_labels(dev, types, unknown="map", map_to="LOC")
    assert mapped[0].spans[1] == (3, 7, "LOC")


def test_read_label_names(tmp_path):
    f = write(tmp_path / "labels.json", '{"label": "0", "label_desc": "neutral"}\n{"label": "1", "label_desc": "angry"}\n')
    assert read_label_names(f) == {"0": "neutral", "1": "angry"}


# --------------------------------------------------------------------------- windows
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A tiny BERT-Chinese-style WordPiece vocab: every character + a few latin/digit pieces."""
    from workbench.vocab.build import bert_tokenizer, special_tokens

    texts = [SENTENCE, REVIEW, "我在2015年买了iphone手机，张三在北京工作。"]
    chars = sorted({c for t in texts for c in t if not c.isspace() and not c.isascii()})
    pieces = ["20", "##15", "ip", "##hone", "x"]
    return bert_tokenizer(tmp_path_factory.mktemp("tok"), special_tokens(99) + chars + pieces, lowercase=True)


def test_window_ranges_cover_everything():
    assert window_ranges(0, 4, 1) == [(0, 0)]
    assert window_ranges(4, 4, 1) == [(0, 4)]
    assert window_ranges(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert window_ranges(10, 4, 0) == [(0, 4), (4, 8), (8, 10)]
    for n in range(30):
        for size in range(1, 7):
            for overlap in range(size):
                ranges = window_ranges(n, size, overlap)
                assert ranges[0][0] == 0 and ranges[-1][1] == n
                assert all(b - a <= size for a, b in ranges)
                assert all(a2 == b1 - overlap for (_, b1), (a2, _) in itertools.pairwise(ranges))
    with pytest.raises(ValueError):
        window_ranges(5, 3, 3)


def test_char_offsets_with_word_pieces_and_dropped_chars(tokenizer):
    text = "我在2015年买了 iPhone\u200b手机。"
    (enc,) = encode_chars(tokenizer, [text])
    pieces = [text[s:e] for s, e in enc.token_chars]
    assert pieces == ["我", "在", "20", "15", "年", "买", "了", "iP", "hone", "手", "机", "。"]
    assert tokenizer.convert_ids_to_tokens(enc.token_ids)[2:9] == ["20", "##15", "年", "买", "了", "ip", "##hone"]
    covered = {i for s, e in enc.token_chars for i in range(s, e)}
    assert set(range(len(text))) - covered == {text.index(" "), text.index("\u200b")}


def _round_trip(tokenizer, texts, spans, scheme, max_length, overlap):
    tags = tag_list(["LOC", "ORG", "PER"], scheme)
    tag2id = {t: i for i, t in enumerate(tags)}
    encs = encode_chars(tokenizer, texts)
    windows, stats = tagging_windows(encs, spans, tag2id, scheme=scheme, max_length=max_length, overlap=overlap,
                                     cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id)
    out = []
    for k, enc in enumerate(encs):
        mine = [w for w in windows if w.record == k]
        assert all(len(w.input_ids) <= max_length and w.input_ids[0] == tokenizer.cls_token_id for w in mine)
        assert all(w.labels[0] == w.labels[-1] == IGNORE_INDEX for w in mine)
        predicted = [[tags[i] for i in w.labels[1:-1]] for w in mine]  # a perfect model
        out.append(stitch_tags(enc, mine, predicted, scheme))
    return out, stats


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
@pytest.mark.parametrize("max_length,overlap", [(6, 2), (7, 3), (12, 4), (64, 8)])
def test_windows_round_trip_every_character(tokenizer, scheme, max_length, overlap):
    mixed = "我在2015年买了 iphone手机，张三在北京工作。"
    entities = [("2015", "ORG"), ("iphone", "ORG"), ("张三", "PER"), ("北京", "LOC")]
    texts = [SENTENCE, mixed, "", REVIEW]
    spans = [MSRA_SPANS[1], [(mixed.index(m), mixed.index(m) + len(m), t) for m, t in entities], [], [(5, 8, "PER")]]
    stitched, stats = _round_trip(tokenizer, texts, spans, scheme, max_length, overlap)
    for text, sp, tags in zip(texts, spans, stitched):
        assert len(tags) == len(text)  # every character gets exactly one tag
        assert tags == spans_to_tags(sp, len(text), scheme)
    assert stats.lost_entities == 0 and stats.misaligned_entities == 0
    assert (stats.texts_split > 0) == (max_length < 40)


def test_whitespace_is_o_and_lost_entities_are_counted(tokenizer):
    text = "张三 在北京"
    stitched, stats = _round_trip(tokenizer, [text], [[(0, 2, "PER"), (2, 3, "LOC"), (4, 6, "LOC")]], "bio", 5, 1)
    assert stitched[0] == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    assert stats.lost_entities == 1  # the 'entity' on the space has no token


def test_stitch_prefers_the_window_where_the_token_is_central(tokenizer):
    (enc,) = encode_chars(tokenizer, ["张三在北京工作"])  # 7 tokens
    windows, _ = tagging_windows([enc], None, None, scheme="bio", max_length=6, overlap=2, cls_id=2, sep_id=3)
    assert [(w.token_start, w.token_end) for w in windows] == [(0, 4), (2, 6), (4, 7)]
    # Each window calls every token PER / LOC / ORG: the stitched tag shows which window won.
    by_window = [[f"B-{t}"] + [f"I-{t}"] * (w.token_end - w.token_start - 1) for w, t in zip(windows, ["PER", "LOC", "ORG"])]
    tags = stitch_tags(enc, windows, by_window, "bio")
    # token 2: window 0 (distance 1 to its cut right edge) vs window 1 (0 to its cut left edge) → window 0
    # token 3: window 0 (0) vs window 1 (1) → 1; token 4: window 1 (1 and 1) vs window 2 (0) → 1; 5, 6 → window 2
    owners = ["PER", "PER", "PER", "LOC", "LOC", "ORG", "ORG"]
    assert tags_to_spans(tags, "bio")[0] == [(0, 3, "PER"), (3, 5, "LOC"), (5, 7, "ORG")]
    assert [t[2:] for t in tags] == owners


def test_stitch_when_tokens_share_a_character():
    """A folding tokenizer turns one character into several tokens (… → '.', '.', '.', all
    with offsets (2, 3)): entities on neighbouring tokens claim the same character. Stitching
    gives it to the earlier one instead of failing on overlapping spans (seen on MSRA text
    with runs/base/pretrain's tokenizer)."""
    from workbench.tasks.windows import CharEncoding, Window

    enc = CharEncoding("北京…上海", [1, 2, 3, 3, 3, 4, 5],
                       [(0, 1), (1, 2), (2, 3), (2, 3), (2, 3), (3, 4), (4, 5)])
    window = Window(0, 0, 7, [0] * 9, None)
    tags = ["B-LOC", "I-LOC", "I-LOC", "B-ORG", "B-PER", "B-LOC", "I-LOC"]
    out = stitch_tags(enc, [window], [tags], "bio")
    assert out == ["B-LOC", "I-LOC", "I-LOC", "B-LOC", "I-LOC"]
    assert tags_to_spans(out, "bio")[0] == [(0, 3, "LOC"), (3, 5, "LOC")]  # ORG and PER had no character left


def test_classification_truncation(tokenizer):
    a = list(range(10))
    assert truncate_pair(a, None, 4) == ([0, 1, 2, 3], None)
    assert truncate_pair(a, None, 4, strategy="head_tail", head=1) == ([0, 7, 8, 9], None)
    assert truncate_pair(a, list(range(3)), 6) == ([0, 1, 2], [0, 1, 2])
    assert truncate_pair([1, 2], [3], 6) == ([1, 2], [3])
    enc, truncated = encode_classification(tokenizer, [REVIEW, "张三"], ["北京", "工作"], max_length=10)
    assert truncated == 1 and [len(x) for x in enc["input_ids"]] == [10, 7]
    assert enc["token_type_ids"][1] == [0, 0, 0, 0, 1, 1, 1]
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"][1]) == ["[CLS]", "张", "三", "[SEP]", "工", "作", "[SEP]"]
    assert len(enc["token_type_ids"][0]) - sum(enc["token_type_ids"][0]) == 7  # longest first: the review lost tokens
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"][0][-4:]) == ["[SEP]", "北", "京", "[SEP]"]


# --------------------------------------------------------------------------- real data
def _head_sentences(src: Path, dst: Path, n: int) -> Path:
    out, blanks = [], 0
    with open(src, encoding="utf-8") as f:
        for line in f:
            out.append(line)
            blanks += not line.strip()
            if blanks == n:
                break
    dst.write_text("".join(out), encoding="utf-8")
    return dst


def r_lines(path: Path, record: TaggedRecord) -> list[str]:
    """The file lines of a CoNLL record (one per character)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[record.line - 1 : record.line - 1 + len(record.text)]


@pytest.mark.shared_data
def test_real_msra_and_chnsenticorp(shared_data, tmp_path):
    head = _head_sentences(shared_data / "msra_ner" / "msra_train.txt", tmp_path / "msra.txt", 200)
    msra = read_tagging(head)
    assert msra.scheme == "bio" and len(msra.records) == 200 and msra.repaired == 0
    assert msra.records[0].text.startswith("当希望工程救助的百万儿童成长起来") and msra.records[0].spans == []
    types = infer_label_map(msra.records)
    b_lines = [line.split()[1][2:] for line in head.read_text(encoding="utf-8").splitlines() if " B-" in line]
    assert types.labels == ("LOC", "ORG", "PER") and sum(types.counts.values()) == len(b_lines)
    assert all(r.tags("bio") == [line.split()[1] for line in r_lines(head, r)] for r in msra.records[:50])

    # MSRA as distributed is cut into pieces of at most 100 characters, some inside an entity:
    # 11 test sentences start with I-. Refused by default; repair=true reads them as B- and counts.
    with pytest.raises(InputError, match=r"msra_test.txt, line 29083: I-PER .*cut inside an entity"):
        read_tagging(shared_data / "msra_ner" / "msra_test.txt")
    assert read_tagging(shared_data / "msra_ner" / "msra_test.txt", repair=True).repaired == 11

    lines = (shared_data / "chnsenticorp" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:201]
    senti = read_text_records(write(tmp_path / "senti.tsv", "".join(lines)))
    assert len(senti) == 200 and infer_label_map(senti).labels == ("0", "1")
    dev = read_text_records(shared_data / "chnsenticorp" / "dev.tsv")
    checked, check = check_labels(dev, infer_label_map(senti))
    assert len(checked) == len(dev) == 1200 and not check.unknown

    weibo = shared_data / "smp2020_weibo_emotion"
    names = read_label_names(weibo / "labels.json")
    assert names["0"] == "neutral" and len(names) == 6
    train = read_text_records(weibo / "dev.tsv")
    assert infer_label_map(train, order=list(names)).labels == tuple(names)


@pytest.mark.shared_data
def test_real_vocab_windows(shared_data, tmp_path):
    """Google's bert-base-chinese vocab: MSRA sentences stitched back exactly through small windows."""
    from workbench.vocab.tokenizer import load_tokenizer

    tok = load_tokenizer(str(shared_data / "vocab" / "bert_base_chinese_vocab.txt"), needed_by="test")
    msra = read_tagging(_head_sentences(shared_data / "msra_ner" / "msra_train.txt", tmp_path / "msra.txt", 200))
    texts = [r.text for r in msra.records] + ["2015年5月，iPhone 6s在北京发布"]
    spans = [r.spans for r in msra.records] + [[(18, 20, "LOC")]]
    stitched, stats = _round_trip(tok, texts, spans, "bioes", 32, 8)
    for text, sp, tags in zip(texts, spans, stitched):
        assert tags_to_spans(tags, "bioes")[0] == [s for s in sp if text[s[0]:s[1]].strip()]
    assert stats.texts_split > 0
