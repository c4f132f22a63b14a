"""Class weights and focal loss: values on hand-made tensors, and a real finetune that records them."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from finetune_fixtures import one_thread, reviews, tiny_model, write_conll, write_tsv, ner_sentences  # noqa: F401
from workbench.errors import ConfigError
from workbench.tasks.losses import (
    TaskLoss,
    balanced_weights,
    focal_binary,
    focal_cross_entropy,
    given_weights,
    label_counts,
)


def test_focal_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    p = torch.softmax(logits, -1)[torch.arange(3), labels]  # gold probabilities
    gamma = 2.0
    by_hand = sum(-(1 - float(pi)) ** gamma * math.log(float(pi)) for pi in p) / 3
    assert focal_cross_entropy(logits, labels, gamma=gamma).item() == pytest.approx(by_hand, rel=1e-6)
    # weighted: normalised by the gold weights, like torch's weighted cross-entropy
    w = torch.tensor([1.0, 3.0])
    by_hand_w = sum(float(w[y]) * -(1 - float(pi)) ** gamma * math.log(float(pi)) for pi, y in zip(p, labels)) / 5.0
    assert focal_cross_entropy(logits, labels, gamma=gamma, weight=w).item() == pytest.approx(by_hand_w, rel=1e-6)
    # focusing lowers the loss of the easy example most: example 0 (p=0.88) shrinks far more than example 1
    each = [focal_cross_entropy(logits[i:i + 1], labels[i:i + 1], gamma=gamma).item() /
            F.cross_entropy(logits[i:i + 1], labels[i:i + 1]).item() for i in range(3)]
    assert each[0] < 0.02 < each[1]


def test_gamma_zero_is_torch_cross_entropy_with_ignore_index():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 5, generator=g)  # (B, L, T) tagging emissions
    labels = torch.randint(0, 5, (4, 7), generator=g)
    labels[:, 0] = -100  # [CLS]
    labels[2, 4:] = -100  # padding
    w = torch.tensor([0.2, 1.0, 2.0, 3.0, 0.5])
    ours = focal_cross_entropy(logits, labels, gamma=0.0, weight=w)
    ref = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), weight=w, ignore_index=-100)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    assert focal_cross_entropy(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1)).item(), rel=1e-6)
    # a batch with nothing to score gives 0 with a graph (no NaN)
    empty = focal_cross_entropy(logits.requires_grad_(), torch.full((4, 7), -100))
    assert empty.item() == 0.0 and empty.requires_grad


def test_binary_focal_by_hand_and_gamma_zero_is_bce():
    logits = torch.tensor([[1.5, -0.5, 0.0], [-2.0, 0.3, 2.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    pw = torch.tensor([1.0, 4.0, 2.0])
    ref = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw)
    assert focal_binary(logits, targets, gamma=0.0, pos_weight=pw).item() == pytest.approx(ref.item(), rel=1e-6)
    gamma = 2.0
    p = torch.sigmoid(logits)
    by_hand = 0.0
    for i in range(2):
        for j in range(3):
            pi, y = float(p[i, j]), float(targets[i, j])
            by_hand += -(float(pw[j]) * y * (1 - pi) ** gamma * math.log(pi) + (1 - y) * pi ** gamma * math.log(1 - pi))
    assert focal_binary(logits, targets, gamma=gamma, pos_weight=pw).item() == pytest.approx(by_hand / 6, rel=1e-6)


def test_weights_from_counts_and_given():
    assert balanced_weights([30, 10]) == [pytest.approx(40 / 60), pytest.approx(2.0)]
    assert balanced_weights([6, 0, 2]) == [pytest.approx(8 / 12), 0.0, pytest.approx(2.0)]  # unseen class: never a target
    assert label_counts("classification", [0, 1, 1, 0, 0], 2) == [3, 2]
    assert label_counts("tagging", [[-100, 0, 1, 2, -100], [-100, 0, 0, -100]], 4) == [3, 1, 1, 0]
    assert label_counts("multilabel", [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], 2) == [2, 1]
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    assert given_weights({"PER": 3, "B-PER": 5, "O": 0.5}, tags, tagging=True) == [0.5, 5.0, 3.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match=r"\['ORG'\] are not among the train tags"):
        given_weights({"ORG": 2}, tags, tagging=True)
    with pytest.raises(ConfigError, match=r"\['neutral'\] are not among the train labels \['neg', 'pos'\]"):
        given_weights({"neutral": 2}, ["neg", "pos"])
    assert TaskLoss.for_task("classification", "ce", 2.0, "none", ["a", "b"], [0, 1]) is None
    loss = TaskLoss.for_task("multilabel", "ce", 2.0, "balanced", ["a", "b"], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert loss.describe() == {"loss": "ce", "gamma": None, "pos_weight": {"a": 1.0, "b": 3.0}}


def test_config_refuses_focal_and_weights_with_crf():
    from workbench.config import load_stage_config

    with pytest.raises(ConfigError) as e:
        load_stage_config("finetune", None, ["model=m", "train=t", "valid=v", "task=tagging", "crf=true",
                                             "loss=focal", "focal_gamma=-1"])
    assert "the CRF's loss scores whole tag sequences" in str(e.value) and "focal_gamma: must be >= 0" in str(e.value)
    with pytest.raises(ConfigError, match="positive weights"):
        load_stage_config("finetune", None, ["model=m", "train=t", "valid=v", "class_weights={pos: 0}"])


def test_finetune_with_balanced_focal_records_the_loss(tmp_path, cli):
    """Classification with an imbalanced train set (3:1) and tagging, each trained for real
    with class weights + focal loss; the weights land in metrics.json and the manifest."""
    rows = reviews(60)
    pos = [r for r in rows if r[0] == "pos"]
    neg = [r for r in rows if r[0] == "neg"]
    train = pos[:45] + neg[:15]
    write_tsv(tmp_path / "train.tsv", train)
    write_tsv(tmp_path / "valid.tsv", pos[45:55] + neg[15:25])
    base = tiny_model(tmp_path / "base", [t for _, t in rows])
    code, out, err = cli("finetune", f"model={base}", f"train={tmp_path / 'train.tsv'}", f"valid={tmp_path / 'valid.tsv'}",
                         f"output={tmp_path / 'ft'}", "class_weights=balanced", "loss=focal", "focal_gamma=1.5",
                         "max_length=48", "epochs=1", "batch_size=16", "lr=1e-3", "logging_steps=1")
    assert code == 0, err
    m = json.loads((tmp_path / "ft" / "manifest.json").read_text(encoding="utf-8"))
    assert m["loss"] == {"loss": "focal", "gamma": 1.5,
                         "class_weights": {"neg": pytest.approx(2.0), "pos": pytest.approx(60 / 90)}}
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["loss"] == m["loss"]
    losses = [h["train_loss"] for h in metrics["history"]["0"] if h["train_loss"] is not None]
    assert losses and all(math.isfinite(x) for x in losses)

    sents = ner_sentences(60, max_chars=40)
    write_conll(tmp_path / "ner_train.txt", sents[:50])
    write_conll(tmp_path / "ner_valid.txt", sents[50:])
    nbase = tiny_model(tmp_path / "nbase", ["".join(c for c, _ in s) for s in sents])
    code, out, err = cli("finetune", "task=tagging", f"model={nbase}", f"train={tmp_path / 'ner_train.txt'}",
                         f"valid={tmp_path / 'ner_valid.txt'}", f"output={tmp_path / 'ner'}", "class_weights={O: 0.2, PER: 2}",
                         "loss=focal", "max_length=48", "epochs=1", "batch_size=16", "lr=1e-3")
    assert code == 0, err
    m = json.loads((tmp_path / "ner" / "manifest.json").read_text(encoding="utf-8"))
    weights = m["loss"]["class_weights"]
    assert weights["O"] == 0.2 and weights["B-PER"] == weights["I-PER"] == 2.0 and weights.get("B-LOC", 1.0) == 1.0
