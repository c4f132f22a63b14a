"""evaluate, MLM scoring: any masked LM's held-out MLM loss on a segment output, with fixed masks.

Tiny real models on the `pretrain_chain` (300 real reviews, a 2 x 32 BERT): the base model and
a pretrained one see the same masks and the pretrained one scores lower; the numbers are
pretrain's own final evaluation; an all-valid prepared set can be scored (and not trained on);
mixtures and bad models end in one clear error, exit code 2.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import build_char_vocab_model
from finetune_fixtures import one_thread, reviews, write_tsv  # noqa: F401  (one_thread: autouse fixture)
from workbench.config import load_stage_config
from workbench.errors import ConfigError, StageInputError


def _cfg(stage: str, *overrides: str):
    return load_stage_config(stage, None, [str(o) for o in overrides])


def _evaluate(model: Path, segmented: Path, out: Path, *overrides: str) -> dict:
    from workbench.stages.evaluate import run

    run(_cfg("evaluate", f"model={model}", f"input={segmented}", f"output={out}", *overrides))
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chain(pretrain_chain) -> Path:
    return pretrain_chain


@pytest.fixture(scope="module")
def pretrained(chain, tmp_path_factory) -> Path:
    """A tiny pretrain (30 steps, batch 8, default masking and seed) with a final evaluation."""
    from workbench.stages.pretrain import run as pretrain

    out = tmp_path_factory.mktemp("mlm") / "pretrain"
    pretrain(_cfg("pretrain", f"run={chain}", f"model={chain / 'base-model'}", f"output={out}", "lr=1e-3",
                  "max_steps=30", "batch_size=8", "eval_steps=30", "save_steps=30", "logging_steps=10"))
    return out


def test_two_models_see_the_same_masks_and_pretraining_lowers_the_loss(chain, pretrained, tmp_path):
    seg = chain / "segmented"
    base = _evaluate(chain / "base-model", seg, tmp_path / "base")
    after = _evaluate(pretrained, seg, tmp_path / "after")
    # Same blocks, same masked positions and replacement tokens (hash of every batch's masked
    # inputs and labels), whatever the model.
    for key in ("blocks", "batches", "tokens", "labelled_tokens", "masks_sha256", "split", "batch_size", "seed"):
        assert base[key] == after[key], key
    assert base["split"] == "valid" and base["batch_size"] == 32 and base["blocks"] > 0
    assert 0 < base["labelled_tokens"] < base["tokens"]
    # The masks, drawn again outside the stage by pretrain's eval collator: the same hash.
    from workbench.config import MaskingConfig
    from workbench.manifest import load_stage_dataset
    from workbench.stages.pretrain import eval_mask_collator
    from workbench.vocab.tokenizer import load_tokenizer

    valid = load_stage_dataset(seg, needed_by="test")["valid"]
    collator = eval_mask_collator(MaskingConfig(), load_tokenizer(str(chain / "base-model"), needed_by="test"), 0)
    collator.start_pass(0)
    digest, labelled = hashlib.sha256(), 0
    for start in range(0, len(valid), 32):
        batch = collator([valid[i] for i in range(start, min(start + 32, len(valid)))])
        digest.update(batch["input_ids"].numpy().tobytes())
        digest.update(batch["labels"].numpy().tobytes())
        labelled += int((batch["labels"] != -100).sum())
    assert digest.hexdigest() == base["masks_sha256"] and labelled == base["labelled_tokens"]
    # Another seed: other masks (so the hash does tell masks apart).
    other = _evaluate(chain / "base-model", seg, tmp_path / "seed1", "seed=1")
    assert other["masks_sha256"] != base["masks_sha256"]
    # Continued pretraining helped on held-out text; the numbers are coherent.
    assert after["loss"] < base["loss"] - 0.1, (base["loss"], after["loss"])
    for m in (base, after):
        assert m["perplexity"] == pytest.approx(2.718281828459045 ** m["loss"])
        assert 0.0 <= m["masked_accuracy"] <= 1.0
    assert after["masked_accuracy"] > base["masked_accuracy"]
    manifest = json.loads((tmp_path / "after" / "manifest.json").read_text())
    assert manifest["stage"] == "evaluate" and manifest["task"] == "mlm"
    assert manifest["counts"]["labelled_tokens"] == after["labelled_tokens"]
    assert sorted(p.name for p in (tmp_path / "after").iterdir()) == ["manifest.json", "metrics.json"]


def test_equals_pretrains_own_final_evaluation(chain, pretrained, tmp_path):
    """Same model, blocks (valid), masking, seed and batch size as pretrain's final
    evaluation: the same masks, so the same loss (HF Trainer's mean over batches) and
    masked-token accuracy over the same labelled tokens."""
    m = _evaluate(pretrained, chain / "segmented", tmp_path / "ev", "batch_size=8")
    pm = json.loads((pretrained / "manifest.json").read_text())
    final = pm["metrics"]
    last_eval = [h for h in json.loads((pretrained / "metrics.json").read_text())["log_history"] if "eval_loss" in h][-1]
    assert m["batches"] > 1  # several batches: the averaging matters
    assert m["loss_batch_mean"] == pytest.approx(final["eval_loss"], abs=1e-5)
    assert m["masked_accuracy"] == pytest.approx(final["eval_masked_accuracy"], abs=1e-9)
    assert m["labelled_tokens"] == last_eval["eval_masked_tokens"]
    assert m["blocks"] == pm["counts"]["eval_blocks"]
    # `loss` weighs every labelled token once; with unequal batches it differs slightly.
    assert m["loss"] == pytest.approx(m["loss_batch_mean"], rel=0.05)


def test_all_valid_prepared_set_is_scored_and_not_trained_on(chain, review_lines, tmp_path, cli):
    from workbench.stages import prepare, segment

    corpus = tmp_path / "held_out.txt"
    corpus.write_text("\n".join(review_lines[300:400]), encoding="utf-8")
    run = tmp_path / "run"
    pm = prepare.run(_cfg("prepare", f"input={corpus}", f"run={run}", "split.valid_fraction=1.0"))
    assert pm["counts"]["splits"]["train"] == 0 and pm["counts"]["splits"]["valid"] > 50
    sm = segment.run(_cfg("segment", f"run={run}", f"model={chain / 'base-model'}", "max_seq_length=64"))
    assert sm["counts"]["blocks"]["train"] == 0 and sm["counts"]["blocks"]["valid"] > 0
    m = _evaluate(chain / "base-model", run / "segmented", tmp_path / "ev")
    assert m["blocks"] == sm["counts"]["blocks"]["valid"] and m["labelled_tokens"] > 0
    # split=train has no blocks: an error naming the splits there are.
    code, _, err = cli("evaluate", f"model={chain / 'base-model'}", f"input={run / 'segmented'}", "split=train",
                       f"output={tmp_path / 'ev2'}")
    assert code == 2 and "no train blocks" in err and "split=valid" in err and "Traceback" not in err
    # pretrain refuses it, clearly.
    code, _, err = cli("pretrain", f"run={run}", f"model={chain / 'base-model'}", "max_steps=1")
    assert code == 2 and "no train blocks" in err and "Traceback" not in err
    # test_fraction=1.0 likewise puts everything in test; fractions above 1 are refused.
    pm = prepare.run(_cfg("prepare", f"input={corpus}", f"output={tmp_path / 'p2'}", "split.valid_fraction=0",
                          "split.test_fraction=1.0"))
    assert pm["counts"]["splits"]["train"] == 0 and pm["counts"]["splits"]["test"] == pm["counts"]["kept"]
    with pytest.raises(ConfigError, match="above 1"):
        _cfg("prepare", f"input={corpus}", "split.valid_fraction=0.6", "split.test_fraction=0.5")


def test_split_index_holds_every_document_out_at_fraction_one():
    from workbench.corpus.split import split_index

    texts = [f"文本{i}" for i in range(2000)]
    assert {split_index(t, 3, 1.0, 0.0) for t in texts} == {1}
    assert {split_index(t, 3, 0.0, 1.0) for t in texts} == {2}
    assert {split_index(t, 3, 0.7, 0.3) for t in texts} == {1, 2}
    # Fractions below 1: the same hash threshold as before, about that share in valid.
    assert sum(split_index(t, 3, 0.1, 0.0) == 1 for t in texts) == pytest.approx(200, abs=50)


def test_bad_models_and_mixtures_are_clear_errors(chain, tmp_path, cli):
    import torch
    from transformers import BertModel

    seg, base = chain / "segmented", chain / "base-model"

    def fails(*args: str) -> str:
        code, _, err = cli("evaluate", *args, f"output={tmp_path / 'out'}")
        assert code == 2, err
        assert "Traceback" not in err
        return err

    # A model with another vocabulary: pretrain's vocabulary check and message.
    other = build_char_vocab_model(tmp_path / "other", ["完全不同的一个词表"])
    err = fails(f"model={other}", f"input={seg}")
    assert "another vocabulary" in err and "re-run `workbench segment" in err
    # A BERT without its MLM head (BertModel weights): an error, not a random head.
    headless = tmp_path / "headless"
    shutil.copytree(base, headless, ignore=shutil.ignore_patterns("manifest.json", "model.safetensors", "config.json"))
    torch.manual_seed(0)
    BertModel.from_pretrained(base).save_pretrained(headless)
    err = fails(f"model={headless}", f"input={seg}")
    assert "no MLM head" in err and "meaningless" in err
    # A finetune output with a segment output; a masked LM with a labelled file.
    rows = reviews(20)
    train = write_tsv(tmp_path / "train.tsv", rows)
    code, _, err = cli("finetune", "task=classification", f"model={base}", f"train={train}", f"valid={train}",
                       f"output={tmp_path / 'ft'}", "max_steps=2", "batch_size=16", "logging_steps=1000")
    assert code == 0, err
    err = fails(f"model={tmp_path / 'ft'}", f"input={seg}")
    assert "`finetune` output" in err and "input= a labelled file" in err
    err = fails(f"model={base}", f"input={train}")
    assert "masked LM" in err and "input= a `segment` output" in err
    # A prepare output is not a segment output.
    err = fails(f"model={base}", f"input={chain / 'prepared'}")
    assert "`prepare` output" in err and "workbench segment" in err
    # Options of the other kind: config errors, listed together.
    err = fails(f"model={tmp_path / 'ft'}", f"input={train}", "split=test", "max_blocks=5")
    assert "2 config problem(s)" in err and "split:" in err and "max_blocks:" in err
    err = fails(f"model={base}", f"input={seg}", "worst=3", "masking.strategy=token", "masking.sop=true")
    assert "worst (task evaluation) and masking (MLM scoring)" in err and "masking.sop" in err
    with pytest.raises(ConfigError, match="max_blocks"):
        _cfg("evaluate", f"model={base}", f"input={seg}", "max_blocks=0")
    assert not (tmp_path / "out").exists()


def test_max_blocks_and_split_all(chain, tmp_path):
    seg = chain / "segmented"
    seg_manifest = json.loads((seg / "manifest.json").read_text())
    blocks = seg_manifest["counts"]["blocks"]
    m = _evaluate(chain / "base-model", seg, tmp_path / "all", "split=all", "max_blocks=40", "batch_size=16")
    assert m["blocks"] == min(40, sum(blocks.values())) and m["batches"] == 3 and m["split"] == "all"
    first = _evaluate(chain / "base-model", seg, tmp_path / "first", "split=train", "max_blocks=32", "batch_size=16")
    assert first["blocks"] == 32 and first["batches"] == 2
    with pytest.raises(StageInputError, match="no test blocks"):
        _evaluate(chain / "base-model", seg, tmp_path / "none", "split=test")
