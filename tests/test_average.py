"""average: checkpoint averaging is the real mean of the tensors (checked against a hand
computation), integer buffers are copied, mismatched checkpoints are refused by name, and the
stage runs end to end on a tiny pretrain run (MLM loss of the average vs the last checkpoint)
and on finetune runs that kept evaluation snapshots (keep_snapshots; a CRF tagger too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import _stage_cfg
from finetune_fixtures import ner_sentences, one_thread, review_splits, reviews, tiny_model, write_conll, write_tsv  # noqa: F401
from workbench.errors import ConfigError, StageInputError

FAST = ["batch_size=16", "lr=5e-3", "logging_steps=1000", "eval_batch_size=64"]


# --------------------------------------------------------------------------- the average itself
def _checkpoints(tmp_path: Path, n: int = 3) -> list[Path]:
    g = torch.Generator().manual_seed(0)
    files = []
    for i in range(n):
        tensors = {"w": torch.randn(4, 3, generator=g), "b16": torch.randn(5, generator=g).to(torch.bfloat16),
                   "position_ids": torch.arange(6).unsqueeze(0) + (i if i == n - 1 else 0),  # int: copied
                   "allowed": torch.tensor([True, False, True])}
        files.append(tmp_path / f"c{i}.safetensors")
        save_file(tensors, str(files[-1]))
    return files


def test_average_is_the_mean_of_the_tensors(tmp_path):
    from workbench.stages.average import average_safetensors

    files = _checkpoints(tmp_path)
    ts = [load_file(f) for f in files]
    avg, info = average_safetensors(files)
    # by hand, element by element
    w = [[sum(float(t["w"][r, c]) for t in ts) / 3 for c in range(3)] for r in range(4)]
    assert torch.allclose(avg["w"], torch.tensor(w), atol=1e-6) and avg["w"].dtype == torch.float32
    b16 = torch.tensor([sum(float(t["b16"][k]) for t in ts) / 3 for k in range(5)]).to(torch.bfloat16)
    assert torch.equal(avg["b16"], b16) and avg["b16"].dtype == torch.bfloat16
    # integer / bool buffers: the last checkpoint's, not a mean; the ones that differ are listed
    assert torch.equal(avg["position_ids"], ts[-1]["position_ids"]) and avg["position_ids"].dtype == torch.int64
    assert torch.equal(avg["allowed"], ts[0]["allowed"])
    assert info == {"averaged": 2, "copied": ["allowed", "position_ids"], "copied_differ": ["position_ids"]}
    # averaging one checkpoint gives it back exactly
    one, _ = average_safetensors(files[-1:])
    assert all(torch.equal(one[k], ts[-1][k]) for k in one)


def test_mismatched_checkpoints_are_refused_by_name(tmp_path):
    from workbench.stages.average import average_safetensors

    files = _checkpoints(tmp_path)
    odd = tmp_path / "odd.safetensors"
    save_file({**load_file(files[0]), "w": torch.zeros(4, 4)}, str(odd))
    with pytest.raises(StageInputError, match=r"odd.safetensors: weight w is \(4, 4\)"):
        average_safetensors([files[0], odd])
    save_file({k: v for k, v in load_file(files[0]).items() if k != "b16"}, str(odd))
    with pytest.raises(StageInputError, match="odd.safetensors does not hold the weights.*missing b16"):
        average_safetensors([files[0], odd])


def test_config_problems_are_listed_together():
    with pytest.raises(ConfigError) as e:
        _stage_cfg("average", "last=1", "max_blocks=0")
    text = str(e.value)
    assert "input: required" in text and "last: must be >= 2" in text and "max_blocks" in text


# --------------------------------------------------------------------------- pretrain
def test_pretrain_checkpoints_end_to_end(pretrain_chain, tmp_path, cli):
    from workbench.stages import pretrain

    run = pretrain_chain
    out = tmp_path / "pretrain"
    pretrain.run(_stage_cfg("pretrain", f"run={run}", f"model={run / 'base-model'}", f"output={out}", "lr=1e-3",
                            "max_steps=6", "batch_size=8", "eval_steps=2", "save_steps=2", "save_total_limit=3",
                            "logging_steps=1"))
    ckpts = tmp_path / "pretrain-checkpoints"
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    avg_dir = tmp_path / "avg"
    code, stdout, err = cli("average", f"input={out}", "last=3", f"output={avg_dir}")
    assert code == 0, err
    got = load_file(avg_dir / "model.safetensors")
    parts = [load_file(ckpts / f"checkpoint-{s}" / "model.safetensors") for s in (2, 4, 6)]
    assert set(got) == set(parts[0])
    for k in got:
        assert torch.allclose(got[k], (parts[0][k].double() + parts[1][k].double() + parts[2][k].double()).div(3).float(),
                              atol=1e-7), k
    assert not torch.equal(got["bert.embeddings.word_embeddings.weight"], parts[2]["bert.embeddings.word_embeddings.weight"])
    m = json.loads((avg_dir / "metrics.json").read_text(encoding="utf-8"))
    assert m["checkpoints"] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"] and m["k"] == 3
    # the last checkpoint scored with pretrain's masks and batches is pretrain's own final eval_loss
    assert m["scores"]["last"]["loss_batch_mean"] == pytest.approx(m["pretrain_eval_loss"], rel=1e-4)
    assert m["delta_loss"] == pytest.approx(m["scores"]["average"]["loss"] - m["scores"]["last"]["loss"])
    assert m["scores"]["average"]["masks_sha256"] == m["scores"]["last"]["masks_sha256"]  # the same masks
    assert "valid MLM loss" in stdout and "vs last checkpoint" in stdout
    man = json.loads((avg_dir / "manifest.json").read_text(encoding="utf-8"))
    assert man["stage"] == "average" and man["source_stage"] == "pretrain" and man["k"] == 3
    steps = [(e["step"], e["sha256"]) for e in man["inputs"] if e["role"] == "checkpoint"]
    from workbench.manifest import sha256_file

    assert steps == [(s, sha256_file(ckpts / f"checkpoint-{s}" / "model.safetensors")) for s in (2, 4, 6)]
    # the average is a masked LM the other stages read: evaluate scores it like any pretrain output
    code, _, err = cli("evaluate", f"model={avg_dir}", f"input={run / 'segmented'}", "batch_size=8",
                       f"output={tmp_path / 'ev'}")
    assert code == 0, err
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert ev["loss"] == pytest.approx(m["scores"]["average"]["loss"], rel=1e-4)
    # asking for more checkpoints than were kept says how to keep them
    with pytest.raises(StageInputError, match="save_total_limit >= 5"):
        from workbench.stages import average

        average.run(_stage_cfg("average", f"input={out}", "last=5", f"output={tmp_path / 'avg5'}"))
    # a checkpoint of another architecture is named
    odd = ckpts / "checkpoint-4" / "config.json"
    config = json.loads(odd.read_text())
    odd.write_text(json.dumps({**config, "intermediate_size": 7}))
    with pytest.raises(StageInputError, match="checkpoint-4/config.json describes another model.*intermediate_size"):
        average.run(_stage_cfg("average", f"input={out}", "last=3", "score=false", f"output={tmp_path / 'avg-odd'}"))


# --------------------------------------------------------------------------- finetune
@pytest.fixture(scope="module")
def review_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("avg-reviews")
    rows = review_splits(d)
    tiny_model(d / "base", [t for _, t in rows])
    return d


def test_finetune_snapshots_end_to_end(review_data, tmp_path, cli):
    from workbench.stages import average, finetune

    d = review_data
    args = [f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}", f"test={d / 'test.tsv'}",
            "epochs=2", "eval_steps=3", "max_length=48", *FAST]
    finetune.run(_stage_cfg("finetune", *args, "keep_snapshots=3", f"output={tmp_path / 'ft'}"))
    snaps = tmp_path / "ft" / "snapshots"
    index = json.loads((snaps / "index.json").read_text(encoding="utf-8"))
    history = json.loads((tmp_path / "ft" / "metrics.json").read_text(encoding="utf-8"))["history"]["0"]
    # the last three evaluations, older ones deleted; the scores are the history's
    assert [e["step"] for e in index] == [h["step"] for h in history][-3:]
    assert [e["accuracy"] for e in index] == [h["accuracy"] for h in history][-3:]
    assert sorted(p.name for p in snaps.glob("*.safetensors")) == sorted(e["file"] for e in index)
    code, stdout, err = cli("average", f"input={tmp_path / 'ft'}", "last=3", f"output={tmp_path / 'avg'}")
    assert code == 0, err
    got = load_file(tmp_path / "avg" / "model.safetensors")
    parts = [load_file(snaps / e["file"]) for e in index]
    for k, v in got.items():
        assert torch.allclose(v, sum(p[k].double() for p in parts).div(3).float(), atol=1e-7), k
    m = json.loads((tmp_path / "avg" / "metrics.json").read_text(encoding="utf-8"))
    assert m["scores"]["valid"]["last"] == pytest.approx(index[-1]["accuracy"])  # the last evaluation, rescored
    assert set(m["scores"]) == {"valid", "test"} and m["valid"]["n"] == 50
    assert "vs last checkpoint" in stdout
    # a finetune-style output: predict reads it, and its prediction is the averaged model's
    code, _, err = cli("predict", f"model={tmp_path / 'avg'}", f"input={d / 'test.tsv'}",
                       f"output={tmp_path / 'p.jsonl'}")
    assert code == 0, err
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    gold = [line.split("\t")[0] for line in (d / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    assert sum(r["label"] == g for r, g in zip(rows, gold)) / 50 == pytest.approx(m["test"]["accuracy"])
    # export hands the average over like any task model
    code, _, err = cli("export", f"input={tmp_path / 'avg'}", f"output={tmp_path / 'export'}")
    assert code == 0, err
    assert json.loads((tmp_path / "export" / "manifest.json").read_text(encoding="utf-8"))["task"] == "classification"
    # without snapshots: the error says how to get them
    finetune.run(_stage_cfg("finetune", *args, "max_steps=3", f"output={tmp_path / 'plain'}"))
    with pytest.raises(StageInputError, match="keep_snapshots=3"):
        average.run(_stage_cfg("average", f"input={tmp_path / 'plain'}", f"output={tmp_path / 'avg2'}"))
    with pytest.raises(ConfigError, match="keep_snapshots"):
        _stage_cfg("finetune", *args, "keep_snapshots=2", "lora.r=4")


def test_crf_tagger_snapshots_average_the_crf_too(tmp_path):
    from workbench.stages import average, finetune
    from workbench.tasks.heads import load_task_model

    sents = ner_sentences(100, max_chars=60)
    write_conll(tmp_path / "train.txt", sents[:70])
    write_conll(tmp_path / "valid.txt", sents[70:100])
    tiny_model(tmp_path / "base", ["".join(c for c, _ in s) for s in sents])
    finetune.run(_stage_cfg("finetune", f"model={tmp_path / 'base'}", "task=tagging", "crf=true",
                            f"train={tmp_path / 'train.txt'}", f"valid={tmp_path / 'valid.txt'}", "max_steps=6",
                            "eval_steps=2", "max_length=32", "keep_snapshots=2", f"output={tmp_path / 'ft'}", *FAST))
    average.run(_stage_cfg("average", f"input={tmp_path / 'ft'}", "last=2", f"output={tmp_path / 'avg'}"))
    index = json.loads((tmp_path / "ft" / "snapshots" / "index.json").read_text(encoding="utf-8"))
    parts = [load_file(tmp_path / "ft" / "snapshots" / e["file"]) for e in index]
    _, crf, _, spec = load_task_model(tmp_path / "avg", needed_by="test")
    want = (parts[0]["crf.transitions"] + parts[1]["crf.transitions"]) / 2
    assert torch.allclose(crf.transitions, want, atol=1e-6)
    assert torch.equal(crf.allowed.to(torch.uint8), parts[-1]["crf.allowed"].to(torch.uint8))  # a mask: copied
    m = json.loads((tmp_path / "avg" / "metrics.json").read_text(encoding="utf-8"))
    assert m["metric"] == "f1" and "valid" in m["scores"] and spec.crf
