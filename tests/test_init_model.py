"""init-model: a random BERT MLM that plain transformers loads, matching its tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import build_char_vocab_model
from workbench.config import load_stage_config
from workbench.errors import ConfigError, StageInputError
from workbench.stages.init_model import run as init_model
from workbench.vocab.tokenizer import load_tokenizer, vocab_fingerprint


def test_writes_a_plain_transformers_model(tmp_path, review_lines):
    vocab_dir = build_char_vocab_model(tmp_path / "tok", review_lines[:50])
    m = init_model(load_stage_config("init-model", None, [f"tokenizer={vocab_dir}", f"output={tmp_path / 'm'}",
                                                          "layers=2", "hidden=32", "heads=2"]))
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert model.config.vocab_size == len(tok) == m["counts"]["vocab_size"]
    assert m["tokenizer"]["vocab_sha256"] == vocab_fingerprint(load_tokenizer(str(vocab_dir), needed_by="t"))
    enc = tok([review_lines[0][:40]], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], len(tok))
    # Same seed → same weights
    init_model(load_stage_config("init-model", None, [f"tokenizer={vocab_dir}", f"output={tmp_path / 'm2'}",
                                                      "layers=2", "hidden=32", "heads=2"]))
    a = json.loads((tmp_path / "m" / "manifest.json").read_text())["outputs"]["model.safetensors"]
    b = json.loads((tmp_path / "m2" / "manifest.json").read_text())["outputs"]["model.safetensors"]
    assert a == b


def test_bad_shapes_and_missing_tokenizer(tmp_path):
    with pytest.raises(ConfigError, match="hidden \\(30\\) must be divisible by heads \\(4\\)"):
        load_stage_config("init-model", None, ["hidden=30", "heads=4"])
    with pytest.raises(StageInputError, match="is not a directory|cannot load a tokenizer"):
        init_model(load_stage_config("init-model", None, [f"tokenizer={tmp_path / 'none'}", f"output={tmp_path / 'o'}"]))
