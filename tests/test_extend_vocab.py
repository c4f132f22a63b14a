"""extend-vocab: domain tokens into [unusedN] rows or appended rows, mean-of-pieces init,
a tokenizer and model that reload consistently and run through segment and pretrain."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import build_char_vocab_model
from workbench.config import load_stage_config
from workbench.errors import StageInputError

# Domain lines the base vocabulary has never seen: an emoji, a latin product name, a shop
# name from a lexicon. Mixed into real reviews.
DOMAIN = ["在京东商城买的iphonex，很好用😊😊", "京东商城发货快😊，iphonex屏幕清楚", "iPhoneX电池一般，京东商城客服还行😊"]


def _cfg(stage: str, *overrides: str):
    return load_stage_config(stage, None, [str(o) for o in overrides])


@pytest.fixture(scope="module")
def base(tmp_path_factory, review_lines):
    """A prepared corpus (real reviews + domain lines) and a tiny BERT whose vocabulary holds
    the reviews' characters but not the emoji, with weights (so rows can be compared)."""
    from transformers import BertConfig, BertForMaskedLM

    from workbench.stages import prepare

    tmp = tmp_path_factory.mktemp("extend")
    lines = review_lines[:200] + [f"{d}{i}" for i in range(30) for d in DOMAIN]
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    run = tmp / "run"
    prepare.run(_cfg("prepare", f"input={corpus}", f"run={run}", "split.valid_fraction=0.1", "dedup.near=false"))
    latin = "abcdefghijklmnopqrstuvwxyz0123456789"
    model_dir = build_char_vocab_model(tmp / "base", [t.lower() for t in review_lines[:200]] + [latin, "京东商城"],
                                       extra=["##" + c for c in latin])
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig.from_pretrained(model_dir)).save_pretrained(model_dir)
    lex = tmp / "shops.txt"
    lex.write_text("京东商城\t1000\n", encoding="utf-8")
    return run, model_dir, lex


def _extend(run: Path, model: Path, out: Path, *overrides: str):
    from workbench.stages.extend_vocab import run as extend

    return extend(_cfg("extend-vocab", f"run={run}", f"model={model}", f"output={out}", "min_count=10", *overrides))


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_unused_slots_take_the_domain_tokens_without_resizing(base, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from workbench.vocab.tokenizer import load_tokenizer

    run, model_dir, lex = base
    out = tmp_path / "ext"
    m = _extend(run, model_dir, out, f"lexicons=[{{path: {lex}}}]")
    old_tok = load_tokenizer(str(model_dir), needed_by="test")
    new_tok = AutoTokenizer.from_pretrained(out)
    assert len(new_tok) == len(old_tok) and m["counts"]["appended"] == 0
    added = {r["token"]: r for r in _rows(out / "new_tokens.tsv")}
    assert {"😊", "iphonex", "京东商城"} <= set(added), added.keys()
    assert added["iphonex"]["source"] == "latin" and added["京东商城"]["source"] == "lexicon"
    assert all(r["placement"] == "unused" for r in added.values())
    # Each is one token now, where it was [UNK] or several pieces before; a repeated emoji too.
    text = "京东商城的iPhoneX😊😊"
    assert new_tok.tokenize(text) == ["京东商城", "的", "iphonex", "😊", "😊"]
    assert "[UNK]" in old_tok.tokenize(text)
    assert m["tokenization_after"]["unk_rate"] < m["tokenization_before"]["unk_rate"]
    assert m["tokenization_after"]["tokens_per_char"] < m["tokenization_before"]["tokens_per_char"]
    # Rows: the new ones are the mean of the old pieces' rows (the [UNK] row for the emoji),
    # every other row is untouched; the MLM bias follows.
    old = AutoModelForMaskedLM.from_pretrained(model_dir)
    new = AutoModelForMaskedLM.from_pretrained(out)
    e_old, e_new = old.get_input_embeddings().weight.detach(), new.get_input_embeddings().weight.detach()
    b_old, b_new = old.cls.predictions.bias.detach(), new.cls.predictions.bias.detach()
    changed = sorted(int(r["row"]) for r in added.values())
    same = np.setdiff1d(np.arange(len(old_tok)), changed)
    assert torch.equal(e_old[same], e_new[same])
    pieces = old_tok("iphonex", add_special_tokens=False)["input_ids"]
    assert len(pieces) >= 2
    row = int(added["iphonex"]["row"])
    assert torch.allclose(e_new[row], e_old[pieces].mean(0), atol=1e-6)
    assert torch.allclose(b_new[row], b_old[pieces].mean(), atol=1e-6)
    assert torch.allclose(e_new[int(added["😊"]["row"])], e_old[old_tok.unk_token_id])
    # Tied output embeddings: the MLM decoder sees the same new rows.
    assert torch.equal(new.get_output_embeddings().weight[row], e_new[row])
    # vocab.txt agrees with the tokenizer, line for line.
    vocab_lines = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == len(new_tok)
    assert all(new_tok.convert_tokens_to_ids(t) == i for i, t in enumerate(vocab_lines[:300]))


def test_resize_appends_rows_and_the_result_segments_and_pretrains(base, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from workbench.segment.fast_tokenize import supported
    from workbench.stages import pretrain, segment

    run, model_dir, lex = base
    out = tmp_path / "ext"
    m = _extend(run, model_dir, out, "placement=resize", f"lexicons=[{{path: {lex}}}]")
    assert m["counts"]["into_unused"] == 0 and m["counts"]["appended"] >= 3
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.vocab_size == len(tok) == m["counts"]["vocab_size_before"] + m["counts"]["appended"]
    ids = tok("京东商城😊", return_tensors="pt")
    logits = model(**ids).logits
    assert logits.shape[-1] == len(tok)
    assert ids["input_ids"][0, 1].item() >= m["counts"]["vocab_size_before"]  # an appended row
    # A multi-character added token rules the per-character fast path out; segment falls back.
    assert not supported(tok)
    seg = segment.run(_cfg("segment", f"run={run}", f"model={out}", f"output={tmp_path / 'seg'}", "max_seq_length=64",
                           f"lexicons=[{{path: {lex}, entity_type: ORG}}]"))
    assert seg["tokenizer"]["vocab_sha256"] == m["tokenizer"]["vocab_sha256"]
    pre = pretrain.run(_cfg("pretrain", f"run={run}", f"input={tmp_path / 'seg'}", f"model={out}",
                            f"output={tmp_path / 'pre'}", "max_steps=2", "batch_size=4", "eval_steps=1", "save_steps=2"))
    assert pre["counts"]["steps"] == 2 and np.isfinite(pre["metrics"]["eval_loss"])
    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "pre").config.vocab_size == len(tok)


def test_single_character_added_tokens_keep_the_fast_path_exact(base, tmp_path):
    """Emoji become single-character added tokens: the per-character table handles them and
    gives exactly the Rust tokenizer's ids and offsets."""
    from workbench.segment.fast_tokenize import FastChineseEncoder, supported
    from workbench.vocab.tokenizer import load_tokenizer

    run, model_dir, _ = base
    out = tmp_path / "ext"
    _extend(run, model_dir, out, "sources=[unk_chars, latin]")
    tok = load_tokenizer(str(out), needed_by="test")
    assert supported(tok)
    texts = DOMAIN + ["😊😊好😊iphonex😊", "a😊b 😊 ", "京东商城😊！"]
    ids, starts, per_doc = FastChineseEncoder(tok).encode(texts)
    ref = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    assert ids.tolist() == [i for e in ref for i in e.ids]
    assert starts.tolist() == [o[0] for e in ref for o in e.offsets]
    assert per_doc.tolist() == [len(e.ids) for e in ref]


def test_bad_inputs_are_clear_errors(base, tmp_path, cli):
    run, model_dir, _ = base
    with pytest.raises(StageInputError, match="not a directory"):
        _extend(run, tmp_path / "no-such-model", tmp_path / "x")
    (tmp_path / "empty-model").mkdir()
    (tmp_path / "empty-model" / "vocab.txt").write_text((model_dir / "vocab.txt").read_text(encoding="utf-8"),
                                                        encoding="utf-8")
    with pytest.raises(StageInputError, match="no config.json"):
        _extend(run, tmp_path / "empty-model", tmp_path / "x")
    with pytest.raises(StageInputError, match=r"\[unusedN\] slots and keep_unused=99: no room"):
        _extend(run, model_dir, tmp_path / "x", "keep_unused=99")
    code, _, err = cli("extend-vocab", f"run={run}", f"model={model_dir}", "min_count=0", "sources=[]")
    assert code == 2 and "min_count" in err and "sources" in err
    with pytest.raises(StageInputError, match="prepare"):
        _extend(tmp_path, model_dir, tmp_path / "x", f"input={model_dir}")


def test_manifest_names_what_was_added(base, tmp_path):
    run, model_dir, _ = base
    out = tmp_path / "ext"
    _extend(run, model_dir, out, "max_new_tokens=1")
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert m["stage"] == "extend-vocab" and m["counts"]["added"] == 1 and m["counts"]["left_out"] >= 1
    assert m["top_new_tokens"][0]["token"] == "😊"  # the most frequent candidate wins the one slot
