"""prepare's one-character folding carried in the tokenizer (workbench/vocab/normalize.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from conftest import build_char_vocab_model
from workbench.config import CleanConfig
from workbench.corpus.clean import Cleaner, char_map
from workbench.segment.fast_tokenize import FastChineseEncoder, supported
from workbench.vocab.normalize import install_char_map, installed_char_map
from workbench.vocab.tokenizer import load_tokenizer

RAW = ["人民日报１９９８年１月１日，ＡＢＣ公司。", "“你好”——他说…", "全角空格　和～符号！", "半角123abc不变", ""]
POOL = list("中文日报年月，。！？“”‘’—–…～＂　 abcABC123") + [chr(c) for c in range(0xFF01, 0xFF5F)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    texts = RAW + ["".join(chr(c) for c in range(0x21, 0x7F))]
    return build_char_vocab_model(tmp_path_factory.mktemp("m"), texts,
                                  extra=[f"##{c}" for c in "0123456789abcdefghijklmnopqrstuvwxyz"])


def _clean_chars(cfg: CleanConfig, text: str) -> str:
    """What Cleaner does to single characters (its other steps switched off)."""
    off = cfg.model_copy(update=dict(urls=False, mentions=False, repost_chains="off", reply_prefix=False,
                                     hashtags="off", emoji_codes=False, control_chars=False, whitespace=False,
                                     min_chars=0, max_chars=None))
    return Cleaner(off).clean(text)[0]


@pytest.mark.parametrize("fullwidth,punct", [("alnum", False), ("all", False), ("all", True), ("off", True), ("off", False)])
def test_tokenizer_folds_raw_text_like_prepare(model_dir, fullwidth, punct):
    cfg = CleanConfig(fullwidth=fullwidth, punct_to_ascii=punct)
    mapping = char_map(cfg)
    rng = random.Random(0)
    texts = RAW + ["".join(rng.choice(POOL) for _ in range(rng.randint(0, 25))) for _ in range(300)]
    plain = load_tokenizer(str(model_dir), needed_by="t")
    folded = install_char_map(load_tokenizer(str(model_dir), needed_by="t"), mapping)
    assert installed_char_map(folded) == mapping
    for raw in texts:
        cleaned = _clean_chars(cfg, raw)
        assert "".join(mapping.get(c, c) for c in raw) == cleaned
        # raw text through the folding tokenizer = cleaned text through the plain one
        assert folded(raw)["input_ids"] == plain(cleaned)["input_ids"], raw
    if fullwidth != "off":
        ids = folded("１９９８年")["input_ids"]
        assert plain.unk_token_id not in ids and plain.unk_token_id in plain("１９９８年")["input_ids"]


def test_offsets_point_into_the_raw_text_and_the_map_survives_save_and_load(model_dir, tmp_path):
    from transformers import AutoTokenizer

    mapping = char_map(CleanConfig(punct_to_ascii=True))
    tok = install_char_map(load_tokenizer(str(model_dir), needed_by="t"), mapping)
    raw = "ＡＢＣ公司…１９９８年"
    enc = tok(raw, return_offsets_mapping=True, add_special_tokens=False)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tok.unk_token not in pieces
    spans = [raw[a:b] for a, b in enc["offset_mapping"]]
    assert spans[:4] == ["Ａ", "Ｂ", "Ｃ", "公"] and "…" in spans and spans[-1] == "年"  # a, ##b, ##c
    tok.save_pretrained(str(tmp_path / "saved"))
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (tmp_path / "saved" / "vocab.txt").read_text(encoding="utf-8") == (model_dir / "vocab.txt").read_text(encoding="utf-8")
    again = load_tokenizer(str(tmp_path / "saved"), needed_by="t")
    assert installed_char_map(again) == mapping and type(again) is type(tok)
    assert again("１你", "好")["token_type_ids"] == [0, 0, 0, 0, 1, 1]
    again.save_pretrained(str(tmp_path / "again"))  # a second generation keeps class and vocab.txt
    config = json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and "is_local" not in config
    assert (tmp_path / "again" / "vocab.txt").read_text(encoding="utf-8") == (model_dir / "vocab.txt").read_text(encoding="utf-8")
    plain_hf = AutoTokenizer.from_pretrained(str(tmp_path / "saved"))  # no workbench code involved
    assert plain_hf(raw)["input_ids"] == tok(raw)["input_ids"]


def test_installing_merges_and_refuses_a_map_that_is_not_one_step(model_dir):
    plain = load_tokenizer(str(model_dir), needed_by="t")
    tok = install_char_map(install_char_map(plain, {"Ａ": "A"}), {"１": "1"})
    assert installed_char_map(tok) == {"Ａ": "A", "１": "1"} and installed_char_map(plain) == {}
    spec = json.loads(tok.backend_tokenizer.to_str())["normalizer"]
    assert [n["type"] for n in spec["normalizers"]] == ["Replace", "Replace", "BertNormalizer"]
    assert install_char_map(tok, {}) is tok and install_char_map(tok, {"１": "1"}) is tok
    assert len(tok) == len(plain) and tok.get_vocab() == plain.get_vocab()
    assert tok("１你", "好")["token_type_ids"] == plain("1你", "好")["token_type_ids"] == [0, 0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="not one-step"):
        install_char_map(tok, {"1": "I"})  # 1 is produced by another rule


def test_fast_chinese_path_is_exact_with_the_folding_installed(model_dir):
    tok = install_char_map(load_tokenizer(str(model_dir), needed_by="t"),
                           char_map(CleanConfig(fullwidth="all", punct_to_ascii=True)))
    assert supported(tok)
    rng = random.Random(1)
    texts = RAW + ["".join(rng.choice(POOL + list("中国北京")) for _ in range(rng.randint(0, 30))) for _ in range(2000)]
    ids, starts, n = FastChineseEncoder(tok).encode(texts)
    ref = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    bounds = np.cumsum(n)[:-1]
    got = [(a.tolist(), b.tolist()) for a, b in zip(np.split(ids, bounds), np.split(starts, bounds))]
    assert got == [(list(e.ids), [o[0] for o in e.offsets]) for e in ref]


def test_segment_and_pretrain_carry_prepares_folding(pretrain_chain, tmp_path):
    """The demo chain (prepare with the default fullwidth=alnum → segment → pretrain): the
    pretrained model's tokenizer turns full-width digits into the digits it was trained on."""
    from workbench.config import load_stage_config
    from workbench.stages import pretrain

    run = pretrain_chain
    manifest = json.loads((run / "segmented" / "manifest.json").read_text(encoding="utf-8"))
    expected = char_map(CleanConfig())
    assert manifest["tokenizer"]["char_map"] == expected and len(expected) == 63
    assert installed_char_map(load_tokenizer(str(run / "segmented" / "tokenizer"), needed_by="t")) == expected
    out = tmp_path / "pretrained"
    pretrain.run(load_stage_config("pretrain", None, [f"run={run}", f"model={run / 'base-model'}", f"output={out}", "max_steps=1", "batch_size=4",
                                                      "eval_steps=1", "save_steps=1", "logging_steps=1"]))
    tok = load_tokenizer(str(out), needed_by="t")
    assert installed_char_map(tok) == expected
    positions = json.loads((out / "config.json").read_text())["max_position_embeddings"]
    assert tok.model_max_length == positions  # not 1e30: pipeline(truncation=True) can cut to it
    assert tok("５星好评")["input_ids"] == tok("5星好评")["input_ids"]

    # ... and so do the fine-tuned model and its export, in a plain transformers pipeline()
    from finetune_fixtures import reviews, write_tsv
    from transformers import pipeline

    from workbench.stages import export, finetune

    rows = [(label, text.replace("1", "１").replace("2", "２")) for label, text in reviews(20)]
    write_tsv(tmp_path / "train.tsv", rows[:30])
    write_tsv(tmp_path / "valid.tsv", rows[30:])
    finetune.run(load_stage_config("finetune", None, [f"model={out}", f"train={tmp_path / 'train.tsv'}",
                                                      f"valid={tmp_path / 'valid.tsv'}", f"output={tmp_path / 'ft'}",
                                                      "max_steps=2", "batch_size=8", "max_length=32"]))
    export.run(load_stage_config("export", None, [f"input={tmp_path / 'ft'}", f"output={tmp_path / 'export'}"]))
    assert "folds 63 characters" in (tmp_path / "export" / "README.md").read_text(encoding="utf-8")
    nlp = pipeline("text-classification", model=str(tmp_path / "export"), top_k=None)
    assert nlp("５星好评，用了２天")[0] == nlp("5星好评，用了2天")[0]


def test_unk_report_names_the_raw_text_behind_unk(model_dir):
    from workbench.vocab.tokenizer import unk_report

    plain = load_tokenizer(str(model_dir), needed_by="t")
    texts = ["人民日报２０２６年", "３月３日", "人民日报"]  # full-width digits the vocabulary lacks
    rep = unk_report(texts, plain)
    assert rep["unk"] == 3 and rep["top_unk"] == [["３", 2], ["２０２６", 1]] and rep["tokens"] == 14
    folded = install_char_map(plain, char_map(CleanConfig()))
    assert unk_report(texts, folded)["unk"] == 0
