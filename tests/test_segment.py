"""segment: jieba once, token↔word alignment, entity spans, packing, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from conftest import build_char_vocab_model
from workbench.config import LexiconConfig, load_stage_config
from workbench.errors import InputError, StageInputError
from workbench.segment.blocks import BlockBuilder, encode_docs, entity_ids_from_tags, render_block
from workbench.segment.lexicon import read_lexicon
from workbench.segment.segmenter import Segmenter
from workbench.stages.prepare import run as prepare
from workbench.stages.segment import run as segment
from workbench.vocab.tokenizer import load_tokenizer

TEXTS = [
    "江泽民主席在北京会见了联合国秘书长安南，双方就中国和联合国的合作交换了意见。",
    "我昨天买了一台iPhone15，价格是5999元，真贵！不过拍照效果很好。",
    "新华社记者报道：上海浦东新区今年的经济增长速度超过了百分之十。",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, review_lines) -> Path:
    return build_char_vocab_model(tmp_path_factory.mktemp("model"), TEXTS + review_lines,
                                  extra=["iphone", "##15", "59", "##99"])


@pytest.fixture(scope="module")
def tok(model_dir):
    return load_tokenizer(str(model_dir), needed_by="test")


def test_tokenizer_size_guard(tmp_path, model_dir, tok):
    assert len(tok) == sum(1 for _ in open(model_dir / "vocab.txt", encoding="utf-8"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vocab.txt").write_text((model_dir / "vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["vocab_size"] = 50
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StageInputError, match="tokenizer/model mismatch.*vocab_size=50"):
        load_tokenizer(str(bad), needed_by="segment")
    with pytest.raises(StageInputError, match="is not a directory|cannot load a tokenizer"):
        load_tokenizer(str(tmp_path / "missing_model"), needed_by="segment")


def test_alignment_words_and_entities(tok):
    seg = Segmenter("jieba", [], {"nr": "PER", "ns": "LOC", "nt": "ORG"})
    types = {t: i for i, t in enumerate(seg.entity_types)}
    (doc,) = encode_docs([TEXTS[0]], tok, seg, types).docs()
    words, _ = seg.cut_with_entities(TEXTS[0])
    assert len(doc.ids) == len(TEXTS[0])  # one token per Chinese character
    # tokens of one word share an id; ids follow jieba's words in order
    spans = np.split(np.arange(len(doc.ids)), np.flatnonzero(np.diff(doc.word)) + 1)
    assert ["".join(TEXTS[0][i] for i in s) for s in spans] == words
    block = BlockBuilder(64, tok.cls_token_id, tok.sep_token_id).build([doc])[0]
    shown = render_block(block, tok, seg.entity_types, max_tokens=64)
    assert "[北京]LOC" in shown and "[联合国]ORG" in shown and "|" in shown


def test_latin_wordpieces_stay_in_their_word(tok):
    seg = Segmenter("jieba", [], {})
    (doc,) = encode_docs([TEXTS[1]], tok, seg, {}).docs()
    pieces = tok.convert_ids_to_tokens(doc.ids.tolist())
    i = pieces.index("iphone")
    assert pieces[i + 1] == "##15" and doc.word[i] == doc.word[i + 1]


def test_lexicon_changes_segmentation_and_tags_entities(tmp_path, tok):
    lex = tmp_path / "terms.txt"
    lex.write_text("阿莫西林克拉维酸钾\t1000\n", encoding="utf-8")
    text = "患者服用阿莫西林克拉维酸钾后出现皮疹。"
    assert "阿莫西林克拉维酸钾" not in Segmenter("jieba", [], {}).cut(text)  # jieba alone splits it
    for backend in ("jieba", "rjieba"):
        seg = Segmenter(backend, [LexiconConfig(path=str(lex), entity_type="DRUG")], {})
        words, types = seg.cut_with_entities(text)
        assert "阿莫西林克拉维酸钾" in words, backend
        assert types[words.index("阿莫西林克拉维酸钾")] == "DRUG" and "DRUG" in seg.entity_types


def test_rjieba_agrees_with_jieba_on_real_text(review_lines):
    a, b = Segmenter("jieba", [], {}), Segmenter("rjieba", [], {})
    same = sum(a.cut(t) == b.cut(t) for t in review_lines)
    assert same / len(review_lines) >= 0.99  # 1.0 on these 400; the rest would be DP ties


def test_rjieba_splits_ascii_runs_like_jieba():
    """jieba-rs keeps 4220-4230 whole where jieba's HMM step cuts 4220 | - | 4230; the rjieba
    backend splits such runs as jieba does, and keeps dictionary words such as C++ and AT&T."""
    import jieba

    texts = ["压力在4220-4230区间，inside-out翻成了反求诸己", "学习C++和c#语言，AT&T公司", "X 10.4.5版本声称3.5%的增长",
             "南安普顿2-0战胜伯恩利", "v1.2.3-beta_rc%", "没有连字符的句子", "-", "a-", "--x--"]
    import rjieba

    assert rjieba.Jieba().cut(texts[0]) != jieba.lcut(texts[0])  # the library alone differs
    seg = Segmenter("rjieba", [], {})
    assert [seg.cut(t) for t in texts] == [jieba.lcut(t) for t in texts]
    n_words, lengths, _ = seg.cut_batch(texts, {})
    assert lengths.tolist() == [len(w) for t in texts for w in jieba.lcut(t)]
    assert n_words.tolist() == [len(jieba.lcut(t)) for t in texts]


EDGE_TEXTS = ["", "abc", "def", "x\x00y", "结尾是回车\r", "\n开头是换行", "   ", "iPhone15+", "-", "。", "中文", "",
              "英文word和数字123混在一起", "😊表情😊", "\r\n"]


@pytest.mark.parametrize("backend", ["jieba", "rjieba"])
def test_batch_cut_in_one_call_equals_cutting_each_text(backend, review_lines):
    """The stage cuts a batch in one call (texts joined by NUL): the words must be exactly
    those of cutting each text alone, entity types included, on real text and on edges
    (empty texts, NUL inside a text, latin/digit runs and CR/LF at the joins)."""
    seg = Segmenter(backend, [], {"nr": "PER", "ns": "LOC", "nt": "ORG", "nz": "MISC"})
    types = {t: i for i, t in enumerate(seg.entity_types)}
    texts = review_lines + TEXTS + EDGE_TEXTS
    n_words, lengths, type_ids = seg.cut_batch(texts, types)
    alone = [seg.cut_with_entities(t) for t in texts]
    assert n_words.tolist() == [len(w) for w, _ in alone]
    assert lengths.tolist() == [len(x) for w, _ in alone for x in w]
    assert type_ids.tolist() == [types[t] if t else -1 for _, ts in alone for t in ts]
    assert (type_ids >= 0).sum() > 20  # real entities were found
    assert [x.tolist() for x in seg.cut_batch(EDGE_TEXTS[:1], types)] == [[0], [], []]
    assert [len(x) for x in seg.cut_batch([], types)] == [0, 0, 0]


def test_batch_cut_falls_back_to_one_call_per_text_when_separators_merge():
    from workbench.segment.segmenter import cut_joined

    def whole(text):  # a "segmenter" that keeps the whole input as one word, NULs included
        return [text] if text else []

    n_words, flat, lengths = cut_joined(whole, ["ab", "", "cde"])
    assert n_words.tolist() == [1, 0, 1] and flat == ["ab", "cde"] and lengths.tolist() == [2, 3]


def test_broken_lexicon_lines(tmp_path):
    lex = tmp_path / "broken.txt"
    lex.write_text("好词\t12\n坏词\t3?\n另一个\t7\n空 格\t5\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"broken.txt, line 2: 2 broken lexicon line\(s\).*lines 2, 4"):
        read_lexicon(lex)
    entries, bad = read_lexicon(lex, on_error="skip")
    assert [e.word for e in entries] == ["好词", "另一个"] and bad == [2, 4]


def test_packing_respects_words_and_limits(tok, review_lines):
    seg = Segmenter("jieba", [], {})
    docs = encode_docs(review_lines[:100], tok, seg, {}).docs()
    docs.insert(3, docs[5].slice(0, 0))  # an empty document is skipped
    long_doc = encode_docs(["".join(review_lines[:30])], tok, seg, {}).docs()[0]
    docs.append(long_doc)  # longer than a block: cut at word starts
    for pack in (True, False):
        blocks = BlockBuilder(48, tok.cls_token_id, tok.sep_token_id, pack_documents=pack).build(docs)
        total = sum(len(d) for d in docs)
        content = sum(int((b["word_ids"] >= 0).sum()) for b in blocks)
        assert content == total, "every token lands in exactly one block"
        for b in blocks:
            assert len(b["input_ids"]) <= 48 and b["input_ids"][0] == tok.cls_token_id
            assert b["input_ids"][-1] == tok.sep_token_id
            w = b["word_ids"][b["word_ids"] >= 0]
            assert w[0] == 0 and np.all(np.diff(w) >= 0) and np.all(np.diff(w) <= 1)
        if not pack:
            assert len(blocks) >= len(docs)
    # Entity ids decode from tags: one id per entity, -1 outside
    assert entity_ids_from_tags(np.array([0, 1, 2, 0, 3, 1, 0])).tolist() == [-1, 0, 0, -1, 1, 2, -1]


def test_batch_cutting_of_long_documents_matches_the_per_document_rule():
    """pack_flat cuts all long documents of a batch at once; it must give exactly the pieces
    of the per-document greedy rule (_pieces): sentence ends in the second half of the
    window first, else the last word start, else a hard cut inside a too-long word."""
    from workbench.segment.blocks import Doc, Encoded, _cut_long_documents, _pieces

    rng = np.random.default_rng(7)
    for trial in range(40):
        cap = int(rng.integers(4, 40))
        docs = []
        for _ in range(int(rng.integers(1, 12))):
            n = int(rng.choice([0, 1, cap, cap + 1, int(rng.integers(1, 6 * cap))]))
            # word lengths from 1 to beyond the cap (forces hard cuts), sentence ends anywhere
            lengths = rng.choice([1, 1, 2, 2, 3, 4, cap + 3], size=n + 1)
            word = np.repeat(np.arange(len(lengths)), lengths)[:n].astype(np.int32)
            sent = rng.random(n) < 0.1
            docs.append(Doc(np.arange(n, dtype=np.int32), word, np.zeros(n, np.int8), sent))
        enc = Encoded.from_docs(docs)
        offsets = enc.offsets()
        expected = [(int(a) + s, e - s) for a, d in zip(offsets, docs) for s, e in _pieces(d, cap)]
        if not (enc.n_tok > cap).any():
            continue
        first, length = _cut_long_documents(enc, offsets, cap)
        assert list(zip(first.tolist(), length.tolist())) == expected, trial
        assert length.max() <= cap and length.sum() == len(enc.ids)


def test_sentence_pairs(tok, review_lines):
    seg = Segmenter("jieba", [], {})
    docs = encode_docs(review_lines[:60], tok, seg, {})
    for mode in ("sop", "nsp"):
        blocks = BlockBuilder(64, tok.cls_token_id, tok.sep_token_id, pairs=mode).build(docs, np.random.default_rng(0))
        pairs = [b for b in blocks if b["pair_split"] > 0]
        assert pairs
        for b in pairs:
            s = b["pair_split"]
            assert b["input_ids"][s - 1] == tok.sep_token_id and b["input_ids"][-1] == tok.sep_token_id
            assert len(b["input_ids"]) <= 64
        if mode == "nsp":
            labels = [b["next_sentence_label"] for b in pairs]
            assert 0.3 < np.mean(labels) < 0.7


def test_stage_end_to_end(tmp_path, model_dir, review_lines):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS + review_lines[:200]), encoding="utf-8")
    prepare(load_stage_config("prepare", None, [f"input={corpus}", f"run={tmp_path / 'run'}", "split.valid_fraction=0.1"]))
    cfg = load_stage_config("segment", None, [f"run={tmp_path / 'run'}", f"model={model_dir}", "max_seq_length=64",
                                              "batch_size=32"])
    m = segment(cfg)
    out = tmp_path / "run" / "segmented"
    c = m["counts"]
    assert c["tokens"] > 0 and c["bytes_per_token"] <= 6.0 and c["unk_rate"] < 0.01
    assert m["tokenizer"]["vocab_size"] == len(load_tokenizer(str(model_dir), needed_by="t"))
    assert sum(c["entities"].values()) > 0 and m["examples"]
    dd = datasets.load_from_disk(str(out / "dataset"))
    assert set(dd) == {"train", "valid"}
    assert dd["train"].features["input_ids"].feature.dtype == "uint16"
    assert (out / "tokenizer" / "tokenizer.json").exists()
    # 2 and 3 worker processes give the same blocks (packing is per batch: the batches are cut
    # at the same rows; 3 processes split the rows where datasets' own sharding would not).
    for procs in (2, 3):
        m2 = segment(load_stage_config("segment", None, [f"run={tmp_path / 'run'}", f"model={model_dir}",
                                                         "max_seq_length=64", f"output={tmp_path / f'seg{procs}'}",
                                                         f"num_proc={procs}", "batch_size=32"]))
        assert m2["counts"] == m["counts"] and m2["execution"]["num_proc"] == procs
        assert m2["outputs"]["dataset/train/data-00000-of-00001.arrow"] == \
            m["outputs"]["dataset/train/data-00000-of-00001.arrow"]


def test_stage_refuses_bad_inputs(tmp_path, model_dir, review_lines):
    with pytest.raises(StageInputError, match="does not exist"):
        segment(load_stage_config("segment", None, [f"input={tmp_path / 'nope'}", f"model={model_dir}",
                                                    f"output={tmp_path / 's'}"]))
    corpus = tmp_path / "short.txt"
    corpus.write_text("短\n小\n", encoding="utf-8")
    prepare(load_stage_config("prepare", None, [f"input={corpus}", f"output={tmp_path / 'p'}"]))
    with pytest.raises(StageInputError, match="has no documents.*prepare kept 0 of 2 rows"):
        segment(load_stage_config("segment", None, [f"input={tmp_path / 'p'}", f"model={model_dir}",
                                                    f"output={tmp_path / 's'}"]))
    corpus.write_text("\n".join(review_lines[:5]), encoding="utf-8")
    prepare(load_stage_config("prepare", None, [f"input={corpus}", f"output={tmp_path / 'p'}"]))
    with pytest.raises(StageInputError, match="is not a directory"):
        segment(load_stage_config("segment", None, [f"input={tmp_path / 'p'}", f"model={tmp_path / 'no_model'}",
                                                    f"output={tmp_path / 's'}"]))
    with pytest.raises(StageInputError, match="is a `prepare` output but `pretrain` reads `segment` output"):
        from workbench.manifest import require_stage_output

        require_stage_output(tmp_path / "p", "segment", needed_by="pretrain")


def test_collator_reads_the_stored_blocks(tmp_path, model_dir, review_lines):
    """segment output → MaskingCollator: entities and words masked whole, from stored spans."""
    from workbench.config import MaskingConfig
    from workbench.masking.collator import MaskingCollator

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS * 3 + review_lines[:150]), encoding="utf-8")
    prepare(load_stage_config("prepare", None, [f"input={corpus}", f"run={tmp_path / 'run'}", "dedup.exact=false",
                                                "dedup.near=false"]))
    segment(load_stage_config("segment", None, [f"run={tmp_path / 'run'}", f"model={model_dir}", "max_seq_length=64"]))
    blocks = datasets.load_from_disk(str(tmp_path / "run" / "segmented" / "dataset"))["train"].with_format("numpy")
    tok = load_tokenizer(str(tmp_path / "run" / "segmented" / "tokenizer"), needed_by="test")
    rows = [blocks[i] for i in range(len(blocks))]
    ent_ids = [entity_ids_from_tags(r["entity_tags"]) for r in rows]
    assert sum(int((e >= 0).any()) for e in ent_ids) > 0
    coll = MaskingCollator(MaskingConfig(strategy="entity_ngram"), tok, seed=0)
    split_entities = 0
    for start in range(0, len(rows), 16):
        batch = coll(rows[start:start + 16])
        labelled = (batch["labels"] != -100).numpy()
        for j in range(len(rows[start:start + 16])):
            e = ent_ids[start + j]
            for k in np.unique(e[e >= 0]):
                marks = labelled[j, : len(e)][e == k]
                split_entities += int(marks.any() and not marks.all())
    assert split_entities == 0


@pytest.mark.parametrize("pairs", ["sop", "nsp"])
def test_stage_sentence_pair_blocks(tmp_path, model_dir, review_lines, pairs):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(review_lines[:120]), encoding="utf-8")
    prepare(load_stage_config("prepare", None, [f"input={corpus}", f"run={tmp_path / 'run'}"]))
    m = segment(load_stage_config("segment", None, [f"run={tmp_path / 'run'}", f"model={model_dir}",
                                                    "max_seq_length=64", f"pairs={pairs}"]))
    d = datasets.load_from_disk(str(tmp_path / "run" / "segmented" / "dataset"))["train"]
    assert m["counts"]["tokens"] > 0 and max(d["pair_split"]) > 0
    assert ("next_sentence_label" in d.column_names) == (pairs == "nsp")


def test_discovered_words_segment_desensitised_text(cli, tmp_path, review_lines):
    """Desensitised reviews (chars → ids) → remap (scratch vocab + discovered words) →
    segment backend=discovered: word ids group the ids of a discovered word, so whole-word
    masking works on id text without jieba."""
    import datasets

    from workbench.corpus.desensitise import desensitise_texts

    ids_text, _ = desensitise_texts(review_lines * 3, unit="char", seed=3, offset=10)
    corpus = tmp_path / "ids.txt"
    corpus.write_text("\n".join(ids_text) + "\n", encoding="utf-8")
    code, _, err = cli("prepare", f"input={corpus}", f"output={tmp_path / 'prepared'}", "dedup.exact=false",
                       "dedup.near=false", "split.valid_fraction=0")
    assert code == 0, err
    code, _, err = cli("remap", f"input={corpus}", "format=lines", "strategy=scratch", f"output={tmp_path / 'map'}",
                       "discovery.min_count=3")
    assert code == 0, err
    words = tmp_path / "map" / "words.json"
    assert words.is_file()
    code, out, err = cli("segment", f"input={tmp_path / 'prepared'}", f"model={tmp_path / 'map'}", "backend=discovered",
                         f"words={words}", f"output={tmp_path / 'seg'}", "max_seq_length=64")
    assert code == 0, err
    block = datasets.load_from_disk(str(tmp_path / "seg" / "dataset"))["train"][0]
    w = np.asarray(block["word_ids"])
    body = w[w >= 0]
    assert len(np.unique(body)) < len(body)  # some words span several ids
    code, _, err = cli("segment", f"input={tmp_path / 'prepared'}", f"model={tmp_path / 'map'}", "backend=discovered",
                       f"output={tmp_path / 'seg2'}")
    assert code == 2 and "words.json" in err


def test_posseg_is_the_default_and_works_with_either_backend():
    """posseg (the best entity source measured, benchmarks/results/entity_sources.md) is the
    default; with backend=rjieba it used to crash (rjieba has no lcut), now jieba.posseg cuts
    and tags for both backends, so the two give the same words and entities."""
    from workbench.config import SegmentConfig
    from workbench.segment.segmenter import Segmenter

    cfg = SegmentConfig()
    assert cfg.posseg is True
    text = "兰州公交集团明起至8月底三条公交线暂不经过靖远路站，王小明和李华去了白塔山"
    got = {b: Segmenter(b, [], cfg.entity_pos, True).cut_with_entities(text) for b in ("jieba", "rjieba")}
    assert got["jieba"] == got["rjieba"]
    words, types = got["rjieba"]
    assert "".join(words) == text
    assert dict(zip(words, types))["王小明"] == "PER"


def test_packing_of_short_documents_does_not_depend_on_num_proc(tmp_path, model_dir, review_lines):
    """Short documents are packed several to a block, per batch: with 1, 2 and 3 processes
    (row ranges that do not fall on datasets' own shard boundaries) the blocks are identical."""
    corpus = tmp_path / "short.txt"
    corpus.write_text("\n".join(t[:14] for t in dict.fromkeys(review_lines) if len(t) > 14)[:200_000],
                      encoding="utf-8")
    prepare(load_stage_config("prepare", None, [f"input={corpus}", f"output={tmp_path / 'p'}",
                                                "split.valid_fraction=0", "dedup.near=false"]))
    blocks = {}
    for procs in (1, 2, 3):
        m = segment(load_stage_config("segment", None, [f"input={tmp_path / 'p'}", f"model={model_dir}",
                                                        f"output={tmp_path / f's{procs}'}", "max_seq_length=128",
                                                        "batch_size=50", f"num_proc={procs}"]))
        blocks[procs] = datasets.load_from_disk(str(tmp_path / f"s{procs}" / "dataset"))["train"]["input_ids"]
        assert m["counts"]["blocks"]["train"] < m["counts"]["documents"]["train"] / 3  # really packed
    assert blocks[1] == blocks[2] == blocks[3]
