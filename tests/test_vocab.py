"""vocab: a BERT-Chinese-style vocab.txt + tokenizer built from ~400 real lines."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from workbench.config import load_stage_config
from workbench.errors import ConfigError, StageInputError
from workbench.segment.fast_tokenize import supported as fast_supported
from workbench.stages.prepare import run as prepare
from workbench.stages.vocab import run as vocab
from workbench.vocab.build import CJK, CharClasses, assemble, reference_tokenizer, special_tokens
from workbench.vocab.tokenizer import load_tokenizer

LATIN = [
    "我昨天买了一台iPhone15，价格是5999元，真贵！不过拍照效果很好。",
    "家里的WiFi信号太差了，换了新的路由器以后网速有100Mbps。",
    "这款iPhone的WiFi连接很稳定，电池能用2天，推荐购买。",
    "笔记本是ThinkPad X220，装了Windows 7和Linux双系统，运行流畅。",
    "用iPad看电子书很方便，屏幕9.7英寸，续航10小时左右。",
    "快递三天就到了，包装完好，iPhone手机壳的颜色和图片一样。",
    "下载速度大概2MB/s，比以前的ADSL快多了，WiFi覆盖整个房间。",
    "这本Python编程入门书适合初学者，例子都能在Python 3下运行。",
    "酒店的WiFi要密码，前台给的是88888888，上网速度还可以。",
    "耳机支持Bluetooth 5.0，和iPhone配对很快，音质不错。",
    "买了两张SD卡，每张64GB，拍4K视频也够用了。",
    "GPS定位准确，导航软件用的是高德地图，开车很方便。",
]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, review_lines) -> Path:
    """A real `prepare` output from 400 real reviews + lines with latin words and numbers."""
    tmp = tmp_path_factory.mktemp("vocab")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(review_lines + LATIN) + "\n", encoding="utf-8")
    prepare(load_stage_config("prepare", None, [f"input={corpus}", f"run={tmp}/run", "split.valid_fraction=0.1"]))
    return tmp / "run"


@pytest.fixture(scope="module")
def built(run_dir) -> tuple[Path, dict]:
    manifest = vocab(load_stage_config("vocab", None, [f"run={run_dir}", "size=3000"]))
    return run_dir / "vocab", manifest


def _train_texts(run_dir: Path) -> list[str]:
    return datasets.load_from_disk(str(run_dir / "prepared" / "dataset"))["train"]["text"]


def test_layout_like_google(built):
    out, _ = built
    tokens = _lines(out / "vocab.txt")
    assert tokens[:104] == ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(tokens) == len(set(tokens)), "duplicate lines in vocab.txt"
    assert "" not in tokens and all(t == t.strip() for t in tokens)
    # a tokenizer directory, not a model directory
    assert {p.name for p in out.iterdir()} == {"vocab.txt", "tokenizer.json", "tokenizer_config.json", "manifest.json"}


def test_contents_cover_the_corpus(built, run_dir):
    out, m = built
    tokens = set(_lines(out / "vocab.txt"))
    ref = reference_tokenizer(lowercase=True).backend_tokenizer
    classes = CharClasses(ref.normalizer, ref.pre_tokenizer)
    cjk = {c for t in _train_texts(run_dir) for c in ref.normalizer.normalize_str(t) if classes.classify(c) == CJK}
    assert len(cjk) > 500 and cjk <= tokens, sorted(cjk - tokens)[:20]
    assert {chr(i) for i in range(33, 127) if not "A" <= chr(i) <= "Z"} <= tokens  # ASCII, digits always
    assert {"，", "。", "！"} <= tokens  # full-width punctuation seen in the text
    pieces = {t for t in tokens if t.startswith("##")}
    assert {"##1", "##5", "##i"} <= pieces and any(len(p) > 3 for p in pieces)  # continuations and merges
    assert "wifi" in tokens and "iphone" in tokens, "frequent latin words should be whole pieces"
    c = m["counts"]
    for key in ("chars_seen", "cjk_chars", "pieces", "vocab_size", "coverage", "unk_rate"):
        assert key in c, key
    assert c["vocab_size"] == len(tokens) and c["cjk_chars"] == len(cjk) and c["coverage"] == 1.0
    assert c["pieces"] > 0 and c["specials"] + c["base"] + c["cjk_chars"] + c["pieces"] == c["vocab_size"]
    assert m["stage"] == "vocab" and m["inputs"][0]["stage"] == "prepare" and len(m["inputs"][0]["manifest_sha256"]) == 64


def test_load_tokenizer_and_unk_rate(built, run_dir, review_lines):
    out, m = built
    tok = load_tokenizer(str(out), needed_by="test")  # the loader later stages use, size checks included
    assert len(tok) == len(_lines(out / "vocab.txt")) == m["tokenizer"]["vocab_size"]
    assert tok.is_fast and fast_supported(tok), "segment's fast path needs BertNormalizer + BertPreTokenizer + WordPiece"
    assert [tok.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 100, 101, 102, 103]
    assert tok.tokenize("买了iPhone，WiFi很好") == ["买", "了", "iphone", "，", "wifi", "很", "好"]
    assert "[UNK]" not in tok.tokenize("型号iPhone17，WiFi7，价格12345元")  # unseen numbers: spelled in pieces
    # Held out: ~40 valid reviews against a vocab from ~370 train ones; their rare characters
    # are [UNK] (min_char_count=1 keeps every train character), 1.5% with this split.
    assert m["counts"]["unk_rate"] < 0.025 and m["counts"]["unk_eval_split"] == "valid"
    ids = [i for e in tok.backend_tokenizer.encode_batch(review_lines + LATIN, add_special_tokens=False) for i in e.ids]
    assert ids.count(tok.unk_token_id) / len(ids) < 0.01


def test_size_cap_and_reproducible(run_dir, tmp_path):
    ms = [vocab(load_stage_config("vocab", None, [f"run={run_dir}", "size=500", f"output={tmp_path / n}"]))
          for n in ("a", "b")]
    tokens = _lines(tmp_path / "a" / "vocab.txt")
    c = ms[0]["counts"]
    assert len(tokens) == c["vocab_size"] == 500  # the corpus has more than 500 tokens to offer
    assert tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert c["pieces"] == round(0.1 * (500 - 104 - c["base"])) and c["coverage"] < 1.0
    # the most frequent characters made it in
    assert {"的", "书", "是"} <= set(tokens)
    # the same inputs and config give the same files (tokenizers' trainer alone is not deterministic)
    assert ms[0]["outputs"] == ms[1]["outputs"]


def test_cased_without_unused(run_dir, tmp_path):
    m = vocab(load_stage_config("vocab", None, [f"run={run_dir}", "unused=0", "lowercase=false", "size=2000",
                                                f"output={tmp_path / 'cased'}"]))
    tokens = _lines(tmp_path / "cased" / "vocab.txt")
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and "A" in tokens
    tok = load_tokenizer(str(tmp_path / "cased"), needed_by="test")
    assert json.loads((tmp_path / "cased" / "tokenizer_config.json").read_text())["do_lower_case"] is False
    assert "[UNK]" not in tok.tokenize("WiFi信号") and tok.tokenize("WiFi")[0][0] == "W"
    assert m["layout"]["[UNK]"] == 1


def test_assemble_fills_in_order():
    specials = special_tokens(2)  # [PAD] [unused1] [unused2] [UNK] [CLS] [SEP] [MASK]
    tokens, n = assemble(specials, ["a", "!"], ["的", "是", "了"], ["a", "xy", "##z", "##q"], size=12, wordpiece_share=0.5)
    # 3 slots after specials + base: round(1.5) = 2 for pieces ("a" is deduplicated), 1 for CJK
    assert tokens == specials + ["a", "!", "的", "xy", "##z"] and n["pieces"] == 2
    # slots the pieces cannot fill go to CJK; never past size; a short corpus gives a short vocab
    tokens, n = assemble(specials, ["a"], ["的", "是", "了"], [], size=100, wordpiece_share=0.9)
    assert tokens == specials + ["a", "的", "是", "了"] and n["cjk_chars"] == 3
    tokens, _ = assemble(specials, ["a", "b", "c"], ["的"], ["x"], size=8, wordpiece_share=0.1)
    assert tokens == specials + ["a"]


def test_contradictions_in_one_error():
    with pytest.raises(ConfigError) as e:
        load_stage_config("vocab", None, ["size=50", "wordpiece_share=1.5", "min_char_count=0"])
    msg = str(e.value)
    assert len(e.value.problems) == 3, msg
    assert "vocab.size (50) leaves no room" in msg and "size >= 105" in msg
    assert "vocab.wordpiece_share: must be between 0 and 1" in msg and "vocab.min_char_count" in msg
    assert load_stage_config("vocab", None, ["size=105"]).size == 105


def test_refuses_input_that_is_not_a_prepare_output(tmp_path, built):
    (tmp_path / "plain").mkdir()
    with pytest.raises(StageInputError, match="no manifest.json"):
        vocab(load_stage_config("vocab", None, [f"input={tmp_path / 'plain'}", f"output={tmp_path / 'o'}"]))
    with pytest.raises(StageInputError, match="is a `vocab` output"):
        vocab(load_stage_config("vocab", None, [f"input={built[0]}", f"output={tmp_path / 'o'}"]))
    with pytest.raises(StageInputError, match="does not exist"):
        vocab(load_stage_config("vocab", None, [f"run={tmp_path / 'nothing'}"]))
    assert not (tmp_path / "o").exists()
