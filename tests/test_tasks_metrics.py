"""Fine-tuning metrics against hand-computed values (and scikit-learn where it is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.tasks.metrics import (
    classification_metrics,
    confusion_matrix,
    format_table,
    multilabel_metrics,
    tagging_metrics,
)
from workbench.tasks.tags import spans_to_tags

LABELS = ["neg", "neu", "pos"]
Y_TRUE = [0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0, 2]


def test_confusion_matrix_rows_are_true_labels():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]] and cm.dtype == np.int64
    assert confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_classification_metrics_by_hand():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    # per class: tp (1, 2, 2), predicted (2, 3, 2), true (2, 2, 3)
    assert m["per_class"]["neg"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["neu"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["per_class"]["pos"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["accuracy"] == pytest.approx(5 / 7) and m["micro_f1"] == pytest.approx(5 / 7)
    assert m["macro_f1"] == pytest.approx(0.7)
    assert m["weighted_f1"] == pytest.approx((0.5 * 2 + 0.8 * 2 + 0.8 * 3) / 7)
    assert m["n"] == 7 and m["confusion_matrix"][2] == [1, 0, 2]
    # A label nobody predicts or has: F1 0 (not NaN), and it pulls the macro average down.
    m4 = classification_metrics(Y_TRUE, Y_PRED, LABELS + ["angry"])
    assert m4["per_class"]["angry"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m4["macro_f1"] == pytest.approx(2.1 / 4)
    empty = classification_metrics([], [], LABELS)
    assert empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0


def test_classification_matches_sklearn_on_random_data():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 6))
        t, p = rng.integers(0, k, 50), rng.integers(0, k, 50)
        m = classification_metrics(t, p, [str(i) for i in range(k)])
        labels = list(range(k))
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(t, p))
        assert m["macro_f1"] == pytest.approx(skm.f1_score(t, p, labels=labels, average="macro", zero_division=0))
        assert m["weighted_f1"] == pytest.approx(skm.f1_score(t, p, labels=labels, average="weighted", zero_division=0))
        assert m["confusion_matrix"] == skm.confusion_matrix(t, p, labels=labels).tolist()
        prec, _, f1, _ = skm.precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
        assert [m["per_class"][str(i)]["f1"] for i in labels] == pytest.approx(list(f1))
        assert [m["per_class"][str(i)]["precision"] for i in labels] == pytest.approx(list(prec))


def test_multilabel_metrics_by_hand():
    y_true = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.2, 0.4], [0.1, 0.7, 0.6], [0.6, 0.3, 0.1], [0.2, 0.1, 0.5]])
    m = multilabel_metrics(y_true, scores, ["价格", "服务", "位置"])
    # predicted at 0.5: [1,0,0] [0,1,1] [1,0,0] [0,0,1]
    assert m["per_class"]["价格"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2})
    assert m["per_class"]["服务"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_class"]["位置"]["f1"] == 0.0
    assert (m["micro_precision"], m["micro_recall"]) == pytest.approx((0.6, 0.6)) and m["micro_f1"] == pytest.approx(0.6)
    assert m["macro_f1"] == pytest.approx(5 / 9) and m["exact_match"] == 0.0
    assert multilabel_metrics(y_true, scores, ["a", "b", "c"], threshold=0.35)["exact_match"] == 0.25
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        multilabel_metrics(y_true, scores, ["a", "b"])


def test_tagging_metrics_bio_default_mode():
    true = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["I-ORG", "I-ORG", "I-ORG", "O"]]
    m = tagging_metrics(true, pred, "bio")
    # PER right; LOC too short; ORG starting with I- counts in conlleval's default mode.
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert m["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["ORG"]["f1"] == 1.0 and m["macro_f1"] == pytest.approx(2 / 3)
    assert tagging_metrics(true, true)["f1"] == 1.0


def test_tagging_metrics_bioes_strict():
    spans = [[(0, 2, "PER"), (3, 5, "LOC")], [(0, 3, "ORG")]]
    true = [spans_to_tags(spans[0], 5, "bioes"), spans_to_tags(spans[1], 4, "bioes")]
    pred = [["B-PER", "E-PER", "O", "B-LOC", "I-LOC"], ["I-ORG", "I-ORG", "E-ORG", "O"]]
    m = tagging_metrics(true, pred)  # scheme detected from the E-/S- tags
    assert m["scheme"] == "bioes"
    # Strict: the unclosed LOC and the ORG without B- are no entities at all.
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((1.0, 1 / 3, 0.5))
    assert m["per_type"]["ORG"]["support"] == 1 and m["per_type"]["ORG"]["recall"] == 0.0
    nothing = tagging_metrics([["O", "O"]], [["O", "O"]], "bioes")
    assert nothing["f1"] == 0.0 and nothing["per_type"] == {}
    with pytest.raises(ValueError, match="same number"):
        tagging_metrics([["O"]], [["O", "O"]])


def test_format_table():
    table = format_table(classification_metrics(Y_TRUE, Y_PRED, LABELS)["per_class"])
    assert table.splitlines()[2].split() == ["neu", "0.6667", "1.0000", "0.8000", "2"]
