"""Issue 11 (items 7, 9): jieba's cache off the shared temp dir, the whole run's train loss after
a resume, linear cleaning of one huge line, and model= paths that fail at once without the hub."""

from __future__ import annotations

import json
import logging
import marshal
import os
import re
import socket
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from workbench.config import CleanConfig, PIIConfig, load_stage_config
from workbench.errors import StageInputError

TEXT = "今天天气不错，我们去北京的公园玩吧。张三说明天下雨。"


# --------------------------------------------------------------------------- jieba cache
@pytest.fixture
def shared_tmp(tmp_path, monkeypatch) -> Path:
    """A fresh stand-in for the machine's shared /tmp, and jieba's global tokenizer restored after."""
    import jieba

    d = tmp_path / "shared-tmp"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    monkeypatch.setattr(jieba.dt, "tmp_dir", jieba.dt.tmp_dir)
    try:
        from workbench.segment import jieba_cache
    except ImportError:  # the code before the fix: these tests show what it did
        return d
    monkeypatch.setattr(jieba_cache, "_fallback_dir", None)
    return d


def _jieba_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and p.name.startswith("jieba"))


def test_jieba_cache_lives_in_a_private_dir_not_in_the_shared_temp_dir(shared_tmp, tmp_path, monkeypatch):
    from workbench.corpus.desensitise import UnitSplitter
    from workbench.segment.segmenter import Segmenter

    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "wb-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    words = Segmenter("jieba", [], {"nr": "PER"}).cut(TEXT)
    assert "北京" in words and "公园" in words
    assert "北京" in UnitSplitter("word")(TEXT)
    assert _jieba_files(shared_tmp) == []  # nothing in the shared temp dir
    private = tmp_path / "wb-cache" / "jieba"
    assert _jieba_files(private) == ["jieba.cache"]
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert not (tmp_path / "xdg").exists()  # WORKBENCH_CACHE_DIR wins over XDG_CACHE_HOME

    # Without WORKBENCH_CACHE_DIR: $XDG_CACHE_HOME/zh-workbench/jieba; a second tokenizer reads the cache.
    monkeypatch.delenv("WORKBENCH_CACHE_DIR")
    assert Segmenter("jieba", [], {}).cut(TEXT) == words
    assert _jieba_files(tmp_path / "xdg" / "zh-workbench" / "jieba") == ["jieba.cache"]
    assert _jieba_files(shared_tmp) == []


def test_a_world_writable_or_planted_cache_is_never_loaded(shared_tmp, tmp_path, monkeypatch, caplog):
    """A cache another user could have written (world-writable dir, or the shared temp dir
    itself) is not read: a planted cache with a one-word dictionary would change the cut."""
    from workbench.segment.segmenter import Segmenter

    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "good-cache"))
    reference = Segmenter("jieba", [], {}).cut(TEXT)
    poisoned = marshal.dumps(({"今": 1, "今天": 1}, 2))
    bad = tmp_path / "bad-cache"
    (bad / "jieba").mkdir(parents=True)
    os.chmod(bad / "jieba", 0o777)
    for d in (bad / "jieba", shared_tmp):
        (d / "jieba.cache").write_bytes(poisoned)
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(bad))
    with caplog.at_level(logging.WARNING, logger="workbench.segment"):
        got = Segmenter("jieba", [], {}).cut(TEXT)
    assert got == reference
    assert "is not used" in caplog.text and "world-writable" in caplog.text
    for d in (bad / "jieba", shared_tmp):
        assert (d / "jieba.cache").read_bytes() == poisoned  # neither read nor replaced
    assert _jieba_files(bad) == ["jieba.cache"]

    from workbench.segment.jieba_cache import jieba_cache_dir

    link = tmp_path / "link-cache"
    link.mkdir()
    (link / "jieba").symlink_to(tmp_path / "wb-elsewhere", target_is_directory=True)
    (tmp_path / "wb-elsewhere").mkdir(mode=0o700)
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(link))
    assert jieba_cache_dir() is None  # a symlink could be re-pointed after the check


# --------------------------------------------------------------------------- train_loss
def _pretrain(run: Path, out: Path, *overrides: str, callbacks=None):
    from workbench.stages.pretrain import run as pretrain

    cfg = load_stage_config("pretrain", None, [f"run={run}", f"model={run / 'base-model'}", f"output={out}", "lr=1e-3",
                                               "batch_size=16", "warmup_ratio=0.2", *overrides])
    return pretrain(cfg, callbacks=callbacks)


def _crash_at(step: int):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt(f"emulated crash at step {step}")

    return Crash()


def _logged_losses(out: Path) -> list[tuple[int, float]]:
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


@pytest.mark.parametrize("logging_steps", [1, 4])
def test_train_loss_is_the_whole_runs_mean_after_a_resume(pretrain_chain, tmp_path, logging_steps):
    # Checkpoints at 6 and 12; the crash at step 8 resumes from 6. With logging_steps=4 the
    # checkpoint step is not a logging step: its log history must still cover steps 5-6.
    args = ("max_steps=12", "save_steps=6", "eval_steps=6", f"logging_steps={logging_steps}")
    a = _pretrain(pretrain_chain, tmp_path / "a", *args)
    with pytest.raises(KeyboardInterrupt):
        _pretrain(pretrain_chain, tmp_path / "b", *args, callbacks=[_crash_at(8)])
    b = _pretrain(pretrain_chain, tmp_path / "b", *args)
    assert b["resumed_from"].endswith("checkpoint-6") and a["resumed_from"] is None
    assert b["metrics"]["train_loss"] == pytest.approx(a["metrics"]["train_loss"], abs=1e-6)
    if logging_steps == 1:
        for out in ("a", "b"):
            steps, losses = zip(*_logged_losses(tmp_path / out))
            assert list(steps) == list(range(1, 13))
            assert a["metrics"]["train_loss"] == pytest.approx(float(np.mean(losses)), abs=1e-6)
    # A finished run reloads its last checkpoint and reports the same mean.
    again = _pretrain(pretrain_chain, tmp_path / "b", *args)
    assert again["resumed_from"].endswith("checkpoint-12")
    assert again["metrics"]["train_loss"] == pytest.approx(a["metrics"]["train_loss"], abs=1e-6)


# --------------------------------------------------------------------------- huge lines
def _pathological_lines(n: int) -> dict[str, str]:
    """One line of `n` characters each: runs of e-mail characters without a valid address
    (a base64-like blob, digits, a local part before a lone @), Weibo markup only, mixed."""
    weibo = "转发微博 https://t.cn/A6xyZ12 @小明_2020 #北京天气# [哈哈] 😂 ｉＰｈｏｎｅ　联系a.b@qq.com或13812345678，   "
    units = {"blob": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0123456789+_-.", "digits": "1", "mark": "@#[",
             "weibo": weibo}
    out = {k: (u * (n // len(u) + 1))[:n] for k, u in units.items()}
    out["local_at"] = "a" * (n - 1) + "@"
    out["local_at_domain"] = "a" * (n // 2) + "@" + "b-" * (n // 4)
    return out


@pytest.mark.timeout(30)
def test_cleaning_one_huge_line_is_linear():
    """Cleaning with PII scrubbing was quadratic in the length of a run of e-mail characters
    (before: ~20 s for one 200k-character line, so ~9 min for 1 MB and ~2.5 h for 4 MB; now
    ~0.1-1.4 s a line, ~5 s for all of these)."""
    from workbench.corpus.clean import EMAIL_RE, Cleaner

    cleaner = Cleaner(CleanConfig(min_chars=1, max_chars=None, pii=PIIConfig(enabled=True)))
    for n in (1_000_000, 4_000_000):
        for kind, line in _pathological_lines(n).items():
            text, reason = cleaner.clean(line)
            assert reason is None and len(text) > n // 10, kind
    # The same addresses as EMAIL_RE.sub over the whole text.
    emails_only = Cleaner(CleanConfig(min_chars=1, mentions=False, pii=PIIConfig(enabled=True)))
    for s in ("邮箱a.b@qq.com或x@y.cn1@z.org，id-9@@w.com", "a@b@c.de.f@g.hi", "1@2.3@x-y.zz.z@.com", "@@a.b@c.dd@"):
        assert emails_only.clean(s)[0] == EMAIL_RE.sub("<EMAIL>", s)


def test_over_long_rows_get_the_same_verdict_with_the_cheap_check():
    """Rows over 4x clean.max_chars may be rejected before cleaning, but only when the
    cleaning could not bring them under the limit: the verdicts equal full cleaning's."""
    from workbench.corpus.clean import Cleaner

    rows = ["很长的句子" * 2000,  # too_long, decided from counts
            "@张三 " * 2000 + "好" * 50,  # mentions eat almost all of it: kept
            "http://t.cn/x " * 3000 + "好" * 50,
            "[哈哈]" * 3000 + "中文" * 30,
            "#话题很长很长的名字#" * 1500 + "好" * 50]
    for kw in ({}, {"hashtags": "drop"}, {"emoji_codes": False}, {"repost_chains": "drop"}):
        limited = Cleaner(CleanConfig(max_chars=200, **kw))
        full = Cleaner(CleanConfig(max_chars=None, **kw))
        for row in rows:
            text, _ = full.clean(row)
            expected = "too_long" if len(text) > 200 else full.reject_reason(text)
            assert limited.clean(row)[1] == expected, (kw, row[:20])


# --------------------------------------------------------------------------- model= paths
class NetworkUsed(BaseException):
    """Raised by any socket use: not an Exception, so no retry loop or fallback swallows it."""


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE off (so the hub would be tried) but every socket fails the test; the
    cwd has a `runs/` folder, as in a project checkout."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network used: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    work = tmp_path / "project"
    (work / "runs").mkdir(parents=True)
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("model", ["runs/nope", "runs/vocab.txt", "model.safetensors", "runs\\nope", "nope/"])
def test_a_missing_local_model_path_fails_at_once_without_the_hub(no_network, model):
    from workbench.modeling import check_model_path
    from workbench.vocab.tokenizer import load_tokenizer

    name = re.escape(model)
    with pytest.raises(StageInputError, match=rf"model '{name}' is not a directory: .*does not exist"):
        load_tokenizer(model, needed_by="segment")
    with pytest.raises(StageInputError, match=rf"model '{name}' is not a directory"):
        check_model_path(model, needed_by="finetune")


def test_stages_with_a_missing_relative_model_fail_at_once(pretrain_chain, no_network, tmp_path):
    from finetune_fixtures import reviews, write_tsv

    from workbench.stages import finetune, pretrain, segment

    def cfg(stage, *overrides):
        return load_stage_config(stage, None, [str(o) for o in overrides])

    rows = reviews(8)
    write_tsv(tmp_path / "train.tsv", rows[:12])
    write_tsv(tmp_path / "valid.tsv", rows[12:])
    calls = {
        "segment": lambda: segment.run(cfg("segment", f"run={pretrain_chain}", "model=runs/nope",
                                           f"output={tmp_path / 'seg'}")),
        "pretrain": lambda: pretrain.run(cfg("pretrain", f"run={pretrain_chain}", "model=runs/nope",
                                             f"output={tmp_path / 'pt'}")),
        "finetune": lambda: finetune.run(cfg("finetune", "model=runs/nope", f"train={tmp_path / 'train.tsv'}",
                                             f"valid={tmp_path / 'valid.tsv'}", f"output={tmp_path / 'ft'}")),
    }
    for stage, call in calls.items():
        with pytest.raises(StageInputError, match=rf"{stage}: model 'runs/nope' is not a directory.*'runs' is a local"):
            call()


@pytest.fixture
def hub_unreachable(monkeypatch, tmp_path):
    """The hub cannot be reached (every connection fails as without network), an empty HF cache."""
    from huggingface_hub import constants

    attempts = []

    def unreachable(*args, **kwargs):
        attempts.append(args[:1])
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return attempts


def test_an_uncached_hub_id_offline_says_so_without_waiting(hub_unreachable, monkeypatch):
    from huggingface_hub import constants

    from workbench.vocab.tokenizer import load_tokenizer

    model = "zh-workbench-tests/no-such-model"
    with pytest.raises(StageInputError, match=r"(?s)not in the local Hugging Face cache .* cannot be reached .*fix: "
                                              r"pass model= a local directory"):
        load_tokenizer(model, needed_by="segment")
    # One HEAD request (and huggingface_hub's one-off agent-registry fetch), no retries.
    assert len(hub_unreachable) <= 2
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n = len(hub_unreachable)
    with pytest.raises(StageInputError, match=r"not in the local Hugging Face cache .*HF_HUB_OFFLINE=1"):
        load_tokenizer(model, needed_by="segment")
    assert len(hub_unreachable) == n  # offline: not even a probe


def test_a_cached_hub_model_loads_when_the_hub_is_unreachable(hub_unreachable, tmp_path):
    """A model in the HF cache loads from it (offline) instead of waiting on retries per file."""
    from conftest import build_char_vocab_model
    from transformers import BertConfig, BertForMaskedLM

    from workbench.modeling import load_masked_lm
    from workbench.vocab.tokenizer import load_tokenizer

    snapshot = tmp_path / "hf-cache" / "models--zh-workbench-tests--tiny" / "snapshots" / ("0" * 40)
    build_char_vocab_model(snapshot, [TEXT])
    BertForMaskedLM(BertConfig.from_pretrained(snapshot)).save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    tok = load_tokenizer("zh-workbench-tests/tiny", needed_by="pretrain")
    model, head_missing = load_masked_lm("zh-workbench-tests/tiny", needed_by="pretrain")
    assert len(tok) == model.config.vocab_size and not head_missing
    assert len(hub_unreachable) <= 2  # one probe, then offline from the cache
