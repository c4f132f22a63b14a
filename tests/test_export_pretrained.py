"""export of a pretrain output: a fill-mask-ready directory with a model card.

A tiny chain (prepare → vocab → init-model → segment on 300 real reviews) is pretrained for
a few steps; its export must load in plain transformers' fill-mask pipeline in a fresh
process, give the same MLM logits as the pretrain output, state corpus size, budget,
masking, base model and the held-out loss before / after (the figures `workbench evaluate`
gives for the two models), and hold no corpus text.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finetune_fixtures import one_thread  # noqa: F401  (autouse: one torch thread)


def _cfg(stage: str, *overrides: str):
    from workbench.config import load_stage_config

    return load_stage_config(stage, None, [str(o) for o in overrides])


@pytest.fixture(scope="module")
def pretrained(pretrain_chain) -> Path:
    from workbench.stages.pretrain import run as pretrain

    run = pretrain_chain
    pretrain(_cfg("pretrain", f"run={run}", f"model={run / 'base-model'}", "lr=2e-3", "max_steps=30",
                  "batch_size=8", "eval_steps=30", "save_steps=30", "logging_steps=10", "masking.strategy=whole_word"))
    return run


@pytest.fixture(scope="module")
def exported(pretrained) -> Path:
    from workbench.cli import main

    assert main(["export", f"run={pretrained}", f"input={pretrained / 'pretrain'}"]) == 0
    return pretrained / "export" / "pretrain"  # the default output of a pretrain input


def test_fill_mask_pipeline_in_a_fresh_process(exported, pretrained):
    code = f"""
        import json, torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline
        fill = pipeline("fill-mask", model="{exported}")
        got = fill("这个东西很[MASK]。", top_k=3)
        a = AutoModelForMaskedLM.from_pretrained("{exported}").eval()
        b = AutoModelForMaskedLM.from_pretrained("{pretrained / 'pretrain'}").eval()
        enc = AutoTokenizer.from_pretrained("{exported}")(["质量很好，下次再来"], return_tensors="pt")
        with torch.no_grad():
            diff = (a(**enc).logits - b(**enc).logits).abs().max().item()
        print(json.dumps({{"n": len(got), "scores": [g["score"] for g in got], "diff": diff,
                          "arch": a.config.architectures}}))
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["n"] == 3 and got["scores"] == sorted(got["scores"], reverse=True)
    assert got["diff"] == 0.0 and got["arch"] == ["BertForMaskedLM"]


def test_card_states_corpus_budget_masking_base_and_before_after(exported, pretrained):
    from workbench.stages.evaluate import score_mlm

    card = (exported / "README.md").read_text(encoding="utf-8")
    pm = json.loads((pretrained / "pretrain" / "manifest.json").read_text(encoding="utf-8"))
    seg = json.loads((pretrained / "segmented" / "manifest.json").read_text(encoding="utf-8"))
    prep = json.loads((pretrained / "prepared" / "manifest.json").read_text(encoding="utf-8"))
    for needle in ("## Base model", str(pretrained / "base-model"), "## Corpus", "reviews.txt",
                   f"train {prep['counts']['splits']['train']:,}", f"{seg['counts']['tokens']:,}",
                   "## Budget", f"{pm['counts']['tokens_seen']:,} tokens seen", "30 steps of 8 blocks",
                   "## Masking", "`whole_word`", "mask_prob 0.15", "## Held-out MLM loss", "before: base model"):
        assert needle in card, needle
    mlm = json.loads((exported / "metrics.json").read_text(encoding="utf-8"))["mlm_before_after"]
    assert mlm["measured"] and mlm["before"]["masks_sha256"] == mlm["after"]["masks_sha256"]
    # The figures are evaluate's own MLM scoring of the two models with pretrain's masks.
    for role, model in (("before", pretrained / "base-model"), ("after", pretrained / "pretrain")):
        score_mlm(_cfg("evaluate", f"model={model}", f"input={pretrained / 'segmented'}", "batch_size=8",
                       f"output={pretrained / ('mlm-' + role)}"))
        ref = json.loads((pretrained / f"mlm-{role}" / "metrics.json").read_text(encoding="utf-8"))
        assert mlm[role]["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert f"{ref['loss']:.4f} | {ref['perplexity']:.1f}" in card
    assert mlm["after"]["loss"] < mlm["before"]["loss"]  # 30 steps at lr 2e-3 move a random init
    # "after" re-measures pretrain's own final eval_loss (same blocks, masks, batches)
    assert mlm["after"]["loss_batch_mean"] == pytest.approx(pm["metrics"]["eval_loss"], rel=1e-4)


def test_no_corpus_text_and_readable_modes(exported, pretrained, review_lines):
    files = [p for p in exported.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "README.md", "metrics.json",
            "manifest.json"} <= names
    assert "loss.png" not in names
    text = "\n".join(p.read_text(encoding="utf-8", errors="ignore") for p in files if p.suffix in (".md", ".json"))
    leaks = [line for line in review_lines[:300] if len(line) >= 8 and line[:8] in text]
    assert not leaks, leaks[:3]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files)
    assert stat.S_IMODE(exported.stat().st_mode) == 0o755


def test_fp16_without_mlm_eval_and_serving_formats_refused(pretrained, cli, tmp_path):
    from safetensors import safe_open

    code, out, err = cli("export", f"input={pretrained / 'pretrain'}", f"output={tmp_path / 'fp16'}", "format=fp16",
                         "mlm_eval=false")
    assert code == 0, err
    with safe_open(str(tmp_path / "fp16" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    card = (tmp_path / "fp16" / "README.md").read_text(encoding="utf-8")
    assert "Not measured against the base model (mlm" in card and "eval=false)" in card and "Pretrain's own final evaluation" in card
    code, _, err = cli("export", f"input={pretrained / 'pretrain'}", f"output={tmp_path / 'onnx'}", "format=onnx")
    assert code == 2 and "format=hf or format=fp16" in err


def test_card_of_a_pair_objective_says_what_is_left_out(tmp_path):
    from workbench.pretrained_export import pretrain_facts, pretrained_card

    upstream = {"config": {"objective": "mlm+sop", "masking": {"strategy": "span", "mask_prob": 0.15, "max_span": 5},
                           "batch_size": 8}, "counts": {"steps": 3}, "metrics": {"eval_loss": 4.0}}
    card = pretrained_card("m", pretrain_facts(upstream, tmp_path), {"measured": False, "reason": "no blocks"}, "hf")
    assert "`mlm+sop`: its sentence-pair head and the pooler it trained are not in this fill-mask model" in card
    assert "max_span 5" in card and "loss 4.0000" in card and "n/a" in card  # missing facts shown as n/a
