"""Datasets read as published: CoNLL with extra columns and Weibo's char+position field,
.NAM/.NOM suffixes, BIO/BIOES/BMES detection, CLUENER overlap policies, GBK/GB18030 files.
Small hand-made files in tmp dirs; one real finetune reads a GBK Weibo-style file end to end."""

from __future__ import annotations

import json

import pytest

from finetune_fixtures import ner_sentences, one_thread, tiny_model  # noqa: F401
from workbench.errors import InputError
from workbench.tasks.data import read_cluener, read_conll, read_lines, read_tagging, read_text_records, resolve_overlaps

# Weibo NER (Peng & Dredze 2015) as published: `char+position<TAB>tag`, types with .NAM/.NOM.
WEIBO = """科0\tO
比0\tO
你1\tB-PER.NOM
们1\tI-PER.NOM
去0\tO
北0\tB-GPE.NAM
京1\tI-GPE.NAM

张0\tB-PER.NAM
三1\tI-PER.NAM
在0\tO
上0\tB-LOC.NAM
海1\tI-LOC.NAM
"""


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_weibo_char_position_field_and_suffixes(tmp_path):
    f = write(tmp_path / "weibo.train", WEIBO)
    with pytest.raises(InputError, match=r"(?s)weibo.train, line 1: expected one character .* got '科0'.*data.char_field=first"):
        read_conll(f)
    kept = read_tagging(f, char_field="first")
    assert [r.text for r in kept.records] == ["科比你们去北京", "张三在上海"]
    assert kept.records[0].spans == [(2, 4, "PER.NOM"), (5, 7, "GPE.NAM")]
    assert kept.scheme == "bio" and kept.folded == 0 and kept.encoding == "utf-8"
    folded = read_tagging(f, char_field="first", type_suffix="fold")
    assert folded.records[0].spans == [(2, 4, "PER"), (5, 7, "GPE")] and folded.records[1].spans == [(0, 2, "PER"), (3, 5, "LOC")]
    assert folded.folded == 4 and folded.report()["folded_suffixes"] == 4
    # 'first' never drops real text: a field that is a word, not char+digits, is still an error
    word = write(tmp_path / "word.txt", "张三\tB-PER\n")
    with pytest.raises(InputError, match=r"line 1: .*'张三'.*char_field=first takes one character followed by digits"):
        read_tagging(word, char_field="first")


def test_conll_extra_columns(tmp_path):
    # char, POS, tag (space separated) and char, position, tag (tabs)
    spaces = write(tmp_path / "pos.txt", "张 nr B-PER\n三 nr I-PER\n去 v O\n\n北 ns B-LOC\n京 ns I-LOC\n")
    with pytest.raises(InputError, match="expected one character before the tag, got '张 nr'"):
        read_conll(spaces)  # two-column files stay strict by default
    got = read_tagging(spaces, char_column=0, tag_column=-1)
    assert [(r.text, r.spans) for r in got.records] == [("张三去", [(0, 2, "PER")]), ("北京", [(0, 2, "LOC")])]
    tabs = write(tmp_path / "tabs.txt", "B-ORG\t0\t新\nI-ORG\t1\t华\nI-ORG\t2\t社\nO\t0\t电\n")
    with pytest.raises(InputError, match=r"(?s)3 tab-separated fields.*data.char_column=0 data.tag_column=-1"):
        read_conll(tabs)
    got = read_tagging(tabs, char_column=2, tag_column=0)
    assert got.records[0].text == "新华社电" and got.records[0].spans == [(0, 3, "ORG")]
    with pytest.raises(InputError, match=r"line 1: 3 field\(s\) on the line; data.char_column=5"):
        read_tagging(tabs, char_column=5, tag_column=0)


def test_scheme_detection_bio_bioes_bmes(tmp_path):
    sents = {"bio": "张 B-PER\n三 I-PER\n去 O\n京 B-LOC\n",
             "bioes": "张 B-PER\n三 E-PER\n去 O\n京 S-LOC\n",
             "bmes": "欧 B-PER\n阳 M-PER\n修 E-PER\n京 S-LOC\n"}
    spans = {"bio": [(0, 2, "PER"), (3, 4, "LOC")], "bioes": [(0, 2, "PER"), (3, 4, "LOC")],
             "bmes": [(0, 3, "PER"), (3, 4, "LOC")]}
    for scheme, text in sents.items():
        got = read_conll(write(tmp_path / f"{scheme}.txt", text))
        assert got.scheme == scheme and got.records[0].spans == spans[scheme]
    mixed = write(tmp_path / "mixed.txt", "张 B-PER\n三 I-PER\n\n欧 B-PER\n阳 M-PER\n修 E-PER\n")
    with pytest.raises(InputError, match=r"mixed BIO/BIOES and BMES tags: I- first at line 2, M- first at line 5"):
        read_conll(mixed)


CLUENER_OVERLAP = [
    {"text": "浙商银行企业信贷部叶老桂博士", "label": {"company": {"浙商银行": [[0, 3]]}, "organization": {
        "浙商银行企业信贷部": [[0, 8]]}, "name": {"叶老桂": [[9, 11]]}}},
    {"text": "北京大学生物系", "label": {"organization": {"北京大学": [[0, 3]], "生物系": [[4, 6]]},
                                   "address": {"北京": [[0, 1]]}, "position": {"大学生": [[2, 4]]}}},
    {"text": "今天天气很好"},
]


def test_cluener_overlap_policies(tmp_path):
    f = write(tmp_path / "train.json", "\n".join(json.dumps(o, ensure_ascii=False) for o in CLUENER_OVERLAP) + "\n")
    with pytest.raises(InputError, match=r"(?s)train.json, line 1: .*overlaps.*data.overlap=longest\|first"):
        read_cluener(f)
    longest = read_tagging(f, overlap="longest")
    assert longest.records[0].spans == [(0, 9, "organization"), (9, 12, "name")]
    # 北京大学 (4) beats 大学生 (3) and 北京 (2); 生物系 does not overlap what is kept
    assert longest.records[1].spans == [(0, 4, "organization"), (4, 7, "organization")]
    assert longest.overlap["records"] == 2 and longest.overlap["dropped"] == 3 and longest.overlap["policy"] == "longest"
    first = read_tagging(f, overlap="first")
    # leftmost first (ties: the longer): 浙商银行企业信贷部 starts at 0 and is longer than 浙商银行
    assert first.records[0].spans == [(0, 9, "organization"), (9, 12, "name")]
    assert first.records[1].spans == [(0, 4, "organization"), (4, 7, "organization")]
    kept, dropped = resolve_overlaps({(0, 2, "A"), (1, 5, "B"), (5, 6, "C")}, "first")
    assert kept == [(0, 2, "A"), (5, 6, "C")] and dropped == [(1, 5, "B")]
    kept, dropped = resolve_overlaps({(0, 2, "A"), (1, 5, "B"), (5, 6, "C")}, "longest")
    assert kept == [(1, 5, "B"), (5, 6, "C")] and dropped == [(0, 2, "A")]
    assert not any(ch in json.dumps(longest.report(), ensure_ascii=False) for ch in "浙商银行北京")  # no corpus text


def test_gbk_and_gb18030_files(tmp_path):
    gbk = write(tmp_path / "reviews.tsv", "label\ttext\npos\t这个酒店很干净\nneg\t服务太差了\n", "gbk")
    with pytest.raises(InputError, match="not valid utf-8"):
        read_text_records(gbk, text="text")  # an explicit codec stays strict
    info = {}
    records = read_text_records(gbk, text="text", encoding="auto", info=info)
    assert [r.text for r in records] == ["这个酒店很干净", "服务太差了"] and info["encoding"] == "gb18030"
    # a character outside GBK (GB18030 only) and a UTF-8 BOM file
    rare = write(tmp_path / "rare.txt", "𠀀 O\n龘 O\n", "gb18030")
    assert read_tagging(rare, encoding="auto").records[0].text == "𠀀龘"
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + "北 B-LOC\n京 I-LOC\n".encode())
    assert read_tagging(bom, encoding="auto").encoding == "utf-8"
    assert read_lines(bom, "auto") == ["北 B-LOC", "京 I-LOC"]
    # a UTF-8 file with a broken byte later on is an error at its line, not a silent GB18030 read
    broken = tmp_path / "broken.txt"
    broken.write_bytes("北 B-LOC\n京 I-LOC\n".encode() + b"\xff O\n")
    with pytest.raises(InputError, match=r"(?s)broken.txt, line 3: bytes .* are not valid utf-8.*data.encoding=gb18030"):
        read_lines(broken, "auto")


def test_finetune_reads_a_gbk_weibo_file_as_published(tmp_path, cli):
    """Weibo-style NER in GBK with char+position fields and .NAM/.NOM types, folded; the
    manifest says how each file was read."""
    sents = ner_sentences(90, max_chars=40)
    suffix = {"PER": "PER.NAM", "LOC": "GPE.NAM", "ORG": "ORG.NOM"}

    def weibo(rows):
        out = []
        for s in rows:
            lines = []
            for i, (c, t) in enumerate(s):
                tag = t if t == "O" else f"{t[:2]}{suffix[t[2:]]}"
                lines.append(f"{c}{i % 2}\t{tag}\n")
            out.append("".join(lines))
        return "\n".join(out)

    ok = [s for s in sents if all(c.encode("gbk", "ignore").decode("gbk") == c and not c.isspace() for c, _ in s)]
    write(tmp_path / "train.txt", weibo(ok[:60]), "gbk")
    write(tmp_path / "dev.txt", weibo(ok[60:75]), "gbk")
    base = tiny_model(tmp_path / "base", ["".join(c for c, _ in s) for s in ok])
    code, out, err = cli("finetune", "task=tagging", f"model={base}", f"train={tmp_path / 'train.txt'}",
                         f"valid={tmp_path / 'dev.txt'}", f"output={tmp_path / 'ft'}", "data.char_field=first",
                         "data.type_suffix=fold", "epochs=1", "max_length=48", "batch_size=16")
    assert code == 0, err
    m = json.loads((tmp_path / "ft" / "manifest.json").read_text(encoding="utf-8"))
    assert m["read"]["train"]["encoding"] == "gb18030" and m["read"]["train"]["scheme"] == "bio"
    assert m["read"]["train"]["folded_suffixes"] > 10
    labels = json.loads((tmp_path / "ft" / "labels.json").read_text(encoding="utf-8"))["labels"]
    assert set(labels) <= {"PER", "GPE", "ORG"} and "PER" in labels
    # kept, the suffixes are types of their own
    code, out, err = cli("finetune", "task=tagging", f"model={base}", f"train={tmp_path / 'train.txt'}",
                         f"valid={tmp_path / 'dev.txt'}", f"output={tmp_path / 'ft_keep'}", "data.char_field=first",
                         "epochs=1", "max_length=48", "batch_size=16")
    assert code == 0, err
    labels = json.loads((tmp_path / "ft_keep" / "labels.json").read_text(encoding="utf-8"))["labels"]
    assert "PER.NAM" in labels and all("." in x for x in labels)


def test_finetune_records_the_overlap_policy_in_the_manifest(tmp_path, cli):
    rows = CLUENER_OVERLAP * 8  # 16 records with overlaps (2 distinct), 8 without
    f = write(tmp_path / "train.json", "\n".join(json.dumps(o, ensure_ascii=False) for o in rows) + "\n")
    base = tiny_model(tmp_path / "base", [o["text"] for o in CLUENER_OVERLAP])
    args = ["finetune", "task=tagging", f"model={base}", f"train={f}", f"valid={f}", "epochs=1", "max_length=32",
            "batch_size=8"]
    code, out, err = cli(*args, f"output={tmp_path / 'refused'}")
    assert code == 2 and "train.json, line 1" in err and "data.overlap=longest|first" in err
    code, out, err = cli(*args, f"output={tmp_path / 'ft'}", "data.overlap=longest")
    assert code == 0, err
    m = json.loads((tmp_path / "ft" / "manifest.json").read_text(encoding="utf-8"))
    assert m["read"]["train"]["overlap"]["policy"] == "longest"
    assert m["read"]["train"]["overlap"]["records"] == 16 and m["read"]["train"]["overlap"]["dropped"] == 24
    assert m["config"]["data"]["overlap"] == "longest"
