"""pretrain: a tiny BERT really trains on segmented real text, resumes exactly, refuses bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, build_char_vocab_model
from workbench.config import load_stage_config
from workbench.errors import ConfigError, StageInputError


def _cfg(stage: str, *overrides: str):
    return load_stage_config(stage, None, [str(o) for o in overrides])


@pytest.fixture(scope="module")
def chain(pretrain_chain) -> Path:
    return pretrain_chain


def _pretrain(run: Path, out: Path, *overrides: str, callbacks=None):
    from workbench.stages.pretrain import run as pretrain

    cfg = _cfg("pretrain", f"run={run}", f"model={run / 'base-model'}", f"output={out}", "lr=1e-3", *overrides)
    return pretrain(cfg, callbacks=callbacks)


def test_tiny_model_learns_and_writes_a_plain_hf_model(chain, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out = tmp_path / "pretrain"
    m = _pretrain(chain, out, "max_steps=40", "batch_size=8", "eval_steps=20", "save_steps=20", "logging_steps=1",
                  "warmup_ratio=0.1")
    losses = [h["loss"] for h in json.loads((out / "metrics.json").read_text())["log_history"] if "loss" in h]
    assert len(losses) >= 35
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses
    assert m["counts"]["steps"] == 40 and m["counts"]["tokens_seen"] > 0
    assert m["counts"]["train_blocks"] > 0 and m["counts"]["eval_blocks"] > 0
    x = m["metrics"]
    assert x["eval_perplexity"] == pytest.approx(np.exp(x["eval_loss"]))
    assert 0.0 <= x["eval_masked_accuracy"] <= 1.0
    assert m["mlm_head_reinitialised"] is False
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    assert m["tokenizer"]["vocab_sha256"] == json.loads((chain / "segmented" / "manifest.json").read_text())[
        "tokenizer"]["vocab_sha256"]
    assert (out / "loss.png").stat().st_size > 1000
    model = AutoModelForMaskedLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tok)
    # Checkpoints + tensorboard persist beside the output; nothing of them inside it.
    ckpts = tmp_path / "pretrain-checkpoints"
    assert (ckpts / "checkpoint-40").is_dir() and any((ckpts / "tensorboard").iterdir())
    assert not any(p.name.startswith("checkpoint-") for p in out.iterdir())


class _Crash:
    """A TrainerCallback that raises at the end of step `at` (after the checkpoint before it)."""

    def __init__(self, at: int):
        from transformers import TrainerCallback

        at_step = at

        class Crash(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == at_step:
                    raise KeyboardInterrupt(f"emulated crash at step {at_step}")

        self.callback = Crash()


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(chain, tmp_path):
    # batch 64 x grad_accum 2 = 128 blocks a step (the last step of an epoch is shorter):
    # the 20 steps cross epoch boundaries, and the resume (checkpoint 10) and the crash
    # (step 13) both fall inside the second epoch. Dropout is on, so the torch RNG matters too.
    args = ("max_steps=20", "batch_size=64", "grad_accum=2", "save_steps=10", "eval_steps=10", "logging_steps=1",
            "warmup_ratio=0.2", "masking.strategy=entity_ngram")
    a = _pretrain(chain, tmp_path / "a", *args)
    with pytest.raises(KeyboardInterrupt):
        _pretrain(chain, tmp_path / "b", *args, callbacks=[_Crash(13).callback])
    assert not (tmp_path / "b").exists()  # no half-written output
    assert (tmp_path / "b-checkpoints" / "checkpoint-10").is_dir()
    b = _pretrain(chain, tmp_path / "b", *args)
    assert b["resumed_from"].endswith("checkpoint-10") and a["resumed_from"] is None
    assert 1.5 < a["counts"]["epochs"] < 3  # really crossed an epoch boundary
    assert abs(a["metrics"]["eval_loss"] - b["metrics"]["eval_loss"]) < 1e-4
    la = [(h["step"], h["loss"]) for h in json.loads((tmp_path / "a" / "metrics.json").read_text())["log_history"]
          if "loss" in h]
    lb = [(h["step"], h["loss"]) for h in json.loads((tmp_path / "b" / "metrics.json").read_text())["log_history"]
          if "loss" in h]
    assert dict(la)[20] == pytest.approx(dict(lb)[20], abs=1e-4)
    # With grad_accum=2 the logged train loss is a mean per labelled token, like the eval loss
    # (not the sum over the 2 micro-batches: see `accepts_loss_kwargs` in the stage).
    assert la[0][1] < np.log(a["tokenizer"]["vocab_size"]) + 1.0
    # Running the finished run again reloads checkpoint-20 instead of training a 21st step.
    again = _pretrain(chain, tmp_path / "b", *args)
    assert again["counts"]["steps"] == 20 and again["resumed_from"].endswith("checkpoint-20")
    assert again["metrics"]["eval_loss"] == pytest.approx(b["metrics"]["eval_loss"], abs=1e-6)
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4, msg=k)


def test_collator_masks_depend_on_the_batch_number_not_the_process(chain):
    """Same global batch number → same masks, in the main process or a DataLoader worker."""
    import datasets

    from workbench.config import MaskingConfig
    from workbench.masking.collator import MaskingCollator
    from workbench.stages.pretrain import StepSeededCollator
    from workbench.vocab.tokenizer import load_tokenizer

    tok = load_tokenizer(str(chain / "base-model"), needed_by="t")
    ds = datasets.load_from_disk(str(chain / "segmented" / "dataset"))["train"].select(range(48))

    def batches(workers: int, start: int):
        c = StepSeededCollator(MaskingCollator(MaskingConfig(), tok), seed=3, stream=0)
        c.start_pass(start)
        dl = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=c, num_workers=workers)
        return [b["input_ids"] for b in dl]

    main, workers = batches(0, 0), batches(2, 0)
    assert all(torch.equal(x, y) for x, y in zip(main, workers, strict=True))
    shifted = batches(0, 1)  # another place in training → other masks
    assert not all(torch.equal(x, y) for x, y in zip(main, shifted))


def test_refuses_data_made_with_another_vocabulary(chain, tmp_path):
    from workbench.stages import segment

    other = build_char_vocab_model(tmp_path / "other-model", ["今天天气很好，我们去公园散步。"] * 2,
                                   extra=[f"词{i}" for i in range(120)])
    segment.run(_cfg("segment", f"input={chain / 'prepared'}", f"model={other}", "max_seq_length=64",
                     f"output={tmp_path / 'seg-other'}"))
    with pytest.raises(StageInputError, match="another vocabulary") as e:
        _pretrain(chain, tmp_path / "pt", f"input={tmp_path / 'seg-other'}", "max_steps=1")
    assert "re-run `workbench segment model=" in str(e.value) and str(other) in str(e.value)
    assert not (tmp_path / "pt").exists()


def test_refuses_a_prepare_output_as_input(chain, tmp_path):
    with pytest.raises(StageInputError, match="is a `prepare` output"):
        _pretrain(chain, tmp_path / "pt", f"input={chain / 'prepared'}", "max_steps=1")
    with pytest.raises(StageInputError, match="does not exist"):
        _pretrain(chain, tmp_path / "pt", f"input={tmp_path / 'nowhere'}", "max_steps=1")


def test_config_contradictions_are_listed_together():
    with pytest.raises(ConfigError) as e:
        _cfg("pretrain", "max_steps=0", "epochs=0", "batch_size=0", "early_stopping_patience=2", "eval_steps=30",
             "save_steps=50", "masking.mask_prob=0", "warmup_ratio=1.5")
    text = str(e.value)
    for needle in ("nothing to train", "batch_size", "multiple of eval_steps", "masking.mask_prob", "warmup_ratio"):
        assert needle in text, needle
    cfg = _cfg("pretrain", "run=runs/x", "precision=fp16")  # fp16 on CPU: a run-time warning, not a config error
    assert cfg.checkpoints_path() == Path("runs/x/pretrain-checkpoints")
    assert cfg.input_path() == Path("runs/x/segmented")


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json"])
def test_deepspeed_configs_leave_sizes_to_the_trainer(name):
    ds = json.loads((REPO / "configs" / "deepspeed" / name).read_text())
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size"):
        assert ds[key] == "auto"
    assert ds["fp16"]["enabled"] == "auto" and ds["bf16"]["enabled"] == "auto"
    assert ds["zero_optimization"]["stage"] == int(name[4])
    if name == "zero3.json":
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_resume_refuses_changed_training_settings(chain, tmp_path):
    out = tmp_path / "p"
    _pretrain(chain, out, "max_steps=4", "save_steps=2", "eval_steps=2", "batch_size=8")
    with pytest.raises(StageInputError, match=r"(?s)made with other settings \(lr: 0.001 → 0.0005\).*resume=false"):
        _pretrain(chain, out, "max_steps=4", "save_steps=2", "eval_steps=2", "batch_size=8", "lr=5e-4")
    # cadence may change; resume=false starts over
    _pretrain(chain, out, "max_steps=4", "save_steps=4", "eval_steps=4", "batch_size=8")
    _pretrain(chain, out, "max_steps=4", "save_steps=2", "eval_steps=2", "batch_size=8", "lr=5e-4", "resume=false")


def test_resume_refuses_a_damaged_checkpoint_and_says_which_one_to_delete(chain, tmp_path):
    out = tmp_path / "p"
    _pretrain(chain, out, "max_steps=4", "save_steps=2", "eval_steps=2", "batch_size=8", "save_total_limit=3")
    ckpts = out.parent / "p-checkpoints"
    weights = ckpts / "checkpoint-4" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a crash or a full disk while saving
    with pytest.raises(StageInputError, match=r"(?s)checkpoint-4, it is damaged.*model.safetensors: .*truncated"
                                              r".*delete .*checkpoint-4 to resume from checkpoint-2"):
        _pretrain(chain, out, "max_steps=4", "save_steps=2", "eval_steps=2", "batch_size=8", "save_total_limit=3")
    (ckpts / "checkpoint-4" / "optimizer.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(StageInputError, match=r"optimizer.pt: not a complete torch.save archive"):
        _pretrain(chain, out, "max_steps=4", "save_steps=2", "eval_steps=2", "batch_size=8", "save_total_limit=3")
    # The fix the message gives works: without the damaged checkpoint the run resumes from step 2.
    import shutil

    shutil.rmtree(ckpts / "checkpoint-4")
    m = _pretrain(chain, out, "max_steps=4", "save_steps=2", "eval_steps=2", "batch_size=8", "save_total_limit=3")
    assert m["resumed_from"].endswith("checkpoint-2") and m["counts"]["steps"] == 4


def test_deepspeed_config_typos_are_caught_before_training(chain, tmp_path):
    ds = json.loads((REPO / "configs" / "deepspeed" / "zero2.json").read_text())
    ds["zero_optimisation"] = ds.pop("zero_optimization")
    ds["bf16"]["enabeld"] = True  # inside a section DeepSpeed validates itself; not ours to check
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps(ds))
    with pytest.raises(StageInputError, match=r"'zero_optimisation' is not a DeepSpeed setting.*did you mean "
                                              r"'zero_optimization'"):
        _pretrain(chain, tmp_path / "p", "max_steps=1", f"deepspeed={bad}")
    ds = json.loads((REPO / "configs" / "deepspeed" / "zero3.json").read_text())
    ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_sav"] = True
    bad.write_text(json.dumps(ds))
    with pytest.raises(StageInputError, match=r"zero_optimization.stage3_gather_16bit_weights_on_model_sav is not a "
                                              r"ZeRO setting; did you mean 'stage3_gather_16bit_weights_on_model_save'"):
        _pretrain(chain, tmp_path / "p", "max_steps=1", f"deepspeed={bad}")
    bad.write_text('{"train_batch_size": "auto",\n  "fp16": {"enabled": "auto"},}')
    with pytest.raises(StageInputError, match=r"ds.json, line 2 column 31: not valid JSON"):
        _pretrain(chain, tmp_path / "p", "max_steps=1", f"deepspeed={bad}")
    with pytest.raises(StageInputError, match=r"deepspeed config .*missing.json not found"):
        _pretrain(chain, tmp_path / "p", "max_steps=1", f"deepspeed={tmp_path / 'missing.json'}")
    # Sections that would replace the workbench's schedule / optimizer settings without a word.
    ds = json.loads((REPO / "configs" / "deepspeed" / "zero2.json").read_text())
    ds["scheduler"] = {"type": "WarmupDecayLR", "params": {"warmup_max_lr": "auto", "warmup_num_steps": "auto"}}
    ds["optimizer"] = {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": "auto"}}
    bad.write_text(json.dumps(ds))
    with pytest.raises(StageInputError) as e:
        _pretrain(chain, tmp_path / "p", "max_steps=1", f"deepspeed={bad}", "schedule=cosine")
    msg = str(e.value)
    assert "scheduler (WarmupDecayLR) replaces the workbench's learning-rate schedule (schedule=cosine" in msg
    assert "optimizer.params.lr = 0.0003 contradicts the workbench's lr=0.001" in msg


def test_missing_model_and_a_checkpoint_without_mlm_head(chain, tmp_path, caplog):
    from transformers import BertModel

    from workbench.stages.pretrain import run as pretrain

    with pytest.raises(StageInputError, match=r"model '.*no-such-model' is not a directory"):
        pretrain(_cfg("pretrain", f"run={chain}", f"model={tmp_path / 'no-such-model'}", f"output={tmp_path / 'x'}"))
    # An encoder-only checkpoint (BertModel): trains, but loudly, and the manifest says so.
    headless = tmp_path / "headless"
    BertModel.from_pretrained(chain / "base-model").save_pretrained(headless)
    for f in (chain / "base-model").glob("tokenizer*"):
        (headless / f.name).write_bytes(f.read_bytes())
    with caplog.at_level("WARNING"):
        m = pretrain(_cfg("pretrain", f"run={chain}", f"model={headless}", f"output={tmp_path / 'p'}", "max_steps=1",
                          "batch_size=4"))
    assert m["mlm_head_reinitialised"] is True and m["mlm_head_missing_keys"]
    assert "NEWLY INITIALISED" in caplog.text


def test_sparse_mlm_head_gives_the_dense_loss_and_gradients():
    """The sparse head is a pure speed lever: same loss and gradients as BertForMaskedLM,
    the plain forward in eval mode, and switching back restores the plain class."""
    from transformers import BertConfig, BertForMaskedLM

    from workbench.modeling import set_sparse_mlm_head

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    dense = BertForMaskedLM(cfg).train()
    sparse = BertForMaskedLM(cfg).train()
    sparse.load_state_dict(dense.state_dict())
    set_sparse_mlm_head(sparse, True)
    x = torch.randint(5, 300, (3, 16))
    labels = torch.full_like(x, -100)
    labels[:, 2::4] = x[:, 2::4]
    a, b = dense(input_ids=x, labels=labels), sparse(input_ids=x, labels=labels)
    assert b.logits.shape == (int((labels != -100).sum()), 300)
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    a.loss.backward(), b.loss.backward()
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    sparse.eval(), dense.eval()
    with torch.no_grad():  # evaluation with labels: the same loss, logits only where scored
        e = sparse(input_ids=x, labels=labels)
        assert e.logits.shape == (int((labels != -100).sum()), 300)
        assert torch.allclose(e.loss, dense(input_ids=x, labels=labels).loss, atol=1e-6)
        assert sparse(input_ids=x).logits.shape == (3, 16, 300)  # inference / fill-mask: the plain forward
    set_sparse_mlm_head(sparse, False)
    assert type(sparse) is BertForMaskedLM


def test_evaluation_with_the_sparse_head_reports_the_dense_numbers(chain, tmp_path):
    a = _pretrain(chain, tmp_path / "a", "max_steps=3", "batch_size=8", "eval_steps=3", "sparse_mlm_head=true")
    b = _pretrain(chain, tmp_path / "b", "max_steps=3", "batch_size=8", "eval_steps=3", "sparse_mlm_head=false")
    assert a["metrics"]["eval_loss"] == pytest.approx(b["metrics"]["eval_loss"], abs=1e-4)
    assert a["metrics"]["eval_masked_accuracy"] == pytest.approx(b["metrics"]["eval_masked_accuracy"], abs=1e-9)


def test_bf16_on_cpu_and_early_stopping_keep_the_best_checkpoint(chain, tmp_path):
    """precision=bf16 runs on CPU (autocast); a learning rate that makes eval loss worse
    stops the run after `early_stopping_patience` evaluations, and the best one is kept."""
    out = tmp_path / "p"
    m = _pretrain(chain, out, "max_steps=40", "batch_size=8", "eval_steps=2", "save_steps=2", "logging_steps=1",
                  "early_stopping_patience=1", "precision=bf16", "lr=0.5", "warmup_ratio=0", "save_total_limit=1")
    assert m["precision"] == "bf16"
    assert m["counts"]["steps"] < 40  # stopped early
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h][:-1]  # the last is the final evaluation
    best_step = int(Path(m["metrics"]["best_checkpoint"]).name.split("-")[1])
    assert min(evals) == pytest.approx(next(h["eval_loss"] for h in history if h.get("step") == best_step
                                            and "eval_loss" in h))
    # load_best_model_at_end: the final evaluation is the best checkpoint's
    assert m["metrics"]["eval_loss"] == pytest.approx(min(evals), rel=1e-3)


@pytest.fixture(scope="module")
def other_segmented(chain, review_lines, tmp_path_factory) -> Path:
    """A second segment output with the chain's vocabulary: other reviews (the 'general' text)."""
    from workbench.stages import prepare, segment

    tmp = tmp_path_factory.mktemp("mix")
    corpus = tmp / "other.txt"
    corpus.write_text("\n".join(review_lines[300:500]), encoding="utf-8")
    prepare.run(_cfg("prepare", f"input={corpus}", f"output={tmp / 'prepared'}", "split.valid_fraction=0.1"))
    segment.run(_cfg("segment", f"input={tmp / 'prepared'}", f"model={chain / 'base-model'}",
                     f"output={tmp / 'segmented'}", "max_seq_length=64"))
    return tmp / "segmented"


def test_replay_mixture_is_achieved_and_survives_a_kill(chain, other_segmented, tmp_path):
    """mix=[{other, 0.3}]: the blocks the collator actually saw are 70/30 (within 1%), and a run
    killed after its checkpoint and resumed sees the same blocks in the same order (same
    counts, same final weights) as the uninterrupted one."""
    args = ("max_steps=20", "batch_size=8", "save_steps=10", "eval_steps=10", "logging_steps=1",
            f"mix=[{{input: {other_segmented}, weight: 0.3}}]")
    a = _pretrain(chain, tmp_path / "a", *args)
    mix = a["mixture"]
    assert mix["sources"] == [str(chain / "segmented"), str(other_segmented)]
    assert mix["target"] == pytest.approx([0.7, 0.3])
    assert sum(mix["blocks_trained"]) == 20 * 8 and mix["blocks_trained"] == mix["blocks_planned"]
    assert mix["max_abs_deviation"] <= 0.01
    assert any(i["role"] == "mix" and i["weight"] == 0.3 for i in a["inputs"] if isinstance(i, dict) and "role" in i)
    with pytest.raises(KeyboardInterrupt):
        _pretrain(chain, tmp_path / "b", *args, callbacks=[_Crash(14).callback])
    assert json.loads((tmp_path / "b-checkpoints" / "checkpoint-10" / "mixture.json").read_text())["step"] == 10
    b = _pretrain(chain, tmp_path / "b", *args)
    assert b["resumed_from"].endswith("checkpoint-10")
    assert b["mixture"]["blocks_trained"] == mix["blocks_trained"]
    assert b["metrics"]["eval_loss"] == pytest.approx(a["metrics"]["eval_loss"], abs=1e-4)
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4, msg=k)
    # A different seed draws other blocks, the same shares.
    c = _pretrain(chain, tmp_path / "c", *args, "seed=1")
    assert c["mixture"]["blocks_trained"] == mix["blocks_trained"]
    # A checkpoint without mixture.json (e.g. written with dataloader_workers > 0): the count
    # restarts at the resume and the report says from which step, rather than pass a part for the whole.
    with pytest.raises(KeyboardInterrupt):
        _pretrain(chain, tmp_path / "d", *args, callbacks=[_Crash(14).callback])
    (tmp_path / "d-checkpoints" / "checkpoint-10" / "mixture.json").unlink()
    d = _pretrain(chain, tmp_path / "d", *args)
    assert d["mixture"]["counted_from_step"] == 10 and sum(d["mixture"]["blocks_trained"]) == 10 * 8
    assert "counted from step 10" in d["mixture"]["note"]


def test_replay_refuses_bad_weights_and_foreign_vocabularies(chain, other_segmented, tmp_path):
    with pytest.raises(ConfigError) as e:
        _cfg("pretrain", f"mix=[{{input: {other_segmented}, weight: 0.6}}, {{input: x, weight: 0.5}}]")
    assert "add up to 1.1" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _cfg("pretrain", f"mix=[{{input: {other_segmented}, weight: 0}}]")
    assert "mix[0].weight" in str(e.value)
    with pytest.raises(StageInputError) as e:  # a prepare output is not a segment output
        _pretrain(chain, tmp_path / "x", "max_steps=2", f"mix=[{{input: {chain / 'prepared'}, weight: 0.2}}]")
    assert "segment" in str(e.value)


def test_pretrain_reads_a_segment_output_written_in_shards(chain, tmp_path):
    from workbench.stages import segment

    m = segment.run(_cfg("segment", f"input={chain / 'prepared'}", f"model={chain / 'base-model'}",
                         f"output={tmp_path / 'seg'}", "max_seq_length=64", "shard_size=16KB"))
    assert len(m["shards"]["train"]) >= 3
    p = _pretrain(chain, tmp_path / "p", f"input={tmp_path / 'seg'}", "max_steps=2", "batch_size=8")
    assert p["counts"]["train_blocks"] == m["counts"]["blocks"]["train"]


def test_trainer_section_passes_training_arguments_through(chain, tmp_path):
    """trainer.<field> reaches TrainingArguments (recorded in the manifest's config); unknown
    fields get a did-you-mean, workbench-owned ones the workbench key, bad values their key."""
    with pytest.raises(ConfigError) as e:
        _cfg("pretrain", "trainer.gradient_checkpoint=true", "trainer.learning_rate=1e-3", "trainer.max_steps=5")
    msg = str(e.value)
    assert "trainer.gradient_checkpoint: not a TrainingArguments field (did you mean 'gradient_checkpointing'?)" in msg
    assert "trainer.learning_rate: set by the workbench; use lr" in msg and "use max_steps" in msg
    with pytest.raises(ConfigError, match="trainer.optim='no_such_optimizer'"):
        _pretrain(chain, tmp_path / "bad", "max_steps=2", "trainer.optim=no_such_optimizer")
    seen = {}

    from transformers import TrainerCallback

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen.update(optim=getattr(args.optim, "value", args.optim), gc=args.gradient_checkpointing, report_to=list(args.report_to))

    m = _pretrain(chain, tmp_path / "p", "max_steps=2", "batch_size=4", "trainer.optim=adafactor",
                  "trainer.gradient_checkpointing=true", "trainer.report_to=[]", callbacks=[Spy()])
    assert seen == {"optim": "adafactor", "gc": True, "report_to": []}
    assert m["config"]["trainer"] == {"optim": "adafactor", "gradient_checkpointing": True, "report_to": []}


def test_the_last_evaluation_is_not_run_twice(chain, tmp_path):
    """eval_steps dividing max_steps: the Trainer's evaluation at the last step is the final
    one (one eval entry at that step, the same numbers in metrics)."""
    m = _pretrain(chain, tmp_path / "p", "max_steps=6", "batch_size=8", "eval_steps=3", "save_steps=3")
    hist = json.loads((tmp_path / "p" / "metrics.json").read_text())["log_history"]
    evals = [h for h in hist if "eval_loss" in h]
    assert [h["step"] for h in evals] == [3, 6]
    assert m["metrics"]["eval_loss"] == evals[-1]["eval_loss"]
    m2 = _pretrain(chain, tmp_path / "q", "max_steps=5", "batch_size=8", "eval_steps=3", "save_steps=3")
    hist = json.loads((tmp_path / "q" / "metrics.json").read_text())["log_history"]
    assert [h["step"] for h in hist if "eval_loss" in h] == [3, 5]  # 5 is the explicit final evaluation
    assert m2["metrics"]["eval_loss"] is not None


def test_sentence_pair_objectives_train_and_export_the_pair_head(chain, tmp_path):
    """objective=mlm+sop on pairs=sop blocks and mlm+nsp on pairs=nsp blocks train
    BertForPreTraining (the pair head changes and is saved; the MLM part loads with plain
    AutoModelForMaskedLM); blocks whose labels the objective would ignore, or that lack the
    pairs it needs, are refused."""
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM, BertForPreTraining

    from workbench.stages import segment

    segs = {}
    for pairs in ("sop", "nsp"):
        segs[pairs] = tmp_path / f"seg-{pairs}"
        segment.run(_cfg("segment", f"input={chain / 'prepared'}", f"model={chain / 'base-model'}",
                         f"output={segs[pairs]}", "max_seq_length=64", f"pairs={pairs}"))
    from transformers import TrainerCallback

    class PairHead(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.start = model.cls.seq_relationship.weight.detach().clone()

    for objective, pairs in (("mlm+sop", "sop"), ("mlm+nsp", "nsp")):
        out, spy = tmp_path / objective, PairHead()
        m = _pretrain(chain, out, f"input={segs[pairs]}", f"objective={objective}", "max_steps=6", "batch_size=8",
                      "eval_steps=6", "lr=5e-3", callbacks=[spy])
        assert m["objective"] == objective and m["pair_head_new"] is True
        assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
        w = load_file(out / "model.safetensors")
        assert not torch.allclose(w["cls.seq_relationship.weight"], spy.start)  # the pair loss trained it
        assert isinstance(BertForPreTraining.from_pretrained(out), BertForPreTraining)
        assert AutoModelForMaskedLM.from_pretrained(out).config.vocab_size == m["tokenizer"]["vocab_size"]
        assert np.isfinite(m["metrics"]["eval_loss"]) and np.isfinite(m["metrics"]["train_loss"])
        assert 0.0 <= m["metrics"]["eval_pair_accuracy"] <= 1.0  # NSP / SOP accuracy on valid
    # mlm+sop killed after its checkpoint and resumed: the same model as the uninterrupted run.
    args = (f"input={segs['sop']}", "objective=mlm+sop", "max_steps=6", "batch_size=8", "eval_steps=6",
            "save_steps=3", "lr=5e-3")
    with pytest.raises(KeyboardInterrupt):
        _pretrain(chain, tmp_path / "r", *args, callbacks=[_Crash(4).callback])
    r = _pretrain(chain, tmp_path / "r", *args)
    assert r["resumed_from"].endswith("checkpoint-3")
    a, b = load_file(tmp_path / "mlm+sop" / "model.safetensors"), load_file(tmp_path / "r" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    with pytest.raises(StageInputError, match="next-sentence labels .* objective=mlm would ignore"):
        _pretrain(chain, tmp_path / "x", f"input={segs['nsp']}", "max_steps=1")
    with pytest.raises(StageInputError, match=r"objective=mlm\+sop needs sentence-pair blocks made by `segment pairs=sop`"):
        _pretrain(chain, tmp_path / "y", f"input={segs['nsp']}", "objective=mlm+sop", "max_steps=1")
    with pytest.raises(StageInputError, match=r"objective=mlm\+nsp needs"):
        _pretrain(chain, tmp_path / "z", "objective=mlm+nsp", "max_steps=1")
    with pytest.raises(ConfigError, match="masking.sop: sentence-order labels are made by objective=mlm"):
        _cfg("pretrain", "masking.sop=true")
